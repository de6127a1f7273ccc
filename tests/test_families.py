"""The model-family contract: a plug-in family no other file knows trains, samples, evaluates,
compares and exports through the CLI; shared code never names a kind of model."""

import json
import math
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_text

from charrnn.cli import cli
from charrnn.families import Family, family_of, kinds, register

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "charrnn"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def plugin(monkeypatch):
    """The test plug-in (tests/toy_family.py), registered here and, through CHARRNN_FAMILIES, in every
    process compare spawns."""
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("CHARRNN_FAMILIES", "toy_family")
    monkeypatch.setenv("PYTHONPATH", f"{TESTS}:{TESTS.parent}")
    import toy_family  # noqa: F401  (registers "leaky")

    return "leaky"


@pytest.mark.slow
def test_a_plugin_family_trains_samples_evaluates_and_compares(plugin, tmp_path):
    corpus = tmp_path / "play.txt"
    corpus.write_text(make_text(20_000), encoding="utf-8")
    assert plugin in kinds() and plugin in run("models").output
    out = tmp_path / "run"
    result = run("train", corpus, "--model", plugin, "--out", out, "--max-steps", "60", "--eval-interval", "30",
                 "--precision", "fp32", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["model"] == plugin and config["run"]["preset"]["preset"] == "tiny"
    assert "embed" not in config["model"] and "heads" not in config["model"]  # options it does not read
    sample = run("sample", out, "--prime", "KING", "--length", "60", "--seed", "1")
    assert sample.exit_code == 0 and sample.output.startswith("KING") and len(sample.output.rstrip("\n")) >= 60
    ev = run("eval", out, corpus, "--json")
    assert ev.exit_code == 0 and json.loads(ev.output)["loss_nats"] < 3.0  # below a uniform guess (ln 40)
    info = run("info", out)
    assert info.exit_code == 0 and plugin in info.output
    greedy = run("sample", out, "--prime", "KING", "--length", "60", "--temperature", "0").output
    assert run("export", out, "--format", "onnx", "-o", tmp_path / "leaky.onnx").exit_code == 0
    onnx = run("sample", out, "--prime", "KING", "--length", "60", "--temperature", "0", "--engine", "onnxruntime")
    assert onnx.exit_code == 0 and onnx.output == greedy
    assert run("export", out, "--format", "hf", "-o", tmp_path / "hf").exit_code == 0
    assert run("sample", tmp_path / "hf", "--prime", "KING", "--length", "60", "--temperature", "0").output == greedy
    page = run("export", out, "--format", "html", "-o", tmp_path / "p.html")
    assert page.exit_code == 2 and "the page has no step for a leaky model" in page.stderr
    report = tmp_path / "report"
    cmp = run("compare", corpus, "--models", plugin, "--max-time", "2s", "--out", report, "--quiet")
    assert cmp.exit_code == 0, cmp.output
    row = json.loads((report / "report.json").read_text())["rows"][0]
    # it trained and was scored; how far it learned in 2 s depends on the machine (train and eval showed it learns)
    assert row["model"] == plugin and row["steps"] >= 1 and math.isfinite(row["val_loss"])
    assert row["chosen_by"] == "one fixed preset"


def test_a_plugin_family_s_own_checks_and_the_options_it_does_not_read(plugin, tmp_path):
    corpus = tmp_path / "play.txt"
    corpus.write_text(make_text(5_000), encoding="utf-8")
    for args, message in ((["--embed", "8"], "--embed cannot be used with --model leaky"),
                          (["--layers", "2"], "a leaky average has one layer")):
        result = run("train", corpus, "--model", plugin, "--out", tmp_path / "r", "--max-steps", "2", *args)
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert not (tmp_path / "r" / "last.pt").exists()


def test_a_plugin_family_s_own_option_is_a_flag_that_trains_checks_and_is_recorded(plugin, tmp_path):
    corpus = tmp_path / "play.txt"
    corpus.write_text(make_text(5_000), encoding="utf-8")
    assert "--decay-init" in run("train", "--help").output
    out = tmp_path / "r"
    result = run("train", corpus, "--model", plugin, "--out", out, "--max-steps", "2", "--decay-init", "2.5",
                 "--device", "cpu", "--precision", "fp32", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["model"]["decay_init"] == 2.5
    from charrnn.checkpoint import load_run

    model = load_run(out)[0]
    assert model.config.decay_init == 2.5 and model.decay.detach().mean().item() == pytest.approx(2.5, abs=0.2)
    bad = run("train", corpus, "--model", plugin, "--out", tmp_path / "b", "--decay-init", "11", "--quiet")
    assert bad.exit_code == 2 and "--decay-init" in bad.stderr and not (tmp_path / "b").exists()
    other = run("train", corpus, "--model", "lstm", "--out", tmp_path / "c", "--decay-init", "1", "--quiet")
    assert other.exit_code == 2 and "--decay-init cannot be used with --model lstm" in other.stderr


def test_models_lists_every_kind_with_its_presets():
    out = run("models").output
    for kind in ("lstm", "gru", "rnn", "mingru", "minlstm", "transformer"):
        assert kind in out
    assert "presets small, medium" in out


def test_a_kind_is_built_by_one_family_only():
    class Impostor(Family):
        name = "impostor"
        kinds = ("lstm",)

    with pytest.raises(ValueError, match="already rnn's"):
        register(Impostor())
    assert type(family_of("lstm")).__name__ == "RNNFamily"


def test_unknown_kinds_are_refused_in_one_line(tmp_path):
    corpus = tmp_path / "play.txt"
    corpus.write_text(make_text(2_000), encoding="utf-8")
    result = run("train", corpus, "--model", "lstm2")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "'lstm2' is not one of" in result.stderr


def test_shared_code_asks_the_family_instead_of_naming_a_kind():
    named = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
             if re.search(r"""["']transformer["']""", p.read_text())}
    assert named == {"families/transformer/__init__.py"}
    assert "inspect.signature" not in "".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    assert not [p for p in PACKAGE.rglob("*.py") if "stateful" in p.read_text() and "families" not in p.parts
                and p.name != "trainer.py"]  # the trainer's docstring speaks of stateful models
