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

import contextlib
import json
import multiprocessing
import os
import queue as queue_module
import signal
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ck
from . import presets, training
from .corpora import file_sha256, resolve_corpus
from .data import encode_corpus, scan_corpus, split, training_unknown
from .device import cpu_name, resolve_device, resolve_precision
from .errors import CharrnnError, Interrupted
from .evaluate import EVAL_LENGTH, EVAL_STREAMS
from .families import evaluate_model, family_of, kinds, macs_per_char, model_config, model_settings, param_count
from .fileio import json_value, path_text, read_bytes, shown, to_json, write_json
from .memorization import NgramIndex
from .microscope import gradients_through_time
from .probe import MIN_PAIRS, bracket_probe, char_losses, context_probe, find_pairs, probe_targets
from .report import write_reports
from .sampler import SampleConfig, Sampler

try:
    import resource  # POSIX only: the peak memory where there is no /proc (macOS)
except ImportError:  # Windows
    resource = None

PROBE_LENGTHS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PROBE_CHARS = 100_000  # the probes read at most this much of the validation split
MEMO_NS = (10, 20, 40)  # n-gram lengths of the memorization measurement
RUNS = "runs"  # a comparison's folder holds its reports, and here a run folder per model


@dataclass
class CompareConfig:
    corpus: str
    models: tuple[str, ...] = field(default_factory=kinds)  # every kind of model there is
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
    memo_chars: int = 5000  # characters of the seeded sample (temperature 1) whose n-grams are looked up
    gradient_positions: int = 32  # positions averaged for the gradients through time
    quiet: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # settings applied to every model (e.g. batch_size)

    def validate(self) -> None:
        if not self.models:
            raise CharrnnError("--models names no model")
        bad = [m for m in self.models if m not in kinds()]
        if bad:
            raise CharrnnError(f"unknown model(s) {', '.join(bad)}: choose from {', '.join(kinds())}")
        if len(set(self.models)) != len(self.models):
            raise CharrnnError("--models names a model twice")
        if not self.max_time > 0:
            raise CharrnnError(f"max-time must be > 0, not {self.max_time}")
        if self.params is not None and self.params < 1:
            raise CharrnnError(f"params must be >= 1, not {self.params}")


# --- sizing ----------------------------------------------------------------------------------------
def count_params(settings: dict[str, Any], vocab_size: int) -> int:
    """Parameters of the model these settings describe, by formula (nothing is built)."""
    return param_count(model_config(vocab_size, **model_settings(settings)[0]))


def size_for_params(model: str, target: int, vocab_size: int, preset: dict[str, Any]) -> dict[str, Any]:
    """A preset's settings for `model` with its width chosen so that the parameter count is as close
    to `target` as the preset's depth allows (a width the family constrains, as the Transformer's to a
    multiple of its heads, stays so)."""
    base = {**preset, "model": model}
    fam = family_of(model)
    step = fam.width_step(base)

    def shape(width: int) -> dict[str, Any]:
        return fam.with_width(base, width)

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


def _run_dir(out: Path, model: str) -> Path:
    return out / RUNS / model


# --- training, one child process per model ---------------------------------------------------------
def _peak_rss_mib() -> float | None:
    """This process's peak resident memory (None where the system does not say). VmHWM where there is
    /proc: ru_maxrss would carry the parent's peak across fork and exec into the child's
    (benchmarks/memory.py measures the same way)."""
    try:
        with open("/proc/self/status") as f:
            return int(next(line.split()[1] for line in f if line.startswith("VmHWM:"))) / 1024
    except (OSError, StopIteration):
        if resource is None:
            return None
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 1024 if sys.platform != "darwin" else rss / 2**20  # KiB on Linux, bytes on macOS


def _train_child(opts: training.RunOptions, overrides: dict[str, Any], queue, stop) -> None:
    """Runs in a spawned process: train one model, report its summary and peak memory.

    It is born with SIGINT blocked and leaves the terminal's process group, so no Ctrl-C reaches it,
    not even while it starts: the parent, which gets them, asks it to stop through the event `stop`,
    and it finishes its step and saves. It stops the same way if the parent goes away."""
    if hasattr(os, "setpgrp"):  # POSIX; on Windows a console's Ctrl-C reaches every process in it anyway
        os.setpgrp()
    parent = os.getppid()

    def stop_when_asked(trainer) -> None:
        trainer.hooks.on_step.append(lambda t: t.request_stop() if stop.is_set() or os.getppid() != parent else None)

    try:
        summary = training.train(opts, overrides, on_trainer=stop_when_asked)
        summary["peak_rss_mib"] = _peak_rss_mib()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            summary["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        queue.put(("ok", summary))
    except CharrnnError as e:
        queue.put(("error", str(e)))
    except BaseException as e:  # a crash in the child must still reach the parent as one line
        queue.put(("error", f"training crashed: {type(e).__name__}: {e}"))


def train_one(opts: training.RunOptions, overrides: dict[str, Any]) -> dict[str, Any]:
    """Train one model in a child process. Ctrl-C asks the child to finish its step and save (its
    summary then says "interrupted"); a second Ctrl-C stops it at once."""
    ctx = multiprocessing.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_train_child, args=(opts, overrides, queue, stop))

    def interrupt(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("interrupted: finishing this step and saving last.pt (Ctrl-C again to abort)", file=sys.stderr,
              flush=True)

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupt) if main else None
    try:
        # SIGINT blocked while the child is made, so that it is born so: a Ctrl-C in its first seconds
        # (importing torch, before it can leave the terminal's process group) stays pending there, never
        # delivered, instead of killing it halfway. One that comes meanwhile reaches this process when the
        # block ends, and its handler above.
        block = main and hasattr(signal, "pthread_sigmask")
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if block else None
        try:
            proc.start()
        finally:
            if block:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        status, payload = _outcome(proc, queue)
    except KeyboardInterrupt:
        if proc.pid is not None:
            proc.kill()
        raise
    finally:
        if proc.pid is not None:
            proc.join()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if status == "error":
        raise CharrnnError(payload)
    return payload


def _outcome(proc, queue) -> tuple[str, Any]:
    """What the child reports: ("ok", its summary) or ("error", one line), also if it dies first."""
    while True:
        try:
            return queue.get(timeout=0.5)
        except queue_module.Empty:
            if not proc.is_alive() and queue.empty():  # killed (out of memory, say) before it reported
                return "error", f"the training process died (exit code {proc.exitcode})"


# --- measuring a trained model ---------------------------------------------------------------------
def sampling_speed(sampler: Sampler, streams: int, length: int) -> float:
    """Characters per second generated, all streams together, after a short warm-up."""
    sampler.sample_many(SampleConfig(length=8, seed=0), streams)
    t0 = time.perf_counter()
    sampler.sample_many(SampleConfig(length=length, seed=0), streams)
    return streams * length / (time.perf_counter() - t0)


def state_bytes(model) -> int:
    """Memory one sampling stream carries from character to character: an RNN's hidden state (fixed),
    or a Transformer's key/value cache (grows with its context), in fp32."""
    return 4 * family_of(model.config.model).sampling_state_floats(model.config, 1)


def _val_curve(run_dir: Path) -> list[tuple[float, float]]:
    return [(r["elapsed"], r["bpc"]) for r in ck.read_metrics(run_dir, "val") if r.get("bpc") is not None]


def _train_rate(run_dir: Path) -> float:
    """Median of the logged training rates: validation time excluded, robust to a noisy window."""
    rates = [r["chars_per_s"] for r in ck.read_metrics(run_dir, "train") if r.get("chars_per_s") is not None]
    return statistics.median(rates) if rates else float("nan")


def measure(name: str, run_dir: Path, summary: dict[str, Any], val_ids: np.ndarray, device: torch.device,
            cfg: CompareConfig, training_text: NgramIndex) -> tuple[dict[str, Any], Any, Sampler]:
    model, tok, ckpt, _ = ck.load_run(run_dir)
    model = model.to(device)
    result = evaluate_model(model, val_ids, device, "fp32", n_streams=EVAL_STREAMS, seq_len=EVAL_LENGTH)
    sampler = Sampler(model, tok, device)
    one = sampling_speed(sampler, 1, cfg.speed_chars)
    many = sampling_speed(sampler, cfg.batch_streams, max(cfg.speed_chars // 4, 1))
    text = sampler.sample(length=cfg.sample_len, temperature=0.8, seed=1)
    # the model's own distribution (temperature 1), as makemore labels its samples
    long_sample = tok.encode(sampler.sample(length=cfg.memo_chars, temperature=1.0, seed=cfg.seed),
                             unknown="bytes" if tok.byte_fallback else "error")
    memorized = {str(n): v for n, v in training_text.shares(long_sample).items()}
    train_cfg = ckpt.train_config
    row = {
        "model": name,
        "shape": family_of(ckpt.model_config["model"]).describe(ckpt.model_config),
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
        "macs_per_char": macs_per_char(model.config),
        "memorized": memorized,  # shares of the long sample's n-grams found in the training text
        "peak_rss_mib": summary.get("peak_rss_mib"),
        "peak_gpu_mib": summary.get("peak_gpu_mib"),
        "sample": text,
        "curve": _val_curve(run_dir),
        "model_config": ckpt.model_config,
        "preset": ckpt.run.preset,  # what the budget chose, and the speed it measured
        "chosen_by": family_of(ckpt.model_config["model"]).presets_note,
        "train_config": {k: train_cfg[k] for k in ("batch_size", "seq_len", "lr", "warmup_steps", "min_lr_ratio")},
        "run_dir": path_text(run_dir),
    }
    return row, model, sampler


def compare(cfg: CompareConfig) -> dict[str, Any]:
    """Train and measure every model in `cfg.models`; write report.md, report.html and report.json."""
    cfg.validate()
    device = resolve_device(cfg.device)
    corpus_path = resolve_corpus(cfg.corpus, quiet=cfg.quiet)
    out = cfg.out or Path("reports") / training.corpus_name(corpus_path)
    if (out / "report.json").exists():
        raise CharrnnError(f"{shown(out)} already holds a comparison: choose another --out")
    created, continued = not out.exists(), (out / PROGRESS).exists()
    try:
        with ck.FolderLock(out):
            return _compare(cfg, out, corpus_path, device)
    except BaseException:
        if not continued and not _checkpoints(out):
            _take_back(out, created)
        raise


def _checkpoints(out: Path) -> bool:
    """Whether any run of the comparison in `out` holds a checkpoint (something a rerun continues)."""
    return any((run / n).exists() for run in (out / RUNS).glob("*") for n in (ck.LAST, ck.BEST))


def _take_back(out: Path, created: bool) -> None:
    """Undo a comparison that failed before any of its runs wrote a checkpoint: nothing in it could be
    continued, and its compare.json would refuse the corrected command into the same --out."""
    with contextlib.suppress(OSError):
        (out / PROGRESS).unlink(missing_ok=True)
    runs = out / RUNS
    for folder in [*(runs.iterdir() if runs.is_dir() else ()), runs, *([out] if created else [])]:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty: anything else in it is not ours


PROGRESS = "compare.json"  # an unfinished comparison: its settings and the models trained so far


def _settings(cfg: CompareConfig) -> dict[str, Any]:
    """The settings that make a comparison, as they read back from JSON."""
    return json.loads(to_json({k: v for k, v in _plain(cfg).items() if k != "quiet"}))


def _plain(cfg: CompareConfig) -> dict[str, Any]:
    """The config as JSON holds it: paths (and a corpus, which may be one) as text, with \\xff escapes
    for bytes that are not UTF-8."""
    return {k: path_text(v) if isinstance(v, (str, Path)) else v for k, v in asdict(cfg).items()}


def _progress(cfg: CompareConfig, out: Path) -> dict[str, Any]:
    """The record of this comparison so far: a new one, or the unfinished one in `out`, which a rerun
    of the same command continues (another command there is refused)."""
    path, settings = out / PROGRESS, _settings(cfg)
    if not path.exists():
        if (out / RUNS).exists():
            raise CharrnnError(f"{shown(out)} already holds runs of another comparison: choose another --out")
        return {"settings": settings, "sizes": None, "trained": {}}
    try:
        state = json_value(read_bytes(path))
        saved = state["settings"]
    except (ValueError, KeyError, TypeError):
        raise CharrnnError(f"{shown(path)} is damaged: choose another --out") from None
    if saved != settings:
        diff = ", ".join(sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k)))
        raise CharrnnError(f"{shown(out)} holds an unfinished comparison with other settings ({diff}): rerun "
                           f"its own command to finish it, or choose another --out")
    return state


def _compare(cfg: CompareConfig, out: Path, corpus_path: Path, device: torch.device) -> dict[str, Any]:
    state = _progress(cfg, out)
    tok, n_chars, _ = scan_corpus(corpus_path)
    if state["sizes"] is None:
        state["sizes"] = _sizes(cfg, tok, n_chars, device) if cfg.params else {}
        write_json(out / PROGRESS, state)
    t_start = time.perf_counter()
    _train_all(cfg, out, corpus_path, state)
    report = _measure_all(cfg, out, corpus_path, tok, state["trained"], device)
    report["wall_s"] = time.perf_counter() - t_start
    write_reports(out, report)
    (out / PROGRESS).unlink(missing_ok=True)  # the comparison is complete: report.json says so
    report["out"] = str(out)
    return report


def _sizes(cfg: CompareConfig, tok, n_chars: int, device: torch.device) -> dict[str, dict[str, Any]]:
    """--params: each model's budget preset (timed here, as its run would time it), then its width, checked
    to fit in memory before any model trains."""
    precision = resolve_precision(cfg.precision, device)
    sizes = {}
    for m in cfg.models:
        outputs = {"n_outputs": tok.n_chars}  # as `charrnn train` builds it
        preset = presets.choose(cfg.max_time, {**cfg.extra, "model": m, **outputs}, tok.vocab_size, device,
                                precision, int(n_chars * (1 - cfg.val_frac)))
        sizes[m] = {**preset.settings, **size_for_params(m, cfg.params, tok.vocab_size, {**preset.settings, **outputs})}
        training.check_fits({**sizes[m], **cfg.extra, **outputs}, tok.vocab_size, cfg.val_frac, device,
                            f"{m} at about {cfg.params:,} parameters", "lower --params")
    return sizes


def _train_all(cfg: CompareConfig, out: Path, corpus_path: Path, state: dict[str, Any]) -> None:
    """Train each model not trained yet (an interrupted one continues), recording each in compare.json."""
    summaries = state["trained"]
    for i, name in enumerate(cfg.models):
        run_dir = _run_dir(out, name)
        if name in summaries:  # trained before an interruption
            continue
        resume = (run_dir / ck.LAST).exists()
        overrides = {"max_time": cfg.max_time} if resume else \
            {"model": name, **state["sizes"].get(name, {}), **cfg.extra, "max_time": cfg.max_time, "seed": cfg.seed}
        if not cfg.quiet:
            what = "continuing" if resume else "training"
            print(f"[{i + 1}/{len(cfg.models)}] {what} {name} for {cfg.max_time:g}s -> {shown(run_dir)}",
                  file=sys.stderr, flush=True)
        opts = training.RunOptions(corpus=str(corpus_path), out=run_dir, val_frac=None if resume else cfg.val_frac,
                                   device=cfg.device, precision=None if resume else cfg.precision, quiet=cfg.quiet,
                                   sample_len=0, resume=resume)
        summary = train_one(opts, overrides)
        if summary["reason"] == "interrupted":
            raise Interrupted(f"interrupted while training {name}: its run is saved in {shown(run_dir)}; "
                              f"run the same command again to continue the comparison")
        summaries[name] = summary
        write_json(out / PROGRESS, state)


def _measure_all(cfg: CompareConfig, out: Path, corpus_path: Path, tok, summaries: dict, device: torch.device) -> dict:
    """Every measurement after training, one model at a time, so that none competes with a training run."""
    # the runs' own id cache (their vocabulary is the corpus's)
    ids = encode_corpus(corpus_path, tok, ck.RunFolder(_run_dir(out, cfg.models[0])).cache, training_unknown(tok),
                        sha256=file_sha256(corpus_path))
    val_ids = split(ids, cfg.val_frac)[1]
    probe_ids = val_ids[:PROBE_CHARS]
    lengths = [k for k in PROBE_LENGTHS if k < len(probe_ids) // 2]
    pairs = find_pairs(tok.decode(probe_ids))
    targets = probe_targets(len(probe_ids), max(lengths), cfg.probe_positions, cfg.seed) if lengths else None
    rows, closer_losses, context, gradients = [], {}, {}, {}
    index = NgramIndex(split(ids, cfg.val_frac)[0], ns=MEMO_NS)
    for name in cfg.models:
        if not cfg.quiet:
            print(f"measuring {name}", file=sys.stderr, flush=True)
        row, model, _ = measure(name, _run_dir(out, name), summaries[name], val_ids, device, cfg, index)
        if lengths:
            full = char_losses(model, probe_ids, device)  # each character with all the context the model can use
            if len(pairs) >= MIN_PAIRS:
                closer_losses[name] = full
            # the same characters with k characters of context, then with all of it
            context[name] = context_probe(model, probe_ids, device, lengths, targets) + [float(full[targets - 1].mean())]
        gradients[name] = gradients_through_time(model, probe_ids, device, positions=cfg.gradient_positions,
                                                 seed=cfg.seed)[0]
        rows.append(row)
    return {
        "corpus": path_text(corpus_path), "corpus_chars": len(ids), "val_chars": len(val_ids),
        "command": _command(cfg), "settings": _plain(cfg), "device": str(device), "machine": _machine(device),
        "rows": rows, "probe_chars": len(probe_ids),
        "brackets": bracket_probe(closer_losses, pairs).to_dict() if closer_losses else {"pairs": len(pairs)},
        "context_probe": {"lengths": lengths, "loss": context, "positions": 0 if targets is None else len(targets)},
        "gradients": {"loss": gradients, "positions": cfg.gradient_positions,
                      "of": {name: family_of(name).gradient_of for name in cfg.models}},
        "memorized_validation": {str(n): v for n, v in index.shares(np.asarray(val_ids[:cfg.memo_chars])).items()},
    }


def _command(cfg: CompareConfig) -> str:
    """The command line that reproduces this comparison (options left at their defaults are omitted)."""
    parts = ["charrnn", "compare", path_text(cfg.corpus), "--models", ",".join(cfg.models),
             "--max-time", f"{cfg.max_time:g}s"]
    default = CompareConfig(cfg.corpus)
    for flag, name in (("--params", "params"), ("--device", "device"), ("--precision", "precision"),
                       ("--val-frac", "val_frac"), ("--seed", "seed"), ("--out", "out")):
        value = getattr(cfg, name)
        if value is not None and value != getattr(default, name):
            parts += [flag, path_text(str(value))]
    return " ".join(parts)


def _machine(device: torch.device) -> str:
    text = f"{cpu_name()}, {os.cpu_count()} cpus, torch {torch.__version__}"
    if device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return text
