"""What a trained run is and how well it does: the `charrnn eval`, `info` and `inspect` pipelines. Each
reads a run folder (or one checkpoint) and writes nothing to it but its id cache and inspect's page.
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint as ck
from .charts import line_chart
from .corpora import file_sha256, resolve_corpus, run_corpus
from .data import encode_corpus, split
from .device import resolve_device, resolve_precision
from .errors import CharrnnError
from .evaluate import EVAL_LENGTH, EVAL_STREAMS, EvalResult
from .families import evaluate_model, family_of
from .fileio import atomic_write, path_text, shown
from .inspect_page import render_inspect
from .microscope import inspect_model
from .tokenizer import CharTokenizer
from .units import MAX_SEED


def eval_run(run: str | Path | None = None, corpus: str | None = None, split_name: str = "val",
             val_frac: float | None = None, device: str = "auto", precision: str = "fp32", unknown: str = "bytes",
             stride: int | None = None) -> EvalResult:
    """Loss of a run's checkpoint (default: the newest run) on a corpus (default: the run's own): the
    validation split (the run's val-frac) or all of it. `stride` (Transformer only) is how far its
    evaluation windows move; default context // 2."""
    model, tok, ckpt, path = ck.load_run(ck.newest_run() if run is None else run)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    corpus_path = run_corpus(ckpt.run.corpus, ckpt.run.corpus_sha256) if corpus is None else resolve_corpus(corpus)
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


def run_info(run: str | Path | None = None) -> dict[str, Any]:
    """What `charrnn info` shows of a run (default: the newest): configs, parameter count, progress, best
    validation loss."""
    path = ck.resolve_checkpoint(ck.newest_run() if run is None else run)
    saved = ck.read_checkpoint(path)
    model = ck.checkpoint_model(saved, path)
    progress = saved.progress
    return {"checkpoint": path_text(path), "model": saved.model_config, "train": saved.train_config,
            "run": asdict(saved.run), "params": model.num_params(), "step": saved.step,
            "epoch": progress.get("epoch", 0), "chars_trained": progress.get("chars", 0),
            "elapsed_s": round(progress.get("elapsed", 0.0), 1), "skipped": progress.get("skipped", 0),
            "best_val_loss": saved.best_loss, "best_step": progress.get("best_step", -1)}


def describe_run(data: dict[str, Any]) -> list[str]:
    """`run_info` for a person: one line per aspect, each a sentence's worth."""
    m, t, run = data["model"], data["train"], data["run"]
    outputs = m.get("n_outputs") or m["vocab_size"]
    bytes_read = m["vocab_size"] - outputs
    preset = run.get("preset") or {}
    chosen = f"; preset {preset['preset']} for a {preset['budget_s']:g} s budget" if preset else ""
    stops = ", ".join(f"{k.removeprefix('max_')} {t[k]:g}" for k in ("max_steps", "max_epochs", "max_time")
                      if t.get(k) is not None)
    epochs = data["chars_trained"] / run["train_chars"] if run["train_chars"] else 0.0
    best = data["best_val_loss"]
    lines = [
        ("checkpoint", shown(data["checkpoint"])),
        ("model", f"{m['model']} {family_of(m['model']).describe(m)}, {data['params']:,} parameters"),
        ("corpus", f"{shown(run['corpus'])}: {run['train_chars']:,} train / {run['val_chars']:,} val characters, "
                   f"{outputs} predicted" + (f" ({bytes_read} byte tokens read, never predicted)" if bytes_read else "")),
        ("training", f"batch {t['batch_size']}x{t['seq_len']}, lr {t['lr']:g}, warmup {t['warmup_steps']}, "
                     f"weight decay {t['weight_decay']:g}, seed {t['seed']}, {run.get('precision') or 'fp32'}; "
                     f"stops at {stops}{chosen}"),
        ("progress", f"{data['step']:,} steps, {data['chars_trained']:,} characters ({epochs:.2f} epochs), "
                     f"{data['elapsed_s']:g} s" + (f", {data['skipped']:,} updates skipped" if data["skipped"] else "")),
        ("best val loss", "-" if best is None else f"{best:.4f} nats/char ({best / math.log(2):.4f} bits), step "
                                                   f"{data['best_step']:,}"),
    ]
    return [f"{k:<13} {v}" for k, v in lines]


def plot_losses(run: str | Path | None = None) -> Path:
    """`charrnn info --plot`: the run's training and validation loss against its steps, as one
    self-contained page (loss.html beside the checkpoint); its path."""
    path = ck.resolve_checkpoint(ck.newest_run() if run is None else run)
    records = ck.read_metrics(path.parent)
    series = {kind: [(r["step"], r[key] / math.log(2)) for r in records if r["kind"] == kind and r.get(key) is not None]
              for kind, key in (("train", "loss"), ("val", "loss_nats"))}
    if not any(series.values()):
        raise CharrnnError(f"{shown(path.parent / ck.METRICS)} holds no records to plot")
    names = {"train": "training (each record's steps)", "val": "validation"}
    chart = line_chart({names[k]: v for k, v in series.items() if v}, "step", "bits per character")
    title = html.escape(f"charrnn: {path_text(path.parent)}")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>'
            f'<body style="font-family:sans-serif;max-width:900px;margin:2em auto"><h1>{title}</h1>'
            f"<p>Loss per character in bits, as metrics.jsonl records it: the training loss averaged over each record's "
            f"steps, the validation loss at each pass (a part of the split until the last, which scores all of it)."
            f"</p>{chart}</body></html>\n")
    out = path.parent / ck.LOSS_PAGE
    atomic_write(out, lambda f: f.write(page.encode("utf-8")))
    return out


# --- charrnn inspect -----------------------------------------------------------------------------------
MAX_INSPECT_CHARS = 5_000_000  # the text features are computed in Python, one pass over the characters


def _inspect_text(corpus: str | None, text: str | None, tok: CharTokenizer, saved: ck.Saved, cache: Path | None):
    """Ids and where they came from: `text` itself; else the run's validation split (no corpus, or the
    run's own); else another corpus from its start."""
    unknown = "bytes" if tok.byte_fallback else "error"
    run = saved.run
    if text is not None:
        return tok.encode(text, unknown=unknown), "the text given"
    try:
        corpus_path = run_corpus(run.corpus, run.corpus_sha256) if corpus is None else resolve_corpus(corpus)
    except CharrnnError as e:
        raise CharrnnError(f"{e}; for text itself, use --text" if corpus is not None else str(e)) from None
    sha = file_sha256(corpus_path)
    ids = encode_corpus(corpus_path, tok, cache, unknown=unknown, sha256=sha)
    if sha == run.corpus_sha256:
        return split(ids, run.val_frac)[1], f"the validation split of {shown(corpus_path)}"
    return ids, shown(corpus_path)


def inspect_run(run: str | Path | None = None, corpus: str | None = None, chars: int = 20_000, show: int = 1000,
                out: Path | None = None, positions: int = 32, seed: int = 0, device: str = "auto",
                quiet: bool = False, command: str = "", text: str | None = None) -> dict[str, Any]:
    """`charrnn inspect`: the microscope over `chars` characters of a run's text (default: the newest
    run's validation split; `corpus`, a file or catalog name; or `text` itself), as one HTML page
    (default inspect.html beside the checkpoint), the gradients through time drawn beside those of the
    run's configuration untrained. Returns the summary and the page's path."""
    if not 2 <= chars <= MAX_INSPECT_CHARS:
        raise CharrnnError(f"--chars must be between 2 and {MAX_INSPECT_CHARS:,}, not {chars}")
    model, tok, ckpt, path = ck.load_run(ck.newest_run() if run is None else run)
    dev = resolve_device(device)
    page = Path(out) if out is not None else path.parent / ck.INSPECT_PAGE
    ids, source = _inspect_text(corpus, text, tok, ckpt, ck.run_cache(path.parent))
    ids = np.asarray(ids[:chars])
    if len(ids) < 2:
        raise CharrnnError(f"{source} holds {len(ids)} character(s): inspect needs at least 2")
    # the gradients through time beside the same configuration untrained, built from the run's own seed
    # (a checkpoint whose seed no run could have had gets no reference curve)
    run_seed = ckpt.train_config.get("seed")
    insp = inspect_model(model.to(dev), tok, ids, dev, show=show, positions=positions, seed=seed, quiet=quiet,
                         untrained_seed=run_seed if isinstance(run_seed, int) and 0 <= run_seed <= MAX_SEED else None)
    c = ckpt.model_config
    shape = f"{c['model']} {c['n_layers']}x{c['hidden']}, {model.num_params():,} parameters, step {ckpt.step:,}"
    html = render_inspect(insp, {"run": path_text(path), "model": c["model"], "shape": shape, "source": source,
                                 "gradient_of": family_of(c["model"]).gradient_of,
                                 "command": path_text(command or f"charrnn inspect {path}")})
    atomic_write(page, lambda f: f.write(html.encode("utf-8")))
    return {**insp.summary(), "page": path_text(page), "checkpoint": path_text(path), "source": source}


def describe_inspection(result: dict[str, Any]) -> list[str]:
    """`charrnn inspect`'s best unit and gradients in words: a unit below the weak line is not said to
    track anything; the trained model's gradient beside its untrained configuration's."""
    best, weak, out = result["best_units"], result["weak_r"], []
    if best:
        b = best[0]
        unit = f"{b['kind']} layer {b['layer']} unit {b['unit']}: r = {b['r']:+.2f} with {b['feature']}"
        tracked = sum(not u["weak"] for u in best)
        out.append(f"best unit  {unit} ({tracked} of {len(best)} features tracked, |r| >= {weak:g})" if not b["weak"]
                   else f"best unit  none: no unit tracks a feature (|r| >= {weak:g}); the strongest, {unit}, is weak")
    ratio, untrained = result["gradient_ratio_50"], result["untrained_gradient_ratio_50"]
    if ratio is not None:
        out.append(f"gradient   50 characters back / 1 back = {ratio:.3g}"
                   + ("" if untrained is None else f" (untrained, seed {result['untrained_seed']}: {untrained:.3g})"))
    versus = result["trained_over_untrained"]
    if versus is not None:
        out.append(f"gradient   {versus['k']} characters back, trained / untrained = {versus['ratio']:.3g}")
    return out
