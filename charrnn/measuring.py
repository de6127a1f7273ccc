"""What `charrnn compare` measures of each trained model, step by step, and what each step costs.

The steps run one model at a time, after every model has trained: the validation loss, the sampling
speed, two samples (the n-grams of the longer one looked up in the training text), the per-character
losses, the context probe (one step per context length) and the gradients through time. `steps` lists
them with the characters each one processes, by kind of pass: forward passes over many streams at once
("batched", counted in characters scored), over one stream ("stream"), over short rows from a fresh
state ("context", counted in characters read), the gradients through time ("gradients", counted in
positions), and sampling one stream or many ("sample", "sample_batched").
How fast each kind runs depends on the model and the machine, so `calibrate` times each briefly on a
model of the same shape (its weights do not change its speed), and `estimate` turns the characters into
seconds. compare's plan prints those estimates before anything trains, and its progress bar over the
measuring phase advances by each step's estimated share.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from . import checkpoint as ck
from .evaluate import EVAL_LENGTH, EVAL_STREAMS
from .families import evaluate_model, family_of, macs_per_char
from .fileio import path_text
from .memorization import NgramIndex
from .microscope import GTT_K, GTT_WARM, gradients_through_time
from .probe import MIN_PAIRS, char_losses, context_probe, find_pairs, probe_targets
from .progress import ProgressBar
from .sampler import SampleConfig, Sampler

PROBE_LENGTHS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PROBE_CHARS = 100_000  # the probes read at most this much of the validation split
MEMO_NS = (10, 20, 40)  # n-gram lengths of the memorization measurement
TRAIN_CURVE_POINTS = 200  # the training-loss records of a run, averaged down to at most this many points
WARMUP = 8  # characters sampled before a speed is timed
PASSES = ("batched", "stream", "context", "gradients", "sample", "sample_batched")
CALIBRATION_K = 32  # the context length the context probe's speed is timed at


class Amounts(Protocol):
    """How much of each measurement to make (CompareConfig's fields of these names)."""

    seed: int
    speed_chars: int
    batch_streams: int
    sample_len: int
    probe_positions: int
    memo_chars: int
    gradient_positions: int


# --- the steps and their cost ----------------------------------------------------------------------
@dataclass
class Step:
    key: str  # what the measuring code announces when it starts this step
    label: str  # the same for a person
    chars: dict[str, float]  # characters processed, by kind of pass (PASSES)


def probe_lengths(probe_chars: int) -> list[int]:
    """The context lengths the probe tries on `probe_chars` characters: each with room to spare."""
    return [k for k in PROBE_LENGTHS if k < probe_chars // 2]


def steps(cfg: Amounts, val_chars: int, context: int | None) -> list[Step]:
    """The measurements of one model, in the order they run, for a validation split of `val_chars`
    characters; `context`: the most characters the model reads at once (None: any number)."""
    speed_len = max(cfg.speed_chars // 4, 1)
    out = [Step("validation", f"validation loss ({val_chars:,} characters)", {"batched": val_chars}),
           Step("speed", f"sampling speed (1 stream, {cfg.batch_streams} streams)",
                {"sample": WARMUP + cfg.speed_chars, "sample_batched": cfg.batch_streams * (WARMUP + speed_len)}),
           Step("samples", f"samples ({cfg.sample_len:,} and {cfg.memo_chars:,} characters) and their n-grams",
                {"sample": cfg.sample_len + cfg.memo_chars})]
    n = min(val_chars, PROBE_CHARS)
    lengths = probe_lengths(n)
    if lengths:
        targets = min(cfg.probe_positions, n - max(lengths))
        out.append(Step("losses", f"per-character losses ({n:,} characters)", {"stream": n}))
        out += [Step(f"context {k}", f"context probe, k={k} ({targets:,} characters)",
                     {"context": (min(k, context or k) + 1) * targets}) for k in lengths]
    k_max = min(GTT_K, n - 2)
    positions = min(cfg.gradient_positions, n + 1 - (min(GTT_WARM, n - 2 - k_max) + k_max + 2)) if k_max >= 1 else 0
    out.append(Step("gradients", f"gradients through time ({positions} positions)", {"gradients": positions}))
    return out


def outline(plan: list[Step]) -> str:
    """The steps in a line, the context probe's lengths as one."""
    context = [s for s in plan if s.key.startswith("context ")]
    parts = [s.label for s in plan if s not in context]
    if context:
        chars = context[0].label[context[0].label.index("("):]
        parts.insert(len(parts) - 1, f"the context probe at {len(context)} lengths {chars}")
    return "; ".join(parts)


@dataclass
class Rates:
    """Characters per second of each kind of pass for one model here, and the time to set up its sampler."""

    per_s: dict[str, float]
    setup_s: float = 0.0

    def seconds(self, step: Step) -> float:
        return sum(chars / self.per_s[kind] for kind, chars in step.chars.items() if chars)


def estimate(plan: list[Step], rates: Rates) -> list[float]:
    """Estimated seconds of each step (the first also sets up the model's sampler)."""
    return [rates.seconds(s) + (rates.setup_s if i == 0 else 0.0) for i, s in enumerate(plan)]


def _rate(run: Callable[[int], int], n: int, most: int, enough: float = 0.05) -> float:
    """Characters per second of `run(n)` (which returns the characters it processed), with n doubled
    from `n` up to `most` until one call takes `enough` seconds, after a first call that warms up
    (allocations, kernel choices: what a long measurement pays once)."""
    run(n)
    while True:
        t0 = time.perf_counter()
        done = run(n)
        took = time.perf_counter() - t0
        if took >= enough or n >= most:
            return done / max(took, 1e-9)
        n = min(2 * n, most)


def calibrate(model, tok, device: torch.device, plan: list[Step], val_chars: int, batch_streams: int) -> Rates:
    """Each kind of pass that `plan` makes timed briefly on `model` (trained or not: the speed is the
    same), by the code the measurements run, on random text as long as the validation split (so in
    the same batch shapes)."""
    kinds = {kind for step in plan for kind, chars in step.chars.items() if chars}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        ids = np.random.default_rng(0).integers(0, model.config.outputs, size=max(val_chars, 2))
        t0 = time.perf_counter()
        sampler = Sampler(model, tok, device)
        setup = time.perf_counter() - t0
        k = min(CALIBRATION_K, len(ids) // 4)

        def batched(n: int) -> int:
            return evaluate_model(model, ids, device, "fp32", n_streams=EVAL_STREAMS, seq_len=EVAL_LENGTH,
                                  limit=n).chars

        def stream(n: int) -> int:
            return evaluate_model(model, ids, device, "fp32", n_streams=1, per_char=True, limit=n).chars

        def context(rows: int) -> int:
            context_probe(model, ids, device, [k], np.arange(k, k + rows))
            return (k + 1) * rows

        def gradients(positions: int) -> int:
            return gradients_through_time(model, ids, device, positions=positions)[1]

        def sample(n: int, streams: int = 1) -> int:
            sampler.sample_many(SampleConfig(length=n, seed=0), streams)
            return n * streams

        timings = {"batched": (batched, EVAL_STREAMS * 8, EVAL_STREAMS * EVAL_LENGTH), "stream": (stream, 64, 4096),
                   "context": (context, 4, min(100, len(ids) - k)), "gradients": (gradients, 1, 16),
                   "sample": (sample, 4, 512),
                   "sample_batched": (lambda n: sample(n, batch_streams), 2, 64)}
        per_s = {kind: _rate(*timings[kind]) for kind in PASSES if kind in kinds}
    return Rates(per_s, setup)


# --- what every model is measured on ---------------------------------------------------------------
@dataclass
class Texts:
    """The validation split and what the probes read of it, with the training text's n-grams: prepared
    once, read by every model's measurements."""

    val_ids: np.ndarray
    index: NgramIndex  # the training split's n-grams
    probe_ids: np.ndarray  # the start of the validation split, which the probes read
    lengths: list[int]  # the context probe's lengths
    targets: np.ndarray | None  # the characters the context probe scores
    pairs: list[tuple[int, int]]  # the brackets and quotes matched in probe_ids

    @classmethod
    def of(cls, train_ids: np.ndarray, val_ids: np.ndarray, tok, cfg: Amounts) -> Texts:
        probe_ids = val_ids[:PROBE_CHARS]
        lengths = probe_lengths(len(probe_ids))
        targets = probe_targets(len(probe_ids), max(lengths), cfg.probe_positions, cfg.seed) if lengths else None
        return cls(val_ids, NgramIndex(train_ids, ns=MEMO_NS), probe_ids, lengths, targets,
                   find_pairs(tok.decode(probe_ids)))


# --- measuring a trained model ---------------------------------------------------------------------
def sampling_speed(sampler: Sampler, streams: int, length: int) -> float:
    """Characters per second generated, all streams together, after a short warm-up."""
    sampler.sample_many(SampleConfig(length=WARMUP, seed=0), streams)
    t0 = time.perf_counter()
    sampler.sample_many(SampleConfig(length=length, seed=0), streams)
    return streams * length / (time.perf_counter() - t0)


def state_bytes(model) -> int:
    """Memory one sampling stream carries from character to character: an RNN's hidden state (fixed),
    or a Transformer's key/value cache (grows with its context), in fp32."""
    return 4 * family_of(model.config.model).sampling_state_floats(model.config, 1)


def val_curve(run_dir: Path) -> list[tuple[float, float]]:
    """(seconds, validation bits/char) of each validation of the run."""
    return [(r["elapsed"], r["bpc"]) for r in ck.read_metrics(run_dir, "val") if r.get("bpc") is not None]


def train_curve(run_dir: Path, points: int = TRAIN_CURVE_POINTS) -> list[tuple[float, float]]:
    """(seconds, training bits/char) of the run's logged training records, consecutive records averaged
    so that there are at most `points`."""
    recs = [(r["elapsed"], r["bpc"]) for r in ck.read_metrics(run_dir, "train")
            if r.get("bpc") is not None and r.get("elapsed") is not None and np.isfinite(r["bpc"])]
    group = -(-len(recs) // points) if recs else 1
    return [(float(np.mean([t for t, _ in recs[i:i + group]])), float(np.mean([b for _, b in recs[i:i + group]])))
            for i in range(0, len(recs), group)]


def train_rate(run_dir: Path) -> float:
    """Median of the logged training rates: validation time excluded, robust to a noisy window."""
    rates = [r["chars_per_s"] for r in ck.read_metrics(run_dir, "train") if r.get("chars_per_s") is not None]
    return statistics.median(rates) if rates else float("nan")


@dataclass
class Measured:
    """One model's measurements: its report row, and what the probes across models compare."""

    row: dict[str, Any]
    losses: np.ndarray | None  # each probe character's loss with all the context before it
    context: list[float] | None  # the context probe's loss at each length, then with all the context
    gradients: list[float | None]


def measure(name: str, run_dir: Path, summary: dict[str, Any], texts: Texts, device: torch.device,
            cfg: Amounts, tick: Callable[[str], None] = lambda key: None) -> Measured:
    """Every measurement of one trained model; `tick(step.key)` as each of `steps` starts."""
    tick("validation")
    model, tok, ckpt, _ = ck.load_run(run_dir)
    model = model.to(device)
    result = evaluate_model(model, texts.val_ids, device, "fp32", n_streams=EVAL_STREAMS, seq_len=EVAL_LENGTH)
    tick("speed")
    sampler = Sampler(model, tok, device)
    one = sampling_speed(sampler, 1, cfg.speed_chars)
    many = sampling_speed(sampler, cfg.batch_streams, max(cfg.speed_chars // 4, 1))
    tick("samples")
    text = sampler.sample(length=cfg.sample_len, temperature=0.8, seed=1)
    # the model's own distribution (temperature 1), as makemore labels its samples
    long_sample = tok.encode(sampler.sample(length=cfg.memo_chars, temperature=1.0, seed=cfg.seed),
                             unknown="bytes" if tok.byte_fallback else "error")
    memorized = {str(n): v for n, v in texts.index.shares(long_sample).items()}
    losses = context = None
    if texts.lengths:
        tick("losses")
        losses = char_losses(model, texts.probe_ids, device)  # each character with all the context the model can use
        context = []  # the same characters with k characters of context, then with all of it
        for k in texts.lengths:
            tick(f"context {k}")
            context += context_probe(model, texts.probe_ids, device, [k], texts.targets)
        context.append(float(losses[texts.targets - 1].mean()))
    tick("gradients")
    gradients = gradients_through_time(model, texts.probe_ids, device, positions=cfg.gradient_positions,
                                       seed=cfg.seed)[0]
    train_cfg = ckpt.train_config
    row = {
        "model": name,
        "shape": family_of(ckpt.model_config["model"]).describe(ckpt.model_config),
        "params": model.num_params(),
        "steps": summary["step"],
        "chars_trained": summary["chars"],  # at the end of training, as `steps` (best.pt may be earlier)
        "train_chars_per_s": train_rate(run_dir),
        "val_loss": result.loss_nats,
        "val_bpc": result.bpc,
        "sample_1_chars_per_s": one,
        "sample_batched_chars_per_s": many,
        "sample_weights": sampler.weights,  # int8 or fp32: the speed depends on it
        "state_bytes": state_bytes(model),
        "macs_per_char": macs_per_char(model.config),
        "memorized": memorized,  # shares of the long sample's n-grams found in the training text
        "peak_rss_mib": summary.get("peak_rss_mib"),
        "peak_gpu_mib": summary.get("peak_gpu_mib"),
        "sample": text,
        "curve": val_curve(run_dir),
        "train_curve": train_curve(run_dir),
        "model_config": ckpt.model_config,
        "preset": ckpt.run.preset,  # what the budget chose, and the speed it measured
        "chosen_by": family_of(ckpt.model_config["model"]).presets_note,
        "train_config": {k: train_cfg[k] for k in ("batch_size", "seq_len", "lr", "warmup_steps", "min_lr_ratio")},
        "run_dir": path_text(run_dir),
    }
    keep = losses if losses is not None and len(texts.pairs) >= MIN_PAIRS else None
    return Measured(row, keep, context, gradients)


class Ticker:
    """The measuring phase's progress bar, over every model's steps: each step moves it by its estimated
    seconds' share of the whole (off a terminal: a line as each step starts)."""

    def __init__(self, bar: ProgressBar, plans: dict[str, list[tuple[Step, float]]]):
        self.bar, self.plans = bar, plans
        self.total = sum(s for plan in plans.values() for _, s in plan) or 1.0
        self.done = 0.0

    def for_model(self, name: str) -> Callable[[str], None]:
        plan = {step.key: (step, seconds) for step, seconds in self.plans[name]}

        def tick(key: str) -> None:
            step, seconds = plan[key]
            self.bar.show(self.done / self.total, f"{name}: {step.label}")
            self.done += seconds

        return tick

    def close(self) -> None:
        self.bar.show(1.0, "done")
        self.bar.close()
