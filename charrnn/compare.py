"""`charrnn compare`: train several kinds of model on the same corpus under the same wall-clock budget,
one after another, each in its own run folder, then measure them side by side and write a report.

Each model trains in a child process (`multiprocessing` spawn), so its peak memory is its own and
nothing one run leaves behind (allocator caches, threads) slows the next. Everything measured
after training (validation loss, sampling speed, the probes) runs here, one model at a time, on
the same device.

    from charrnn.compare import CompareConfig, compare
    report = compare(CompareConfig(corpus="tinyshakespeare", max_time=300))
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue as queue_module
import re
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ck
from . import pipeline, presets
from .data import build_tokenizer, encode_corpus, file_sha256, resolve_corpus, split
from .device import cpu_name, resolve_device, resolve_precision
from .errors import CharrnnError
from .evaluate import evaluate_model
from .models import MODEL_TYPES, ModelConfig, build_model
from .probe import MIN_PAIRS, bracket_probe, char_losses, context_probe, find_pairs, probe_targets
from .report import write_reports
from .sampler import SampleConfig, Sampler

PROBE_LENGTHS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PROBE_CHARS = 100_000  # the probes read at most this much of the validation split


@dataclass
class CompareConfig:
    corpus: str
    models: tuple[str, ...] = ("rnn", "gru", "lstm", "transformer")
    max_time: float = 300.0  # seconds of training per model, validation included
    params: int | None = None  # size every model to about this many parameters
    out: Path | None = None  # default reports/<corpus>
    device: str = "auto"
    precision: str = "auto"
    val_frac: float = 0.1
    seed: int = 1337
    speed_chars: int = 512  # characters generated per stream when timing sampling
    batch_streams: int = 64  # streams in the batched sampling measurement
    sample_len: int = 200  # characters in the seeded sample shown for each model
    probe_positions: int = 1000  # characters scored at each context length (200 left ±0.15 bits of noise)
    quiet: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # settings applied to every model (e.g. batch_size)

    def validate(self) -> None:
        if not self.models:
            raise CharrnnError("--models names no model")
        bad = [m for m in self.models if m not in MODEL_TYPES]
        if bad:
            raise CharrnnError(f"unknown model(s) {', '.join(bad)}: choose from {', '.join(MODEL_TYPES)}")
        if len(set(self.models)) != len(self.models):
            raise CharrnnError("--models names a model twice")
        if not self.max_time > 0:
            raise CharrnnError(f"max-time must be > 0, not {self.max_time}")
        if self.params is not None and self.params < 1:
            raise CharrnnError(f"params must be >= 1, not {self.params}")


def parse_count(text: str) -> int:
    """'3M', '800k', '1.5m', '250000' -> a parameter count."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*", text)
    if not m:
        raise CharrnnError(f"not a parameter count: {text!r} (use e.g. 800k, 3M)")
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


# --- sizing ----------------------------------------------------------------------------------------
def count_params(settings: dict[str, Any], vocab_size: int) -> int:
    """Parameters of the model these settings describe, built on the meta device (no memory)."""
    fields = {k: v for k, v in settings.items() if k in ModelConfig.__dataclass_fields__}
    with torch.device("meta"):
        return build_model(ModelConfig(vocab_size=vocab_size, **fields)).num_params()


def size_for_params(model: str, target: int, vocab_size: int, preset: dict[str, Any]) -> dict[str, Any]:
    """A preset's settings for `model` with its width chosen so that the parameter count is as close
    to `target` as the preset's depth allows (the Transformer's width stays a multiple of its heads)."""
    base = {**preset, "model": model}
    step = base["heads"] if model == "transformer" else 1

    def shape(width: int) -> dict[str, Any]:  # a small RNN gets an embedding no wider than its state
        return {"hidden": width} if model == "transformer" else {"hidden": width, "embed": min(base["embed"], width)}

    def params(width: int) -> int:
        return count_params({**base, **shape(width)}, vocab_size)

    lo, hi = 1, step  # widths are multiples of `step`, counted in units of it
    while params(hi * step) < target and hi < 1 << 16:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # the largest width below the target, then pick the nearer neighbour
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if params(mid * step) < target else (lo, mid)
    best = min((lo, hi), key=lambda w: abs(params(w * step) - target))
    return {"model": model, **shape(best * step)}


# --- training, one child process per model ---------------------------------------------------------
def _peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM where there is /proc: ru_maxrss would carry the parent's
    peak across fork and exec into the child's (benchmarks/memory.py measures the same way)."""
    try:
        with open("/proc/self/status") as f:
            return int(next(line.split()[1] for line in f if line.startswith("VmHWM:"))) / 1024
    except (OSError, StopIteration):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 1024 if sys.platform != "darwin" else rss / 2**20  # KiB on Linux, bytes on macOS


def _train_child(opts: pipeline.RunOptions, overrides: dict[str, Any], queue) -> None:
    """Runs in a spawned process: train one model, report its summary and peak memory."""
    try:
        summary = pipeline.train(opts, overrides)
        summary["peak_rss_mib"] = _peak_rss_mib()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            summary["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        queue.put(("ok", summary))
    except CharrnnError as e:
        queue.put(("error", str(e)))
    except BaseException as e:  # a crash in the child must still reach the parent as one line
        queue.put(("error", f"training crashed: {type(e).__name__}: {e}"))


def train_one(opts: pipeline.RunOptions, overrides: dict[str, Any]) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_train_child, args=(opts, overrides, queue))
    proc.start()
    try:
        while True:
            try:
                status, payload = queue.get(timeout=0.5)
                break
            except queue_module.Empty:
                if not proc.is_alive() and queue.empty():  # killed (out of memory, say) before it reported
                    status, payload = "error", f"the training process died (exit code {proc.exitcode})"
                    break
    finally:
        proc.join()
    if status == "error":
        raise CharrnnError(payload)
    return payload


# --- measuring a trained model ---------------------------------------------------------------------
def sampling_speed(sampler: Sampler, streams: int, length: int) -> float:
    """Characters per second generated, all streams together, after a short warm-up."""
    sampler.sample_many(SampleConfig(length=8, seed=0), streams)
    t0 = time.perf_counter()
    sampler.sample_many(SampleConfig(length=length, seed=0), streams)
    return streams * length / (time.perf_counter() - t0)


def state_bytes(model) -> int:
    """Memory one sampling stream carries from character to character: an RNN's hidden state (fixed),
    or a Transformer's key/value cache (grows with its context)."""
    state = model.init_state(1)
    tensors = state if isinstance(state, tuple) else [v for v in vars(state).values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


def _val_curve(run_dir: Path) -> list[tuple[float, float]]:
    records = [json.loads(line) for line in (run_dir / ck.METRICS).read_text().splitlines()]
    return [(r["elapsed"], r["bpc"]) for r in records if r["kind"] == "val"]


def _train_rate(run_dir: Path) -> float:
    """Median of the logged training rates: validation time excluded, robust to a noisy window."""
    records = [json.loads(line) for line in (run_dir / ck.METRICS).read_text().splitlines()]
    rates = [r["chars_per_s"] for r in records if r["kind"] == "train"]
    return statistics.median(rates) if rates else float("nan")


def _shape(cfg: dict[str, Any]) -> str:
    if cfg["model"] == "transformer":
        return f"{cfg['n_layers']}x{cfg['hidden']}, {cfg['heads']} heads, context {cfg['context']}"
    return f"{cfg['n_layers']}x{cfg['hidden']}" + (f", dropout {cfg['dropout']}" if cfg.get("dropout") else "")


def measure(name: str, run_dir: Path, summary: dict[str, Any], val_ids: np.ndarray, device: torch.device,
            cfg: CompareConfig) -> tuple[dict[str, Any], Any, Sampler]:
    model, tok, ckpt, _ = ck.load_run(run_dir)
    model = model.to(device)
    result = evaluate_model(model, val_ids, device, "fp32", n_streams=pipeline.EVAL_STREAMS, seq_len=pipeline.EVAL_SEQ)
    sampler = Sampler(model, tok, device)
    one = sampling_speed(sampler, 1, cfg.speed_chars)
    many = sampling_speed(sampler, cfg.batch_streams, max(cfg.speed_chars // 4, 1))
    text = sampler.sample(length=cfg.sample_len, temperature=0.8, seed=1)
    train_cfg = ckpt["train_config"]
    row = {
        "model": name,
        "shape": _shape(ckpt["model_config"]),
        "params": model.num_params(),
        "steps": summary["step"],
        "chars_trained": summary["chars"],  # at the end of training, as `steps` (best.pt may be earlier)
        "train_chars_per_s": _train_rate(run_dir),
        "val_loss": result.loss_nats,
        "val_bpc": result.bpc,
        "sample_1_chars_per_s": one,
        "sample_batched_chars_per_s": many,
        "sample_weights": sampler.weights,  # int8 or fp32: the speed depends on it
        "state_bytes": state_bytes(model),
        "peak_rss_mib": summary.get("peak_rss_mib"),
        "peak_gpu_mib": summary.get("peak_gpu_mib"),
        "sample": text,
        "curve": _val_curve(run_dir),
        "model_config": ckpt["model_config"],
        "train_config": {k: train_cfg[k] for k in ("batch_size", "seq_len", "lr", "warmup_steps", "min_lr_ratio")},
        "run_dir": str(run_dir),
    }
    return row, model, sampler


def compare(cfg: CompareConfig) -> dict[str, Any]:
    """Train and measure every model in `cfg.models`; write report.md, report.html and report.json."""
    cfg.validate()
    device = resolve_device(cfg.device)
    corpus_path = resolve_corpus(cfg.corpus, quiet=cfg.quiet)
    out = cfg.out or Path("reports") / pipeline._corpus_name(corpus_path)
    if (out / "report.json").exists() or (out / "runs").exists():
        raise CharrnnError(f"{out} already holds a comparison: choose another --out")
    tok = build_tokenizer(corpus_path)
    sizes = {}
    if cfg.params:  # the budget's preset for each model (timed here, as its run would), then its width
        precision = resolve_precision(cfg.precision, device)
        for m in cfg.models:
            preset = presets.choose(cfg.max_time, {**cfg.extra, "model": m}, tok.vocab_size, device, precision)
            sizes[m] = {**preset.settings, **size_for_params(m, cfg.params, tok.vocab_size, preset.settings)}

    rows, summaries = [], {}
    t_start = time.perf_counter()
    for i, name in enumerate(cfg.models):
        run_dir = out / "runs" / name
        overrides = {"model": name, **sizes.get(name, {}), **cfg.extra, "max_time": cfg.max_time, "seed": cfg.seed}
        if not cfg.quiet:
            print(f"[{i + 1}/{len(cfg.models)}] training {name} for {cfg.max_time:g}s -> {run_dir}", file=sys.stderr,
                  flush=True)
        opts = pipeline.RunOptions(corpus=str(corpus_path), out=run_dir, val_frac=cfg.val_frac, device=cfg.device,
                                   precision=cfg.precision, quiet=cfg.quiet, sample_len=0)
        summaries[name] = train_one(opts, overrides)
        if summaries[name]["reason"] == "interrupted":
            raise CharrnnError(f"interrupted while training {name}; its run is in {run_dir}")

    # measure one model at a time, after all training, so no measurement competes with a training run
    # the runs' own id cache: the vocabulary is the corpus's, so every id is one character
    ids = encode_corpus(corpus_path, tok, out / "runs" / cfg.models[0] / "cache", sha256=file_sha256(corpus_path))
    val_ids = split(ids, cfg.val_frac)[1]
    probe_ids = val_ids[:PROBE_CHARS]
    lengths = [k for k in PROBE_LENGTHS if k < len(probe_ids) // 2]
    pairs = find_pairs(tok.decode(probe_ids))
    targets = probe_targets(len(probe_ids), max(lengths), cfg.probe_positions, cfg.seed) if lengths else None
    closer_losses, context = {}, {}
    for name in cfg.models:
        if not cfg.quiet:
            print(f"measuring {name}", file=sys.stderr, flush=True)
        row, model, _ = measure(name, out / "runs" / name, summaries[name], val_ids, device, cfg)
        if lengths:
            full = char_losses(model, probe_ids, device)  # each character with all the context the model can use
            if len(pairs) >= MIN_PAIRS:
                closer_losses[name] = full
            # the same characters with k characters of context, then with all of it
            context[name] = context_probe(model, probe_ids, device, lengths, targets) + [float(full[targets - 1].mean())]
        rows.append(row)

    report = {
        "corpus": str(corpus_path),
        "corpus_chars": len(ids),
        "val_chars": len(val_ids),
        "command": _command(cfg),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "device": str(device),
        "machine": _machine(device),
        "wall_s": time.perf_counter() - t_start,
        "rows": rows,
        "probe_chars": len(probe_ids),
        "brackets": bracket_probe(closer_losses, pairs).to_dict() if closer_losses else {"pairs": len(pairs)},
        "context_probe": {"lengths": lengths, "loss": context, "positions": 0 if targets is None else len(targets)},
    }
    write_reports(out, report)
    report["out"] = str(out)
    return report


def _command(cfg: CompareConfig) -> str:
    """The command line that reproduces this comparison (options left at their defaults are omitted)."""
    parts = ["charrnn", "compare", cfg.corpus, "--models", ",".join(cfg.models), "--max-time", f"{cfg.max_time:g}s"]
    default = CompareConfig(cfg.corpus)
    for flag, name in (("--params", "params"), ("--device", "device"), ("--precision", "precision"),
                       ("--val-frac", "val_frac"), ("--seed", "seed"), ("--out", "out")):
        value = getattr(cfg, name)
        if value is not None and value != getattr(default, name):
            parts += [flag, str(value)]
    return " ".join(parts)


def _machine(device: torch.device) -> str:
    text = f"{cpu_name()}, {os.cpu_count()} cpus, torch {torch.__version__}"
    if device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return text
