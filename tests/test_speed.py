"""The speed work: the int8 sampling step, the bare reference loop, --compile, the GPU paths, and the
speed suite itself (run on toy sizes: it must work, its numbers are not judged here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY

from charrnn import Sampler
from charrnn import checkpoint as ck
from charrnn.batches import StreamBatcher
from charrnn.device import cpu_supports_bf16
from charrnn.errors import CharrnnError
from charrnn.families import model_config
from charrnn.families.rnn import RNN_TYPES
from charrnn.families.rnn.model import CharRNN
from charrnn.quant import int8_supported
from charrnn.trainer import TrainConfig, Trainer
from charrnn.training import RunOptions, train

REPO = Path(__file__).resolve().parents[1]
needs_int8 = pytest.mark.skipif(not int8_supported(), reason="no fbgemm in this torch build")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _model(kind, layers=2, hidden=48, vocab=50):
    torch.manual_seed(0)
    return CharRNN(model_config(vocab_size=vocab, model=kind, n_layers=layers, hidden=hidden, embed=16)).eval()


def _steps(model, idx, weights):
    state, out = None, []
    for t in range(idx.size(1)):
        logits, state = model.step(idx[:, t], state, weights=weights)
        out.append(logits)
    return torch.stack(out, 1), state


# --- the int8 step ----------------------------------------------------------------------------------
@needs_int8
@pytest.mark.parametrize("kind", RNN_TYPES)
def test_int8_step_stays_close_to_the_exact_step(kind):
    m = _model(kind, layers=3)
    idx = torch.randint(0, 50, (5, 40))
    exact, exact_state = _steps(m, idx, "fp32")
    approx, approx_state = _steps(m, idx, "int8")
    # int8 weights (per-row scales) and 7-bit activations: a few % of the logits' spread at worst over
    # 40 steps (measured: 2-9 %), and a distribution a KL of ~1e-6 nats away
    err = (approx - exact).abs().max().item()
    assert 0 < err < 0.15 * exact.std().item(), err  # > 0: the int8 path really ran
    p, q = exact.log_softmax(-1), approx.log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1).mean().item()
    assert kl < 1e-4, kl
    for a, b in zip(exact_state, approx_state):
        torch.testing.assert_close(b, a, atol=0.03, rtol=0)


@needs_int8
def test_int8_sampler_is_reproducible_and_follows_the_cli(trained_run):
    from click.testing import CliRunner

    from charrnn.cli import cli

    s = Sampler.load(trained_run, weights="int8")
    a = s.sample(prime="KING:", length=80, seed=3)
    assert a == s.sample(prime="KING:", length=80, seed=3) and len(a) == len("KING:") + 80
    greedy = Sampler.load(trained_run, weights="fp32").sample(prime="KING:", length=20, temperature=0)
    assert s.sample(prime="KING:", length=20, temperature=0)[:12] == greedy[:12]  # a tiny model: near-ties later
    result = CliRunner().invoke(cli, ["sample", str(trained_run), "--weights", "int8", "--length", "30", "--seed", "1"])
    assert result.exit_code == 0 and len(result.stdout) == 30 + 1  # and the final newline


def test_step_weights_auto_and_refusals(trained_run):
    model, tok, _, _ = ck.load_run(trained_run)
    assert Sampler(model, tok, "cpu").weights == ("int8" if int8_supported() else "fp32")  # auto, on the numbers
    assert Sampler(model, tok, "cpu", weights="fp32").weights == "fp32"
    with pytest.raises(CharrnnError, match="cannot sample with"):
        Sampler(model, tok, "cpu", weights="int4")
    with pytest.raises(CharrnnError, match="must be one of"):
        model.step(torch.tensor([1]), weights="int4")


def test_step_scratch_does_not_leak_between_batch_sizes_or_calls():
    m = _model("lstm")
    idx = torch.randint(0, 50, (3, 6))
    first, _ = _steps(m, idx, "fp32")
    _steps(m, torch.randint(0, 50, (7, 4)), "fp32")  # another batch size in between
    again, _ = _steps(m, idx, "fp32")
    assert torch.equal(first, again)
    logits, state = m.step(idx[:, 0])
    kept = [s.clone() for s in state]
    m.step(idx[:, 1], state)
    assert all(torch.equal(a, b) for a, b in zip(state, kept))  # a returned state is never overwritten


# --- the reference loop of the speed suite -----------------------------------------------------------
@pytest.mark.parametrize("kind", RNN_TYPES)
def test_bare_reference_loop_does_the_same_work_as_the_trainer(kind):
    """The bar 'trainer >= 0.95x the bare loop' means something only if the two do the same work:
    with a constant learning rate they must produce the same losses, step for step."""
    from benchmarks.reference import BareRNN, bare_steps

    vocab, B, T = 40, 4, 16
    ids = np.random.default_rng(0).integers(0, vocab, 5000)
    torch.manual_seed(0)
    model = CharRNN(model_config(vocab_size=vocab, model=kind, n_layers=2, hidden=32, embed=8))
    bare = BareRNN(vocab, kind, 2, 32, 8)
    bare.load_state_dict(model.state_dict())
    batcher = StreamBatcher(ids, B, T)
    cfg = TrainConfig(batch_size=B, seq_len=T, lr=3e-3, warmup_steps=0, min_lr_ratio=1.0, max_steps=6)
    trainer = Trainer(model, cfg, batcher, torch.device("cpu"), "fp32")
    ours = []
    trainer.hooks.on_step.append(lambda t: ours.append(t.loss.item()))
    trainer.run()
    theirs = [loss.item() for loss in bare_steps(bare, [batcher.batch(0, k) for k in range(6)], lr=3e-3)]
    assert ours == theirs
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), bare.state_dict().values()))


# --- --compile --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_compiled_training_saves_plain_checkpoints_that_resume(corpus, tmp_path):
    settings = dict(TINY, max_steps=6, log_interval=1, eval_interval=3)
    opts = dict(corpus=str(corpus), device="cpu", precision="fp32", quiet=True, sample_len=0)
    train(RunOptions(out=tmp_path / "eager", **opts), settings)
    train(RunOptions(out=tmp_path / "compiled", compile=True, **opts), settings)
    ckpt = torch.load(tmp_path / "compiled" / ck.LAST, weights_only=True)
    assert set(ckpt["model"]) == set(torch.load(tmp_path / "eager" / ck.LAST, weights_only=True)["model"])
    assert not any("_orig_mod" in k for k in ckpt["model"])
    losses = {name: [json.loads(line)["loss"] for line in (tmp_path / name / ck.METRICS).read_text().splitlines()
                     if json.loads(line)["kind"] == "train"] for name in ("eager", "compiled")}
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-4)
    # a compiled run resumes (compiled or not) and samples from its plain checkpoint
    summary = train(RunOptions(out=tmp_path / "compiled", resume=True, compile=True, **opts), {"max_steps": 8})
    assert summary["step"] == 8
    assert len(Sampler.load(tmp_path / "compiled").sample(length=10, seed=0)) == 10


# --- the speed suite ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_speed_suite_runs_every_section_and_never_invents_a_number(tmp_path):
    out = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("CHARRNN_CORPORA", None)
    record = tmp_path / "speed.jsonl"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out), "--record", str(record)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not record.exists()  # toy sizes are never appended to the committed record
    results = json.loads(out.read_text())
    assert set(results["sections"]) == {"ceiling", "training", "sampling", "encoding", "memory"}
    rows = {r["name"]: r for sec in results["sections"].values() for r in sec["rows"]}
    for r in rows.values():  # a number, or the reason there is none
        assert (r["value"] is not None and np.isfinite(r["value"])) or r["note"], r
    bf16 = [r for name, r in rows.items() if "bf16" in name]
    assert bf16 and all((r["value"] is None) == (not cpu_supports_bf16()) for r in bf16)
    assert rows["ids identical to tokenizers'"]["value"] == 1.0
    fused = rows["fused forward loss (fp32)"]["value"]
    assert rows["step-path loss, fp32 weights"]["value"] == pytest.approx(fused, abs=1e-4)
    ratios = [r["value"] for name, r in rows.items() if name.endswith("trainer / bare") and r["value"] is not None]
    precisions = 2 if cpu_supports_bf16() else 1  # fp32, and bf16 where this CPU has it natively
    assert len(ratios) == 3 * precisions and all(x > 0 for x in ratios)  # toy sizes, a shared machine: only sanity
    assert all(b["met"] is None for sec in results["sections"].values() for b in sec["bars"])  # --quick: not judged
    assert "== bars ==" in proc.stdout


def test_training_section_without_native_bf16_reports_no_bf16_number(monkeypatch):
    """The branch a CPU without native bf16 takes, forced on any CPU: bf16 rows say why they have no
    number, and only fp32 is timed."""
    from benchmarks import training

    monkeypatch.setattr(training, "cpu_supports_bf16", lambda: False)
    sec = training.measure({}, quick=True, kinds=("rnn",))
    rows = {r.name: r for r in sec.rows}
    bf16 = [r for name, r in rows.items() if "bf16" in name]
    assert bf16 and all(r.value is None and "bf16" in r.note for r in bf16)
    ratios = [r for name, r in rows.items() if name.endswith("trainer / bare")]
    assert [r.name for r in ratios if r.value is not None] == ["RNN 2x32 B4xT16 fp32 trainer / bare"]


# --- GPU paths (run on a CUDA machine) ---------------------------------------------------------------
@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_training_step_never_waits_for_the_gpu(precision):
    """No host sync inside a step: batches go pinned and non-blocking, GradScaler, clipping and the
    fused AdamW stay on the device. Any synchronising CUDA call raises under sync debug mode."""
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("GPU has no bf16")
    vocab, B, T = 60, 8, 32
    ids = np.random.default_rng(0).integers(0, vocab, 50_000)
    batcher = StreamBatcher(ids, B, T)
    torch.manual_seed(0)
    model = CharRNN(model_config(vocab_size=vocab, model="lstm", n_layers=2, hidden=64, embed=16))
    dev = torch.device("cuda")
    trainer = Trainer(model, TrainConfig(batch_size=B, seq_len=T, max_steps=100), batcher, dev, precision)

    def step(k):
        x, y = batcher.batch(0, k)
        x, y = x.pin_memory().to(dev, non_blocking=True), y.pin_memory().to(dev, non_blocking=True)
        trainer.train_step(x, y, 1e-3)

    for k in range(3):  # warm-up: cuDNN plans, the scaler's lazy state, the allocator
        step(k)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for k in range(3, 8):
            step(k)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(trainer.loss).item()


@pytest.mark.cuda
@needs_cuda
def test_cuda_training_with_auto_precision_and_compile_learns_and_saves_plain_checkpoints(corpus, tmp_path):
    settings = dict(TINY, hidden=128, max_steps=80, log_interval=10, lr=1e-2)
    summary = train(RunOptions(corpus=str(corpus), out=tmp_path / "run", device="cuda", precision="auto", quiet=True,
                               sample_len=0, compile=True), settings)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / ck.METRICS).read_text().splitlines()
              if json.loads(line)["kind"] == "train"]
    assert losses[-1] < losses[0] - 1.0 and summary["best_val"] is not None
    ckpt = torch.load(tmp_path / "run" / ck.LAST, weights_only=True)
    assert not any("_orig_mod" in k for k in ckpt["model"])
    assert all(v.device.type == "cpu" for v in ckpt["model"].values())
    sampler = Sampler.load(tmp_path / "run", device="cuda")
    assert sampler.weights == "fp32"  # auto: int8 is a CPU path
    text = sampler.sample(prime="KING:", length=50, seed=0)
    assert text.startswith("KING:") and len(text) == 55
    with pytest.raises(CharrnnError, match="int8 weights need a CPU"):
        Sampler.load(tmp_path / "run", device="cuda", weights="int8")
