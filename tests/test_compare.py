"""`charrnn compare`, its report and probes, and the Transformer through the CLI."""

import json
import random
import re

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_text

from charrnn.cli import cli
from charrnn.compare import count_params, size_for_params
from charrnn.errors import CharrnnError
from charrnn.measuring import Rates, estimate, steps
from charrnn.presets import presets_for
from charrnn.probe import bracket_probe, find_pairs
from charrnn.report import line_chart, render_html, render_markdown
from charrnn.units import format_duration, parse_count, parse_duration

GPT_ARGS = ["--model", "transformer", "--layers", "1", "--hidden", "32", "--heads", "4", "--context", "16",
            "--batch-size", "4", "--max-steps", "20", "--precision", "fp32", "--device", "cpu", "--quiet"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def bracketed_text(n_chars: int, seed: int = 0) -> str:
    """Play-like text with parenthetical asides of many lengths: something for the bracket probe."""
    rng = random.Random(seed)
    words = make_text(n_chars, seed).split(" ")
    out, i = [], 0
    while i < len(words):
        if rng.random() < 0.08:
            span = rng.choice([1, 2, 4, 8, 16])
            out.append("(" + " ".join(words[i:i + span]) + ")")
            i += span
        else:
            out.append(words[i])
            i += 1
    return " ".join(out)[:n_chars]


# --- the Transformer through the CLI --------------------------------------------------------------
def test_train_sample_and_eval_a_transformer(corpus, tmp_path):
    out = tmp_path / "run"
    assert run("train", corpus, "--out", out, *GPT_ARGS).exit_code == 0
    a = run("sample", out, "--prime", "KING:", "--length", "60", "--seed", "2")
    assert a.exit_code == 0 and a.stdout.startswith("KING:") and a.stdout == run(
        "sample", out, "--prime", "KING:", "--length", "60", "--seed", "2").stdout
    data = json.loads(run("eval", out, corpus, "--json").stdout)
    assert data["chars"] == 20_000 - int(20_000 * 0.9) - 1  # the same characters as an RNN's eval
    fine = json.loads(run("eval", out, corpus, "--json", "--stride", "1").stdout)
    assert fine["chars"] == data["chars"] and fine["loss_nats"] != data["loss_nats"]
    assert "heads" in run("info", out).stdout


@pytest.mark.parametrize("args, message", [
    (["--heads", "3"], "must divide hidden"),
    (["--embed", "16"], "--embed cannot be used with --model transformer"),
    (["--weight-drop", "0.2"], "--weight-drop cannot be used with --model transformer"),
    (["--seq-len", "32"], "--seq-len cannot be used"),
    (["--context", "0"], "--context"),
])
def test_bad_transformer_options(corpus, tmp_path, args, message):
    assert message in one_line_error(run("train", corpus, "--out", tmp_path / "run", *GPT_ARGS, *args))
    assert not (tmp_path / "run").exists()


def test_transformer_options_on_an_rnn_and_stride_on_an_rnn(corpus, tmp_path, trained_run):
    assert "--heads cannot be used with --model lstm" in one_line_error(
        run("train", corpus, "--out", tmp_path / "r", "--heads", "4", "--max-steps", "5"))
    assert "--stride applies to a model that reads windows" in one_line_error(
        run("eval", trained_run, trained_run.parent.parent / "play.txt", "--stride", "4"))


# --- sizing ---------------------------------------------------------------------------------------
def test_parse_count():
    assert [parse_count(t) for t in ("3M", "800k", "1.5m", "250000")] == [3_000_000, 800_000, 1_500_000, 250_000]
    with pytest.raises(CharrnnError, match="not a parameter count"):
        parse_count("lots")


@pytest.mark.parametrize("target", [1_000_000, 3_000_000])
def test_models_are_sized_to_about_the_same_parameter_count(target):
    for model in ("rnn", "gru", "lstm", "transformer"):
        for preset in presets_for(model):
            settings = size_for_params(model, target, 321, preset.settings)
            got = count_params({**preset.settings, **settings}, 321)
            assert abs(got - target) / target < 0.06, (model, preset.name, settings, got)
            if model == "transformer":
                assert settings["hidden"] % preset.settings["heads"] == 0


# --- the probe and the charts ---------------------------------------------------------------------
def test_find_pairs_matches_each_kind_on_its_own_stack():
    text = 'a(b[c]d)e "q" ) ((x)'
    assert find_pairs(text) == [(3, 5), (1, 7), (10, 12), (17, 19)]  # the stray ")" and the open "(" are skipped


def test_bracket_probe_buckets_by_distance():
    pairs = [(0, 2), (10, 13), (20, 26), (100, 400)]  # distances 2, 3, 6, 300
    losses = np.arange(500, dtype=float)  # entry i is the loss of character i + 1
    probe = bracket_probe({"m": losses}, pairs)
    assert probe.labels[:3] == ["1-4", "5-8", "9-16"] and probe.labels[-1] == "513+"
    assert probe.counts[0] == 2 and probe.counts[1] == 1 and probe.counts[7] == 1 and sum(probe.counts) == 4
    assert probe.loss["m"][0] == pytest.approx((1 + 12) / 2) and probe.loss["m"][1] == 25
    assert probe.loss["m"][2] is None


def test_line_chart_is_plain_svg():
    svg = line_chart({"a": [(1, 2.0), (2, 1.5)], "b<&>": [(1, 2.5), (2, 2.2)]}, "x", "y")
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "b&lt;&amp;&gt;" in svg
    assert svg.count("<polyline") == 2


# --- the plan, its estimate, and the progress of every phase ----------------------------------------
def test_the_plan_and_its_estimate_come_before_any_training(comparison):
    before = comparison.at_training[0]  # what compare had written when the first model began to train
    plan = comparison.report["plan"]
    lines = before.splitlines()
    # the models in order, each with its budget and its measuring, then the total and the clock time
    first, second = (next(i for i, line in enumerate(lines) if re.match(rf"\s+{n}\. {m} ", line))
                     for n, m in ((1, "lstm"), (2, "gru")))
    total = next(i for i, line in enumerate(lines) if line.startswith("estimated total"))
    assert lines.index(next(line for line in lines if line.startswith("measuring a model: validation loss"))) < first
    assert first < second < total and "[1/2] training lstm" in lines[-1]
    assert re.search(r"done about \d\d:\d\d$", lines[total])
    for line, model in zip((lines[first], lines[second]), plan["models"]):
        assert f"train {format_duration(model['train_s'])}" in re.sub(r" +", " ", line)
        assert f"measure ~{format_duration(model['measure_s'])}" in re.sub(r" +", " ", line)
    # the total is the training budgets plus the measuring estimated for each model, as printed
    assert [m["train_s"] for m in plan["models"]] == [60, 60]
    assert all(m["measure_s"] > 0 for m in plan["models"])
    assert plan["total_s"] == pytest.approx(120 + sum(m["measure_s"] for m in plan["models"]))
    assert lines[total].startswith(f"estimated total {format_duration(plan['total_s'])} ")
    # what was printed reads back as the duration it stands for
    assert parse_duration(lines[total].split()[2]) == pytest.approx(plan["total_s"], abs=60)


def test_the_measuring_estimate_follows_the_validation_text_and_the_measurements(comparison):
    rates = Rates({kind: 1000.0 for kind in ("batched", "stream", "context", "gradients", "sample", "sample_batched")})
    cfg = comparison.cfg
    small, large = (sum(estimate(steps(cfg, n, None), rates)) for n in (20_000, 80_000))
    assert large > small  # the validation loss and the per-character losses read all of it
    more = sum(estimate(steps(type(cfg)(cfg.corpus, memo_chars=4 * cfg.memo_chars), 20_000, None), rates))
    assert more - small == pytest.approx(3 * cfg.memo_chars / 1000)  # the longer sample, at 1000 chars/s
    assert sum(estimate(steps(cfg, 20_000, 16), rates)) < small  # a model that reads 16 characters at most


def test_measuring_shows_each_step_off_a_terminal(comparison):
    """Off a terminal, the measuring phase is a line per step (no bar's redraws), in the order of the plan's steps."""
    lines = [line for line in comparison.stderr.splitlines() if line.startswith("measuring ")][1:]  # after the plan's
    assert re.match(r"measuring 2 models: about \S+, done about \d\d:\d\d$", lines[0])
    plan = steps(comparison.cfg, comparison.report["val_chars"], None)
    shown = [re.match(r"measuring (\d+)% (\w+): (.*)$", line).groups() for line in lines[1:-1]]
    assert [(m, label) for _, m, label in shown] == [(m, s.label) for m in ("lstm", "gru") for s in plan]
    percents = [int(p) for p, _, _ in shown]
    assert percents == sorted(percents) and percents[0] == 0 and lines[-1] == "measuring 100% done"
    assert "\r" not in comparison.stderr  # no bar
    assert comparison.stderr.index("[2/2] training gru") < comparison.stderr.index(lines[0])


def test_the_report_page_has_contents_settings_and_what_each_model_trained(comparison):
    report = comparison.report
    page = (comparison.out / "report.html").read_text()
    assert page == render_html(report)
    ids = re.findall(r'<h2 id="([^"]+)">', page)
    links = re.findall(r'<li><a href="#([^"]+)">', page)
    assert links == ids and {"results", "settings", "loss-over-time", "samples"} <= set(ids)
    settings = page[page.index('<h2 id="settings">'):]
    assert '<th class="text">model config</th>' in settings and '&quot;hidden&quot;: 32' in settings
    results = page[page.index('<h2 id="results">'):page.index("</table>", page.index('<h2 id="results">'))]
    heads = re.findall(r"<th>(.*?)</th>", results)
    assert heads == ["model", "params", "val<br>bpc", "steps", "chars<br>trained", "train<br>chars/s", "sample<br>chars/s"]
    for row in report["rows"]:
        assert row["steps"] == 120 and row["chars_trained"] == 120 * 4 * 16
        assert re.search(rf"<td>{row['model']}</td><td>[^<]+</td><td>[^<]+</td><td>120</td><td>7.68k</td>", results)
    # every header of every table in at most two lines, and a key under the results for its abbreviations
    assert all(th.count("<br>") <= 1 for th in re.findall(r"<th[^>]*>(.*?)</th>", page))
    assert "<i>val bpc</i>: validation loss in bits per character" in page
    # the Markdown: the same sections but the chart's, each linked from its contents by GitHub's anchor
    md = render_markdown(report)
    titles = re.findall(r"^## (.+)$", md, re.M)
    toc = re.findall(r"^\d+\. \[(.+)\]\(#(.+)\)$", md, re.M)
    assert titles[0] == "Contents" and [t for t, _ in toc] == titles[1:] and "Loss over time" not in titles
    assert all(a == re.sub(r"[^\w\- ]", "", t.lower()).replace(" ", "-") for t, a in toc)
    assert "| lstm | 1x32, embed 16" not in md and "| model | params | val bpc | steps | chars trained |" in md


def test_the_loss_chart_draws_each_training_record_and_marks_the_validations(comparison):
    page = (comparison.out / "report.html").read_text()
    chart = page[page.index('<h2 id="loss-over-time">'):]
    chart = chart[:chart.index("</svg>")]
    lines = re.findall(r'<polyline class="series" points="([^"]*)"', chart)
    marks = re.findall(r'<circle class="mark"', chart)
    assert len(lines) == 2 and "training" in chart and "validation" in chart  # a line per model, and the key
    for row, points in zip(comparison.report["rows"], lines):
        assert len(points.split()) == len(row["train_curve"]) == 12  # a record every 10 steps
        assert len(row["curve"]) == 3  # a validation every 40 steps
    assert len(marks) == 6


# --- compare end to end ---------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_compare_through_the_cli_writes_both_reports(tmp_path):
    corpus = tmp_path / "asides.txt"
    corpus.write_text(bracketed_text(30_000), encoding="utf-8")
    out = tmp_path / "report"
    result = run("compare", corpus, "--models", "lstm,transformer", "--max-time", "2s", "--params", "20k",
                 "--out", out, "--device", "cpu", "--precision", "fp32", "--quiet")
    assert result.exit_code == 0, result.output
    assert re.search(r"^\| lstm \|", result.stdout, re.M) and re.search(r"^\| transformer \|", result.stdout, re.M)
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    report = json.loads((out / "report.json").read_text())
    assert [r["model"] for r in report["rows"]] == ["lstm", "transformer"]
    for row in report["rows"]:
        assert 15_000 < row["params"] < 25_000  # sized to about 20k
        scored = json.loads(run("eval", out / "runs" / row["model"], corpus, "--json").stdout)
        assert row["val_loss"] == pytest.approx(scored["loss_nats"], rel=1e-6)  # what `charrnn eval` says
        assert row["sample_1_chars_per_s"] > 0 and row["sample_batched_chars_per_s"] > 0
        assert row["chars_trained"] > row["steps"] > 0
        assert row["curve"] and (out / "runs" / row["model"] / "best.pt").is_file() and row["train_curve"]
        assert row["sample"].strip() in md  # shown trimmed in a fenced block
    assert "| model | params | val bpc |" in md and "sample chars/s" in md and "peak memory" in md
    assert "Weights while sampling: lstm " in md and "transformer fp32" in md
    assert report["command"].endswith(f"--device cpu --precision fp32 --out {out}")
    assert report["brackets"]["pairs"] >= 10 and "Bits on the closing character" in md
    assert report["context_probe"]["lengths"][0] == 1 and set(report["context_probe"]["loss"]) == {"lstm", "transformer"}
    # gradients through time: the RNN reaches every k, the Transformer only inside its context
    grads = report["gradients"]["loss"]
    # (far back a barely trained LSTM's gradient may underflow fp32 to 0: a value, not "out of reach")
    assert len(grads["lstm"]) == 256 and all(g is not None and g >= 0 for g in grads["lstm"]) and grads["lstm"][0] > 0
    context = report["rows"][1]["model_config"]["context"]
    assert grads["transformer"][context - 2] is not None and grads["transformer"][context - 1] is None
    assert "Gradients through time" in md and "k=256" in md
    # memorization: shares in [0, 1] for each n, falling as n grows, for each model and the validation text
    for shares in [r["memorized"] for r in report["rows"]] + [report["memorized_validation"]]:
        assert list(shares) == ["10", "20", "40"] and 1 >= shares["10"] >= shares["20"] >= shares["40"] >= 0
    assert "validation text" in md and "n-grams in training text" in md
    for row in report["rows"]:
        assert row["macs_per_char"]["train"] > row["macs_per_char"]["sample"] > 0
    # the HTML stands alone: inline SVG charts, nothing fetched from the network
    assert page.count("<svg") >= 4 and not re.search(r"""(src|href)\s*=\s*["']?https?:""", page)
    assert "<table>" in page
    # and a second comparison into the same folder is refused, leaving the first intact
    again = run("compare", corpus, "--models", "lstm", "--max-time", "1s", "--out", out, "--quiet")
    assert "already holds a comparison" in one_line_error(again)
    assert (out / "report.md").read_text() == md


@pytest.mark.parametrize("args, message", [
    (["--models", "lstm,cnn"], "unknown model(s) cnn"),
    (["--models", "lstm,lstm"], "names a model twice"),
    (["--params", "many"], "not a parameter count"),
    (["--max-time", "soon"], "not a duration"),
])
def test_bad_compare_options(corpus, tmp_path, args, message):
    assert message in one_line_error(run("compare", corpus, "--out", tmp_path / "r", *args))
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_an_interrupted_comparison_exits_130_and_the_same_command_finishes_it(tmp_path, monkeypatch):
    from charrnn import checkpoint as ck
    from charrnn import compare as compare_module
    from charrnn import presets, training

    corpus = tmp_path / "play.txt"
    corpus.write_text(make_text(20_000), encoding="utf-8")
    out = tmp_path / "report"
    calls = []

    def in_process(opts, overrides):  # train_one without the child process; Ctrl-C during the first model
        calls.append((opts.resume, dict(overrides)))
        stop = None
        if len(calls) == 1:
            # Ctrl-C after the first step (the only one a run is sure to take), in a budget its setup cannot
            # have spent however loaded the machine (a spent budget ends the run "done" first); the resumed
            # run gets compare's own --max-time back (a stop may change on resume)
            overrides = {**overrides, "max_time": 600.0}
            stop = lambda t: t.hooks.on_step.append(lambda t: t.request_stop() if t.progress.step == 1 else None)  # noqa: E731
        return training.train(opts, overrides, on_trainer=stop)

    monkeypatch.setattr(compare_module, "train_one", in_process)
    # no timing of the presets (it adds nothing here, and on a busy machine it takes seconds)
    monkeypatch.setattr(presets, "measure_speed", lambda *args, **kw: 20_000.0)
    args = ["compare", corpus, "--models", "lstm,gru", "--max-time", "4s", "--out", out, "--device", "cpu",
            "--precision", "fp32", "--quiet"]
    first = run(*args)
    assert first.exit_code == 130 and "run the same command again" in first.stderr
    assert "estimated total" not in first.stderr and "measuring" not in first.stderr  # --quiet: no plan
    assert "Error" not in first.stderr and not (out / "report.json").exists()
    assert "unfinished comparison with other settings (max_time)" in one_line_error(
        run(*[a if a != "4s" else "5s" for a in args]))
    second = run(*args)
    assert second.exit_code == 0, second.output
    assert second.stderr == ""  # --quiet: no plan, no progress, no notices
    assert [(resume, "model" in o) for resume, o in calls] == [(False, True), (True, False), (False, True)]
    assert (out / "report.json").exists() and not (out / "compare.json").exists()
    steps = [r["step"] for r in ck.read_metrics(out / "runs" / "lstm", "train")]
    assert steps and steps == sorted(set(steps))  # continued from the interruption, each step once
    # and it ended as every finished run does, with its final validation (even with no budget left)
    assert ck.read_metrics(out / "runs" / "lstm", "val")[-1]["step"] == steps[-1]


def test_a_width_that_a_larger_presets_heads_do_not_divide_takes_a_preset_they_do(corpus, tmp_path, monkeypatch):
    """--hidden 64 with a budget that would pick `large` (6 heads): that preset is skipped, not a traceback."""
    from charrnn import presets

    monkeypatch.setattr(presets, "measure_speed", lambda settings, *args, **kw: _speed(settings))
    out = tmp_path / "run"
    result = run("train", corpus, "--out", out, "--model", "transformer", "--hidden", "64", "--max-time", "1h",
                 "--max-steps", "2", "--device", "cpu", "--precision", "fp32", "--quiet")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["hidden"] == 64 and 64 % config["model"]["heads"] == 0
    assert "must divide hidden" in one_line_error(run("train", corpus, "--out", tmp_path / "r2", "--model",
                                                      "transformer", "--hidden", "61", "--max-steps", "2", "--quiet"))


def _speed(settings):
    """A fast machine (every preset fits a 1-hour budget), that refuses what the real timing would."""
    if settings["hidden"] % settings["heads"]:
        raise ValueError("heads must divide hidden")
    return 1e9
