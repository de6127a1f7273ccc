"""`charrnn export`: every family's ONNX step sampled by ONNX Runtime equals `charrnn sample -t 0`; the
Hugging Face-style folder loads back and samples as the run does, and a damaged one is one line; the
page, in headless Chromium, writes the text `charrnn sample -t 0` writes."""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path
from urllib.parse import quote, urlencode

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from browser import render, require_chromium
from charrnn.checkpoint import load_run
from charrnn.cli import cli
from charrnn.onnx_runtime import OnnxModel
from charrnn.training import RunOptions, train
from charrnn.sampler import Sampler
from conftest import make_text

KINDS = ("lstm", "gru", "rnn", "mingru", "minlstm", "transformer")
COMMON = dict(n_layers=2, hidden=32, dropout=0.0, batch_size=8, lr=1e-2, warmup_steps=5, seed=3, max_steps=80)
OWN = {"lstm": dict(embed=16, seq_len=32), "gru": dict(embed=16, seq_len=32), "rnn": dict(embed=16, seq_len=32),
       "mingru": dict(seq_len=32), "minlstm": dict(seq_len=32), "transformer": dict(heads=2, context=24)}
PRIME = "KING:\n"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny trained run per kind, trained when first asked for (read-only)."""
    root = tmp_path_factory.mktemp("export-runs")
    corpus = root / "play.txt"
    corpus.write_text(make_text(20_000), encoding="utf-8")
    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            out = root / kind
            train(RunOptions(corpus=str(corpus), out=out, precision="fp32", device="cpu", quiet=True, sample_len=0),
                  dict(COMMON, model=kind, **OWN[kind]))
            made[kind] = out
        return made[kind]

    return get


def greedy_cli(run_dir, length: int) -> str:
    result = run("sample", run_dir, "--prime", PRIME, "--length", length, "-t", "0", "--weights", "fp32", "--no-stream")
    assert result.exit_code == 0, result.output
    return result.stdout[:-1]  # (the line break echo adds)


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_runtime_samples_the_text_charrnn_samples(runs, kind, tmp_path):
    graph = tmp_path / "model.onnx"
    assert run("export", runs(kind), "--format", "onnx", "-o", graph).exit_code == 0
    onnx_model = OnnxModel(graph, threads=1)
    assert onnx_model.meta["model"]["model"] == kind and onnx_model.meta["about"]["corpus"] == "play.txt"
    assert onnx_model.generate(PRIME, 1000, temperature=0)[0] == greedy_cli(runs(kind), 1000)
    # the logits along that path, step by step, against the model's own step (fp32)
    model, tok, _, _ = load_run(runs(kind))
    ids = torch.as_tensor(tok.encode(PRIME), dtype=torch.long)[None].expand(2, -1)  # two streams: the batch is dynamic
    want, state = model.prefill(ids)
    got, ort_state = onnx_model.prefill(ids.numpy())
    worst = 0.0
    for _ in range(1000):
        worst = max(worst, float((want - torch.from_numpy(got)).abs().max()))
        nxt = want.argmax(-1)
        want, state = model.step(nxt, state)
        got, ort_state = onnx_model.step(nxt.numpy(), ort_state)
    assert worst < 1e-4, worst


def test_int8_onnx_graph_holds_int8_matrices_and_stays_close(runs, tmp_path):
    import onnx

    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    for path, weights in ((fp32, "fp32"), (int8, "int8")):
        assert run("export", runs("lstm"), "--format", "onnx", "--weights", weights, "-o", path).exit_code == 0
    ops = {node.op_type for node in onnx.load(int8).graph.node}
    assert "MatMulInteger" in ops and "Gemm" not in ops, ops
    assert int8.stat().st_size < 0.6 * fp32.stat().st_size
    a, b = OnnxModel(fp32), OnnxModel(int8)
    ids = np.array([a.start_ids(PRIME)])
    (la, _), (lb, _) = a.prefill(ids), b.prefill(ids)
    assert 0 < np.abs(la - lb).max() < 0.2 * np.abs(la).max()


def test_sample_engine_onnxruntime_draws_what_torch_draws(runs):
    for kind in ("lstm", "transformer"):
        args = ("sample", runs(kind), "--prime", PRIME, "--length", 200, "-t", 0.8, "--seed", 5, "--weights", "fp32",
                "--no-stream")
        torch_text, ort_text = run(*args), run(*args, "--engine", "onnxruntime")
        assert ort_text.exit_code == 0 and ort_text.stdout == torch_text.stdout, ort_text.output


@pytest.mark.parametrize("kind", ("lstm", "minlstm", "transformer"))  # a tied embedding in the last
def test_hf_folder_samples_as_the_run_does(runs, kind, tmp_path):
    folder = tmp_path / "hf"
    assert run("export", runs(kind), "--format", "hf", "-o", folder).exit_code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                        "tokenizer.json"]
    card = (folder / "README.md").read_text()
    about = json.loads((folder / "config.json").read_text())["about"]
    assert f"{about['val_loss_nats']:.4f} nats ({about['val_bpc']:.4f} bits) per character" in card
    assert "play.txt" in card and "20,000 characters" in card and f"{kind} 2x32" in card and "machine" in card
    for weights in ("fp32", "auto"):
        a = Sampler.load(runs(kind), weights=weights).sample(prime=PRIME, length=300, temperature=0.9, seed=2)
        b = Sampler.load(folder, weights=weights).sample(prime=PRIME, length=300, temperature=0.9, seed=2)
        assert a == b
    args = ("--prime", PRIME, "--length", 100, "--seed", 4, "--no-stream")
    assert run("sample", folder, *args).stdout == run("sample", runs(kind), *args).stdout


def _rewrite_config(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def _damage_weights(folder: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    change(weights)
    save_file(weights, folder / "model.safetensors")


DAMAGE = {
    "truncated weights": (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:200]),
                          "model.safetensors is unreadable"),
    "a pickle for weights": (lambda f: torch.save({"x": torch.zeros(2)}, f / "model.safetensors"), "unreadable"),
    "a wrong shape": (lambda f: _damage_weights(f, lambda w: w.__setitem__("head.bias", torch.zeros(3))),
                      "weights do not fit the model config"),
    "a missing weight": (lambda f: _damage_weights(f, lambda w: w.pop("head.bias")), "weights do not fit"),
    "NaN weights": (lambda f: _damage_weights(f, lambda w: w["head.bias"].fill_(float("nan"))), "NaN"),
    "a huge config": (lambda f: _rewrite_config(f, lambda c: c["model_config"].update(hidden=10**6)),
                      "the config describes"),
    "a negative size": (lambda f: _rewrite_config(f, lambda c: c["model_config"].update(n_layers=-1)), ">= 1"),
    "an unknown kind": (lambda f: _rewrite_config(f, lambda c: c["model_config"].update(model="os.system")),
                        "model_config.model is not one of"),
    "not JSON": (lambda f: (f / "config.json").write_text("{"), "config.json is not JSON"),
    "a foreign config": (lambda f: (f / "config.json").write_text('{"model_type": "bert"}'), "no format"),
    "another vocabulary": (lambda f: (f / "tokenizer.json").write_text(
        json.dumps(json.loads((f / "tokenizer.json").read_text()) | {"model": {"type": "BPE", "vocab": {"a": 0},
                                                                               "merges": []}})),
        "tokenizer.json has 1 tokens"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_hf_folder_is_one_line(runs, tmp_path, damage):
    folder = tmp_path / "hf"
    assert run("export", runs("lstm"), "--format", "hf", "-o", folder).exit_code == 0
    do, message = DAMAGE[damage]
    do(folder)
    result = run("sample", folder, "--length", 10)
    assert result.exit_code == 2 and result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr, result.stderr


def test_export_without_the_extra_says_what_to_install(runs, tmp_path, monkeypatch):
    for module in ("onnx", "onnxruntime", "safetensors", "safetensors.torch"):
        monkeypatch.setitem(sys.modules, module, None)  # an import of it fails, as when it is not installed
    for fmt in ("onnx", "hf"):
        result = run("export", runs("lstm"), "--format", fmt, "-o", tmp_path / f"out-{fmt}")
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert "pip install 'charrnn-toolkit[export]'" in result.stderr
        assert not (tmp_path / f"out-{fmt}").exists()
    assert run("export", runs("lstm"), "--format", "html", "-o", tmp_path / "p.html").exit_code == 0


def test_bad_export_requests_are_one_line(runs, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    (tmp_path / "file").write_text("x")
    for args, message in ((["--format", "hf", "-o", tmp_path / "file"], "is a file"),
                          (["--format", "html", "-o", tmp_path], "is a folder"),
                          (["--format", "hf", "--weights", "int8", "-o", tmp_path / "x"], "must be one of fp32"),
                          (["--format", "hf", "-o", runs("lstm")], "would overwrite a training run's files"),
                          (["--format", "onnx", "-o", runs("lstm") / "best.pt"], "would overwrite")):
        result = run("export", runs("lstm"), *args)
        assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.output
    assert (tmp_path / "file").read_text() == "x"
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    with pytest.raises(Exception, match="not a charrnn ONNX step graph"):
        OnnxModel(bad)


def test_a_family_without_a_portable_step_is_refused_naming_those_that_export(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import toy_family  # registers "leaky"

    from charrnn.families import Family

    monkeypatch.setattr(toy_family.LeakyFamily, "portable", Family.portable)  # as a family that gives none

    corpus = tmp_path / "play.txt"
    corpus.write_text(make_text(3_000), encoding="utf-8")
    assert run("train", corpus, "--model", "leaky", "--out", tmp_path / "r", "--max-steps", "2", "--precision", "fp32",
               "--device", "cpu", "--quiet").exit_code == 0
    result = run("export", tmp_path / "r", "--format", "html", "-o", tmp_path / "p.html")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "cannot be exported" in result.stderr
    named = set(result.stderr.rstrip("\n").rpartition("these can: ")[2].split(", "))
    assert named == {"lstm", "gru", "rnn", "mingru", "minlstm", "transformer"}, result.stderr  # (in registration order)


def fragment(**params) -> str:
    """The page's settings as a link carries them (a line break in the prime included)."""
    return urlencode(params, quote_via=quote)


def page_text(dom: str) -> str | None:
    m = re.search(r'<div id="out" data-done="1">(.*?)</div>', dom, re.S)
    return html.unescape(m.group(1)) if m else None


@pytest.mark.parametrize("kind", KINDS)
def test_the_page_writes_the_text_charrnn_samples(runs, kind, tmp_path):
    require_chromium()
    page = tmp_path / "play.html"
    assert run("export", runs(kind), "--format", "html", "--weights", "fp32", "-o", page).exit_code == 0
    shown = render(page, fragment=fragment(prime=PRIME, temperature=0, length=300, go=1))
    assert shown.console_errors == [] and '<div id="errors"></div>' in shown.dom
    assert 'data-engine="wasm"' in shown.dom  # the matrix products ran in WebAssembly
    assert page_text(shown.dom) == greedy_cli(runs(kind), 300)
    assert f"{kind} 2x32" in shown.dom and "play.txt" in shown.dom  # the line that says what model it is


def test_the_page_in_plain_javascript_and_with_int8_weights(runs, tmp_path):
    require_chromium()
    want = greedy_cli(runs("lstm"), 300)
    fp32, int8 = tmp_path / "fp32.html", tmp_path / "int8.html"
    for page, weights in ((fp32, "fp32"), (int8, "int8")):
        assert run("export", runs("lstm"), "--format", "html", "--weights", weights, "-o", page).exit_code == 0
    shown = render(fp32, fragment=fragment(prime=PRIME, temperature=0, length=300, go=1, js=1))
    assert shown.console_errors == [] and 'data-engine="js"' in shown.dom
    assert page_text(shown.dom) == want
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size  # a tiny model: the script is much of the page
    shown = render(int8, fragment=fragment(prime=PRIME, temperature=0.8, top_p=0.9, length=300, go=1))
    text = page_text(shown.dom)
    assert shown.console_errors == [] and text.startswith(PRIME) and len(text) == len(PRIME) + 300
