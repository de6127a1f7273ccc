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
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ck
from . import presets, training
from .config import ModelConfig
from .corpora import file_sha256, resolve_corpus
from .data import encode_corpus, scan_corpus, split, training_unknown
from .device import cpu_name, resolve_device, resolve_precision
from .errors import CharrnnError, Interrupted, one_line
from .families import (
    build_model,
    config_from_dict,
    family_of,
    kinds,
    macs_per_char,
    model_config,
    model_settings,
    param_count,
)
from .fileio import json_value, path_text, read_bytes, shown, to_json, write_json
from .measuring import Rates, Step, Texts, Ticker, calibrate, estimate, measure, outline, steps
from .probe import bracket_probe
from .progress import ProgressBar
from .report import write_reports
from .units import format_duration

try:
    import resource  # POSIX only: the peak memory where there is no /proc (macOS)
except ImportError:  # Windows
    resource = None

RUNS = "runs"  # a comparison's folder holds its reports, and here a run folder per model
PLAN_TIMING_S = 0.1  # seconds the plan times each model's smallest preset for (its run times them longer)


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
    plan = None if cfg.quiet else make_plan(cfg, out, state, tok, n_chars, device, say=_say)
    _train_all(cfg, out, corpus_path, state, plan)
    report = _measure_all(cfg, out, corpus_path, tok, state["trained"], device, plan)
    report["wall_s"] = time.perf_counter() - t_start
    if plan is not None:
        report["plan"] = plan.to_dict()
    write_reports(out, report)
    (out / PROGRESS).unlink(missing_ok=True)  # the comparison is complete: report.json says so
    report["out"] = str(out)
    return report


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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


# --- the plan, and how long it will take -----------------------------------------------------------
@dataclass
class Planned:
    """One model of the plan: the training it has still to do, the estimated seconds of its measuring
    (None where it could not be estimated), and the shape that estimate is for."""

    model: str
    train_s: float
    measure_s: float | None
    basis: str  # where the shape comes from: its run, --params, or the preset the budget should choose
    config: ModelConfig | None = None
    rates: Rates | None = None  # its passes timed on that shape (reused when the trained model has it)


@dataclass
class Plan:
    models: list[Planned]

    @property
    def train_s(self) -> float:
        return sum(m.train_s for m in self.models)

    @property
    def measure_s(self) -> float:
        return sum(m.measure_s or 0.0 for m in self.models)

    @property
    def total_s(self) -> float:
        return self.train_s + self.measure_s

    def to_dict(self) -> dict[str, Any]:
        return {"total_s": self.total_s, "train_s": self.train_s, "measure_s": self.measure_s,
                "models": [{"model": m.model, "train_s": m.train_s, "measure_s": m.measure_s, "basis": m.basis}
                           for m in self.models]}


def finish_clock(seconds: float) -> str:
    """The local time `seconds` from now, as a clock shows it (with the day when it is not today)."""
    now, then = time.localtime(), time.localtime(time.time() + seconds)
    return time.strftime("%H:%M" if then[:3] == now[:3] else "%a %H:%M", then)


def make_plan(cfg: CompareConfig, out: Path, state: dict[str, Any], tok, n_chars: int, device: torch.device,
              say: Callable[[str], None] = lambda line: None) -> Plan:
    """What the comparison will do and how long that should take, each line passed to `say` as it is made:
    the models in order, the training each has still to do (its budget, less what an interrupted run
    has done), and each one's measuring, estimated from the characters each step of it processes
    (`measuring.steps`, from the length of the validation split) and the speed of each kind of pass,
    timed briefly on a model of its shape (`measuring.calibrate`). Where the budget will choose that
    shape, it is predicted: the budget's rule (`presets.choose`) given the speed of each preset scaled by
    its multiply-adds from one timing of the smallest."""
    val_chars = n_chars - int(n_chars * (1 - cfg.val_frac))
    models = f"{len(cfg.models)} model{'s' if len(cfg.models) > 1 else ''}"
    say(f"compare {models}: each trained for {format_duration(cfg.max_time)} in turn, then each "
        f"measured, then the reports written to {shown(out)}")
    say(f"measuring a model: {outline(steps(cfg, val_chars, None))}")
    planned_models = []
    for i, name in enumerate(cfg.models):
        planned = _plan_model(cfg, out, state, name, tok, n_chars, val_chars, device)
        planned_models.append(planned)
        measuring = "?" if planned.measure_s is None else f"~{format_duration(planned.measure_s)}"
        say(f"  {i + 1}. {name:<12} train {format_duration(planned.train_s):>6}   measure {measuring:>7}   "
            f"({planned.basis})")
    plan = Plan(planned_models)
    say(f"estimated total {format_duration(plan.total_s)} (training {format_duration(plan.train_s)}, measuring "
        f"~{format_duration(plan.measure_s)}): done about {finish_clock(plan.total_s)}")
    return plan


def _plan_model(cfg: CompareConfig, out: Path, state: dict[str, Any], name: str, tok, n_chars: int, val_chars: int,
                device: torch.device) -> Planned:
    run_dir = _run_dir(out, name)
    train_s = 0.0 if name in state["trained"] else max(0.0, cfg.max_time - _elapsed(run_dir))
    try:
        if (run_dir / ck.CONFIG).exists():
            config, basis = config_from_dict(ck.read_config(run_dir)["model"]), "the shape of its run"
        else:
            settings, basis = _planned_settings(cfg, state, name, tok, n_chars, device)
            config = model_config(tok.vocab_size, **model_settings(settings)[0])
        model_steps = steps(cfg, val_chars, family_of(config.model).context(config))
        rates = _rates(config, tok, device, model_steps, val_chars, cfg)
    except (CharrnnError, ValueError, KeyError, TypeError) as e:  # an estimate only: the run says what is wrong
        return Planned(name, train_s, None, f"no estimate: {one_line(e, 80)}")
    return Planned(name, train_s, sum(estimate(model_steps, rates)), basis, config, rates)


def _elapsed(run_dir: Path) -> float:
    """The training seconds an interrupted run has done (0 for one not started)."""
    if not (run_dir / ck.LAST).exists():
        return 0.0
    times = [r["elapsed"] for r in ck.read_metrics(run_dir) if isinstance(r.get("elapsed"), (int, float))]
    return max(times, default=0.0)


def _planned_settings(cfg: CompareConfig, state: dict[str, Any], name: str, tok, n_chars: int,
                      device: torch.device) -> tuple[dict[str, Any], str]:
    """The settings a model will train with (as far as they decide its speed), and how they are known."""
    given = {**cfg.extra, "model": name, "n_outputs": tok.n_chars}  # as `charrnn train` builds it
    if state["sizes"].get(name):
        return {**state["sizes"][name], **given}, f"sized to about {cfg.params:,} parameters"
    if not presets.needs_choice(given):
        return given, "its given settings"
    precision = resolve_precision(cfg.precision, device)
    vocab = tok.vocab_size

    def macs(settings: dict[str, Any]) -> float:
        return macs_per_char(model_config(vocab, **model_settings(settings)[0]))["train"]

    smallest = family_of(name).derived({**presets.presets_for(name)[0].settings, **given})
    speed = presets.measure_speed(smallest, vocab, device, precision, seconds=PLAN_TIMING_S) * macs(smallest)
    choice = presets.choose(cfg.max_time, given, vocab, device, precision, int(n_chars * (1 - cfg.val_frac)),
                            measure=lambda settings, *args: speed / macs(settings))
    return {**choice.settings, **given}, f"preset {choice.name}, as the budget should choose"


def _rates(config: ModelConfig, tok, device: torch.device, model_steps: list[Step], val_chars: int,
           cfg: CompareConfig) -> Rates:
    """The passes of these measuring steps timed on a model of this shape (random weights: the same speed)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = build_model(config).to(device)
    return calibrate(model, tok, device, model_steps, val_chars, cfg.batch_streams)


# --- training and measuring ------------------------------------------------------------------------
def _train_all(cfg: CompareConfig, out: Path, corpus_path: Path, state: dict[str, Any], plan: Plan | None) -> None:
    """Train each model not trained yet (an interrupted one continues), recording each in compare.json."""
    summaries = state["trained"]
    beyond = []  # seconds each run took beyond its budget (its start, its last save): for the finish time
    for i, name in enumerate(cfg.models):
        run_dir = _run_dir(out, name)
        if name in summaries:  # trained before an interruption
            continue
        resume = (run_dir / ck.LAST).exists()
        overrides = {"max_time": cfg.max_time} if resume else \
            {"model": name, **state["sizes"].get(name, {}), **cfg.extra, "max_time": cfg.max_time, "seed": cfg.seed}
        if not cfg.quiet:
            what = "continuing" if resume else "training"
            to_train = [p.train_s for p in plan.models[i:] if p.model not in summaries]
            extra = sum(beyond) / len(beyond) * len(to_train) if beyond else 0.0
            left = sum(to_train) + extra + plan.measure_s
            _say(f"[{i + 1}/{len(cfg.models)}] {what} {name} for {format_duration(plan.models[i].train_s)} -> "
                 f"{shown(run_dir)} (all done about {finish_clock(left)})")
        opts = training.RunOptions(corpus=str(corpus_path), out=run_dir, val_frac=None if resume else cfg.val_frac,
                                   device=cfg.device, precision=None if resume else cfg.precision, quiet=cfg.quiet,
                                   sample_len=0, resume=resume)
        t0 = time.perf_counter()
        summary = train_one(opts, overrides)
        beyond.append(max(0.0, time.perf_counter() - t0 - (plan.models[i].train_s if plan else 0.0)))
        if summary["reason"] == "interrupted":
            raise Interrupted(f"interrupted while training {name}: its run is saved in {shown(run_dir)}; "
                              f"run the same command again to continue the comparison")
        summaries[name] = summary
        write_json(out / PROGRESS, state)


def _measure_all(cfg: CompareConfig, out: Path, corpus_path: Path, tok, summaries: dict, device: torch.device,
                 plan: Plan | None = None) -> dict:
    """Every measurement after training, one model at a time, so that none competes with a training run."""
    # the runs' own id cache (their vocabulary is the corpus's)
    ids = encode_corpus(corpus_path, tok, ck.RunFolder(_run_dir(out, cfg.models[0])).cache, training_unknown(tok),
                        sha256=file_sha256(corpus_path))
    train_ids, val_ids = split(ids, cfg.val_frac)
    texts = Texts.of(train_ids, val_ids, tok, cfg)
    ticker = None if plan is None else _ticker(cfg, out, tok, len(val_ids), device, plan)
    rows, closer_losses, context, gradients = [], {}, {}, {}
    for name in cfg.models:
        tick = ticker.for_model(name) if ticker else (lambda key: None)
        m = measure(name, _run_dir(out, name), summaries[name], texts, device, cfg, tick)
        rows.append(m.row)
        if m.losses is not None:
            closer_losses[name] = m.losses
        if m.context is not None:
            context[name] = m.context
        gradients[name] = m.gradients
    if ticker:
        ticker.close()
    return {
        "corpus": path_text(corpus_path), "corpus_chars": len(ids), "val_chars": len(val_ids),
        "command": _command(cfg), "settings": _plain(cfg), "device": str(device), "machine": _machine(device),
        "rows": rows, "probe_chars": len(texts.probe_ids),
        "brackets": bracket_probe(closer_losses, texts.pairs).to_dict() if closer_losses else
        {"pairs": len(texts.pairs)},
        "context_probe": {"lengths": texts.lengths, "loss": context,
                          "positions": 0 if texts.targets is None else len(texts.targets)},
        "gradients": {"loss": gradients, "positions": cfg.gradient_positions,
                      "of": {name: family_of(name).gradient_of for name in cfg.models}},
        "memorized_validation": {str(n): v for n, v in
                                 texts.index.shares(np.asarray(val_ids[:cfg.memo_chars])).items()},
    }


def _ticker(cfg: CompareConfig, out: Path, tok, val_chars: int, device: torch.device, plan: Plan) -> Ticker:
    """The measuring phase's bar, each model's steps weighted by their estimated seconds: the plan's
    timings where the trained model has the shape planned, the trained shape timed again where not."""
    plans = {}
    for planned in plan.models:
        config = config_from_dict(ck.read_config(_run_dir(out, planned.model))["model"])
        model_steps = steps(cfg, val_chars, family_of(config.model).context(config))
        same = planned.config == config and planned.rates
        rates = planned.rates if same else _rates(config, tok, device, model_steps, val_chars, cfg)
        plans[planned.model] = list(zip(model_steps, estimate(model_steps, rates)))
    total = sum(s for p in plans.values() for _, s in p)
    _say(f"measuring {len(plans)} model{'s' if len(plans) > 1 else ''}: about {format_duration(total)}, done about "
         f"{finish_clock(total)}")
    return Ticker(ProgressBar(every=1, label="measuring"), plans)


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
