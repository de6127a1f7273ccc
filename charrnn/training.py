"""The train pipeline: corpus -> tokenizer -> ids -> model -> trainer -> run folder.

The CLI parses options and calls `train`; Python users can call it too. A training run is either
fresh (settings from the user, the rest from the budget preset) or resumed (every setting from the
checkpoint; only the stops and the micro-batch split may change): each setup returns a `_Setup`,
and one shared tail trains it, with the run folder's recorder, the progress bar and the notices as
the trainer's hooks.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ck
from . import distributed, memory, presets
from .config import ModelConfig
from .corpora import file_sha256, resolve_corpus, run_corpus
from .data import RARE_COUNT, encode_corpus, has_bom, scan_corpus, split, training_unknown
from .device import resolve_device, resolve_precision
from .errors import CharrnnError, TrainingDiverged, one_line
from .evaluate import EVAL_LENGTH, EVAL_STREAMS, EvalResult
from .families import build_model, evaluate_model, family_of, model_settings, option_names
from .fileio import path_text, shown
from .progress import ProgressBar
from .sampler import SampleConfig, Sampler
from .tokenizer import CharTokenizer
from .trainer import TrainConfig, Trainer, flag

DEFAULT_MAX_TIME = 600.0  # with no stop given, train for ten minutes
DEFAULT_VAL_FRAC = 0.1
# Characters an intermediate validation scores: the start of the whole pass (evaluate.py's `limit`), the
# same every time. Enough to rank checkpoints, which all score that text, at a small share of the cost:
# for the RNNs one chunk of every validation stream.
VAL_SUBSET = EVAL_STREAMS * EVAL_LENGTH
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
    # time.perf_counter() when the command began: --max-time counts from there, setup (importing torch,
    # reading the corpus, timing the presets) and the final pass included. None: when `train` is called.
    started: float | None = None
    # A trained run (folder or checkpoint) whose weights a fresh run starts from, on this corpus (fine-tuning)
    init_from: Path | None = None


def _split_overrides(overrides: dict[str, Any]) -> tuple[dict, dict]:
    model_over, rest = model_settings(overrides)
    train_keys = {f.name for f in fields(TrainConfig)}
    unknown = set(rest) - train_keys
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}")
    return model_over, rest


def check_settings(model_cfg: ModelConfig, train_cfg: TrainConfig, val_frac: float) -> None:
    """Nonsense values are caught before anything touches the disk."""
    m = model_cfg
    for name in m.COMMON_FIELDS:  # NaN passes every comparison, and inf most of them
        v = getattr(m, name)
        if isinstance(v, float) and not math.isfinite(v):
            raise CharrnnError(f"{flag(name)} must be a finite number, not {v}")
    if not (isinstance(val_frac, (int, float)) and 0 < val_frac < 1):
        raise CharrnnError(f"val-frac must be in (0, 1), not {val_frac}")
    checks = [
        (m.n_layers >= 1, f"layers must be >= 1, not {m.n_layers}"),
        (m.hidden >= 1, f"hidden must be >= 1, not {m.hidden}"),
        (0 <= m.dropout < 1, f"dropout must be in [0, 1), not {m.dropout}"),
    ]
    problems = train_cfg.problems() + [message for ok, message in checks if not ok]
    problems += [message for ok, message in family_of(m.model).checks(m, train_cfg) if not ok]
    if problems:
        raise CharrnnError(problems[0])


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


def corpus_name(path: Path) -> str:
    """A corpus file's name as a run folder's is made of it."""
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
    chosen: str | None = None  # what the budget chose, said once the data is known to fit it
    init_from: str | None = None  # the checkpoint a fine-tuned run started from


def train(opts: RunOptions, overrides: dict[str, Any] | None = None,
          on_trainer: Callable[[Trainer], None] | None = None) -> dict[str, Any]:
    """Train (or resume) a run; returns a summary. `overrides` holds the settings the user chose;
    the rest come from the budget preset and the configs' own defaults. `on_trainer` is called
    with the trainer before it runs, e.g. to add hooks.

    Under torchrun this process is one rank of a data-parallel job (distributed.py): it joins the
    process group here and leaves it however the run ends."""
    if opts.started is None:
        opts = replace(opts, started=time.perf_counter())
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
    if opts.resume and opts.init_from is not None:
        raise CharrnnError("--init-from starts a new run from another's weights, --resume continues one: not both")
    kind = overrides.get("model") or (ck.read_checkpoint(ck.resolve_checkpoint(opts.init_from)).model_config.get(
        "model", ModelConfig.model) if opts.init_from is not None else ModelConfig.model)
    folder = ck.RunFolder(opts.out or default_run_dir(corpus_path, kind))
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
        elif opts.init_from is not None:
            setup = _finetune_setup(opts, overrides, corpus_path, world, device)
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

    if not any(k in overrides for k in ("max_steps", "max_epochs", "max_time")):
        base["max_time"] = DEFAULT_MAX_TIME
    model_cfg, train_cfg = _configs(kind, {**base, **overrides, **outputs}, tok.vocab_size, val_frac)
    _check_memory(model_cfg, train_cfg, world, device, "this run" if choice is None else f"preset {choice.name}")
    torch.manual_seed(train_cfg.seed)  # the same seed, the same initial weights
    model = build_model(model_cfg)
    return _Setup(tok, model, model_cfg, train_cfg, val_frac, precision, None if choice is None else choice.to_dict(),
                  chosen=None if choice is None else choice.describe())


# What fine-tuning may change of the run it starts from: the regularisation, not the shape of the weights.
FINETUNE_CHANGEABLE = ("dropout", "weight_drop")


def _finetune_setup(opts: RunOptions, overrides: dict[str, Any], corpus_path: Path, world: distributed.World,
                    device: torch.device) -> _Setup:
    """A trained run's weights on new text: its kind and shape of model, its training settings with the
    user's on top, a fresh optimizer and schedule. The vocabulary is the run's, grown by the characters of
    the new text it lacks (`grow_vocabulary`)."""
    base, base_tok, saved, path = ck.load_run(opts.init_from)
    fam = family_of(base.config.model)
    given = [k for k in overrides if k in ModelConfig.COMMON_FIELDS or k in option_names()]
    fixed = [k for k in given if k not in FINETUNE_CHANGEABLE and overrides[k] != getattr(base.config, k, None)]
    if fixed:
        raise CharrnnError(f"--init-from keeps the model of {shown(path)}: {', '.join(flag(k) for k in fixed)} "
                           f"cannot change (its {flag(fixed[0])} is {getattr(base.config, fixed[0])})")
    precision = resolve_precision(opts.precision or "auto", device)
    val_frac = DEFAULT_VAL_FRAC if opts.val_frac is None else opts.val_frac
    text_tok = scan_corpus(corpus_path, byte_fallback=base_tok.byte_fallback)[0]
    tok = CharTokenizer.from_chars(set(base_tok.chars) | set(text_tok.chars), byte_fallback=base_tok.byte_fallback)
    stops = {} if any(k in overrides for k in ("max_steps", "max_epochs", "max_time")) else {"max_time": DEFAULT_MAX_TIME}
    train_settings = {k: v for k, v in saved.train_config.items() if k not in ("max_steps", "max_epochs", "max_time")}
    model_settings_ = {k: v for k, v in base.config.to_dict().items() if k not in ("vocab_size", "n_outputs")}
    model_cfg, train_cfg = _configs(base.config.model, {**model_settings_, **train_settings, **stops, **overrides,
                                                        "n_outputs": tok.n_chars}, tok.vocab_size, val_frac)
    _check_memory(model_cfg, train_cfg, world, device)
    torch.manual_seed(train_cfg.seed)
    model = grow_vocabulary(fam, base, base_tok, build_model(model_cfg), tok)
    if not opts.quiet:
        added = tok.n_chars - base_tok.n_chars
        _say(f"fine-tuning {shown(path)} ({base.config.model} {fam.describe(base.config.to_dict())}) on "
             f"{shown(corpus_path)}" + (f": {added} new character(s) in the vocabulary" if added else ""))
    return _Setup(tok, model, model_cfg, train_cfg, val_frac, precision, None, init_from=path_text(path.absolute()))


def grow_vocabulary(fam, base: torch.nn.Module, base_tok: CharTokenizer, model: torch.nn.Module,
                    tok: CharTokenizer) -> torch.nn.Module:
    """`model` (built for `tok`) holding `base`'s weights (built for `base_tok`, whose characters `tok` all
    has). Each weight with a row per token (`Family.token_rows`) takes a character's row from where that
    character was; a new character's input row is the mean of the old characters' rows (it reads as an
    average character), its output row is zero and its bias the lowest old one (it starts rare, and
    training raises it). Byte tokens keep their rows."""
    old = base.state_dict()
    if tok.n_chars != base_tok.n_chars and not fam.token_rows:
        raise CharrnnError(f"a {base.config.model} model cannot take new characters: fine-tune it on text made "
                           f"of its own characters")
    where = torch.tensor([base_tok.chars.index(c) if c in base_tok.chars else -1 for c in tok.chars])
    known = where >= 0
    state = {}
    for name, new in model.state_dict().items():
        w = old[name]
        if name not in fam.token_rows:
            state[name] = w
            continue
        rows = w[: base_tok.n_chars]
        grown = torch.empty((tok.n_chars, *w.shape[1:]), dtype=w.dtype)
        grown[known] = rows[where[known]]
        if fam.token_rows[name] == "input":
            grown[~known] = rows.mean(0)
        else:
            grown[~known] = rows.min() if w.dim() == 1 else 0.0
        state[name] = torch.cat([grown, w[base_tok.n_chars:]]) if new.shape[0] > tok.n_chars else grown
    model.load_state_dict(state)
    return model


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

    validate = _validator(val_ids, device, s.precision, world)
    if s.chosen is not None and not opts.quiet:
        _say(f"settings from the budget: {s.chosen}")
    trainer = Trainer(s.model, train_cfg, batcher, device, s.precision, evaluate=validate, world=world,
                      compile=opts.compile, outputs=model_cfg.outputs)
    trainer.say = ProgressBar.say
    if s.saved is not None:
        try:
            trainer.load_state_dict(s.saved.trainer)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
            raise CharrnnError(f"{shown(s.saved_path)}: its trainer state does not fit this run "
                               f"({one_line(e, 120) or type(e).__name__})") from None
    run_info = ck.RunInfo(path_text(corpus_path.absolute()), corpus_sha, s.val_frac, len(train_ids), len(val_ids), s.preset,
                          s.precision, s.init_from if s.saved is None else s.saved.run.init_from)
    if world.is_main:  # one writer for the run folder
        _write_run_files(folder, s, run_info, trainer.progress.step, str(device), world.world_size, opts.quiet)
    recorder = ck.RunRecorder(folder, trainer, model_cfg.to_dict(), run_info, s.tok.to_str(), validate, s.best)
    # The budget is the command's: its setup counts, and the loop stops early enough for what follows it.
    trainer.reserve = functools.partial(recorder.final_cost, len(val_ids) / min(VAL_SUBSET, len(val_ids)))
    if world.is_main and not opts.quiet:
        measured = (s.preset or {}).get("chars_per_s") if s.saved is None else None
        Notices(trainer, recorder, s.tok, opts.sample_len, measured)
    if on_trainer is not None:
        on_trainer(trainer)

    if not opts.quiet:
        where = f"{device} {s.precision}" if world.world_size == 1 else \
            f"{world.world_size} processes ({device.type} {s.precision}, {len(rows)} streams each)"
        shape = family_of(model_cfg.model).describe(model_cfg.to_dict())
        _say(f"{shown(folder.path)}: {model_cfg.model} {shape}, "
             f"{s.model.num_params() / 1e6:.2f}M params, {len(train_ids):,} train / {len(val_ids):,} val chars, "
             f"{where}" + (f", resuming at step {trainer.progress.step}" if s.saved else ""))
    trainer.progress.elapsed += time.perf_counter() - opts.started
    try:
        reason = trainer.run()
    except TrainingDiverged as e:
        kept = recorder.saved_step
        where = (f"{shown(folder.path / ck.LAST)} keeps step {kept}, with finite weights" if kept is not None
                 else "no checkpoint had been written")
        raise TrainingDiverged(f"{e}; {where}. Lower --lr, or clip gradients with --grad-clip") from None
    p = trainer.progress
    best = p.best_full if p.best_full < math.inf else p.best_val  # a full pass's figure once there is one
    return {"run_dir": path_text(folder.path), "reason": reason, "step": p.step, "chars": p.chars, "elapsed": p.elapsed,
            "best_val": best if best < math.inf else None, "skipped": p.skipped, "main": world.is_main}


def _validator(val_ids, device: torch.device, precision: str, world: distributed.World):
    """The trainer's `evaluate(model, subset)`: each rank scores its share of the validation streams or
    windows, and the sums make the global figure. The subset, which only ranks checkpoints, is scored in
    the training precision; the whole split in fp32, so that the figures a run reports (info, best.pt)
    are the ones `charrnn eval` gives."""
    ranking_only = len(val_ids) > VAL_SUBSET  # (a small split's subset is the whole of it)

    def validate(m, subset: bool) -> EvalResult:
        part = evaluate_model(m, val_ids, device, precision if subset and ranking_only else "fp32",
                              n_streams=EVAL_STREAMS,
                              seq_len=EVAL_LENGTH, shard=(world.rank, world.world_size),
                              limit=VAL_SUBSET if subset else None)
        if world.world_size == 1:
            return part
        total, chars = world.all_sum([part.loss_nats * part.chars, part.chars])
        return EvalResult(total / chars, int(chars), subset=part.subset)
    return validate


def _write_run_files(folder: ck.RunFolder, s: _Setup, run_info: ck.RunInfo, step: int, device: str, world_size: int,
                     quiet: bool) -> None:
    """tokenizer.json (a fresh run), metrics.jsonl as of `step` (a resumed one drops what came after its
    checkpoint), config.json."""
    if s.saved is None:
        folder.write_tokenizer(s.tok)
    dropped = folder.trim_metrics(step)
    if dropped and s.saved is not None and not quiet:
        _say(f"note: dropped {dropped} line(s) of metrics.jsonl written after step {step}")
    folder.write_config(s.model_cfg.to_dict(), s.train_cfg.to_dict(), run_info, s.model.num_params(), device, world_size)


def _resume_after_restart(opts: RunOptions, world: distributed.World, corpus_path: Path,
                          overrides: dict[str, Any]) -> RunOptions:
    """torchrun --max-restarts restarts every worker with the same command after a failure: a restarted
    worker (TORCHELASTIC_RESTART_COUNT > 0) resumes from last.pt when the run folder has one."""
    if opts.resume or world.restart_count == 0:
        return opts
    run_dir = opts.out or default_run_dir(corpus_path, overrides.get("model", ModelConfig.model))
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


def settings_of(config_path: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """What `charrnn train --config RUN/config.json` repeats of a run: its corpus (the file it trained on,
    or the catalog corpus with its text), its model and training settings, and its options (val_frac,
    precision, byte fallback)."""
    config = ck.read_config(config_path.parent if config_path.name == ck.CONFIG else config_path)
    try:
        run, model, train_cfg = config["run"], dict(config["model"]), dict(config["train"])
        corpus = str(run_corpus(run["corpus"], run["corpus_sha256"]))
        options = {"val_frac": run["val_frac"], "precision": config.get("precision")}
    except (KeyError, TypeError) as e:
        raise CharrnnError(f"{shown(config_path)} is not a run's config.json ({one_line(e, 60)})") from None
    for k in ("vocab_size", "n_outputs"):  # what the corpus decides
        model.pop(k, None)
    refused = family_of(model.get("model", ModelConfig.model)).refuses  # (what the family derives itself)
    return corpus, {k: v for k, v in {**model, **train_cfg}.items() if k not in refused}, options


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
    ProgressBar.say(message)


def default_run_dir(corpus_path: Path, model: str) -> Path:
    """checkpoints/<corpus>-<model>: where a run goes without --out."""
    return Path("checkpoints") / f"{corpus_name(corpus_path)}-{model}"


class Notices:
    """What a person running `charrnn train` is told as it goes, as the trainer's hooks (rank 0): the
    progress bar, skipped updates, each validation's loss (the recorder's verdict on it) with a short
    sample, an earlier best checkpoint's full-pass figure, and, once, a training speed far below the one
    the budget's preset was chosen by (`measured` chars/s)."""

    SLOW = 4.0  # this many times slower than measured: something else is on the cores

    def __init__(self, trainer: Trainer, recorder: ck.RunRecorder, tok: CharTokenizer, sample_len: int,
                 measured: float | None = None):
        self.recorder, self.tok, self.sample_len, self.measured = recorder, tok, sample_len, measured
        self.records = 0
        bar = ProgressBar()
        trainer.hooks.on_log += [bar.on_log, self.on_log]
        trainer.hooks.on_eval.append(self.on_eval)
        trainer.hooks.on_stop.append(bar.on_stop)

    def on_log(self, t: Trainer, record: dict) -> None:
        self.records += 1
        if self.measured and self.records == 3 and record["chars_per_s"] * self.SLOW < self.measured:
            # (the third record: the first steps pay for allocation and warm-up)
            _say(f"note: training runs at {record['chars_per_s'] / 1000:.1f}k chars/s, "
                 f"{self.measured / record['chars_per_s']:.0f} times slower than the {self.measured / 1000:.1f}k "
                 f"measured before it began: another process is probably using the cores. Where they are shared, "
                 f"OMP_NUM_THREADS=1 keeps each process to one thread; the budget's choice of model assumed the "
                 f"faster speed")
        if record["skipped"]:
            _say(f"step {record['step']}: {record['skipped']} update(s) skipped for a non-finite loss or gradient "
                 f"({t.progress.skipped} so far)")

    def on_eval(self, t: Trainer, _result: EvalResult, final: bool) -> None:
        result, is_best = self.recorder.last  # (the recorder's hook ran first: the figure it wrote)
        line = f"step {t.progress.step}: val loss {result.loss_nats:.4f} nats, {result.bpc:.4f} bpc"
        if result.subset:
            line += f" ({result.chars:,}-character subset)"
        _say(line + (" (best)" if is_best else ""))
        if self.sample_len > 0:
            sampler = Sampler(t.model, self.tok, t.device)
            text = sampler.sample_many(SampleConfig(length=self.sample_len, temperature=0.8, seed=0), 1)[0]
            t.model.train()
            _say("  | " + text.strip().replace("\n", "\n  | "))
        if (best := self.recorder.rescored) is not None:
            _say(f"best checkpoint (step {t.progress.best_step}): val loss {best.loss_nats:.4f} nats, "
                 f"{best.bpc:.4f} bpc")
