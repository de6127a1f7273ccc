"""Run folders and checkpoints: the one module that knows what a run folder holds, writes it and reads it.

A run folder holds `tokenizer.json`, a readable `config.json`, `last.pt`, `best.pt` (lowest validation
loss), `metrics.jsonl` and `cache/` (and `inspect.html` once `charrnn inspect` has looked at it). Each checkpoint is self-sufficient: configs, weights, the
tokenizer, and everything an exact resume needs (optimizer, scaler, RNG states, data position,
carried hidden state, the open logging window). It holds only tensors and plain Python values, so
`torch.load(weights_only=True)` reads it and loading never executes code from the file; its layout
is checked once, on load, so a damaged or crafted file is one line, not a KeyError later. The layout
is `Saved` (with `RunInfo`): `Saved.to_dict` writes it, `read_checkpoint` reads it, and no other
module knows its keys; metrics.jsonl is appended, trimmed and read here too.

A training process holds the folder through `RunFolder.hold`: a lock refuses a second writer (the
kernel drops it when the process dies, so a killed run's folder is taken over), files a fresh run
would overwrite are refused, and a fresh run that fails before its first checkpoint takes away what
it wrote.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .data import CACHE_FILE
from .device import machine_name
from .errors import CharrnnError, TrainingDiverged, one_line
from .evaluate import EvalResult
from .families import build_model, config_from_dict, kinds, param_count
from .fileio import (
    append_line,
    atomic_write,
    is_regular,
    json_value,
    open_in_folder,
    open_regular,
    read_bytes,
    reason,
    refuse_link,
    remove_stale_temporaries,
    shown,
    to_json,
    write_json,
)
from .tokenizer import CharTokenizer
from .trainer import Progress, TrainConfig, Trainer

FORMAT = "charrnn-checkpoint/1"
EXIT_S = 0.5  # what a training command spends after its last checkpoint: the summary, torch's teardown
LAST, BEST, CONFIG, TOKENIZER, METRICS = "last.pt", "best.pt", "config.json", "tokenizer.json", "metrics.jsonl"
CACHE, LOCK = "cache", ".lock"
LOCK_BYTES = 24  # a lock file holds a pid and a newline; anything longer is not ours
INSPECT_PAGE = "inspect.html"
LOSS_PAGE = "loss.html"  # `charrnn info --plot`'s page  # `charrnn inspect`'s page, beside the checkpoint it inspected
RUN_FILES = (LAST, BEST, CONFIG, TOKENIZER, METRICS)  # what a run writes at the top of its folder
METRIC_KINDS = ("train", "val")


@dataclass
class RunInfo:
    """What a checkpoint records about its run beside the configs: the data and how it was chosen."""

    corpus: str  # as the user named it
    corpus_sha256: str
    val_frac: float
    train_chars: int
    val_chars: int
    preset: dict | None = None  # how the budget chose the settings (presets.Choice.to_dict)
    precision: str | None = None  # None in checkpoints written before they recorded it
    init_from: str | None = None  # the checkpoint a fine-tuned run started from


@dataclass
class Saved:
    """A checkpoint as the commands read it: `read_checkpoint` checked its layout; `to_dict` writes it."""

    model_config: dict[str, Any]  # ModelConfig.to_dict()
    train_config: dict[str, Any]  # TrainConfig.to_dict()
    run: RunInfo
    tokenizer: str  # tokenizer.json's text
    weights: dict[str, torch.Tensor]
    trainer: dict[str, Any]  # Trainer.state_dict(): everything an exact resume needs
    val_loss: float | None = None  # this checkpoint's validation loss, when a validation wrote it

    @property
    def progress(self) -> dict[str, Any]:
        return self.trainer["progress"]

    @property
    def step(self) -> int:
        return self.progress.get("step", 0)

    @property
    def best_loss(self) -> float | None:
        """The run's best validation loss: a full pass's figure once there is one, else the (subset) pass's."""
        best = self.progress.get("best_full", math.inf)
        best = best if best < math.inf else self.progress.get("best_val", math.inf)
        return None if best == math.inf else best

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "model_config": self.model_config, "train_config": self.train_config,
                "run": asdict(self.run), "tokenizer": self.tokenizer, "model": self.weights, "trainer": self.trainer,
                "val_loss": self.val_loss}

    @classmethod
    def from_dict(cls, ckpt: dict[str, Any]) -> Saved:
        known = {f.name for f in fields(RunInfo)}
        return cls(ckpt["model_config"], ckpt["train_config"], RunInfo(**{k: v for k, v in ckpt["run"].items()
                                                                              if k in known}),
                   ckpt["tokenizer"], ckpt["model"], ckpt["trainer"], ckpt.get("val_loss"))


# --- metrics.jsonl ---------------------------------------------------------------------------------
def _record(line: bytes) -> dict | None:
    """One metrics line as a record, or None for a torn or foreign line."""
    try:
        rec = json_value(line)
    except ValueError:
        return None
    if not isinstance(rec, dict) or rec.get("kind") not in METRIC_KINDS:
        return None
    step = rec.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return None
    return rec


def _metric_lines(path: Path) -> Iterator[tuple[bytes, dict | None]]:
    if not path.exists():
        return
    with open_regular(path, "metrics file") as f:
        try:
            for line in f:
                yield line, _record(line)
        except OSError as e:
            raise CharrnnError(f"cannot read {shown(path)}: {reason(e)}") from None


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's config.json, as `RunFolder.write_config` wrote it: model, train, run, params, device,
    precision, world_size (for tools and benchmarks; a command reads the checkpoints)."""
    path = Path(run_dir) / CONFIG
    try:
        config = json_value(read_bytes(path, "run config"))
    except ValueError as e:
        raise CharrnnError(f"{shown(path)} is not readable JSON ({one_line(e, 80)})") from None
    if not isinstance(config, dict):
        raise CharrnnError(f"{shown(path)} is not a run's config")
    return config


def read_metrics(run_dir: Path, kind: str | None = None) -> list[dict]:
    """The readable records of a run's metrics.jsonl (of one kind, or all); torn lines are skipped."""
    return [r for _, r in _metric_lines(Path(run_dir) / METRICS) if r is not None and kind in (None, r["kind"])]


# --- the folder a training process holds -----------------------------------------------------------
class FolderLock:
    """An exclusive lock on a folder for one writing process: `flock` on `<folder>/.lock`. The kernel
    releases it however the process ends, so a killed writer's lock is simply taken over; a clean
    release also removes the file.

    The file is opened without following a link, and only a charrnn lock is ever written or removed: a
    regular file that is empty or holds a pid (what `acquire` writes). A `.lock` that is a link, not a
    regular file, or holds anything else is someone else's: refused with one line, left as it is."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): one writer per folder is then up to the user
            return
        path = self.path
        for _ in range(10):
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CharrnnError(f"cannot write to {shown(self.folder)}: {reason(e)}") from None
            fd = open_in_folder(path, os.O_RDWR | os.O_CREAT, "lock file")
            try:
                holder = self._holder(fd)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise CharrnnError(f"{shown(self.folder)} is being written by another charrnn process"
                                   f"{f' (pid {holder})' if holder else ''}: wait for it, or choose "
                                   f"another --out") from None
            except BaseException:
                os.close(fd)
                raise
            if self._is_ours(fd):  # the holder before us may have removed the file as we opened it
                break
            os.close(fd)
        else:
            raise CharrnnError(f"cannot lock {shown(path)}: it keeps being replaced")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the message above; the lock itself is flock's
        self._fd = fd

    def _holder(self, fd: int) -> str:
        """The pid a charrnn lock file holds ("" if none yet); one line if the file is not a charrnn lock."""
        text = os.pread(fd, LOCK_BYTES + 1, 0)
        if len(text) > LOCK_BYTES or not re.fullmatch(rb"\d*\n?", text):
            raise CharrnnError(f"{shown(self.path)} is not a charrnn lock file (it holds other data): charrnn "
                               f"will not overwrite it; move it away or choose another --out")
        return text.decode("ascii").strip()

    def _is_ours(self, fd: int) -> bool:
        """Whether `path` is still the file `fd` holds open (not removed or replaced since)."""
        try:
            return os.lstat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self._fd is not None:
            if self._is_ours(self._fd):  # removed while still held: see acquire
                with contextlib.suppress(OSError):
                    self.path.unlink()
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class RunFolder:
    """A run folder as one training process writes it (rank 0 under torchrun)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = FolderLock(self.path)

    @property
    def cache(self) -> Path:
        return self.path / CACHE

    def checkpoints(self) -> list[str]:
        return [n for n in (LAST, BEST) if (self.path / n).exists()]

    @contextlib.contextmanager
    def hold(self, fresh: bool) -> Iterator[RunFolder]:
        """Lock the folder for this process. A fresh run refuses a folder that holds any file it would
        write; if it then fails before writing a checkpoint, what it wrote is taken away again."""
        existed = self.path.exists()
        if existed and not self.path.is_dir():
            raise CharrnnError(f"--out {shown(self.path)} is a file, not a folder")
        if not fresh and not existed:
            raise CharrnnError(f"no such run folder: {shown(self.path)} (nothing to --resume)")
        cache_existed = self.cache.exists()
        before = set(self.cache.iterdir()) if cache_existed and self.cache.is_dir() else set()
        self._lock.acquire()
        ours = ok = False  # ours: the fresh run's files are all its own from here on
        try:
            for n in (*RUN_FILES, CACHE):  # a link here would make the run write somewhere else
                refuse_link(self.path / n)
            if fresh:
                taken = [n for n in RUN_FILES if (self.path / n).exists()]
                if taken and self._abandoned(taken):  # a killed run's files, from before its first checkpoint
                    self._remove_run_files()  # (its cache is keyed by content: this run reads it too)
                    taken = []
                if taken:
                    if any(n in taken for n in (LAST, BEST)):
                        raise CharrnnError(f"{shown(self.path)} already holds a run: add --resume to continue it, "
                                           f"or --out for a new one")
                    raise CharrnnError(f"{shown(self.path)} holds {', '.join(taken)}, which a new run would overwrite: "
                                       f"choose another --out")
                ours = True
            # left by a writer that was killed mid-write
            remove_stale_temporaries(self.path, "|".join(map(re.escape, RUN_FILES)))
            if self.cache.is_dir():
                remove_stale_temporaries(self.cache, CACHE_FILE)
            yield self
            ok = True
        finally:
            try:
                if not ok and ours and not self.checkpoints():
                    self._take_back(cache_existed, before)
            finally:
                self._lock.release()
                if not ok and not existed:
                    with contextlib.suppress(OSError):
                        self.path.rmdir()  # only if empty: anything else in it is not ours

    def _abandoned(self, taken: list[str]) -> bool:
        """Whether the run files here are what a charrnn run killed before its first checkpoint left:
        its config.json (or, before that was written, its character vocabulary alone)."""
        if LAST in taken or BEST in taken:
            return False
        try:
            if CONFIG in taken:
                config = json_value(read_bytes(self.path / CONFIG))
                return isinstance(config, dict) and isinstance(config.get("run"), dict) and \
                    isinstance(config["run"].get("corpus_sha256"), str) and {"model", "train"} <= config.keys()
            return taken == [TOKENIZER] and CharTokenizer.from_file(self.path / TOKENIZER).n_chars > 0
        except (CharrnnError, ValueError):
            return False

    def _remove_run_files(self) -> None:
        for n in RUN_FILES:
            if (self.path / n).is_file():
                (self.path / n).unlink()

    def _take_back(self, cache_existed: bool, before: set) -> None:
        """Undo a fresh run that never wrote a checkpoint: nothing in it can be resumed."""
        with contextlib.suppress(OSError):
            self._remove_run_files()
            if not cache_existed:
                shutil.rmtree(self.cache, ignore_errors=True)
            elif self.cache.is_dir():
                for p in set(self.cache.iterdir()) - before:
                    p.unlink()

    # --- what a run writes ---------------------------------------------------------------------
    def recorded_precision(self) -> str | None:
        """The precision config.json records: for checkpoints written before they recorded it themselves."""
        try:
            value = read_config(self.path).get("precision")
        except CharrnnError:
            return None
        return value if value in ("fp32", "bf16", "fp16") else None

    def write_config(self, model_config: dict, train_config: dict, run: RunInfo, params: int, device: str,
                     world_size: int) -> None:
        """config.json: what the run is, for people and tools to read (the checkpoints hold it too)."""
        write_json(self.path / CONFIG, {"model": model_config, "train": train_config, "run": asdict(run),
                                        "params": params, "device": device, "machine": machine_name(device),
                                        "precision": run.precision, "world_size": world_size})

    def write_tokenizer(self, tok: CharTokenizer) -> None:
        text = json.dumps(json.loads(tok.to_str()), indent=2, ensure_ascii=False) + "\n"
        atomic_write(self.path / TOKENIZER, lambda f: f.write(text.encode("utf-8")))

    def append_metric(self, record: dict) -> None:
        append_line(self.path / METRICS, to_json(record))

    def trim_metrics(self, step: int) -> int:
        """Drop the records after `step` (on resume they belong to a run that died after its last
        checkpoint, and the resumed run writes those steps again) and any line that is not a record
        (a torn last line from a killed writer). Rewritten atomically, if at all; returns lines dropped."""
        path = self.path / METRICS
        keep, dropped = [], 0
        for line, rec in _metric_lines(path):
            if rec is None or rec["step"] > step:
                dropped += 1
            else:
                keep.append(line if line.endswith(b"\n") else line + b"\n")
        if dropped:
            atomic_write(path, lambda f: f.writelines(keep))
        return dropped

    def save(self, name: str, saved: Saved) -> None:
        ckpt = saved.to_dict()
        atomic_write(self.path / name, lambda f: torch.save(ckpt, f))

    def read_best(self, run: Saved, run_path: Path) -> Saved | None:
        """The run's best checkpoint (None if it has none), checked against the checkpoint `run` it resumes
        from (read from `run_path`): a best.pt copied in from another run is one line before training."""
        path = self.path / BEST
        if run_path.name == BEST:
            return run
        if not path.exists():
            return None
        best = read_checkpoint(path)
        check_same_run(best, path, run, run_path)
        return best

    def set_best_loss(self, loss: float) -> None:
        """Record the best checkpoint's full-pass validation loss in it (it was chosen on a subset)."""
        saved = read_checkpoint(self.path / BEST)
        saved.val_loss = loss
        saved.progress["best_full"] = loss
        self.save(BEST, saved)


# --- what a training run writes -----------------------------------------------------------------------
class RunRecorder:
    """What a training run leaves in its run folder, as the trainer's hooks: a metrics record at each log
    and each validation, last.pt at each validation and when the run stops, best.pt at the best one.

    The best is chosen here. Intermediate passes rank checkpoints on the evaluator's subset; the final
    pass scores the whole split, and the earlier best checkpoint too (its weights kept on the CPU, or
    read back from best.pt after a resume), so the figures a finished run reports are full passes.
    Every rank runs it (a checkpoint gathers the trainer's state; scoring is shared); rank 0 writes.
    Weights that are no longer finite, or a validation loss that is not, are never written: the run
    stops with TrainingDiverged and the last checkpoint stays as it was."""

    def __init__(self, folder: RunFolder, trainer: Trainer, model_config: dict, run: RunInfo, tokenizer: str,
                 evaluate, best: Saved | None = None):
        self.folder, self.trainer, self.evaluate = folder, trainer, evaluate
        self.model_config, self.run, self.tokenizer = model_config, run, tokenizer
        self.main = trainer.world.is_main
        p = trainer.progress
        self.saved_step = p.step if p.step else None  # the step of the last checkpoint written (a resumed run's)
        self._taken = -1  # the step whose state was last taken
        # The best checkpoint's weights while it was judged on a subset (a CPU copy), to score it fully at
        # the end; a resumed run reads them from its best.pt.
        self.best_weights = best.weights if best is not None and p.best_full == math.inf and p.best_step >= 0 else None
        self.last: tuple[EvalResult, bool] | None = None  # the last validation's result and whether it was the best
        self.save_s = 0.0  # seconds the last checkpoint took to write
        self.rescored: EvalResult | None = None  # the final pass's figure for an earlier best checkpoint
        hooks = trainer.hooks
        hooks.on_log.append(self.on_log)
        hooks.on_eval.append(self.on_eval)
        hooks.on_stop.append(self.on_stop)

    def final_cost(self, full_passes: float) -> float:
        """Seconds the end of the run will take, as the last intermediate pass measured it: the final pass
        over the whole split (`full_passes` times the subset's cost), an earlier best checkpoint's too,
        two checkpoints written, and the exit. 0 until a pass has been timed."""
        p = self.trainer.progress
        if not p.evals:
            return 0.0
        passes = 1 + full_passes * (2 if self.best_weights is not None or p.best_step < p.step else 1)
        return p.eval_s * passes + 2 * self.save_s + EXIT_S

    def on_log(self, trainer: Trainer, record: dict) -> None:
        if self.main:
            self.folder.append_metric({"kind": "train", **record})

    def on_eval(self, trainer: Trainer, result: EvalResult, final: bool) -> None:
        result, is_best, self.rescored = self._rank(result, final)
        if not math.isfinite(result.loss_nats):  # finite weights can still overflow into NaN logits
            raise TrainingDiverged(f"training diverged: the validation loss is {result.loss_nats} at step "
                                   f"{trainer.progress.step}")
        snap = self._snapshot(result.loss_nats)
        self.last = result, is_best
        if self.main:
            self.folder.append_metric({"kind": "val", "step": trainer.progress.step, "elapsed": trainer.progress.elapsed,
                                       **result.to_dict()})
            self._save(snap, is_best)
            if self.rescored is not None:  # the best checkpoint, judged on the subset, gets its full figure
                self.folder.set_best_loss(self.rescored.loss_nats)

    def on_stop(self, trainer: Trainer, reason: str) -> None:
        if self._taken != trainer.progress.step:
            snap = self._snapshot(None)
            if self.main:
                self._save(snap, False)

    def _rank(self, sub: EvalResult, final: bool) -> tuple[EvalResult, bool, EvalResult | None]:
        """(the result to record, whether this model is the best, an earlier best's full-pass result)."""
        t, p = self.trainer, self.trainer.progress
        is_best = sub.loss_nats < p.best_val
        if is_best:
            p.best_val, p.best_step = sub.loss_nats, p.step
            p.best_full = math.inf if sub.subset else sub.loss_nats
            self.best_weights = ({k: v.detach().cpu().clone() for k, v in t.model.state_dict().items()}
                                 if sub.subset else None)
        if not (final and sub.subset):
            return sub, is_best, None
        full, rescored = self.evaluate(t.model, subset=False), None
        if not is_best and p.best_full == math.inf and self.best_weights is not None:
            rescored = self._score(self.best_weights)
            p.best_full = rescored.loss_nats
        # Scored in full the last model is better after all (or the earlier best's weights were not at hand
        # to score, as after resuming a checkpoint from before this rule): it becomes the best.
        if not is_best and full.loss_nats < p.best_full:
            is_best, rescored = True, None
            p.best_val, p.best_step = sub.loss_nats, p.step
        if is_best:
            p.best_full = full.loss_nats
        return full, is_best, rescored

    def _score(self, weights: dict) -> EvalResult:
        """The whole split's score of other weights, the trainer's model put back after."""
        model = self.trainer.model
        current = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(weights)
        try:
            return self.evaluate(model, subset=False)
        finally:
            model.load_state_dict(current)

    def _snapshot(self, val_loss: float | None) -> Saved | None:
        """The checkpoint, on rank 0 (None elsewhere). Every rank must call it: the trainer's state gathers."""
        t = self.trainer
        if not t.weights_finite():
            raise TrainingDiverged(f"training diverged: the weights are no longer finite at step {t.progress.step}")
        state = t.state_dict()
        self._taken = t.progress.step
        if not self.main:
            return None
        weights = {k: v.detach().cpu() for k, v in t.model.state_dict().items()}
        return Saved(self.model_config, t.config.to_dict(), self.run, self.tokenizer, weights, state, val_loss)

    def _save(self, snap: Saved, best: bool) -> None:
        t0 = time.perf_counter()
        self.folder.save(LAST, snap)
        self.save_s = time.perf_counter() - t0
        if best:
            self.folder.save(BEST, snap)
        self.saved_step = self.trainer.progress.step


# --- reading ---------------------------------------------------------------------------------------
def run_cache(run_dir: Path) -> Path | None:
    """Where a command that reads a run (eval, inspect) caches the ids of a corpus: the run folder's
    cache/, or None (encode into memory) where the folder cannot be written, as a shared, read-only
    copy. A link there is refused, as everywhere in a run folder."""
    if not os.access(run_dir, os.W_OK):
        return None
    refuse_link(run_dir / CACHE)
    return run_dir / CACHE


def resolve_checkpoint(run: str | Path, prefer: str = BEST) -> Path:
    """A run folder (-> best.pt, falling back to last.pt; `prefer=LAST` for resume) or a checkpoint file."""
    run = Path(run)
    if run.is_dir():
        order = [run / prefer] + [run / n for n in (BEST, LAST) if n != prefer]
        for p in order:
            if p.exists():
                return p
        raise CharrnnError(f"{shown(run)} holds no checkpoint ({BEST} or {LAST})"
                           + (": its run stopped before writing one; train it again without --resume"
                              if prefer == LAST and (run / CONFIG).exists() else ""))
    if not run.exists():
        raise CharrnnError(f"no such run folder or checkpoint: {shown(run)}")
    return run


def newest_run(root: Path = Path("checkpoints")) -> Path:
    """The run folder under `root` whose checkpoint was written last."""
    runs = [d for d in root.glob("*") if d.is_dir() and (is_regular(d / LAST) or is_regular(d / BEST))]
    if not runs:
        raise CharrnnError(f"no runs under {shown(root)}/: train one with `charrnn train CORPUS` or name a run")
    return max(runs, key=lambda d: max((d / n).stat().st_mtime for n in (LAST, BEST) if is_regular(d / n)))


def read_checkpoint(path: Path) -> Saved:
    """A checkpoint, read and checked (`load_checkpoint`)."""
    return Saved.from_dict(load_checkpoint(path))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with weights_only=True and check its layout; anything wrong is one line. The raw
    layout: the commands read it through `read_checkpoint`."""
    path = Path(path)
    with open_regular(path, "checkpoint") as f:
        try:
            with warnings.catch_warnings():  # torch warns about pickle protocols; the verdict is ours to give
                warnings.simplefilter("ignore")
                ckpt = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated zip, pickle with code in it, random bytes...
            why = one_line(e, 120) or type(e).__name__
            if why.startswith("Weights only load failed"):  # torch's advice to trust the file is not ours to give
                why = "it holds more than tensors and plain values, and such a file is never unpickled"
            raise CharrnnError(f"{shown(path)} is not a readable charrnn checkpoint ({why})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CharrnnError(f"{shown(path)} is not a charrnn checkpoint")
    _check_layout(ckpt, shown(path))
    return ckpt


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_float(v: Any) -> bool:  # a number that is not NaN (inf is allowed: best_val starts there)
    return (isinstance(v, float) or _is_int(v)) and not (isinstance(v, float) and math.isnan(v))


_TYPES = {"int": _is_int, "float": _is_float, "str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool)}


def _fits(value: Any, annotation: str) -> bool:
    """Whether `value` has the type a dataclass field is annotated with ("int", "float | None", ...)."""
    return any(value is None if t == "None" else _TYPES[t](value) for t in annotation.replace(" ", "").split("|"))


def _check_fields(d: Any, cls, where: str, name: str, what: str = "checkpoint") -> None:
    if not isinstance(d, dict):
        raise CharrnnError(f"{where}: damaged {what} ({name} is not a table)")
    known = {f.name: f for f in fields(cls)}
    for key, value in d.items():
        if key not in known:
            raise CharrnnError(f"{where}: damaged {what} ({name} has an unknown setting {one_line(repr(key), 40)})")
        if not _fits(value, str(known[key].type)):
            raise CharrnnError(f"{where}: damaged {what} ({name}.{key} is {one_line(repr(value), 40)}, "
                               f"not {known[key].type})")


def _plain_json(value: Any) -> bool:
    """Whether `value` writes as JSON (config.json copies it): plain values, not nested past the stack."""
    try:
        to_json(value)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _check_layout(ckpt: dict[str, Any], where: str) -> None:
    """Every key the readers use, of the type they expect; finite weights; a model config that makes sense."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise CharrnnError(f"{where}: damaged checkpoint ({what})")

    for key, kind in (("model_config", dict), ("train_config", dict), ("run", dict), ("tokenizer", str),
                      ("model", dict), ("trainer", dict)):
        need(isinstance(ckpt.get(key), kind), f"{key} is missing or not a {kind.__name__}")
    check_model_config(ckpt["model_config"], where)
    _check_fields(ckpt["train_config"], TrainConfig, where, "train_config")
    run = ckpt["run"]
    for key, ok in (("corpus", lambda v: isinstance(v, str)), ("corpus_sha256", lambda v: isinstance(v, str)),
                    ("val_frac", lambda v: _is_float(v) and 0 < v < 1), ("train_chars", _is_int),
                    ("val_chars", _is_int)):
        need(key in run and ok(run[key]), f"run.{key} is missing or wrong")
    need(run.get("preset") is None or (isinstance(run["preset"], dict) and _plain_json(run["preset"])),
         "run.preset is not a table of plain values")
    need(run.get("precision", "fp32") in ("fp32", "bf16", "fp16"), "run.precision is not fp32, bf16 or fp16")
    check_weights(ckpt["model"], where)
    trainer = ckpt["trainer"]
    _check_fields(trainer.get("progress"), Progress, where, "trainer.progress")
    need(all(isinstance(trainer.get(k), dict) for k in ("optimizer", "scaler", "rng")), "trainer state is incomplete")
    carry = trainer.get("carry")
    need(carry is None or (isinstance(carry, (list, tuple)) and all(torch.is_tensor(t) for t in carry)),
         "trainer.carry is not a list of tensors")
    need(ckpt.get("val_loss") is None or _is_float(ckpt["val_loss"]), "val_loss is not a number")


def check_same_run(saved: Saved, path: Path, run: Saved, run_path: Path) -> None:
    """One line unless the checkpoint `saved` (read from `path`) belongs to the same run as `run` (read
    from `run_path`): the same kind and shape of model, the same vocabulary, corpus and split."""
    def model(s: Saved) -> ModelConfig | None:
        try:
            return config_from_dict(s.model_config)
        except (TypeError, ValueError):
            return None

    differ = [what for what, same in (
        ("model", model(saved) is not None and model(saved) == model(run)),
        ("weights", {k: v.shape for k, v in saved.weights.items()} == {k: v.shape for k, v in run.weights.items()}),
        ("vocabulary", CharTokenizer.from_str(saved.tokenizer) == CharTokenizer.from_str(run.tokenizer)),
        ("corpus", saved.run.corpus_sha256 == run.run.corpus_sha256),
        ("validation split", saved.run.val_frac == run.run.val_frac)) if not same]
    if differ:
        raise CharrnnError(f"{shown(path)} is not from the run {shown(run_path)} holds (its {', '.join(differ)} "
                           f"differ): move it away to continue the run")


def check_model_config(mc: Any, where: str, what: str = "checkpoint") -> None:
    """A model config as a checkpoint (or an exported folder) holds it: known settings of the right types,
    a kind that is registered, sizes that make sense, the family's own options known to it and in range."""
    def need(ok: bool, why: str) -> None:
        if not ok:
            raise CharrnnError(f"{where}: damaged {what} ({why})")

    need(isinstance(mc, dict), "model_config is not a table")
    need("vocab_size" in mc, "model_config has no vocab_size")
    for key, kind in (("vocab_size", "int"), ("model", "str"), ("n_layers", "int"), ("hidden", "int"),
                      ("dropout", "float"), ("n_outputs", "int | None")):
        need(key not in mc or _fits(mc[key], kind), f"model_config.{key} is {one_line(repr(mc.get(key)), 40)}, not {kind}")
    need(mc.get("model", ModelConfig.model) in kinds(), f"model_config.model is not one of {', '.join(kinds())}")
    for key in ("vocab_size", "n_layers", "hidden"):
        need(mc.get(key, 1) >= 1, f"model_config.{key} must be >= 1")
    need(0 <= mc.get("dropout", 0.0) < 1, "model_config.dropout must be in [0, 1)")
    try:  # the family's own options: known to it, each of its type and in its range
        config_from_dict(mc)
    except ValueError as e:
        need(False, f"model_config: {one_line(e, 80)}")


def check_weights(weights: Any, where: str, what: str = "checkpoint") -> None:
    """Named tensors, every floating-point one finite."""
    if not all(isinstance(k, str) and torch.is_tensor(v) for k, v in weights.items()):
        raise CharrnnError(f"{where}: damaged {what} (model holds something not a tensor)")
    if not all(bool(torch.isfinite(v).all()) for v in weights.values() if v.is_floating_point()):
        raise CharrnnError(f"{where}: damaged {what} (its weights hold NaN or infinite values)")


def checkpoint_tokenizer(saved: Saved, path: Path) -> CharTokenizer:
    """The checkpoint's tokenizer, checked against the weights and against a tokenizer.json beside it."""
    tok = CharTokenizer.from_str(saved.tokenizer)
    vocab_size = saved.model_config["vocab_size"]
    if tok.vocab_size != vocab_size:
        raise CharrnnError(f"{shown(path)}: tokenizer has {tok.vocab_size} tokens but the weights expect {vocab_size}")
    beside = Path(path).parent / TOKENIZER
    if beside.exists():
        other = CharTokenizer.from_file(beside)
        if other != tok:
            raise CharrnnError(
                f"{shown(beside)} does not match the weights in {shown(Path(path).name)} "
                f"({other.vocab_size} vs {tok.vocab_size} tokens)"
            )
    return tok


def checkpoint_model(saved: Saved, path: Path) -> torch.nn.Module:
    return model_from(saved.model_config, saved.weights, shown(path))


def model_from(model_config: dict[str, Any], weights: dict[str, torch.Tensor], where: str) -> torch.nn.Module:
    """The model, built from the config only once the weights are known to be as large as it says:
    a crafted config cannot make this allocate more than the file already holds."""
    try:
        config = config_from_dict(model_config)
        held = sum(t.numel() for t in weights.values())
        if param_count(config) > held:
            raise ValueError(f"the config describes {param_count(config):,} parameters, the file holds {held:,}")
        model = build_model(config)
        model.load_state_dict(weights)
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        raise CharrnnError(f"{where}: weights do not fit the model config ({one_line(e, 120)})") from None
    return model


def load_run(run: str | Path, prefer: str = BEST) -> tuple[torch.nn.Module, CharTokenizer, Saved, Path]:
    """Model (eval mode, CPU), tokenizer, the checkpoint and its path, from a run folder or file."""
    path = resolve_checkpoint(run, prefer)
    saved = read_checkpoint(path)
    tok = checkpoint_tokenizer(saved, path)
    model = checkpoint_model(saved, path).eval()
    return model, tok, saved, path
