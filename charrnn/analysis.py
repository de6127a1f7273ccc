"""What a trained run is and how well it does: the `charrnn eval`, `info` and `inspect` pipelines. Each
reads a run folder (or one checkpoint) and writes nothing to it but its id cache and inspect's page.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint as ck
from .corpora import file_sha256, load_catalog, resolve_corpus
from .data import encode_corpus, split
from .device import resolve_device, resolve_precision
from .errors import CharrnnError
from .evaluate import EVAL_LENGTH, EVAL_STREAMS, EvalResult
from .families import evaluate_model, family_of
from .fileio import atomic_write, expand_user, path_text, shown
from .inspect_page import render_inspect
from .microscope import inspect_model
from .tokenizer import CharTokenizer


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
                                 "gradient_of": family_of(c["model"]).gradient_of,
                                 "command": path_text(command or f"charrnn inspect {path}")})
    atomic_write(page, lambda f: f.write(html.encode("utf-8")))
    return {**insp.summary(), "page": path_text(page), "checkpoint": path_text(path), "source": source}
