"""The train, eval and info pipelines: corpus -> tokenizer -> ids -> model -> trainer -> run folder.

The CLI parses options and calls these; Python users can call them too.
"""

from __future__ import annotations

import json
import math
import sys
import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import checkpoint as ck
from . import distributed, presets
from .data import StreamBatcher, WindowBatcher, build_tokenizer, encode_corpus, file_sha256, has_bom, resolve_corpus, split
from .device import resolve_device, resolve_precision
from .errors import CharrnnError
from .evaluate import EvalResult, evaluate_model
from .models import RNN_ONLY, TRANSFORMER_ONLY, ModelConfig, build_model
from .sampler import SampleConfig, Sampler
from .trainer import TrainConfig, Trainer

DEFAULT_MAX_TIME = 600.0  # with no stop given, train for ten minutes
EVAL_STREAMS = 32
EVAL_SEQ = 256


@dataclass
class RunOptions:
    """What a training run needs besides the model and trainer configs."""

    corpus: str
    out: Path | None = None  # run folder; default checkpoints/<corpus>-<model>
    val_frac: float = 0.1
    byte_fallback: bool = True
    device: str = "auto"
    precision: str = "auto"
    resume: bool = False
    quiet: bool = False
    sample_len: int = 200  # characters of sample printed at each validation (0: none)
    dist_timeout: float = 600.0  # seconds a rank waits for the others before the job fails (torchrun)
    compile: bool = False  # torch.compile the training step's model (checkpoints stay plain)


def parse_duration(text: str) -> float:
    """'90s', '10m', '1h', '1h30m', '2.5m' or plain seconds -> seconds."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(h|m|s)", t)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*(h|m|s)", "", t).strip():
        raise CharrnnError(f"not a duration: {text!r} (use e.g. 90s, 10m, 1h30m)")
    return sum(float(v) * {"h": 3600, "m": 60, "s": 1}[u] for v, u in parts)


def _split_overrides(overrides: dict[str, Any]) -> tuple[dict, dict]:
    model_keys = {f.name for f in fields(ModelConfig)}
    train_keys = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - model_keys - train_keys
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}")
    return ({k: v for k, v in overrides.items() if k in model_keys},
            {k: v for k, v in overrides.items() if k in train_keys})


def check_settings(model_cfg: ModelConfig, train_cfg: TrainConfig, val_frac: float) -> None:
    """Nonsense values are caught before anything touches the disk."""
    checks = [
        (model_cfg.n_layers >= 1, f"layers must be >= 1, not {model_cfg.n_layers}"),
        (model_cfg.hidden >= 1, f"hidden must be >= 1, not {model_cfg.hidden}"),
        (model_cfg.embed >= 1, f"embed must be >= 1, not {model_cfg.embed}"),
        (0 <= model_cfg.dropout < 1, f"dropout must be in [0, 1), not {model_cfg.dropout}"),
        (train_cfg.batch_size >= 1, f"batch-size must be >= 1, not {train_cfg.batch_size}"),
        (train_cfg.seq_len >= 1, f"seq-len must be >= 1, not {train_cfg.seq_len}"),
        (train_cfg.grad_accum >= 1, f"grad-accum must be >= 1, not {train_cfg.grad_accum}"),
        (train_cfg.lr > 0, f"lr must be > 0, not {train_cfg.lr}"),
        (train_cfg.max_steps is None or train_cfg.max_steps >= 1, "max-steps must be >= 1"),
        (train_cfg.max_epochs is None or train_cfg.max_epochs > 0, "max-epochs must be > 0"),
        (train_cfg.max_time is None or train_cfg.max_time > 0, "max-time must be > 0"),
        (0 < val_frac < 1, f"val-frac must be in (0, 1), not {val_frac}"),
    ]
    if model_cfg.model == "transformer":
        checks += [
            (model_cfg.heads >= 1, f"heads must be >= 1, not {model_cfg.heads}"),
            (model_cfg.context >= 1, f"context must be >= 1, not {model_cfg.context}"),
            (model_cfg.hidden % model_cfg.heads == 0,
             f"heads ({model_cfg.heads}) must divide hidden ({model_cfg.hidden}), the Transformer's width"),
            (train_cfg.seq_len == model_cfg.context,
             f"the Transformer trains on windows of --context characters; seq-len {train_cfg.seq_len} "
             f"!= context {model_cfg.context}"),
        ]
    for ok, message in checks:
        if not ok:
            raise CharrnnError(message)


def _configs(kind: str, settings: dict[str, Any], vocab_size: int, val_frac: float) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs these settings make, checked."""
    settings = dict(settings)
    if kind == "transformer":  # its batches are windows of `context` characters
        settings["seq_len"] = settings.get("context", ModelConfig.context)
    model_over, train_over = _split_overrides(settings)
    model_cfg, train_cfg = ModelConfig(vocab_size=vocab_size, **model_over), TrainConfig(**train_over)
    check_settings(model_cfg, train_cfg, val_frac)
    return model_cfg, train_cfg


def _corpus_name(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem) or "corpus"


# What --resume may change: the stops, and how each step is cut into micro-batches.
RESUME_CHANGEABLE = ("max_steps", "max_epochs", "max_time", "grad_accum")


def train(opts: RunOptions, overrides: dict[str, Any] | None = None,
          on_trainer: Callable[[Trainer], None] | None = None) -> dict[str, Any]:
    """Train (or resume) a run; returns a summary. `overrides` holds the settings the user chose;
    the rest come from the budget preset and the configs' own defaults. `on_trainer` is called
    with the trainer before it runs, e.g. to add hooks.

    Under torchrun this process is one rank of a data-parallel job (distributed.py): it joins the
    process group here and leaves it however the run ends."""
    world, device = distributed.init(resolve_device(opts.device), opts.dist_timeout)
    try:
        with world.guard():
            return _train(opts, dict(overrides or {}), on_trainer, world, device)
    finally:
        world.close()


def _train(opts: RunOptions, overrides: dict[str, Any], on_trainer, world: distributed.World,
           device: torch.device) -> dict[str, Any]:
    if not world.is_main:  # rank 0 speaks for the job
        opts = replace(opts, quiet=True)
    precision = resolve_precision(opts.precision, device)
    with world.main_first():  # a catalog corpus is downloaded once per node
        corpus_path = resolve_corpus(opts.corpus, quiet=opts.quiet)
    corpus_sha = file_sha256(corpus_path)
    opts = _resume_after_restart(opts, world, corpus_path, overrides)

    if opts.resume:
        run_dir = opts.out or _default_run_dir(corpus_path, overrides.get("model", "lstm"))
        path = ck.resolve_checkpoint(run_dir, prefer=ck.LAST)
        saved = ck.load_checkpoint(path)
        tok = ck.checkpoint_tokenizer(saved, path)
        model = ck.checkpoint_model(saved, path)
        model_cfg = model.config
        stops = {k: overrides.pop(k) for k in RESUME_CHANGEABLE if k in overrides}
        model_over, train_over = _split_overrides(overrides)
        train_cfg = TrainConfig(**{**saved["train_config"], **stops})
        for k, v in {**model_over, **train_over}.items():
            was = getattr(model_cfg, k, None) if k in model_over else saved["train_config"].get(k)
            if v != was:
                raise CharrnnError(f"--resume continues the saved run: {k} was {was}, cannot change to {v}")
        val_frac = saved["run"]["val_frac"]
        preset = saved["run"].get("preset")
        run_dir = path.parent
        if saved["run"]["corpus_sha256"] != corpus_sha:
            raise CharrnnError(f"{corpus_path} is not the corpus this run was trained on")
    else:
        kind = overrides.get("model", "lstm")
        _check_family_options(kind, overrides)
        run_dir = opts.out or _default_run_dir(corpus_path, kind)
        if any((run_dir / n).exists() for n in (ck.LAST, ck.BEST)):
            raise CharrnnError(f"{run_dir} already holds a run: add --resume to continue it, or --out for a new one")
        if has_bom(corpus_path) and not opts.quiet:
            _say(f"note: {corpus_path} starts with a UTF-8 byte-order mark; it is dropped")
        tok = build_tokenizer(corpus_path, byte_fallback=opts.byte_fallback)
        # the user's own values are checked before any time is spent timing presets with them
        _configs(kind, {**presets.presets_for(kind)[0].settings, **overrides}, tok.vocab_size, opts.val_frac)
        if "batch_size" in overrides:
            world.rows(overrides["batch_size"], overrides.get("grad_accum", 1))
        base, choice = {}, None
        if presets.needs_choice(overrides):  # some settings are left to the budget
            budget = overrides.get("max_time") or DEFAULT_MAX_TIME
            # Rank 0 times the presets as if alone, and every rank trains what it chose.
            choice = world.from_main(presets.choose(budget, overrides, tok.vocab_size, device, precision)
                                     if world.is_main else None)
            base = dict(choice.settings)
            if not opts.quiet:
                _say(f"settings from the budget: {choice.describe()}")
        if not any(k in overrides for k in ("max_steps", "max_epochs", "max_time")):
            base["max_time"] = DEFAULT_MAX_TIME
        model_cfg, train_cfg = _configs(kind, {**base, **overrides}, tok.vocab_size, opts.val_frac)
        torch.manual_seed(train_cfg.seed)  # the same seed, the same initial weights
        model = build_model(model_cfg)
        val_frac = opts.val_frac
        saved = None
        preset = None if choice is None else choice.to_dict()

    check_settings(model_cfg, train_cfg, val_frac)
    try:
        rows = world.rows(train_cfg.batch_size, train_cfg.grad_accum)  # this rank's streams
    except CharrnnError as e:
        if "batch_size" in overrides or opts.resume:
            raise
        raise CharrnnError(f"the budget's preset: {e}; or give --batch-size") from None
    with world.main_first():  # one process per node encodes the corpus; the others read its cache
        ids = encode_corpus(corpus_path, tok, run_dir / "cache", sha256=corpus_sha)
    train_ids, val_ids = split(ids, val_frac)
    if len(val_ids) < 2:
        raise CharrnnError(f"validation split too small ({len(val_ids)} characters): raise --val-frac or use more text")
    # a stateful RNN reads carried streams; the Transformer reads independent random windows
    batcher_cls = StreamBatcher if model.stateful else WindowBatcher
    batcher = batcher_cls(train_ids, train_cfg.batch_size, train_cfg.seq_len, seed=train_cfg.seed,
                          rows=None if world.world_size == 1 else rows)

    def validate(m) -> EvalResult:
        # Each rank scores its share of the validation streams or windows; the sums make the global figure.
        part = evaluate_model(m, val_ids, device, precision, n_streams=EVAL_STREAMS, seq_len=EVAL_SEQ,
                              shard=(world.rank, world.world_size))
        if world.world_size == 1:
            return part
        total, chars = world.all_sum([part.loss_nats * part.chars, part.chars])
        return EvalResult(total / chars, int(chars))

    trainer = Trainer(model, train_cfg, batcher, device, precision, evaluate=validate, quiet=opts.quiet,
                      world=world, compile=opts.compile)
    if saved is not None:
        trainer.load_state_dict(saved["trainer"])
    run_info = {"corpus": str(corpus_path), "corpus_sha256": corpus_sha, "val_frac": val_frac,
                "train_chars": len(train_ids), "val_chars": len(val_ids), "preset": preset}
    if world.is_main:  # one writer for the run folder
        if saved is None:
            ck.write_tokenizer(run_dir / ck.TOKENIZER, tok)
        ck.trim_metrics(run_dir / ck.METRICS, trainer.progress.step)
        ck.write_json(run_dir / ck.CONFIG, {"model": model_cfg.to_dict(), "train": train_cfg.to_dict(),
                                             "run": run_info, "params": model.num_params(), "device": str(device),
                                             "precision": precision, "world_size": world.world_size})
    _attach_run_hooks(trainer, run_dir, tok, model_cfg, train_cfg, run_info, opts)
    if on_trainer is not None:
        on_trainer(trainer)

    if not opts.quiet:
        where = f"{device} {precision}" if world.world_size == 1 else \
            f"{world.world_size} processes ({device.type} {precision}, {len(rows)} streams each)"
        shape = f", {model_cfg.heads} heads, context {model_cfg.context}" if not model.stateful else ""
        _say(f"{run_dir}: {model_cfg.model} {model_cfg.n_layers}x{model_cfg.hidden}{shape}, "
                   f"{model.num_params() / 1e6:.2f}M params, {len(train_ids):,} train / {len(val_ids):,} val chars, "
                   f"{where}" + (f", resuming at step {trainer.progress.step}" if saved else ""))
    reason = trainer.run()
    p = trainer.progress
    return {"run_dir": str(run_dir), "reason": reason, "step": p.step, "chars": p.chars, "elapsed": p.elapsed,
            "best_val": p.best_val if p.best_val < math.inf else None, "main": world.is_main}


def _resume_after_restart(opts: RunOptions, world: distributed.World, corpus_path: Path,
                          overrides: dict[str, Any]) -> RunOptions:
    """torchrun --max-restarts restarts every worker with the same command after a failure: a restarted
    worker (TORCHELASTIC_RESTART_COUNT > 0) resumes from last.pt when the run folder has one."""
    if opts.resume or world.restart_count == 0:
        return opts
    run_dir = opts.out or _default_run_dir(corpus_path, overrides.get("model", "lstm"))
    found = (run_dir / ck.LAST).is_file()
    seen = world.all_sum([float(found)])[0]
    if 0 < seen < world.world_size:  # each rank reads the folder: on several nodes it must be shared
        raise CharrnnError(f"only {seen:.0f} of {world.world_size} ranks see {run_dir / ck.LAST}: "
                           f"the run folder must be on a filesystem every node shares")
    if not found:
        return opts
    if not opts.quiet:
        _say(f"torchrun restart {world.restart_count}: resuming from {run_dir / ck.LAST}")
    return replace(opts, resume=True)


def _check_family_options(kind: str, overrides: dict[str, Any]) -> None:
    """An option the chosen kind of model would silently ignore is a mistake worth naming."""
    if kind == "transformer":
        wrong = [k for k in (*RNN_ONLY, "seq_len") if k in overrides]
        why = "the Transformer's width is --hidden and its training windows are --context characters"
    else:
        wrong = [k for k in TRANSFORMER_ONLY if k in overrides]
        why = "they set the Transformer's attention"
    if wrong:
        names = ", ".join("--" + k.replace("_", "-") for k in wrong)
        raise CharrnnError(f"{names} cannot be used with --model {kind}: {why}")


def _say(message: str) -> None:
    """A notice on stderr that does not break the progress bar; stdout is left for data."""
    tqdm.write(message, file=sys.stderr)


def _default_run_dir(corpus_path: Path, model: str) -> Path:
    return Path("checkpoints") / f"{_corpus_name(corpus_path)}-{model}"


def _attach_run_hooks(trainer: Trainer, run_dir: Path, tok, model_cfg, train_cfg, run_info, opts: RunOptions) -> None:
    metrics = run_dir / ck.METRICS
    saved_at = {"step": -1}

    def append(record: dict) -> None:
        with open(metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    main = trainer.world.is_main

    def snapshot(val_loss: float | None) -> dict | None:
        """The checkpoint, on rank 0 (None elsewhere). Every rank must call it: the trainer's state gathers."""
        state = trainer.state_dict()
        if not main:
            return None
        model = trainer.model
        return {"model_config": model_cfg.to_dict(), "train_config": train_cfg.to_dict(), "run": run_info,
                "tokenizer": tok.to_str(), "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "trainer": state, "val_loss": val_loss}

    def on_log(t: Trainer, record: dict) -> None:
        if main:
            append({"kind": "train", **record})

    def on_eval(t: Trainer, result: EvalResult, is_best: bool) -> None:
        snap = snapshot(result.loss_nats)
        saved_at["step"] = t.progress.step
        if not main:
            return
        append({"kind": "val", "step": t.progress.step, "elapsed": t.progress.elapsed, **result.to_dict()})
        ck.save_checkpoint(run_dir / ck.LAST, snap)
        if is_best:
            ck.save_checkpoint(run_dir / ck.BEST, snap)
        if not opts.quiet:
            line = f"step {t.progress.step}: val loss {result.loss_nats:.4f} nats, {result.bpc:.4f} bpc"
            _say(line + (" (best)" if is_best else ""))
            if opts.sample_len > 0:
                sampler = Sampler(t.model, tok, t.device)
                text = sampler.sample_many(SampleConfig(length=opts.sample_len, temperature=0.8, seed=0), 1)[0]
                t.model.train()
                _say("  | " + text.strip().replace("\n", "\n  | "))

    def on_save(t: Trainer) -> None:
        if saved_at["step"] != t.progress.step:
            snap = snapshot(None)
            if main:
                ck.save_checkpoint(run_dir / ck.LAST, snap)
            saved_at["step"] = t.progress.step

    trainer.hooks.on_log.append(on_log)
    trainer.hooks.on_eval.append(on_eval)
    trainer.hooks.on_save.append(on_save)


def eval_run(run: str | Path, corpus: str, split_name: str = "val", val_frac: float | None = None,
             device: str = "auto", precision: str = "fp32", unknown: str = "bytes",
             stride: int | None = None) -> EvalResult:
    """Loss of a run's checkpoint on a corpus: the validation split (the run's val-frac) or all of it.
    `stride` (Transformer only) is how far its evaluation windows move; default context // 2."""
    model, tok, ckpt, path = ck.load_run(run)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    corpus_path = resolve_corpus(corpus)
    frac = ckpt["run"]["val_frac"] if val_frac is None else val_frac
    if not 0 < frac < 1:
        raise CharrnnError(f"val-frac must be in (0, 1), not {frac}")
    if unknown == "bytes" and not tok.byte_fallback:
        unknown = "error"
    ids = encode_corpus(corpus_path, tok, path.parent / "cache", unknown=unknown)
    target = ids if split_name == "all" else split(ids, frac)[1]
    if len(target) < 2:
        raise CharrnnError(f"{corpus_path}: too little text to evaluate ({len(target)} characters)")
    if stride is not None and (model.stateful or not 1 <= stride <= model.config.context):
        raise CharrnnError("--stride applies to a Transformer only, between 1 and its context"
                           + ("" if model.stateful else f" ({model.config.context})"))
    return evaluate_model(model.to(dev), target, dev, prec, n_streams=EVAL_STREAMS, seq_len=EVAL_SEQ, stride=stride)


def run_info(run: str | Path) -> dict[str, Any]:
    """What `charrnn info` shows: configs, parameter count, progress, best validation loss."""
    path = ck.resolve_checkpoint(run)
    ckpt = ck.load_checkpoint(path)
    model = ck.checkpoint_model(ckpt, path)
    progress = ckpt["trainer"]["progress"]
    best = progress["best_val"]
    return {"checkpoint": str(path), "model": ckpt["model_config"], "train": ckpt["train_config"],
            "run": ckpt["run"], "params": model.num_params(), "step": progress["step"], "epoch": progress["epoch"],
            "chars_trained": progress["chars"], "elapsed_s": round(progress["elapsed"], 1),
            "best_val_loss": None if best == math.inf else best}

