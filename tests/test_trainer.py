import json
from collections import Counter
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from charrnn import checkpoint as ck
from charrnn.device import cpu_supports_bf16
from charrnn.models import CharRNN, ModelConfig
from charrnn.pipeline import RunOptions, train
from charrnn.trainer import TrainConfig, Trainer
from conftest import TINY


def _opts(corpus, out, precision="fp32", **kw):
    return RunOptions(corpus=str(corpus), out=out, precision=precision, device="cpu", quiet=True, sample_len=0, **kw)


def _records(run, kind):
    lines = (run / ck.METRICS).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_loss_falls_well_below_the_unigram_entropy(corpus, tmp_path):
    text = corpus.read_text()
    counts = Counter(text)
    unigram = -sum(n / len(text) * math.log(n / len(text)) for n in counts.values())  # about 3.2 nats
    settings = dict(TINY, n_layers=1, hidden=128, batch_size=8, seq_len=32, lr=5e-3, max_steps=150, log_interval=5)
    summary = train(_opts(corpus, tmp_path / "run"), settings)
    losses = [r["loss"] for r in _records(tmp_path / "run", "train")]
    vals = [r["loss_nats"] for r in _records(tmp_path / "run", "val")]
    assert losses[0] > unigram + 0.3  # starts near uniform over the characters, far above their frequencies
    assert vals[-1] < unigram - 1.0  # it learned more than character frequencies
    assert summary["best_val"] == min(vals)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_interrupted_and_resumed_run_equals_unbroken_run(corpus, tmp_path, precision):
    if precision == "bf16" and not cpu_supports_bf16():
        pytest.skip("CPU has no native bf16")
    settings = dict(TINY, max_steps=40, dropout=0.2, log_interval=1, eval_interval=10)
    train(_opts(corpus, tmp_path / "a", precision), settings)

    def stop_at_17(trainer):
        trainer.hooks.on_step.append(lambda t: t.request_stop() if t.progress.step == 17 else None)

    first = train(_opts(corpus, tmp_path / "b", precision), settings, on_trainer=stop_at_17)
    assert first["reason"] == "interrupted" and first["step"] == 17
    assert ck.load_checkpoint(tmp_path / "b" / ck.LAST)["trainer"]["progress"]["step"] == 17
    second = train(_opts(corpus, tmp_path / "b", precision, resume=True), {})
    assert second["reason"] == "done" and second["step"] == 40

    unbroken = [(r["step"], r["loss"]) for r in _records(tmp_path / "a", "train")]
    resumed = [(r["step"], r["loss"]) for r in _records(tmp_path / "b", "train")]
    assert resumed == unbroken  # every step's loss, bit for bit
    assert [r["loss_nats"] for r in _records(tmp_path / "b", "val")] == \
           [r["loss_nats"] for r in _records(tmp_path / "a", "val")]
    wa = ck.load_checkpoint(tmp_path / "a" / ck.LAST)["model"]
    wb = ck.load_checkpoint(tmp_path / "b" / ck.LAST)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_across_epoch_boundary_is_exact(corpus, tmp_path):
    # 20k chars / (4 streams x 16) -> about 280 batches an epoch; a small corpus makes epochs short
    small = tmp_path / "small.txt"
    small.write_text(corpus.read_text()[:3000])
    settings = dict(TINY, batch_size=4, seq_len=16, max_steps=90, log_interval=1, eval_interval=45)
    train(_opts(small, tmp_path / "a"), settings)
    train(_opts(small, tmp_path / "b"), settings,
          on_trainer=lambda t: t.hooks.on_step.append(lambda t: t.request_stop() if t.progress.step == 50 else None))
    train(_opts(small, tmp_path / "b", resume=True), {})
    a = _records(tmp_path / "a", "train")
    assert a[-1]["epoch"] >= 2
    assert [r["loss"] for r in _records(tmp_path / "b", "train")] == [r["loss"] for r in a]


def test_schedule_warms_up_then_decays_fully():
    class Batcher:
        def batches_per_epoch(self, epoch):
            return 10

    model = torch.nn.Linear(2, 2)
    cfg = TrainConfig(lr=1.0, warmup_steps=4, max_steps=100, min_lr_ratio=0.1)
    t = Trainer(model, cfg, Batcher(), torch.device("cpu"), "fp32")
    assert [t.lr_at(s, 0.0) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert t.lr_at(50, 0.5) == pytest.approx(0.55)
    assert t.lr_at(100, 1.0) == pytest.approx(0.1)


def test_fractional_epoch_budget_stops_mid_epoch(corpus, tmp_path):
    settings = {**{k: v for k, v in TINY.items() if k != "max_steps"}, "max_epochs": 0.5}
    summary = train(_opts(corpus, tmp_path / "run"), settings)
    per_epoch = (int(20_000 * 0.9) - 1) // TINY["batch_size"] // TINY["seq_len"]
    assert summary["step"] == math.ceil(per_epoch / 2)


def test_time_budget_stops_the_run(corpus, tmp_path):
    start = time.perf_counter()
    summary = train(_opts(corpus, tmp_path / "run"), {**{k: v for k, v in TINY.items() if k != "max_steps"},
                                                       "max_time": 3.0})
    took = time.perf_counter() - start
    assert summary["reason"] == "done" and 3.0 <= summary["elapsed"] < 6.0 and took < 30
    last = _records(tmp_path / "run", "train")[-1]
    assert last["lr"] < 0.05 * TINY["lr"]  # the schedule followed the clock to its end


def test_ctrl_c_saves_last_checkpoint_and_resume_continues(corpus, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "charrnn", "train", str(corpus), "--out", str(out), "--model", "lstm",
           "--layers", "1", "--hidden", "32", "--embed", "16", "--dropout", "0", "--batch-size", "4", "--seq-len", "16",
           "--lr", "0.01", "--warmup", "5",
           "--max-steps", "100000", "--precision", "fp32", "--device", "cpu", "--quiet"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    metrics = out / ck.METRICS
    deadline = time.time() + 60
    while not (metrics.exists() and metrics.stat().st_size > 0) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted at step" in err
    step = ck.load_checkpoint(out / ck.LAST)["trainer"]["progress"]["step"]
    assert step > 0
    done = subprocess.run(cmd[:-1] + ["--resume", "--max-steps", str(step + 5)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert ck.load_checkpoint(out / ck.LAST)["trainer"]["progress"]["step"] == step + 5


def test_the_largest_affordable_preset_is_chosen(monkeypatch):
    from charrnn import presets

    timed = []

    def fake_speed(settings, vocab_size, device, precision):
        timed.append(settings["hidden"])
        return 10_000.0  # chars/s, whatever the model

    monkeypatch.setattr(presets, "measure_speed", fake_speed)
    cpu = torch.device("cpu")
    for kind in ("lstm", "transformer"):
        family = presets.presets_for(kind)
        by_chars = sorted(family, key=lambda p: p.min_chars)
        assert list(family) == by_chars and by_chars[0].min_chars == 0
        for p in family:
            budget = p.min_chars / 10_000 + 1  # just enough time for this preset, not for the next
            choice = presets.choose(budget, {"model": kind}, 65, cpu, "fp32")
            assert choice.name == p.name and choice.settings["model"] == kind
        assert presets.choose(1.0, {"model": kind}, 65, cpu, "fp32").name == "small"
    assert presets.choose(1.0, {"model": "gru"}, 65, cpu, "fp32").settings["model"] == "gru"
    timed.clear()
    choice = presets.choose(1.0, {"hidden": 64, "n_layers": 1, "embed": 16, "batch_size": 8, "seq_len": 32}, 65, cpu,
                            "fp32")
    assert choice.settings["hidden"] == 64 and len(timed) == 1  # one shape left to time: timed once


def test_speed_measurement_leaves_the_rng_alone():
    from charrnn import presets

    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    settings = dict(presets.RNN_PRESETS[0].settings, hidden=16, embed=8, batch_size=2, seq_len=8)
    assert presets.measure_speed(settings, 65, torch.device("cpu"), "fp32", seconds=0.01) > 0
    assert torch.equal(torch.rand(3), expected)


def test_time_budget_validations_thin_out_when_a_pass_is_costly():
    class Batcher:
        def batches_per_epoch(self, epoch):
            return 10

    t = Trainer(torch.nn.Linear(2, 2), TrainConfig(max_time=600), Batcher(), torch.device("cpu"), "fp32")
    assert not t._eval_due(0.09) and t._eval_due(0.1)  # one a minute at first
    t.progress.evals, t.progress.eval_frac, t.progress.eval_s = 1, 0.1, 1.0  # a cheap pass: keep the pace
    assert t._eval_due(0.2)
    t.progress.eval_s = 6.0  # 6 s a pass: 5 % of 600 s allows one every 0.2 of the run
    assert not t._eval_due(0.29) and t._eval_due(0.31)


def test_a_batch_grad_accum_cannot_split_is_refused():
    class Batcher:
        def batches_per_epoch(self, epoch):
            return 10

    model = CharRNN(ModelConfig(vocab_size=10, model="gru", n_layers=1, hidden=8, embed=4, dropout=0.0))
    t = Trainer(model, TrainConfig(max_steps=1, grad_accum=4), Batcher(), torch.device("cpu"), "fp32")
    x = torch.randint(0, 10, (6, 5))  # 6 rows in 4 micro-batches would be 3 chunks, each loss scaled by 1/4
    with pytest.raises(ValueError, match="does not split into 4"):
        t.train_step(x, x, 1e-3)


# --- non-finite steps --------------------------------------------------------------------------------
class _Poisoned(torch.nn.Module):
    """A model whose loss is NaN at the steps in `bad` (counted by forward calls), finite otherwise."""

    stateful = True

    def __init__(self, bad):
        super().__init__()
        self.inner = CharRNN(ModelConfig(vocab_size=20, model="gru", n_layers=1, hidden=8, embed=4))
        self.bad, self.calls = set(bad), 0

    def forward(self, idx, state=None, targets=None):
        logits, loss, state = self.inner(idx, state, targets)
        self.calls += 1
        if self.calls in self.bad:
            loss = loss * float("nan")
        return logits, loss, state


class _Batcher:
    def __init__(self):
        self.ids = torch.randint(0, 20, (1000,), generator=torch.Generator().manual_seed(0))

    def batches_per_epoch(self, epoch):
        return 100

    def batch(self, epoch, k):
        chunk = self.ids[k * 9:(k + 1) * 9].view(1, 9).expand(2, 9)
        return chunk[:, :-1], chunk[:, 1:]


@pytest.mark.parametrize("fused", [False, True], ids=["host check", "on the device (CUDA's fused AdamW)"])
def test_a_non_finite_step_changes_nothing_and_is_counted(monkeypatch, fused):
    from charrnn import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "fused_adamw", lambda device: fused)  # force either branch on the CPU
    model = _Poisoned(bad={3, 4})
    t = Trainer(model, TrainConfig(batch_size=2, seq_len=8, max_steps=6, log_interval=3, warmup_steps=0,
                                   grad_clip=0.0), _Batcher(), torch.device("cpu"), "fp32", quiet=True)
    assert t.optimizer.param_groups[0]["fused"] is fused
    weights, records = [], []
    t.hooks.on_step.append(lambda t: weights.append([p.detach().clone() for p in t.model.parameters()]))
    t.hooks.on_log.append(lambda t, r: records.append(r))
    t.run()
    same = [all(torch.equal(a, b) for a, b in zip(weights[i - 1], weights[i])) for i in range(1, 6)]
    assert same == [False, True, True, False, False]  # steps 3 and 4 left every weight as it was
    assert [r["skipped"] for r in records] == [1, 1] and t.progress.skipped == 2
    assert all(r["loss"] is not None and math.isfinite(r["loss"]) for r in records)  # the finite steps' mean
    step = next(iter(t.optimizer.state.values()))["step"]
    assert int(step) == 4  # AdamW counted only the updates it made
    assert t.weights_finite()


def test_a_run_of_non_finite_steps_stops_training():
    from charrnn.errors import TrainingDiverged

    model = _Poisoned(bad=set(range(5, 100)))
    t = Trainer(model, TrainConfig(batch_size=2, seq_len=8, max_steps=90, log_interval=10, diverge_after=20),
                _Batcher(), torch.device("cpu"), "fp32", quiet=True)
    saved = []
    t.hooks.on_save.append(lambda t: saved.append(t.progress.step))
    with pytest.raises(TrainingDiverged, match="26 updates in a row, up to step 30"):
        t.run()
    assert not saved and t.weights_finite()


def test_non_finite_weights_are_never_written(corpus, tmp_path):
    from charrnn.errors import TrainingDiverged

    def poison_at_12(trainer):
        def hook(t):
            if t.progress.step == 12:
                with torch.no_grad():
                    next(t.model.parameters()).fill_(float("inf"))
        trainer.hooks.on_step.append(hook)

    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="keeps step 10"):
        train(_opts(corpus, out), dict(TINY, max_steps=30, eval_interval=5), on_trainer=poison_at_12)
    ckpt = ck.load_checkpoint(out / ck.LAST)  # loading checks the weights are finite
    assert ckpt["trainer"]["progress"]["step"] == 10
