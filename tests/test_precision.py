"""What `--precision` means on each kind of machine, and fp16's gradient scaler end to end.

Every branch is forced (the CPU's flags, the GPU's compute capability, the scaler): what a branch does
must not depend on the machine the tests run on."""

import json
import math

import pytest
import torch
from conftest import TINY

from charrnn import checkpoint as ck
from charrnn import device, training
from charrnn import trainer as trainer_module
from charrnn.errors import CharrnnError
from charrnn.training import RunOptions, train

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
SKYLAKE = "fpu sse sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"  # no AVX-512 BF16
TINY_GPT = dict(model="transformer", n_layers=2, hidden=32, heads=2, context=32, dropout=0.0, batch_size=4,
                lr=3e-3, warmup_steps=5, seed=7)


def _records(run, kind):
    return [r for r in map(json.loads, (run / ck.METRICS).read_text().splitlines()) if r["kind"] == kind]


# --- the probes ---------------------------------------------------------------------------------------
def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: {SKYLAKE} amx_bf16\n\nprocessor\t: 1\n")
    assert {"avx512f", "amx_bf16"} <= device.cpu_flags(info) and "avx512_bf16" not in device.cpu_flags(info)
    assert device.cpu_flags(tmp_path / "missing") == frozenset()  # not Linux: nothing known, so no bf16


@pytest.mark.parametrize("flags, native", [(SKYLAKE, False), (SKYLAKE + " avx512_bf16", True),
                                           (SKYLAKE + " amx_bf16 amx_tile", True), ("", False)])
def test_cpu_auto_is_bf16_only_with_native_bf16(monkeypatch, flags, native):
    # oneDNN says it has bf16 on any AVX-512 CPU, emulated there: its answer must not decide
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(device, "cpu_flags", lambda *a: frozenset(flags.split()))
    assert device.resolve_precision("auto", CPU) == ("bf16" if native else "fp32")
    if native:
        assert device.resolve_precision("bf16", CPU) == "bf16"
    else:
        with pytest.raises(CharrnnError, match="no native bf16"):
            device.resolve_precision("bf16", CPU)


@pytest.mark.parametrize("capability, auto", [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_cuda_auto_follows_the_compute_capability(monkeypatch, capability, auto):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # it counts emulation
    assert device.resolve_precision("auto", CUDA) == auto
    assert device.resolve_precision("fp16", CUDA) == "fp16"
    if auto == "fp16":
        with pytest.raises(CharrnnError, match=rf"compute capability {capability[0]}\.{capability[1]}\) has no native bf16"):
            device.resolve_precision("bf16", CUDA)


def test_tf32_is_off_wherever_charrnn_takes_a_cuda_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        for name in ("cuda", "auto"):
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
            assert device.resolve_device(name) == CUDA
            assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


# --- fp16's gradient scaler, forced on the CPU --------------------------------------------------------
def _opts(corpus, out, **kw):
    return RunOptions(corpus=str(corpus), out=out, precision="fp32", device="cpu", quiet=True, sample_len=0, **kw)


@pytest.fixture
def scaler_over_fp32(monkeypatch):
    """The RNNs' fp16 path without fp16 arithmetic (oneDNN has no fp16 LSTM on most CPUs): the trainer's
    gradient scaler enabled over fp32 compute."""
    monkeypatch.setattr(trainer_module, "grad_scaler", lambda dev, prec: torch.amp.GradScaler("cpu", enabled=True))


def _inject(steps, where):
    """An on_trainer hook that makes the steps in `steps` overflow: the gradient (where="grad") or the
    loss itself (where="loss")."""
    def hook(trainer):
        model = trainer.model
        if where == "grad":
            model.head.weight.register_hook(lambda g: g * math.inf if trainer.progress.step in steps else g)
        else:
            model.head.register_forward_hook(
                lambda m, i, out: out * math.nan if trainer.progress.step in steps and m.training else out)
    return hook


def test_scaler_overflows_are_counted_apart_and_never_stop_the_run(corpus, tmp_path, scaler_over_fp32):
    settings = dict(TINY, n_layers=1, max_steps=30, log_interval=5, diverge_after=5)
    summary = train(_opts(corpus, tmp_path / "run"), settings, on_trainer=_inject(range(3, 11), "grad"))
    assert summary["reason"] == "done" and summary["step"] == 30 and summary["skipped"] == 0
    records = _records(tmp_path / "run", "train")
    assert sum(r["scaler_skipped"] for r in records) == 8 and sum(r["skipped"] for r in records) == 0
    assert records[-1]["loss_scale"] == 2.0 ** 16 / 2 ** 8  # halved at each of the 8 overflows
    saved = ck.load_checkpoint(tmp_path / "run" / ck.LAST)["trainer"]
    assert saved["progress"]["scaler_skipped"] == 8 and saved["scaler"]["scale"] == 2.0 ** 8


def test_a_non_finite_loss_under_the_scaler_still_counts_toward_divergence(corpus, tmp_path, scaler_over_fp32):
    from charrnn.errors import TrainingDiverged

    settings = dict(TINY, n_layers=1, max_steps=30, log_interval=5, diverge_after=5)
    with pytest.raises(TrainingDiverged, match=r"\d+ updates in a row, up to step 10, had a non-finite loss"):
        train(_opts(corpus, tmp_path / "run"), settings, on_trainer=_inject(range(3, 30), "loss"))


def test_a_scale_driven_below_one_is_divergence(corpus, tmp_path, scaler_over_fp32):
    from charrnn.errors import TrainingDiverged

    settings = dict(TINY, n_layers=1, max_steps=40, log_interval=5, diverge_after=5)
    with pytest.raises(TrainingDiverged, match="gradient scale fell to"):
        train(_opts(corpus, tmp_path / "run"), settings, on_trainer=_inject(range(2, 40), "grad"))


@pytest.fixture
def fp16_on_the_cpu(monkeypatch):
    """--precision fp16 as on a GPU: fp16 autocast (linear layers: the Transformer) and the real scaler,
    growing its scale every 4 clean steps instead of 2000, so that a short run moves it."""
    allowed = device.resolve_precision
    monkeypatch.setattr(training, "resolve_precision", lambda name, dev: "fp16" if name == "fp16" else allowed(name, dev))
    monkeypatch.setattr(trainer_module, "grad_scaler",
                        lambda dev, prec: torch.amp.GradScaler(dev.type, enabled=prec == "fp16", growth_interval=4))


@pytest.mark.slow
def test_an_fp16_transformer_trains_with_its_scaler_and_resumes_exactly(corpus, tmp_path, fp16_on_the_cpu):
    settings = dict(TINY_GPT, max_steps=30, log_interval=1, eval_interval=10)
    opts = lambda out: RunOptions(corpus=str(corpus), out=out, precision="fp16", device="cpu", quiet=True,  # noqa: E731
                                  sample_len=0)
    train(opts(tmp_path / "a"), settings)
    assert json.loads((tmp_path / "a" / ck.CONFIG).read_text())["precision"] == "fp16"
    vals = [r["loss_nats"] for r in _records(tmp_path / "a", "val")]
    assert vals[-1] < vals[0] - 0.1  # it learns in fp16
    stop = lambda t: t.hooks.on_step.append(lambda t: t.request_stop() if t.progress.step == 12 else None)  # noqa: E731
    train(opts(tmp_path / "b"), settings, on_trainer=stop)
    scaler_at_12 = ck.load_checkpoint(tmp_path / "b" / ck.LAST)["trainer"]["scaler"]
    assert scaler_at_12["scale"] > 0  # the scaler's state is in the checkpoint
    train(RunOptions(corpus=str(corpus), out=tmp_path / "b", device="cpu", quiet=True, sample_len=0, resume=True), {})
    a, b = (ck.load_checkpoint(tmp_path / r / ck.LAST) for r in ("a", "b"))
    # every step's loss and the scale it trained at, bit for bit: the scaler went on where it stopped
    steps = [[(r["step"], r["loss"], r["loss_scale"]) for r in _records(tmp_path / run, "train")] for run in "ab"]
    assert steps[0] == steps[1] and len({scale for _, _, scale in steps[0]}) > 1
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["trainer"]["scaler"] == b["trainer"]["scaler"]


def test_the_losses_a_bf16_run_reports_are_fp32_figures_as_eval_gives(corpus, tmp_path, monkeypatch):
    """Trained in bf16 (forced: a Transformer's linear layers run it on any CPU), its full passes are fp32:
    `info` and best.pt say what `charrnn eval` says."""
    from charrnn.analysis import eval_run, run_info

    allowed = device.resolve_precision
    monkeypatch.setattr(training, "resolve_precision", lambda name, dev: "bf16" if name == "bf16" else allowed(name, dev))
    out = tmp_path / "run"
    train(RunOptions(corpus=str(corpus), out=out, precision="bf16", device="cpu", quiet=True, sample_len=0),
          dict(TINY_GPT, max_steps=20, eval_interval=10))
    assert json.loads((out / ck.CONFIG).read_text())["precision"] == "bf16"
    assert run_info(out)["best_val_loss"] == eval_run(out, str(corpus)).loss_nats
