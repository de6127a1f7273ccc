"""Run folders and checkpoints: atomic writes, safe loads, and the checks that catch a bad file early.

A run folder holds `tokenizer.json`, a readable `config.json`, `last.pt`, `best.pt` (lowest validation
loss) and `metrics.jsonl`. Each checkpoint is self-sufficient: configs, weights, the tokenizer, and
everything an exact resume needs (optimizer, scaler, RNG states, data position, carried hidden
state). It holds only tensors and plain Python values, so `torch.load(weights_only=True)` reads it
and loading never executes code from the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import CharrnnError
from .models import CharRNN, ModelConfig, build_model
from .tokenizer import CharTokenizer

FORMAT = "charrnn-checkpoint/1"
LAST, BEST, CONFIG, TOKENIZER, METRICS = "last.pt", "best.pt", "config.json", "tokenizer.json", "metrics.jsonl"


def atomic_write(path: Path, write) -> None:
    """Call write(file) on a temporary file beside `path`, then rename it over `path`.

    A crash or Ctrl-C mid-write leaves the old file in place, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; a run folder is ordinary files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(path: Path, ckpt: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **ckpt}, f))


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")))


def write_tokenizer(path: Path, tok: CharTokenizer) -> None:
    text = json.dumps(json.loads(tok.to_str()), indent=2, ensure_ascii=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def trim_metrics(path: Path, step: int) -> None:
    """Drop the metric records after `step`: on resume they belong to a run that died after its last
    checkpoint, and the resumed run writes those steps again. Rewritten atomically, if at all."""
    path = Path(path)
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = []
    for line in lines:
        try:
            if json.loads(line).get("step", 0) > step:
                continue
        except (ValueError, AttributeError):  # a torn last line from a killed writer
            continue
        keep.append(line)
    if keep != lines:
        atomic_write(path, lambda f: f.write("".join(keep).encode("utf-8")))


def resolve_checkpoint(run: str | Path, prefer: str = BEST) -> Path:
    """A run folder (-> best.pt, falling back to last.pt; `prefer=LAST` for resume) or a checkpoint file."""
    run = Path(run)
    if run.is_dir():
        order = [run / prefer] + [run / n for n in (BEST, LAST) if n != prefer]
        for p in order:
            if p.is_file():
                return p
        raise CharrnnError(f"{run} holds no checkpoint ({BEST} or {LAST})")
    if not run.exists():
        raise CharrnnError(f"no such run folder or checkpoint: {run}")
    return run


def newest_run(root: Path = Path("checkpoints")) -> Path:
    """The run folder under `root` whose checkpoint was written last."""
    runs = [d for d in root.glob("*") if d.is_dir() and ((d / LAST).is_file() or (d / BEST).is_file())]
    if not runs:
        raise CharrnnError(f"no runs under {root}/: train one with `charrnn train CORPUS` or name a run")
    return max(runs, key=lambda d: max((d / n).stat().st_mtime for n in (LAST, BEST) if (d / n).is_file()))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with weights_only=True; any unreadable file is a one-line CharrnnError."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CharrnnError(f"no such checkpoint: {path}") from None
    except IsADirectoryError:
        raise CharrnnError(f"{path} is a directory, not a checkpoint") from None
    except Exception as e:  # truncated zip, pickle with code in it, random bytes...
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CharrnnError(f"{path} is not a readable charrnn checkpoint ({reason[:120]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CharrnnError(f"{path} is not a charrnn checkpoint")
    return ckpt


def checkpoint_tokenizer(ckpt: dict[str, Any], path: Path) -> CharTokenizer:
    """The checkpoint's tokenizer, checked against the weights and against a tokenizer.json beside it."""
    tok = CharTokenizer.from_str(ckpt["tokenizer"])
    vocab_size = ckpt["model_config"]["vocab_size"]
    if tok.vocab_size != vocab_size:
        raise CharrnnError(f"{path}: tokenizer has {tok.vocab_size} tokens but the weights expect {vocab_size}")
    beside = Path(path).parent / TOKENIZER
    if beside.is_file():
        other = CharTokenizer.from_file(beside)
        if other != tok:
            raise CharrnnError(
                f"{beside} does not match the weights in {Path(path).name} "
                f"({other.vocab_size} vs {tok.vocab_size} tokens)"
            )
    return tok


def checkpoint_model(ckpt: dict[str, Any], path: Path) -> CharRNN:
    try:
        config = ModelConfig(**ckpt["model_config"])
        model = build_model(config)
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        raise CharrnnError(f"{path}: weights do not fit the model config ({str(e).splitlines()[0][:120]})") from None
    return model


def load_run(run: str | Path, prefer: str = BEST) -> tuple[CharRNN, CharTokenizer, dict[str, Any], Path]:
    """Model (eval mode, CPU), tokenizer, raw checkpoint and its path, from a run folder or file."""
    path = resolve_checkpoint(run, prefer)
    ckpt = load_checkpoint(path)
    tok = checkpoint_tokenizer(ckpt, path)
    model = checkpoint_model(ckpt, path).eval()
    return model, tok, ckpt, path
