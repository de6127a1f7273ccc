import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch
from conftest import TINY

from charrnn import checkpoint as ck
from charrnn.device import cpu_supports_bf16
from charrnn.families import model_config
from charrnn.families.rnn.model import CharRNN
from charrnn.tokenizer import CharTokenizer
from charrnn.trainer import TrainConfig, Trainer
from charrnn.training import RunOptions, train


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


def test_a_resumed_run_with_no_budget_left_logs_its_open_steps_and_ends_with_its_final_validation(corpus, tmp_path):
    settings = dict(TINY, max_steps=40, log_interval=10, eval_interval=20)
    first = train(_opts(corpus, tmp_path / "r"), settings,
                  on_trainer=lambda t: t.hooks.on_step.append(lambda t: t.request_stop() if t.progress.step == 7 else None))
    assert first["reason"] == "interrupted" and not (tmp_path / "r" / ck.METRICS).exists()  # 7 steps, none logged
    second = train(_opts(corpus, tmp_path / "r", resume=True), {"max_steps": 7})  # a stop may change: none left
    assert second["reason"] == "done" and second["step"] == 7
    assert [r["step"] for r in _records(tmp_path / "r", "train")] == [7]  # the interrupted run's open window
    assert [r["step"] for r in _records(tmp_path / "r", "val")] == [7]
    assert ck.load_checkpoint(tmp_path / "r" / ck.BEST)["trainer"]["progress"]["step"] == 7


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
    # the budget is the whole call's: setup, the final pass and the last checkpoint come out of it
    assert summary["reason"] == "done" and 2.0 <= summary["elapsed"] <= 3.0 and took < 3.0 * 1.03 + 1.0
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


def test_dropout_follows_the_epochs_the_budget_buys_on_this_corpus(monkeypatch):
    from charrnn import presets

    monkeypatch.setattr(presets, "measure_speed", lambda settings, vocab_size, device, precision: 10_000.0)
    cpu = torch.device("cpu")
    # 100 s at 10k chars/s: 1M characters, read once by a 1M-character corpus, 40 times by a 25k one
    once = presets.choose(100, {}, 65, cpu, "fp32", train_chars=1_000_000)
    often = presets.choose(100, {}, 65, cpu, "fp32", train_chars=25_000)
    assert once.name == often.name and once.epochs == pytest.approx(1.0) and often.epochs == pytest.approx(40)
    assert once.settings["dropout"] == 0.0 and often.settings["dropout"] == 0.3  # beside weight drop 0.25: below
    assert presets.choose(100, {"dropout": 0.05}, 65, cpu, "fp32", train_chars=25_000).settings["dropout"] == 0.05
    assert presets.choose(100, {}, 65, cpu, "fp32").epochs is None  # no corpus size: the preset's own dropout
    steps = [presets.dropout_for(e) for e in (0.5, 3, 5.9, 8.5, 12.1, 25, 1e6)]
    assert steps == [0.0, 0.0, 0.0, 0.1, 0.25, 0.5, 0.5]
    # the recurrent matrices' DropConnect follows too, for the families that have it, at half the dropout
    assert once.settings["weight_drop"] == 0.0 and often.settings["weight_drop"] == 0.25
    assert "weight_drop" not in presets.choose(100, {"weight_drop": 0.1}, 65, cpu, "fp32", train_chars=25_000).settings
    assert presets.choose(100, {"weight_drop": 0.0}, 65, cpu, "fp32", train_chars=25_000).settings["dropout"] == 0.5
    gpt = presets.choose(100, {"model": "transformer"}, 65, cpu, "fp32", train_chars=25_000).settings
    assert "weight_drop" not in gpt and gpt["dropout"] == 0.5  # no recurrent matrices: the dropout alone
    assert [presets.weight_drop_for(e) for e in (3, 8.5, 12.1, 25, 1e6)] == [0.0, 0.05, 0.1, 0.25, 0.25]


def test_epochs_are_counted_at_the_speed_of_the_weight_drop_they_bring(monkeypatch):
    from charrnn import presets

    # weight drop halves the speed here: 40 epochs at first sight, 20 as the run will train
    monkeypatch.setattr(presets, "measure_speed", lambda settings, vocab_size, device, precision:
                        5_000.0 if settings.get("weight_drop") else 10_000.0)
    cpu = torch.device("cpu")
    choice = presets.choose(100, {}, 65, cpu, "fp32", train_chars=25_000)
    assert choice.chars_per_s == 5_000.0 and choice.epochs == pytest.approx(20)
    assert choice.settings["weight_drop"] == presets.weight_drop_for(20) == 0.2
    assert choice.settings["dropout"] == presets.MAX_DROPOUT_WITH_WEIGHT_DROP
    assert choice.to_dict()["epochs"] == 20  # what config.json records is what the rule read
    # weight drop the user set is part of the first timing: nothing to time again
    given = presets.choose(100, {"weight_drop": 0.1}, 65, cpu, "fp32", train_chars=25_000)
    assert given.chars_per_s == 5_000.0 and given.settings["dropout"] == 0.3  # dropout_for(20) = 0.4, capped
    # a family without weight drop is timed again with the dropout alone
    monkeypatch.setattr(presets, "measure_speed", lambda settings, vocab_size, device, precision:
                        5_000.0 if settings.get("dropout") else 10_000.0)
    gpt = presets.choose(100, {"model": "transformer"}, 65, cpu, "fp32", train_chars=25_000)
    assert gpt.chars_per_s == 5_000.0 and gpt.settings["dropout"] == presets.dropout_for(20) == 0.4


def test_speed_measurement_leaves_the_rng_alone():
    from charrnn import presets

    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    settings = dict(presets.presets_for("lstm")[0].settings, hidden=16, embed=8, batch_size=2, seq_len=8)
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

    model = CharRNN(model_config(vocab_size=10, model="gru", n_layers=1, hidden=8, embed=4, dropout=0.0))
    t = Trainer(model, TrainConfig(max_steps=1, grad_accum=4), Batcher(), torch.device("cpu"), "fp32")
    x = torch.randint(0, 10, (6, 5))  # 6 rows in 4 micro-batches would be 3 chunks, each loss scaled by 1/4
    with pytest.raises(ValueError, match="does not split into 4"):
        t.train_step(x, x, 1e-3)


# --- non-finite steps --------------------------------------------------------------------------------
class _Poisoned(torch.nn.Module):
    """A model whose loss is NaN at the steps in `bad` (counted by forward calls), finite otherwise."""

    def __init__(self, bad):
        super().__init__()
        self.inner = CharRNN(model_config(vocab_size=20, model="gru", n_layers=1, hidden=8, embed=4))
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


@pytest.mark.parametrize("fused", [False, True], ids=["host check", "on the device (fused AdamW, CPU and CUDA)"])
def test_a_non_finite_step_changes_nothing_and_is_counted(monkeypatch, fused):
    from charrnn import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "fused_adamw", lambda device: fused)  # force either branch on the CPU
    model = _Poisoned(bad={3, 4})
    t = Trainer(model, TrainConfig(batch_size=2, seq_len=8, max_steps=6, log_interval=3, warmup_steps=0,
                                   grad_clip=0.0), _Batcher(), torch.device("cpu"), "fp32")
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
                _Batcher(), torch.device("cpu"), "fp32")
    saved = []
    t.hooks.on_stop.append(lambda t, reason: saved.append(t.progress.step))
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


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_a_limited_validation_scores_part_of_the_whole_pass_exactly_as_it_does(kind):
    import numpy as np

    from charrnn.families import build_model, evaluate_model

    torch.manual_seed(0)
    own = dict(embed=8) if kind == "lstm" else dict(heads=2, context=16)
    model = build_model(model_config(vocab_size=20, model=kind, n_layers=1, hidden=32, **own))
    ids = np.random.default_rng(0).integers(0, 20, 5_000)
    whole = evaluate_model(model, ids, torch.device("cpu"), n_streams=8, seq_len=64, per_char=True)
    part = evaluate_model(model, ids, torch.device("cpu"), n_streams=8, seq_len=64, per_char=True, limit=800)
    scored = part.losses != 0
    assert part.subset and not whole.subset and 700 <= part.chars == scored.sum() <= 800 + 16  # (+ a first window)
    assert np.allclose(part.losses[scored], whole.losses[scored], atol=1e-5)  # the same characters, the same losses
    assert part.loss_nats == pytest.approx(part.losses[scored].mean(), rel=1e-5)
    assert evaluate_model(model, ids, torch.device("cpu"), n_streams=8, seq_len=64, limit=10**6).subset is False


def test_intermediate_validations_score_a_subset_and_the_final_one_the_whole_split(corpus, tmp_path, monkeypatch):
    from charrnn import analysis, training

    monkeypatch.setattr(training, "VAL_SUBSET", 256)  # the test corpus's 2,000 validation characters > 2 x 256
    summary = train(_opts(corpus, tmp_path / "run"), dict(TINY, max_steps=40, eval_interval=10))
    vals = _records(tmp_path / "run", "val")
    assert [r["step"] for r in vals] == [10, 20, 30, 40]
    assert all(r.get("subset") and r["chars"] < 300 for r in vals[:-1])
    assert "subset" not in vals[-1] and vals[-1]["chars"] == 1999
    full = analysis.eval_run(tmp_path / "run", str(corpus))
    assert summary["best_val"] == pytest.approx(full.loss_nats, abs=1e-6)


def test_an_earlier_best_checkpoint_is_scored_fully_when_the_run_ends(corpus, tmp_path, monkeypatch):
    from charrnn import analysis, training

    monkeypatch.setattr(training, "VAL_SUBSET", 256)

    def spoil_the_last_step(trainer):  # the final model is worse than the one at step 30
        def hook(t):
            if t.progress.step == 40:
                with torch.no_grad():
                    for p in t.model.parameters():
                        p.add_(torch.randn_like(p))
        trainer.hooks.on_step.append(hook)

    out = tmp_path / "run"
    summary = train(_opts(corpus, out), dict(TINY, max_steps=40, eval_interval=10), on_trainer=spoil_the_last_step)
    vals = _records(out, "val")
    best = ck.load_checkpoint(out / ck.BEST)
    assert best["trainer"]["progress"]["step"] == 30 and vals[-1]["loss_nats"] > best["val_loss"]
    full = analysis.eval_run(out, str(corpus))  # best.pt, every validation character
    assert best["val_loss"] == pytest.approx(full.loss_nats, abs=1e-6) == summary["best_val"]
    assert analysis.run_info(out)["best_val_loss"] == best["val_loss"]


def test_a_resumed_run_scores_its_earlier_best_checkpoint_fully(corpus, tmp_path, monkeypatch):
    from charrnn import analysis, training

    monkeypatch.setattr(training, "VAL_SUBSET", 256)
    out = tmp_path / "run"

    def stop_at_25(trainer):
        trainer.hooks.on_step.append(lambda t: t.request_stop() if t.progress.step == 25 else None)

    settings = dict(TINY, max_steps=40, eval_interval=10)
    assert train(_opts(out=out, corpus=corpus), settings, on_trainer=stop_at_25)["reason"] == "interrupted"
    assert ck.load_checkpoint(out / ck.LAST)["trainer"]["progress"]["best_full"] == math.inf  # judged on the subset

    def spoil_every_step(trainer):  # from here on every model is worse than the one at step 20
        def hook(t):
            with torch.no_grad():
                for p in t.model.parameters():
                    p.add_(torch.randn_like(p))
        trainer.hooks.on_step.append(hook)

    summary = train(_opts(out=out, corpus=corpus, resume=True), {"max_steps": 40}, on_trainer=spoil_every_step)
    best = ck.load_checkpoint(out / ck.BEST)
    assert best["trainer"]["progress"]["step"] == 20
    full = analysis.eval_run(out, str(corpus))
    assert best["val_loss"] == pytest.approx(full.loss_nats, abs=1e-6) == summary["best_val"]


@pytest.mark.parametrize("best_in_full", [1.35, 1.45], ids=["the earlier best stays", "the last wins in full"])
def test_the_final_pass_settles_the_best_checkpoint_on_full_figures(best_in_full, tmp_path):
    from charrnn.evaluate import EvalResult

    model = CharRNN(model_config(vocab_size=20, model="gru", n_layers=1, hidden=8, embed=4))
    step_of = {}  # the step whose weights were evaluated, read from a weight the steps change

    def evaluate(m, subset):
        at = step_of[m.embed.weight[0, 0].item()]
        if subset:
            return EvalResult({10: 2.0, 20: 1.5, 30: 1.6}[at], 100, subset=True)  # the subset prefers step 20
        return EvalResult({20: best_in_full, 30: 1.4}[at], 1000)

    t = Trainer(model, TrainConfig(batch_size=2, seq_len=8, max_steps=30, eval_interval=10, log_interval=10),
                _Batcher(), torch.device("cpu"), "fp32", evaluate=evaluate)
    t.hooks.on_step.append(lambda t: step_of.__setitem__(t.model.embed.weight[0, 0].item(), t.progress.step))
    folder = ck.RunFolder(tmp_path / "run")  # the run folder's side chooses the best checkpoint
    folder.path.mkdir()
    run = ck.RunInfo("play.txt", "0" * 64, 0.1, 1000, 100, precision="fp32")
    tok = CharTokenizer.from_chars("abcdefghijklmnopqrst", byte_fallback=False).to_str()
    recorder = ck.RunRecorder(folder, t, model.config.to_dict(), run, tok, evaluate)
    seen, rescored = [], []

    def heard(t, r, final):
        result, best = recorder.last
        seen.append((t.progress.step, result.loss_nats, result.subset, best))
        if recorder.rescored is not None:
            rescored.append(recorder.rescored.loss_nats)
    t.hooks.on_eval.append(heard)
    t.run()
    assert seen[:2] == [(10, 2.0, True, True), (20, 1.5, True, True)]
    if best_in_full < 1.4:  # step 20 stays the best; its full figure is what the run reports
        assert seen[2] == (30, 1.4, False, False) and rescored == [1.35]
        assert (t.progress.best_step, t.progress.best_full) == (20, 1.35)
    else:  # in full the last model is better: it becomes the best checkpoint
        assert seen[2] == (30, 1.4, False, True) and rescored == []
        assert (t.progress.best_step, t.progress.best_full) == (30, 1.4)


def test_a_preset_that_would_reread_a_small_corpus_gives_way_to_a_smaller_one(monkeypatch):
    from charrnn import presets

    monkeypatch.setattr(presets, "measure_speed", lambda settings, vocab_size, device, precision: 10_000.0)
    cpu = torch.device("cpu")
    top = presets.presets_for("lstm")[-1]
    assert math.isfinite(top.max_epochs)
    budget = top.min_chars / 10_000 + 1  # enough time for the largest preset
    plenty = int(top.min_chars / top.max_epochs * 2)  # read well under max_epochs times
    reread = int(top.min_chars / top.max_epochs / 2)  # read more than max_epochs times
    assert presets.choose(budget, {}, 65, cpu, "fp32", train_chars=plenty).name == top.name
    smaller = presets.choose(budget, {}, 65, cpu, "fp32", train_chars=reread)
    assert smaller.name == presets.presets_for("lstm")[-2].name
    assert presets.choose(budget, {}, 65, cpu, "fp32").name == top.name  # corpus size unknown: by characters
