"""The train, eval and info pipelines: corpus -> tokenizer -> ids -> model -> trainer -> run folder.

The CLI parses options and calls these; Python users can call them too. A training run is either
fresh (settings from the user, the rest from the budget preset) or resumed (every setting from the
checkpoint; only the stops and the micro-batch split may change): each setup returns a `_Setup`,
and one shared tail trains it.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint as ck
from . import distributed, memory, presets
from .corpora import file_sha256, resolve_corpus
from .data import RARE_COUNT, encode_corpus, has_bom, scan_corpus, split, training_unknown
from .device import resolve_device, resolve_precision
from .errors import CharrnnError, TrainingDiverged, one_line
from .config import ModelConfig
from .evaluate import EVAL_LENGTH, EVAL_STREAMS, EvalResult
from .fileio import atomic_write, expand_user, path_text, shown
from .families import build_model, evaluate_model, family_of, model_settings, option_names
from .sampler import SampleConfig, Sampler
from .tokenizer import CharTokenizer
from .trainer import TrainConfig, Trainer
from .units import MAX_SECONDS, MAX_SEED

DEFAULT_MAX_TIME = 600.0  # with no stop given, train for ten minutes
DEFAULT_VAL_FRAC = 0.1
# Characters an intermediate validation scores: the start of the whole pass (evaluate.py's `limit`), the
# same every time. Enough to rank checkpoints, which all score that text, at a small share of the cost:
# for the RNNs one chunk of every validation stream.
VAL_SUBSET = EVAL_STREAMS * EVAL_LENGTH
MAX_RATE = 1e6  # the largest --lr and --weight-decay
SIZE_HINT = "lower --hidden, --layers, --embed or --context, or the batch (--batch-size, --seq-len, or more --grad-accum)"


@dataclass
class RunOptions:
    """What a training run needs besides the model and trainer configs. None means "not given":
    a fresh run takes the default, a resumed one the run's own value (and a given one must match it)."""

    corpus: str
    out: Path | None = None  # run folder; default checkpoints/<corpus>-<model>
    val_frac: float | None = None  # default 0.1
    byte_fallback: bool | None = None  # default True
    device: str = "auto"
    precision: str | None = None  # default auto
    resume: bool = False
    quiet: bool = False
    sample_len: int = 200  # characters of sample printed at each validation (0: none)
    dist_timeout: float = 600.0  # seconds a rank waits for the others before the job fails (torchrun)
    compile: bool = False  # torch.compile the training step's model (checkpoints stay plain)


def _split_overrides(overrides: dict[str, Any]) -> tuple[dict, dict]:
    model_over, rest = model_settings(overrides)
    train_keys = {f.name for f in fields(TrainConfig)}
    unknown = set(rest) - train_keys
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}")
    return model_over, rest


FLAGS = {"n_layers": "--layers", "warmup_steps": "--warmup", "model": "--model"}


def flag(key: str) -> str:
    """The command-line option that sets a config field."""
    return FLAGS.get(key, "--" + key.replace("_", "-"))


def check_settings(model_cfg: ModelConfig, train_cfg: TrainConfig, val_frac: float) -> None:
    """Nonsense values are caught before anything touches the disk."""
    m, t = model_cfg, train_cfg
    values = {**m.to_dict(), **t.to_dict()}
    for name, v in values.items():  # NaN passes every comparison below, and inf most of them
        if isinstance(v, float) and not math.isfinite(v):
            raise CharrnnError(f"{flag(name)} must be a finite number, not {v}")
    if not (isinstance(val_frac, (int, float)) and 0 < val_frac < 1):
        raise CharrnnError(f"val-frac must be in (0, 1), not {val_frac}")
    checks = [
        (m.n_layers >= 1, f"layers must be >= 1, not {m.n_layers}"),
        (m.hidden >= 1, f"hidden must be >= 1, not {m.hidden}"),
        (0 <= m.dropout < 1, f"dropout must be in [0, 1), not {m.dropout}"),
        (t.batch_size >= 1, f"batch-size must be >= 1, not {t.batch_size}"),
        (t.seq_len >= 1, f"seq-len must be >= 1, not {t.seq_len}"),
        (t.grad_accum >= 1, f"grad-accum must be >= 1, not {t.grad_accum}"),
        # beyond 1e6 AdamW's step sizes overflow float32 before the run can even diverge
        (0 < t.lr <= MAX_RATE, f"lr must be > 0 and at most {MAX_RATE:g}, not {t.lr}"),
        (0 <= t.weight_decay <= MAX_RATE, f"weight-decay must be in [0, {MAX_RATE:g}], not {t.weight_decay}"),
        (t.grad_clip >= 0, f"grad-clip must be >= 0, not {t.grad_clip}"),
        (0 <= t.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], not {t.min_lr_ratio}"),
        (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, "AdamW's betas must be in [0, 1)"),
        (t.warmup_steps >= 0, f"warmup must be >= 0, not {t.warmup_steps}"),
        (t.eval_interval >= 0, f"eval-interval must be >= 0, not {t.eval_interval}"),
        (t.log_interval >= 1 and t.diverge_after >= 1, "log_interval and diverge_after must be >= 1"),
        (0 <= t.seed <= MAX_SEED, f"seed must be in [0, 2**63 - 1], not {t.seed}"),
        (t.max_steps is None or t.max_steps >= 1, "max-steps must be >= 1"),
        (t.max_epochs is None or t.max_epochs > 0, "max-epochs must be > 0"),
        (t.max_time is None or 0 < t.max_time <= MAX_SECONDS, "max-time must be > 0 and at most a year"),
    ]
    checks += family_of(m.model).checks(m, t)
    for ok, message in checks:
        if not ok:
            raise CharrnnError(message)


def _configs(kind: str, settings: dict[str, Any], vocab_size: int, val_frac: float) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs these settings make, checked."""
    fam = family_of(kind)
    settings = fam.derived(dict(settings))
    model_over, train_over = _split_overrides(settings)
    try:
        model_cfg = fam.config(vocab_size, **model_over)
    except ValueError as e:
        raise CharrnnError(str(e)) from None
    train_cfg = TrainConfig(**train_over)
    check_settings(model_cfg, train_cfg, val_frac)
    return model_cfg, train_cfg


def _check_memory(model_cfg: ModelConfig, train_cfg: TrainConfig, world: distributed.World, device: torch.device,
                  what: str = "this run", hint: str = SIZE_HINT) -> None:
    rows = -(-train_cfg.batch_size // (world.world_size * train_cfg.grad_accum))  # one micro-batch
    memory.check(memory.training_need(model_cfg, rows, train_cfg.seq_len), device, what, hint)


def check_fits(settings: dict[str, Any], vocab_size: int, val_frac: float, device: torch.device, what: str,
               hint: str) -> None:
    """One line if a single-process run with these settings (every one a model needs) would not fit in
    memory: compare checks the sizes it chooses before any model trains, with its own `hint`."""
    _check_memory(*_configs(settings["model"], settings, vocab_size, val_frac), distributed.World(), device, what,
                  hint)


def _corpus_name(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem) or "corpus"


# What --resume may change: the stops, and how each step is cut into micro-batches.
RESUME_CHANGEABLE = ("max_steps", "max_epochs", "max_time", "grad_accum")


@dataclass
class _Setup:
    """What a fresh run and a resumed run both hand to the shared tail of `_train`."""

    tok: CharTokenizer
    model: torch.nn.Module
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    val_frac: float
    precision: str
    preset: dict | None  # how the budget chose the settings (recorded in config.json)
    saved: ck.Saved | None = None  # the checkpoint resumed from
    saved_path: Path | None = None
    best: ck.Saved | None = None  # the resumed run's best checkpoint, checked against `saved`


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
    with world.main_first():  # a catalog corpus is downloaded once per node
        corpus_path = resolve_corpus(opts.corpus, quiet=opts.quiet)
    corpus_sha = file_sha256(corpus_path)
    opts = _resume_after_restart(opts, world, corpus_path, overrides)
    folder = ck.RunFolder(opts.out or _default_run_dir(corpus_path, overrides.get("model", ModelConfig.model)))
    with contextlib.ExitStack() as stack:
        error = None
        if world.is_main:  # one writer for the run folder: rank 0 holds it, and tells the others
            try:
                stack.enter_context(folder.hold(fresh=not opts.resume))
            except CharrnnError as e:
                error = str(e)
        error = world.from_main(error)
        if error:
            raise CharrnnError(error)
        if opts.resume:
            setup = _resume_setup(opts, overrides, folder, corpus_path, corpus_sha, device)
        else:
            setup = _fresh_setup(opts, overrides, corpus_path, world, device)
        return _run(opts, setup, folder, corpus_path, corpus_sha, world, device, overrides, on_trainer)


def _fresh_setup(opts: RunOptions, overrides: dict[str, Any], corpus_path: Path, world: distributed.World,
                 device: torch.device) -> _Setup:
    kind = overrides.get("model", ModelConfig.model)
    check_family_options(kind, overrides)
    precision = resolve_precision(opts.precision or "auto", device)
    val_frac = DEFAULT_VAL_FRAC if opts.val_frac is None else opts.val_frac
    if has_bom(corpus_path) and not opts.quiet:
        _say(f"note: {shown(corpus_path)} starts with a UTF-8 byte-order mark; it is dropped")
    tok, n_chars, rare = scan_corpus(corpus_path, byte_fallback=opts.byte_fallback is not False)
    if rare and not opts.quiet:
        _say(f"note: {shown(corpus_path)} has {tok.n_chars + rare:,} distinct characters; the {rare:,} seen fewer "
             f"than {RARE_COUNT} times are read as their UTF-8 bytes and never predicted")
    outputs = {"n_outputs": tok.n_chars}  # byte tokens are read, never predicted (ModelConfig.n_outputs)
    # The user's own values are checked (and sized) before any time is spent timing presets with them.
    first = _configs(kind, {**presets.presets_for(kind)[0].settings, **overrides, **outputs}, tok.vocab_size,
                     val_frac)
    if "batch_size" in overrides:
        world.rows(overrides["batch_size"], overrides.get("grad_accum", 1))
    _check_memory(*first, world, device)
    base, choice = {}, None
    if presets.needs_choice(overrides):  # some settings are left to the budget
        budget = overrides.get("max_time") or DEFAULT_MAX_TIME
        # Rank 0 times the presets as if alone, and every rank trains what it chose.
        train_chars = int(n_chars * (1 - val_frac))  # what split() will keep for training
        choice = world.from_main(presets.choose(budget, {**overrides, **outputs}, tok.vocab_size, device, precision,
                                                train_chars) if world.is_main else None)
        base = dict(choice.settings)
        if not opts.quiet:
            _say(f"settings from the budget: {choice.describe()}")
    if not any(k in overrides for k in ("max_steps", "max_epochs", "max_time")):
        base["max_time"] = DEFAULT_MAX_TIME
    model_cfg, train_cfg = _configs(kind, {**base, **overrides, **outputs}, tok.vocab_size, val_frac)
    _check_memory(model_cfg, train_cfg, world, device, "this run" if choice is None else f"preset {choice.name}")
    torch.manual_seed(train_cfg.seed)  # the same seed, the same initial weights
    model = build_model(model_cfg)
    return _Setup(tok, model, model_cfg, train_cfg, val_frac, precision, None if choice is None else choice.to_dict())


def _resume_setup(opts: RunOptions, overrides: dict[str, Any], folder: ck.RunFolder, corpus_path: Path,
                  corpus_sha: str, device: torch.device) -> _Setup:
    """The run as its checkpoint left it. A setting given again must equal the run's own; only the
    stops and --grad-accum may change."""
    path = ck.resolve_checkpoint(folder.path, prefer=ck.LAST)
    saved = ck.read_checkpoint(path)
    tok = ck.checkpoint_tokenizer(saved, path)
    model = ck.checkpoint_model(saved, path)
    model_cfg, run = model.config, saved.run
    if run.corpus_sha256 != corpus_sha:
        raise CharrnnError(f"{shown(corpus_path)} is not the corpus this run was trained on")
    stops = {k: overrides.pop(k) for k in RESUME_CHANGEABLE if k in overrides}
    model_over, train_over = _split_overrides(overrides)
    train_cfg = TrainConfig(**{**saved.train_config, **stops})
    precision = run.precision or folder.recorded_precision() or resolve_precision("auto", device)
    given = {**{k: (v, getattr(model_cfg, k, None)) for k, v in model_over.items()},
             **{k: (v, saved.train_config.get(k)) for k, v in train_over.items()}}
    if opts.val_frac is not None:
        given["val_frac"] = (opts.val_frac, run.val_frac)
    if opts.byte_fallback is not None:
        given["byte_fallback"] = (opts.byte_fallback, tok.byte_fallback)
    if opts.precision is not None:
        given["precision"] = (resolve_precision(opts.precision, device), precision)
    for k, (v, was) in given.items():
        if v != was:
            raise CharrnnError(f"--resume continues the saved run: its {flag(k)} is {was}, not {v} "
                               f"(train a new run with --out to change it)")
    try:
        resolve_precision(precision, device)
    except CharrnnError as e:
        raise CharrnnError(f"this run trained in {precision}, which cannot continue here: {e}") from None
    check_settings(model_cfg, train_cfg, run.val_frac)
    best = folder.read_best(saved, path)
    return _Setup(tok, model, model_cfg, train_cfg, run.val_frac, precision, run.preset, saved, path, best)


def _run(opts: RunOptions, s: _Setup, folder: ck.RunFolder, corpus_path: Path, corpus_sha: str,
         world: distributed.World, device: torch.device, overrides: dict[str, Any], on_trainer) -> dict[str, Any]:
    """The tail both setups share: data, trainer, run folder, training."""
    model_cfg, train_cfg = s.model_cfg, s.train_cfg
    try:
        rows = world.rows(train_cfg.batch_size, train_cfg.grad_accum)  # this rank's streams
    except CharrnnError as e:
        if "batch_size" in overrides or opts.resume:
            raise
        raise CharrnnError(f"the budget's preset: {e}; or give --batch-size") from None
    if s.saved is not None:  # a fresh run was sized before its model was built
        _check_memory(model_cfg, train_cfg, world, device)
    with world.main_first():  # one process per node encodes the corpus; the others read its cache
        ids = encode_corpus(corpus_path, s.tok, folder.cache, training_unknown(s.tok), sha256=corpus_sha)
    train_ids, val_ids = split(ids, s.val_frac)
    if len(val_ids) < 2:
        raise CharrnnError(f"validation split too small ({len(val_ids)} characters): raise --val-frac or use more text")
    # carried streams for a model with a state, independent random windows for one without
    batcher = family_of(model_cfg.model).batcher(train_ids, train_cfg.batch_size, train_cfg.seq_len,
                                                 seed=train_cfg.seed, rows=None if world.world_size == 1 else rows)

    def validate(m, subset: bool) -> EvalResult:
        # Each rank scores its share of the validation streams or windows; the sums make the global figure.
        part = evaluate_model(m, val_ids, device, s.precision, n_streams=EVAL_STREAMS, seq_len=EVAL_LENGTH,
                              shard=(world.rank, world.world_size), limit=VAL_SUBSET if subset else None)
        if world.world_size == 1:
            return part
        total, chars = world.all_sum([part.loss_nats * part.chars, part.chars])
        return EvalResult(total / chars, int(chars), subset=part.subset)

    trainer = Trainer(s.model, train_cfg, batcher, device, s.precision, evaluate=validate, quiet=opts.quiet,
                      world=world, compile=opts.compile, outputs=model_cfg.outputs)
    if s.saved is not None:
        try:
            trainer.load_state_dict(s.saved.trainer)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
            raise CharrnnError(f"{shown(s.saved_path)}: its trainer state does not fit this run "
                               f"({one_line(e, 120) or type(e).__name__})") from None
        if trainer.progress.best_full == math.inf and trainer.progress.best_step >= 0:
            trainer.best_weights = None if s.best is None else s.best.weights  # to score it fully at the end
    run_info = ck.RunInfo(path_text(corpus_path), corpus_sha, s.val_frac, len(train_ids), len(val_ids), s.preset,
                          s.precision)
    if world.is_main:  # one writer for the run folder
        if s.saved is None:
            folder.write_tokenizer(s.tok)
        dropped = folder.trim_metrics(trainer.progress.step)
        if dropped and s.saved is not None and not opts.quiet:
            _say(f"note: dropped {dropped} line(s) of metrics.jsonl written after step {trainer.progress.step}")
        folder.write_config(model_cfg.to_dict(), train_cfg.to_dict(), run_info, s.model.num_params(), str(device),
                            world.world_size)
    saved_step = _attach_run_hooks(trainer, folder, s.tok, model_cfg, train_cfg, run_info, opts)
    saved_step["step"] = None if s.saved is None else trainer.progress.step
    if on_trainer is not None:
        on_trainer(trainer)

    if not opts.quiet:
        where = f"{device} {s.precision}" if world.world_size == 1 else \
            f"{world.world_size} processes ({device.type} {s.precision}, {len(rows)} streams each)"
        shape = family_of(model_cfg.model).describe(model_cfg.to_dict())
        _say(f"{shown(folder.path)}: {model_cfg.model} {shape}, "
             f"{s.model.num_params() / 1e6:.2f}M params, {len(train_ids):,} train / {len(val_ids):,} val chars, "
             f"{where}" + (f", resuming at step {trainer.progress.step}" if s.saved else ""))
    try:
        reason = trainer.run()
    except TrainingDiverged as e:
        kept = saved_step["step"]
        where = (f"{shown(folder.path / ck.LAST)} keeps step {kept}, with finite weights" if kept is not None
                 else "no checkpoint had been written")
        raise TrainingDiverged(f"{e}; {where}. Lower --lr, or clip gradients with --grad-clip") from None
    p = trainer.progress
    best = p.best_full if p.best_full < math.inf else p.best_val  # a full pass's figure once there is one
    return {"run_dir": path_text(folder.path), "reason": reason, "step": p.step, "chars": p.chars, "elapsed": p.elapsed,
            "best_val": best if best < math.inf else None, "skipped": p.skipped, "main": world.is_main}


def _resume_after_restart(opts: RunOptions, world: distributed.World, corpus_path: Path,
                          overrides: dict[str, Any]) -> RunOptions:
    """torchrun --max-restarts restarts every worker with the same command after a failure: a restarted
    worker (TORCHELASTIC_RESTART_COUNT > 0) resumes from last.pt when the run folder has one."""
    if opts.resume or world.restart_count == 0:
        return opts
    run_dir = opts.out or _default_run_dir(corpus_path, overrides.get("model", ModelConfig.model))
    found = (run_dir / ck.LAST).is_file()
    seen = world.all_sum([float(found)])[0]
    if 0 < seen < world.world_size:  # each rank reads the folder: on several nodes it must be shared
        raise CharrnnError(f"only {seen:.0f} of {world.world_size} ranks see {shown(run_dir / ck.LAST)}: "
                           f"the run folder must be on a filesystem every node shares")
    if not found:
        return opts
    if not opts.quiet:
        _say(f"torchrun restart {world.restart_count}: resuming from {shown(run_dir / ck.LAST)}")
    return replace(opts, resume=True)


def check_family_options(kind: str, overrides: dict[str, Any]) -> None:
    """An option the chosen kind of model would silently ignore is a mistake worth naming."""
    try:
        fam = family_of(kind)
    except ValueError as e:
        raise CharrnnError(str(e)) from None
    others = option_names() - {o.name for o in fam.options}
    wrong = [k for k in overrides if k in others or k in fam.refuses]
    if wrong:
        names = ", ".join(flag(k) for k in wrong)
        why = "; ".join(dict.fromkeys(fam.refuses.get(k, "other kinds of model read it") for k in wrong))
        raise CharrnnError(f"{names} cannot be used with --model {kind} ({why})")


def _say(message: str) -> None:
    """A notice on stderr that does not break the progress bar; stdout is left for data."""
    tqdm.write(message, file=sys.stderr)


def _default_run_dir(corpus_path: Path, model: str) -> Path:
    return Path("checkpoints") / f"{_corpus_name(corpus_path)}-{model}"


def _attach_run_hooks(trainer: Trainer, folder: ck.RunFolder, tok, model_cfg, train_cfg, run_info,
                      opts: RunOptions) -> dict:
    """Metrics and checkpoints into the run folder (rank 0), and the notices. Returns the box that
    holds the step of the last checkpoint written."""
    saved = {"step": None, "at": -1}  # the last checkpoint written, and the step the state was last taken
    main = trainer.world.is_main

    def snapshot(val_loss: float | None) -> ck.Saved | None:
        """The checkpoint, on rank 0 (None elsewhere). Every rank must call it: the trainer's state gathers.
        Weights that are no longer finite are never written: the run stops, the last checkpoint stays."""
        if not trainer.weights_finite():
            raise TrainingDiverged(f"training diverged: the weights are no longer finite at step {trainer.progress.step}")
        state = trainer.state_dict()
        if not main:
            return None
        weights = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
        return ck.Saved(model_cfg.to_dict(), train_cfg.to_dict(), run_info, tok.to_str(), weights, state, val_loss)

    def save(snap: ck.Saved, best: bool) -> None:
        folder.save(ck.LAST, snap)
        if best:
            folder.save(ck.BEST, snap)
        saved["step"] = trainer.progress.step

    def on_log(t: Trainer, record: dict) -> None:
        if not main:
            return
        folder.append_metric({"kind": "train", **record})
        if record["skipped"] and not opts.quiet:
            _say(f"step {record['step']}: {record['skipped']} update(s) skipped for a non-finite loss or gradient "
                 f"({t.progress.skipped} so far)")

    def on_eval(t: Trainer, result: EvalResult, is_best: bool) -> None:
        if not math.isfinite(result.loss_nats):  # finite weights can still overflow into NaN logits
            raise TrainingDiverged(f"training diverged: the validation loss is {result.loss_nats} at step "
                                   f"{t.progress.step}")
        snap = snapshot(result.loss_nats)
        saved["at"] = t.progress.step
        if not main:
            return
        folder.append_metric({"kind": "val", "step": t.progress.step, "elapsed": t.progress.elapsed,
                              **result.to_dict()})
        save(snap, is_best)
        if not opts.quiet:
            line = f"step {t.progress.step}: val loss {result.loss_nats:.4f} nats, {result.bpc:.4f} bpc"
            if result.subset:
                line += f" ({result.chars:,}-character subset)"
            _say(line + (" (best)" if is_best else ""))
            if opts.sample_len > 0:
                sampler = Sampler(t.model, tok, t.device)
                text = sampler.sample_many(SampleConfig(length=opts.sample_len, temperature=0.8, seed=0), 1)[0]
                t.model.train()
                _say("  | " + text.strip().replace("\n", "\n  | "))

    def on_best_scored(t: Trainer, result: EvalResult) -> None:
        if main:  # the best checkpoint, judged on the subset, now carries its full-pass loss
            folder.set_best_loss(result.loss_nats)
            if not opts.quiet:
                _say(f"best checkpoint (step {t.progress.best_step}): val loss {result.loss_nats:.4f} nats, "
                     f"{result.bpc:.4f} bpc")

    def on_save(t: Trainer) -> None:
        if saved["at"] != t.progress.step:
            snap = snapshot(None)
            if main:
                save(snap, False)
            saved["at"] = t.progress.step

    trainer.hooks.on_log.append(on_log)
    trainer.hooks.on_eval.append(on_eval)
    trainer.hooks.on_best_scored.append(on_best_scored)
    trainer.hooks.on_save.append(on_save)
    return saved


def eval_run(run: str | Path, corpus: str, split_name: str = "val", val_frac: float | None = None,
             device: str = "auto", precision: str = "fp32", unknown: str = "bytes",
             stride: int | None = None) -> EvalResult:
    """Loss of a run's checkpoint on a corpus: the validation split (the run's val-frac) or all of it.
    `stride` (Transformer only) is how far its evaluation windows move; default context // 2."""
    model, tok, ckpt, path = ck.load_run(run)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    corpus_path = resolve_corpus(corpus)
    frac = ckpt.run.val_frac if val_frac is None else val_frac
    if not (isinstance(frac, (int, float)) and 0 < frac < 1):
        raise CharrnnError(f"val-frac must be in (0, 1), not {frac}")
    if unknown == "bytes" and not tok.byte_fallback:
        unknown = "error"
    window = family_of(model.config.model).context(model.config)
    if stride is not None and (window is None or not 1 <= stride <= window):
        raise CharrnnError("--stride applies to a model that reads windows (a Transformer), between 1 and its "
                           "context" + ("" if window is None else f" ({window})"))
    ids = encode_corpus(corpus_path, tok, ck.run_cache(path.parent), unknown=unknown)
    target = ids if split_name == "all" else split(ids, frac)[1]
    if len(target) < 2:
        raise CharrnnError(f"{shown(corpus_path)}: too little text to evaluate ({len(target)} characters)")
    return evaluate_model(model.to(dev), target, dev, prec, n_streams=EVAL_STREAMS, seq_len=EVAL_LENGTH, stride=stride)


def run_info(run: str | Path) -> dict[str, Any]:
    """What `charrnn info` shows: configs, parameter count, progress, best validation loss."""
    path = ck.resolve_checkpoint(run)
    saved = ck.read_checkpoint(path)
    model = ck.checkpoint_model(saved, path)
    progress = saved.progress
    return {"checkpoint": path_text(path), "model": saved.model_config, "train": saved.train_config,
            "run": asdict(saved.run), "params": model.num_params(), "step": saved.step,
            "epoch": progress.get("epoch", 0), "chars_trained": progress.get("chars", 0),
            "elapsed_s": round(progress.get("elapsed", 0.0), 1), "skipped": progress.get("skipped", 0),
            "best_val_loss": saved.best_loss}


# --- charrnn inspect -----------------------------------------------------------------------------------
MAX_INSPECT_CHARS = 5_000_000  # the text features are computed in Python, about 1 s per 100k characters
LOOKS_LIKE_PATH = re.compile(r"^~|^[^\s/]*/\S*$|^\S+\.[A-Za-z0-9]{1,5}$")  # ~/x, a/b, notes.txt: a file, not text


def _inspect_text(text: str | None, tok: CharTokenizer, saved: ck.Saved, cache: Path | None):
    """Ids and where they came from: the run's validation split (no TEXT, or the run's own corpus),
    another corpus from its start, or TEXT itself."""
    from .corpora import load_catalog

    unknown = "bytes" if tok.byte_fallback else "error"
    run = saved.run
    if text is not None and not (text and (expand_user(text).exists() or text in load_catalog())):
        if LOOKS_LIKE_PATH.search(text):
            resolve_corpus(text)  # says: no such file or catalog corpus
        return tok.encode(text, unknown=unknown), "the text given"
    corpus_path = resolve_corpus(run.corpus if text is None else text)
    sha = file_sha256(corpus_path)
    ids = encode_corpus(corpus_path, tok, cache, unknown=unknown, sha256=sha)
    if sha == run.corpus_sha256:
        return split(ids, run.val_frac)[1], f"the validation split of {shown(corpus_path)}"
    return ids, shown(corpus_path)


def inspect_run(run: str | Path, text: str | None = None, chars: int = 20_000, show: int = 1000,
                out: Path | None = None, positions: int = 32, seed: int = 0, device: str = "auto",
                quiet: bool = False, command: str = "") -> dict[str, Any]:
    """`charrnn inspect`: the microscope over `chars` characters of a run's text, as one HTML page
    (default inspect.html beside the checkpoint). Returns the summary and the page's path."""
    from .inspect_page import render_inspect
    from .microscope import inspect_model

    if not 2 <= chars <= MAX_INSPECT_CHARS:
        raise CharrnnError(f"--chars must be between 2 and {MAX_INSPECT_CHARS:,}, not {chars}")
    model, tok, ckpt, path = ck.load_run(run)
    dev = resolve_device(device)
    page = Path(out) if out is not None else path.parent / ck.INSPECT_PAGE
    ids, source = _inspect_text(text, tok, ckpt, ck.run_cache(path.parent))
    ids = np.asarray(ids[:chars])
    if len(ids) < 2:
        raise CharrnnError(f"{source} holds {len(ids)} character(s): inspect needs at least 2")
    insp = inspect_model(model.to(dev), tok, ids, dev, show=show, positions=positions, seed=seed, quiet=quiet)
    c = ckpt.model_config
    shape = f"{c['model']} {c['n_layers']}x{c['hidden']}, {model.num_params():,} parameters, step {ckpt.step:,}"
    html = render_inspect(insp, {"run": path_text(path), "model": c["model"], "shape": shape, "source": source,
                                 "command": path_text(command or f"charrnn inspect {path}")})
    atomic_write(page, lambda f: f.write(html.encode("utf-8")))
    return {**insp.summary(), "page": path_text(page), "checkpoint": path_text(path), "source": source}
