"""2. Training throughput: charrnn's real trainer against the bare loop in benchmarks/reference.py.

For each model (LSTM, GRU, RNN, 2x512, batch 64 x seq 128) and precision, three loops train the same
initial weights on the same batches: charrnn's `Trainer.run()` (batches read from the memory-mapped
corpus, progress bar drawn to /dev/null, metric records written, stop and validation checks made),
the same with `compile=True` (torch.compile; fp32 only), and the bare reference. They take turns, a
few steps at a time, so that noise from other processes falls on all of them alike. The first step
of each turn is not timed (for the trainer it follows `run()`'s set-up, and the validation pass at
the end of each `run()` is outside the timed steps too); a turn's time per step is the mean over its
other steps (the clock read after the device has caught up), and a loop's is the median over turns.

`--device cuda` runs the same comparison on a GPU, in fp32, bf16 (where supported) and fp16.

Achieved GFLOP/s counts 6 flops per weight per character for every weight matrix (forward 2, backward
4; the embedding is a lookup and is not counted), and is given as a fraction of the matmul ceiling
of the same precision (section 1).
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from pathlib import Path
from statistics import median

import torch

from charrnn.batches import StreamBatcher  # noqa: E402
from charrnn.data import build_tokenizer, encode_corpus, split
from charrnn.device import cpu_supports_bf16
from charrnn.evaluate import evaluate
from charrnn.families import model_config
from charrnn.families.rnn.model import CharRNN
from charrnn.progress import ProgressBar  # noqa: E402
from charrnn.trainer import TrainConfig, Trainer

from .common import NOT_SUPPORTED_BF16, Section, write_corpus
from .reference import BareRNN, bare_steps


def flops_per_char(model: torch.nn.Module) -> int:
    """6 x the weights of every matrix product (forward + backward), per character trained."""
    return 6 * sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith("embed"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _TimedTrainer:
    """A charrnn Trainer driven a few steps at a time; times the steps after the first of each turn."""

    def __init__(self, model, cfg: TrainConfig, batcher, val_ids, device: torch.device, precision: str,
                 metrics: Path, compile: bool):
        def validate(m, subset):  # always the whole (small) split
            return evaluate(m, val_ids, device, precision, n_streams=8, seq_len=128)

        self.device = device
        self.trainer = Trainer(model, cfg, batcher, device, precision, evaluate=validate, compile=compile)
        bar = ProgressBar()  # as `charrnn train` has it
        self.trainer.hooks.on_log.append(bar.on_log)
        self.trainer.hooks.on_stop.append(bar.on_stop)
        self.stamps: list[float] = []

        def on_step(t):  # the clock is read (after the device catches up) at the turn's first and last step
            if t.progress.step in (self.first, t.config.max_steps):
                _sync(device)
                self.stamps.append(time.perf_counter())

        self.trainer.hooks.on_step.append(on_step)

        def on_log(t, record):  # what the pipeline's hook does: one JSON line per log interval
            with open(metrics, "a", encoding="utf-8") as f:
                f.write(json.dumps({"kind": "train", **record}) + "\n")

        self.trainer.hooks.on_log.append(on_log)
        self.first_step_s: float | None = None
        self.first = 0

    def turn(self, steps: int) -> float | None:
        """Run steps + 1 steps; return the mean seconds per step of the last `steps`."""
        t = self.trainer
        self.first = t.progress.step + 1
        t.config.max_steps = t.progress.step + steps + 1
        self.stamps = []
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # the progress bar is drawn, to nowhere
            t.run()
        if self.first_step_s is None:
            self.first_step_s = self.stamps[0] - t0  # includes torch.compile's compile time
        return (self.stamps[-1] - self.stamps[0]) / steps if steps else None


class _TimedBare:
    def __init__(self, model, batches, device: torch.device, precision: str):
        self.device = device
        self.steps = bare_steps(model, iter(batches), precision=precision, device=str(device))

    def turn(self, steps: int) -> float | None:
        next(self.steps)
        _sync(self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            next(self.steps)
        _sync(self.device)
        return (time.perf_counter() - t0) / steps if steps else None


def _precisions(device: torch.device) -> tuple[str, ...]:
    if device.type == "cuda":
        return ("fp32", "bf16", "fp16") if torch.cuda.is_bf16_supported() else ("fp32", "fp16")
    return ("fp32", "bf16")


def measure(ceilings: dict, quick: bool = False, kinds=("lstm", "gru", "rnn"), device: str = "cpu") -> Section:
    sec = Section("training")
    device = torch.device(device)
    if quick:
        layers, hidden, embed, B, T, rounds, steps = 2, 32, 16, 4, 16, 2, 2
    elif device.type == "cuda":  # steps take ~12 ms on an H200, turn to turn noise ~10%: time many of them
        layers, hidden, embed, B, T, rounds, steps = 2, 512, 128, 64, 128, 7, 50
    else:
        layers, hidden, embed, B, T, rounds, steps = 2, 512, 128, 64, 128, 3, 2
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as tmp:
        tmp = Path(tmp)
        corpus = write_corpus(tmp / "train.txt", (200 << 10) if quick else (4 << 20))
        tok = build_tokenizer(corpus)
        ids = encode_corpus(corpus, tok, tmp / "cache")
        train_ids, val_ids = split(ids, 0.1)
        val_ids = val_ids[: 4096 if quick else 16384]
        n_batches = 2 + rounds * (steps + 1)
        for kind in kinds:
            for precision in _precisions(device):
                label = f"{kind.upper()} {layers}x{hidden} B{B}xT{T} {precision}"
                label += " cuda" if device.type == "cuda" else ""
                if precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
                    sec.row(f"{label} trainer", None, "chars/s", NOT_SUPPORTED_BF16)
                    sec.row(f"{label} bare loop", None, "chars/s", NOT_SUPPORTED_BF16)
                    sec.bar(f"{label}: trainer / bare", ">= 0.95", None, lambda r: r >= 0.95, NOT_SUPPORTED_BF16)
                    if kind == "lstm":
                        sec.bar(f"{label}: fraction of the bf16 matmul ceiling", ">= 0.55", None, lambda f: f >= 0.55,
                                NOT_SUPPORTED_BF16)
                    continue
                cfg = model_config(vocab_size=tok.vocab_size, model=kind, n_layers=layers, hidden=hidden, embed=embed)
                torch.manual_seed(0)
                init = CharRNN(cfg).state_dict()
                batcher = StreamBatcher(train_ids, B, T, seed=0)
                batches = [batcher.batch(0, k % batcher.batches_per_epoch(0)) for k in range(n_batches)]
                loops = {}
                for compile_ in ((False, True) if precision == "fp32" else (False,)):
                    model = CharRNN(cfg)
                    model.load_state_dict(init)
                    tc = TrainConfig(batch_size=B, seq_len=T, max_steps=1, eval_interval=10**9, warmup_steps=10)
                    loops["trainer --compile" if compile_ else "trainer"] = _TimedTrainer(
                        model, tc, batcher, val_ids, device, precision, tmp / f"{kind}-{precision}-{compile_}.jsonl",
                        compile_)
                bare = BareRNN(tok.vocab_size, kind, layers, hidden, embed).to(device)
                bare.load_state_dict(init)
                loops["bare loop"] = _TimedBare(bare, [(x.to(device), y.to(device)) for x, y in batches], device,
                                                precision)
                intervals: dict[str, list[float]] = {name: [] for name in loops}
                for name, loop in loops.items():  # warm-up turn: oneDNN/cuDNN set-up, compilation
                    loop.turn(1 if not quick else 0)
                for _ in range(rounds):  # alternate, so that noise falls on every loop alike
                    for name, loop in loops.items():
                        intervals[name].append(loop.turn(steps))
                fpc = flops_per_char(bare)
                ceiling = ceilings.get(precision) if device.type == "cpu" else None  # a CPU ceiling
                rate = {}
                for name, ts in intervals.items():
                    per_step = median(ts)
                    rate[name] = B * T / per_step
                    gflops = rate[name] * fpc / 1e9
                    extra = {"step_s_median": per_step, "turn_step_s": [round(x, 5) for x in ts],
                             "gflops": round(gflops, 2), "flops_per_char": fpc}
                    note = ""
                    if ceiling:
                        extra["fraction_of_ceiling"] = round(gflops / ceiling, 3)
                        note = f"{gflops:.1f} GFLOP/s = {gflops / ceiling:.0%} of the {precision} ceiling"
                    if name == "trainer --compile":
                        extra["first_step_s"] = round(loops[name].first_step_s, 2)
                        note += f"; first step (compiling) {loops[name].first_step_s:.1f} s"
                    sec.row(f"{label} {name}", round(rate[name]), "chars/s", note, extra)
                ratio = rate["trainer"] / rate["bare loop"]
                sec.row(f"{label} trainer / bare", round(ratio, 3), "x")
                sec.bar(f"{label}: trainer / bare", ">= 0.95", round(ratio, 3), lambda r: r >= 0.95)
                if "trainer --compile" in rate:
                    sec.row(f"{label} compiled / eager trainer", round(rate["trainer --compile"] / rate["trainer"], 3),
                            "x", "steady state; compile time excluded (see the compiled row)")
                if kind == "lstm" and precision == "bf16" and device.type == "cpu":  # the ceiling is the CPU's
                    frac = rate["trainer"] * fpc / 1e9 / ceilings["bf16"]
                    sec.bar(f"{label}: fraction of the bf16 matmul ceiling", ">= 0.55", round(frac, 3),
                            lambda f: f >= 0.55)
    return sec
