"""benchmarks/summary.py: the "Current results" of benchmarks/README.md, generated from the committed rows.

Synthetic rows in a temporary folder: the numbers appear as the rows hold them, the newest rows are the ones
shown, a missing or empty file says so and shows no number, and the committed README's section is what the
committed rows give.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks import summary

REPO = Path(__file__).resolve().parent.parent

EPYC = {"cpu": "AMD EPYC", "cpus": 2, "torch_threads": 2, "torch": "2.13.0+cpu", "native_bf16": True}
XEON = {"cpu": "Intel(R) Xeon(R) Processor", "cpus": 2, "torch": "2.13.0+cpu", "native_bf16": True}
ZEN1 = {"cpu": "AMD EPYC 7601", "cpus": 2, "torch": "2.13.0+cpu", "native_bf16": False}


def write(folder: Path, name: str, rows: list[dict]) -> None:
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def spread(median, lo, hi) -> dict:
    return {"median": median, "min": lo, "max": hi}


def quality_summary(ref, best, last, date, machine, corpus="tinyshakespeare", budget="60s", met=True) -> dict:
    return {"summary": True, "corpus": corpus, "budget": budget, "runs": 3, "reference": spread(*ref),
            "ours_best": spread(*best), "ours_last": spread(*last),
            "difference_best": round(best[0] - ref[0], 4), "difference_last": round(last[0] - ref[0], 4),
            "meets_bar": met, "wall_s": {"reference": spread(63.1, 62.8, 63.9), "ours": spread(62.2, 61.9, 62.7)},
            "precision": "auto", "command": "python benchmarks/quality.py", "machine": machine, "date": date}


def part(text: str, title: str) -> str:
    """The lines under one claim's heading, up to the next."""
    return text.split(f"### {title}")[1].split("\n### ")[0]


def test_an_empty_folder_says_not_measured_for_every_claim_and_shows_no_number(tmp_path):
    text = summary.section(tmp_path)
    for claim in summary.CLAIMS:
        body = part(text, claim.title)
        assert f"run `{claim.command}`" in body
        assert "|" not in body  # no table
        said = [line for line in body.splitlines() if "yet" in line]
        assert len(said) == 1 and re.sub(r"`[^`]*`", "", said[0]).strip(" :.") in (
            "Not measured yet: run", "Not run yet (benchmarks/items.py comes with issue 31): run")
    assert "Not run yet" in part(text, "Sampling items")


def test_quality_shows_the_newest_summary_row_of_each_corpus_and_budget(tmp_path):
    old_format = {"corpus": "tinyshakespeare", "budget": "60s", "reference_val_loss": 1.4771, "ours_val_loss": 1.4484,
                  "difference": -0.0287, "meets_bar": True, "machine": XEON, "date": "2026-12-02"}
    per_run = {"corpus": "tinyshakespeare", "budget": "60s", "run": 1, "reference_val_loss": 1.4522,
               "ours_best_val_loss": 1.4111, "machine": EPYC, "date": "2026-12-05"}
    rows = [old_format, quality_summary((1.4607, 1.4581, 1.4633), (1.4399, 1.4377, 1.4402), (1.4421, 1.44, 1.4444),
                                        "2026-12-04", ZEN1),
            per_run,
            quality_summary((1.4512, 1.4498, 1.4533), (1.4188, 1.4151, 1.4203), (1.4219, 1.4201, 1.4236),
                            "2026-12-05", EPYC),
            quality_summary((1.2969, 1.2901, 1.3011), (1.2339, 1.2301, 1.2362), (1.2375, 1.2333, 1.2399),
                            "2026-12-05", EPYC, corpus="python", budget="5m")]
    write(tmp_path, "quality.jsonl", rows)
    body = part(summary.section(tmp_path), "Quality: the defaults against a plain PyTorch loop")
    # the newer tinyshakespeare row, and the python one; never the older row nor the per-run or old-format ones
    for shown in ("1.4512 (1.4498 to 1.4533)", "1.4188 (1.4151 to 1.4203)", "1.4219 (1.4201 to 1.4236)",
                  "-0.0324 / -0.0293", "1.2969 (1.2901 to 1.3011)", "1.2339", "-0.063 / -0.0594",
                  "63.1 (62.8 to 63.9)", "62.2 (61.9 to 62.7)"):
        assert shown in body
    for hidden in ("1.4607", "1.4399", "1.4771", "1.4484", "1.4522", "1.4111", "AMD EPYC 7601", "2026-12-04"):
        assert hidden not in body
    assert "Machine: AMD EPYC, 2 CPUs, bf16 native, torch 2.13.0+cpu. Date: 2026-12-05." in body
    assert "`python benchmarks/quality.py`" in body
    table = [line for line in body.splitlines() if line.startswith("| tinyshakespeare")]
    assert len(table) == 1 and "| yes |" in table[0]


def test_rows_from_different_machines_or_days_carry_their_own(tmp_path):
    fp32 = {**quality_summary((1.47, 1.46, 1.48), (1.43, 1.42, 1.44), (1.44, 1.43, 1.45), "2026-12-05", EPYC),
            "precision": "fp32", "command": "python benchmarks/quality.py --precision fp32"}
    write(tmp_path, "quality.jsonl", [
        quality_summary((1.45, 1.44, 1.46), (1.41, 1.40, 1.42), (1.42, 1.41, 1.43), "2026-12-05", EPYC), fp32,
        quality_summary((1.55, 1.54, 1.56), (1.47, 1.46, 1.48), (1.48, 1.47, 1.49), "2026-12-06",
                        {**XEON, "emulated_isa": "avx2"}, budget="5m", met=False)])
    body = part(summary.section(tmp_path), "Quality: the defaults against a plain PyTorch loop")
    assert "Machine:" not in body
    assert "Command: `python benchmarks/quality.py`, `python benchmarks/quality.py --precision fp32`." in body
    lines = [line for line in body.splitlines() if line.startswith("| tinyshakespeare")]
    assert len(lines) == 3  # another precision or ISA is another row, not a newer one
    assert "| auto |" in lines[0] and "2026-12-05 | AMD EPYC, 2 CPUs, bf16 native" in lines[0]
    assert "| fp32 |" in lines[1] and "1.47 (1.46 to 1.48)" in lines[1]
    assert "2026-12-06 | Intel(R) Xeon(R) Processor, 2 CPUs, bf16 native, kernels held to AVX2" in lines[2]
    assert "auto, AVX2 kernels" in lines[2] and "| no |" in lines[2]


def test_nanogpt_recipe_rows_of_the_old_format_are_history_not_current(tmp_path):
    old = {"steps": 2000, "reference_wall_s": 47.9, "ours_train_s": 47.5, "ours_val_loss": 1.874,
           "machine": "x86_64 2 cpus, torch 2.13.0+cpu, 2 threads"}
    write(tmp_path, "nanogpt_recipe.jsonl", [old])
    body = part(summary.section(tmp_path), "nanoGPT's CPU recipe: our Transformer against a bare loop")
    assert "Not measured yet (1 older rows" in body and "47.9" not in body and "1.874" not in body
    current = {"steps": 2000, "reference_wall_s": 52.3, "reference_wall_s_before": 51.9, "reference_wall_s_after": 52.7,
               "reference_nanogpt_estimate_200": 1.8911, "ours_wall_s": 53.4, "ours_validations": 10,
               "ours_nanogpt_estimate_200": 1.8807, "ours_val_loss_charrnn_eval": 1.8712, "bar_val_loss": 1.886,
               "meets_loss_bar": True, "time_ratio": 1.021, "meets_time_bar": True, "params": 804096,
               "reference_params": 804096, "machine": XEON, "date": "2026-12-05",
               "command": "python benchmarks/nanogpt_recipe.py --steps 2000"}
    write(tmp_path, "nanogpt_recipe.jsonl", [old, current])
    body = part(summary.section(tmp_path), "nanoGPT's CPU recipe: our Transformer against a bare loop")
    for shown in ("51.9 / 52.7 (52.3)", "| 53.4 |", "1.021: met yes", "| 1.8911 |", "1.8807: met yes",
                  "bar ≤ 1.886", "| 1.8712 |", "804,096 / 804,096", "Intel(R) Xeon(R) Processor",
                  "Date: 2026-12-05", "`python benchmarks/nanogpt_recipe.py --steps 2000`"):
        assert shown in body
    assert "47.9" not in body


def test_finetune_serve_export_and_items(tmp_path):
    write(tmp_path, "finetune.jsonl", [
        {"kind": "finetune", "run": 1, "val_loss": 1.9, "machine": EPYC, "date": "2026-12-05"},
        {"summary": True, "budget": "60s", "runs": 3, "finetune": spread(1.6123, 1.6101, 1.6188),
         "scratch": spread(2.0456, 2.0311, 2.0502), "difference": -0.4333, "meets_bar": True,
         "wall_s": {"finetune": spread(61.2, 60.9, 61.5), "scratch": spread(60.8, 60.5, 61.0)},
         "text": "common-licenses", "text_chars": 200000, "base_time": "2m", "base_val_loss_tinyshakespeare": 1.5321,
         "machine": EPYC, "date": "2026-12-05"}])
    write(tmp_path, "serve.jsonl", [
        {"date": "2026-12-04", "machine": EPYC, "model": "lstm 2x512", "weights": "fp32", "chars": 200, "rounds": 3,
         "rows": [{"clients": 1, "batching": {"chars_per_s": 1111.1}, "one_at_a_time": {"chars_per_s": 1000.0}}]},
        {"date": "2026-12-05", "machine": EPYC, "model": "lstm 2x512", "weights": "fp32", "chars": 200, "rounds": 3,
         "load_before": 0.12,
         "rows": [{"clients": 32, "batching": {"chars_per_s": 23456.7, "first_p50_ms": 41.2, "first_p99_ms": 187.5,
                                               "last_p50_ms": 812.0, "last_p99_ms": 990.1},
                   "one_at_a_time": {"chars_per_s": 2345.6, "first_p50_ms": 4000.5, "first_p99_ms": 9000.2},
                   "batching_over_one_at_a_time": 10.0, "over_one_client": 9.87}],
         "bars": [{"bar": "32 clients: aggregate >= 8x one client's", "measured": 9.87, "met": True}]}])
    write(tmp_path, "export.jsonl", [
        {"date": "2026-12-05", "machine": XEON,
         "sampling": [{"shape": "1x512", "threads": 2, "streams": 1, "torch_fp32": 3210, "torch_int8": 6420,
                       "onnxruntime_fp32": 4815, "onnxruntime_int8": None,
                       "ratios": {"torch_fp32": 1.0, "torch_int8": 2.0, "onnxruntime_fp32": 1.5}}],
         "page_bytes": {"1x512 int8": 812345}, "page_speed": [{"shape": "1x512", "weights": "int8",
                                                             "engine": "wasm", "chars_per_s": 2345, "wasm_ran": True}],
         "agreement": None}])
    write(tmp_path, "items.jsonl", [{"date": "2026-12-05", "machine": EPYC,
                                     "items": {"items": 1000, "command_s": 3.21, "bar_met": True}}])
    text = summary.section(tmp_path)
    fine = part(text, "Fine-tuning against training from scratch")
    assert "1.6123 (1.6101 to 1.6188)" in fine and "2.0456 (2.0311 to 2.0502)" in fine and "| -0.4333 |" in fine
    assert "2m, val 1.5321" in fine and len([line for line in fine.splitlines() if line.startswith("| 60s")]) == 1
    serve = part(text, "Serving: batching against one request at a time")
    for shown in ("23,456.7", "41.2 / 187.5", "812.0 / 990.1", "2,345.6", "| 10.0 |", "| 9.87 |", "Date: 2026-12-05",
                  "load average before: 0.12", "| 32 clients: aggregate >= 8x one client's | 9.87 | yes |"):
        assert shown in serve
    assert "1,111.1" not in serve
    export = part(text, "Export: ONNX Runtime and the page against the sampler")
    for shown in ("| 3,210 |", "6,420 (2.0x)", "4,815 (1.5x)", "| – |", "| 2,345 |", "812,345",
                  "not measured in this row"):
        assert shown in export
    items = part(text, "Sampling items")
    assert "| items.command_s | 3.21 |" in items and "| items.bar_met | yes |" in items


def test_speed_suite_takes_each_section_from_the_newest_run_that_has_it(tmp_path):
    def run(date, command, sections, quick=False):
        return {"machine": EPYC, "quick": quick, "date": date, "command": command, "sections": {
            name: {"rows": [{"name": f"{name} row", "value": value, "unit": "chars/s", "note": ""}],
                   "bars": [{"name": f"{name} bar", "target": ">= 1", "measured": value, "met": True}]}
            for name, value in sections.items()}}

    write(tmp_path, "speed.jsonl", [
        run("2026-12-04", "python -m benchmarks", {"training": 1234.5, "sampling": 2345.6}),
        run("2026-12-05", "python -m benchmarks --only training", {"training": 3456.7}),
        run("2026-12-06", "python -m benchmarks --quick", {"training": 9.9, "sampling": 8.8}, quick=True)])
    body = part(summary.section(tmp_path), "The speed suite: training, sampling, encoding, memory")
    training, sampling = body.split("**training**")[1].split("**sampling**")
    assert "3,456.7" in training and "2026-12-05" in training and "--only training" in training
    assert "2,345.6" in sampling and "2026-12-04" in sampling
    assert "1,234.5" not in body and "9.9" not in body and "8.8" not in body  # older or --quick


def test_write_and_check_keep_the_readme_in_step_with_the_rows(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# B\n\n{summary.BEGIN}\nstale\n{summary.END}\n\n## History\n", encoding="utf-8")
    args = ["--readme", str(readme), "--rows", str(tmp_path)]
    assert summary.main(["--check", *args]) == 1
    assert summary.main(["--write", *args]) == 0 and summary.main(["--check", *args]) == 0
    assert "stale" not in readme.read_text() and readme.read_text().endswith(f"{summary.END}\n\n## History\n")
    write(tmp_path, "serve.jsonl", [{"date": "2026-12-05", "machine": EPYC, "rows": [], "bars": []}])
    assert summary.main(["--check", *args]) == 1  # a new row: the section is out of date


def test_a_row_that_is_not_json_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "serve.jsonl").write_text('{"rows": []}\n{"rows": [\n', encoding="utf-8")
    with pytest.raises(SystemExit, match=r"serve.jsonl, line 2: not JSON"):
        summary.section(tmp_path)


def test_the_committed_readme_shows_what_the_committed_rows_give():
    assert summary.main(["--check"]) == 0, "run `make bench-summary` and commit benchmarks/README.md"
