"""The "Current results" section of benchmarks/README.md, generated from the committed rows.

    python -m benchmarks.summary            # print the section
    python -m benchmarks.summary --write    # rewrite it between the markers of benchmarks/README.md
    python -m benchmarks.summary --check    # exit 1 when the README's section is not what the rows give

(`make bench-summary` is `--write`.)

One table per claim, each from the newest rows of the script that makes the claim (benchmarks/*.jsonl, as
committed), each naming the script, its command, the machine (lscpu's model name, whether bf16 was native)
and the date the rows carry. Nothing here measures or invents a number: a claim whose file has no rows in
its script's current format says "Not measured yet" and how to measure it. Standard library only, so it
runs in a second anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
BEGIN, END = "<!-- summary:begin -->", "<!-- summary:end -->"


# --- reading rows ------------------------------------------------------------------------------------
def read_rows(path: Path) -> list[dict] | None:
    """The JSON objects of a .jsonl file, oldest first; None when there is no such file."""
    if not path.is_file():
        return None
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SystemExit(f"Error: {path.name}, line {n}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise SystemExit(f"Error: {path.name}, line {n}: not a JSON object")
        rows.append(row)
    return rows


def newest_by(rows: Iterable[dict], key: Callable[[dict], object]) -> list[dict]:
    """The last row of each key, in the order those rows were written."""
    last: dict = {}
    for i, row in enumerate(rows):
        last[key(row)] = (i, row)
    return [row for _, row in sorted(last.values(), key=lambda t: t[0])]


# --- formatting --------------------------------------------------------------------------------------
def num(v) -> str:
    """A value as the row holds it: numbers unrounded (thousands separated), booleans as yes/no."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return f"{v:,}"
    return str(v)


def spread(s: dict | None) -> str:
    """{"median", "min", "max"} as 'median (min to max)'."""
    if not isinstance(s, dict):
        return num(s)
    return f"{num(s.get('median'))} ({num(s.get('min'))} to {num(s.get('max'))})"


def machine_text(m) -> str:
    """Where a row was measured: benchmarks.common.machine()'s dict, or the bare string older rows hold."""
    if isinstance(m, dict):
        parts = [m.get("cpu") or "CPU not named", f"{m['cpus']} CPUs" if m.get("cpus") else None,
                 "bf16 native" if m.get("native_bf16") else "no native bf16",
                 f"kernels held to {m['emulated_isa'].upper()}" if m.get("emulated_isa") else None,
                 f"GPU {m['cuda']}" if m.get("cuda") else None, f"torch {m['torch']}" if m.get("torch") else None]
        return ", ".join(p for p in parts if p)
    if m:
        return f"{m} (no CPU name recorded)"
    return "not recorded"


def date_text(row: dict) -> str:
    return str(row.get("date") or row.get("started", "")[:10] or "not recorded")


def table(headers: list[str], body: list[list]) -> list[str]:
    def cells(values: list) -> str:
        return "| " + " | ".join(num(v).replace("|", "\\|") for v in values) + " |"

    return [cells(headers), "|" + "---|" * len(headers), *(cells(r) for r in body)]


def provenance(rows: list[dict], headers: list[str], body: list[list]) -> list[str]:
    """The table, with the machine and date said once above it when the rows share them, else per row."""
    machines = [machine_text(r.get("machine")) for r in rows]
    dates = [date_text(r) for r in rows]
    if len(set(machines)) == 1 and len(set(dates)) == 1:
        return [f"Machine: {machines[0]}. Date: {dates[0]}.", "", *table(headers, body)]
    return table(headers + ["date", "machine"], [b + [d, m] for b, d, m in zip(body, dates, machines)])


def command_text(rows: list[dict], default: str) -> str:
    commands = list(dict.fromkeys(r["command"] for r in rows if isinstance(r.get("command"), str)))
    return ", ".join(f"`{c}`" for c in commands) if commands else f"`{default}`"


# --- the claims --------------------------------------------------------------------------------------
@dataclass
class Claim:
    title: str
    script: str  # benchmarks/<name>.py
    command: str  # how to measure it
    file: str  # benchmarks/<name>.jsonl
    current: Callable[[dict], bool]  # whether a row is in the script's current format
    newest: Callable[[list[dict]], list[dict]]  # the current rows -> the ones the claim shows
    render: Callable[[list[dict]], list[str]]  # those rows -> the lines under the heading
    missing: str = "Not measured yet"  # what a missing file says


def last(rows: list[dict]) -> list[dict]:
    return rows[-1:]


def emulated_isa(row: dict) -> str | None:
    m = row.get("machine")
    return m.get("emulated_isa") if isinstance(m, dict) else None


def newest_quality(rows: list[dict]) -> list[dict]:
    return newest_by(rows, lambda r: (r.get("corpus"), r.get("budget"), r.get("precision"), emulated_isa(r)))


def quality(rows: list[dict]) -> list[str]:
    body = []
    for r in rows:
        isa = emulated_isa(r)
        precision = (r.get("precision") or "auto") + (f", {isa.upper()} kernels" if isa else "")
        wall = r.get("wall_s") or {}
        body.append([r.get("corpus"), r.get("budget"), precision, r.get("runs"), spread(r.get("reference")),
                     spread(r.get("ours_best")), spread(r.get("ours_last")),
                     f"{num(r.get('difference_best'))} / {num(r.get('difference_last'))}", r.get("meets_bar"),
                     spread(wall.get("reference")), spread(wall.get("ours"))])
    headers = ["corpus", "budget", "precision", "runs", "reference (nats)", "ours, best.pt (nats)",
               "ours, last.pt (nats)", "ours − reference, best.pt / last.pt", "bar ≤ −0.02 met",
               "reference wall s", "ours wall s"]
    about = ("Validation loss: median of the runs (lowest to highest), every character of the last 10 % once; "
             "wall times around each whole command.")
    return [about, "", *provenance(rows, headers, body)]


def nanogpt(rows: list[dict]) -> list[str]:
    r = rows[0]
    body = [
        ["parameters, ours / reference", f"{num(r.get('params'))} / {num(r.get('reference_params'))}"],
        ["steps", r.get("steps")],
        ["reference loop wall s, before / after ours (mean)",
         (f"{num(r.get('reference_wall_s_before'))} / {num(r.get('reference_wall_s_after'))} "
          f"({num(r.get('reference_wall_s'))})")],
        ["ours wall s (the whole train call)", r.get("ours_wall_s")],
        ["ours / reference wall time (bar ≤ 1.05)",
         f"{num(r.get('time_ratio'))}: met {num(r.get('meets_time_bar'))}"],
        ["reference val loss, nanoGPT's estimator (200 batches)", r.get("reference_nanogpt_estimate_200")],
        [f"ours val loss, nanoGPT's estimator (bar ≤ {num(r.get('bar_val_loss'))})",
         f"{num(r.get('ours_nanogpt_estimate_200'))}: met {num(r.get('meets_loss_bar'))}"],
        ["ours val loss, `charrnn eval` (every character once)", r.get("ours_val_loss_charrnn_eval")],
        ["ours validations during training", r.get("ours_validations")],
    ]
    return provenance([r], ["quantity", "value"], body)


def newest_finetune(rows: list[dict]) -> list[dict]:
    return newest_by(rows, lambda r: (r.get("budget"), r.get("text"), r.get("base_time")))


def finetune(rows: list[dict]) -> list[str]:
    body = [[r.get("budget"), r.get("runs"), spread(r.get("finetune")), spread(r.get("scratch")), r.get("difference"),
             r.get("meets_bar"), spread((r.get("wall_s") or {}).get("finetune")),
             spread((r.get("wall_s") or {}).get("scratch")),
             f"{num(r.get('base_time'))}, val {num(r.get('base_val_loss_tinyshakespeare'))}",
             f"{num(r.get('text'))}, {num(r.get('text_chars'))} characters"] for r in rows]
    headers = ["budget", "runs", "fine-tuned (nats)", "from scratch (nats)", "fine-tuned − scratch",
               "bar < 0 met", "fine-tuned wall s", "scratch wall s", "base model (tinyshakespeare)", "new text"]
    return ["Validation loss on the new text (median of the runs, lowest to highest), `charrnn eval`.", "",
            *provenance(rows, headers, body)]


def serve(rows: list[dict]) -> list[str]:
    r = rows[0]
    body = []
    for c in r.get("rows", []):
        b, o = c.get("batching") or {}, c.get("one_at_a_time") or {}
        body.append([c.get("clients"), b.get("chars_per_s"),
                     f"{num(b.get('first_p50_ms'))} / {num(b.get('first_p99_ms'))}",
                     f"{num(b.get('last_p50_ms'))} / {num(b.get('last_p99_ms'))}", o.get("chars_per_s"),
                     f"{num(o.get('first_p50_ms'))} / {num(o.get('first_p99_ms'))}",
                     c.get("batching_over_one_at_a_time"), c.get("over_one_client")])
    headers = ["clients", "batching chars/s", "first char p50 / p99 ms", "last char p50 / p99 ms",
               "one at a time chars/s", "first char p50 / p99 ms (one at a time)", "batching ÷ one at a time",
               "batching ÷ its one-client figure"]
    about = (f"{num(r.get('model'))}, {num(r.get('weights'))} step weights, {num(r.get('chars'))} characters per "
             f"request, {num(r.get('rounds'))} per client; load average before: {num(r.get('load_before'))}.")
    out = [about, "",
           *provenance([r], headers, body)]
    bars = r.get("bars") or []
    if bars:
        out += ["", *table(["bar", "measured", "met"], [[b.get("bar"), b.get("measured"), b.get("met")] for b in bars])]
    return out


def export(rows: list[dict]) -> list[str]:
    r = rows[0]
    engines = ["torch_fp32", "torch_int8", "onnxruntime_fp32", "onnxruntime_int8"]

    def with_ratio(s: dict, k: str) -> str:
        ratio = (s.get("ratios") or {}).get(k)
        return num(s.get(k)) + (f" ({num(ratio)}x)" if ratio is not None and k != "torch_fp32" else "")

    sampling = [[s.get("shape"), s.get("threads"), s.get("streams"), *(with_ratio(s, k) for k in engines)]
                for s in r.get("sampling") or []]
    out = ["Sampling chars/s through `Sampler.sample_many` (in brackets: over torch fp32, same run):", "",
           *provenance([r], ["LSTM", "threads", "streams", "torch fp32", "torch int8", "ONNX Runtime fp32",
                             "ONNX Runtime int8"], sampling)]
    speeds = r.get("page_speed") or []
    if speeds:
        out += ["", "The page in headless Chromium, greedy chars/s (bar ≥ 1,000):", "",
                *table(["LSTM", "weights", "engine", "chars/s", "WebAssembly ran"],
                       [[s.get("shape"), s.get("weights"), s.get("engine"), s.get("chars_per_s"), s.get("wasm_ran")]
                        for s in speeds])]
    sizes = r.get("page_bytes") or {}
    if sizes:
        out += ["", *table(["page", "bytes"], [[k, v] for k, v in sizes.items()])]
    agree = r.get("agreement")
    if isinstance(agree, dict):
        n = agree.get("chars")
        out += ["", (f"Agreement with `charrnn sample -t 0 --weights fp32` over {num(n)} greedy characters "
                     f"({num(agree.get('run'))}):"), "",
                *table(["page weights", "same character at the same position", "common start"],
                       [[w, (agree.get(w) or {}).get("agree"), (agree.get(w) or {}).get("common_start")]
                        for w in ("int8", "fp16", "fp32") if w in agree])]
    else:
        out += ["", "Agreement with the sampler: not measured in this row (it needs `--run RUN`)."]
    return out


def newest_sections(rows: list[dict]) -> dict[str, dict]:
    """Each section of the suite, from the newest run that measured it (a run may be `--only` some)."""
    return {name: [r for r in rows if name in r["sections"]][-1]
            for name in dict.fromkeys(name for r in rows for name in r["sections"])}


def newest_speed(rows: list[dict]) -> list[dict]:
    shown = {id(r) for r in newest_sections(rows).values()}
    return [r for r in rows if id(r) in shown]  # in the order they were written


def speed(rows: list[dict]) -> list[str]:
    out = []
    for name, r in newest_sections(rows).items():
        sec = r["sections"][name]
        out += [f"**{name}** ({command_text([r], 'python -m benchmarks')}):", "",
                *provenance([r], ["measurement", "value", "unit", "note"],
                            [[x.get("name"), x.get("value"), x.get("unit", ""), x.get("note", "")]
                             for x in sec.get("rows", [])])]
        bars = sec.get("bars") or []
        if bars:
            out += ["", *table(["bar", "target", "measured", "met"],
                               [[b.get("name"), b.get("target"), b.get("measured"),
                                 "n/a" if b.get("met") is None else b.get("met")] for b in bars])]
        out.append("")
    return out[:-1]


def flat(d: dict, prefix: str = "") -> list[list]:
    """A row's fields as (dotted name, value) pairs, the machine and date left to the caption."""
    out = []
    for k, v in d.items():
        if not prefix and k in ("machine", "date", "command"):
            continue
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out += flat(v, name + ".")
        else:
            out.append([name, json.dumps(v) if isinstance(v, list) else v])
    return out


def items(rows: list[dict]) -> list[str]:
    r = rows[0]
    return provenance([r], ["field", "value"], flat(r))


CLAIMS = [
    Claim("Quality: the defaults against a plain PyTorch loop", "benchmarks/quality.py", "make quality",
          "quality.jsonl", lambda r: r.get("summary") is True, newest_quality, quality),
    Claim("nanoGPT's CPU recipe: our Transformer against a bare loop", "benchmarks/nanogpt_recipe.py",
          "python benchmarks/nanogpt_recipe.py", "nanogpt_recipe.jsonl",
          lambda r: "ours_wall_s" in r and "reference_nanogpt_estimate_200" in r, last, nanogpt),
    Claim("Fine-tuning against training from scratch", "benchmarks/finetune.py", "make bench-finetune",
          "finetune.jsonl", lambda r: r.get("summary") is True, newest_finetune, finetune),
    Claim("Serving: batching against one request at a time", "benchmarks/serve.py", "make bench-serve",
          "serve.jsonl", lambda r: isinstance(r.get("rows"), list), last, serve),
    Claim("Export: ONNX Runtime and the page against the sampler", "benchmarks/export.py",
          "make bench-export RUN=checkpoints/tinyshakespeare-lstm", "export.jsonl",
          lambda r: isinstance(r.get("sampling"), list), last, export),
    Claim("The speed suite: training, sampling, encoding, memory", "benchmarks/__main__.py", "make bench",
          "speed.jsonl", lambda r: isinstance(r.get("sections"), dict) and not r.get("quick"), newest_speed, speed),
    Claim("Sampling items", "benchmarks/items.py", "python benchmarks/items.py --write", "items.jsonl",
          lambda r: True, last, items, missing="Not run yet (benchmarks/items.py comes with issue 31)"),
]


def section(folder: Path = HERE) -> str:
    """The generated section, from the .jsonl files in `folder`."""
    out = [("Generated by `python -m benchmarks.summary --write` (`make bench-summary`) from the newest rows of "
            "each claim's `.jsonl` file; do not edit by hand. Older results follow under History.")]
    for c in CLAIMS:
        out += ["", f"### {c.title}", "", f"Script: `{c.script}`. Rows: `benchmarks/{c.file}`."]
        rows = read_rows(folder / c.file)
        if rows is None:
            out += ["", f"{c.missing}: run `{c.command}`."]
            continue
        current = [r for r in rows if c.current(r)]
        if not current:
            older = f" ({len(rows)} older rows, in an earlier format of the script: see History)" if rows else ""
            out += ["", f"Not measured yet{older}: run `{c.command}`."]
            continue
        shown = c.newest(current)
        out += [f"Command: {command_text(shown, c.command)}.", "", *c.render(shown)]
    return "\n".join(out) + "\n"


def replace_section(text: str, generated: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"Error: {README.name} has no {BEGIN} ... {END} markers")
    return text[: start + len(BEGIN)] + "\n" + generated + text[end:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.summary", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the section in benchmarks/README.md")
    mode.add_argument("--check", action="store_true", help="exit 1 when the README's section is out of date")
    p.add_argument("--readme", type=Path, default=README)
    p.add_argument("--rows", type=Path, default=HERE, help="the folder of the .jsonl files")
    args = p.parse_args(argv)
    generated = section(args.rows)
    if not (args.write or args.check):
        print(generated, end="")
        return 0
    text = args.readme.read_text(encoding="utf-8")
    new = replace_section(text, generated)
    if args.check:
        if new != text:
            print(f"{args.readme} is out of date: run `make bench-summary`", file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.readme.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
