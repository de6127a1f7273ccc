"""`charrnn export RUN --format onnx|hf|html -o OUT`: a run's best checkpoint (or a checkpoint file)
written as an ONNX step graph, a Hugging Face-style model folder, or a page that samples offline.
Each file is written atomically: a failure leaves what was at OUT as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..checkpoint import BEST, LAST, RUN_FILES, load_run
from ..errors import CharrnnError
from ..fileio import atomic_write, is_regular, shown
from ..sampler import Sampler
from ..tokenizer import CharTokenizer
from ..model_folder import FILES, write_folder
from ..onnx_step import quantize_int8, step_graph
from . import FORMATS, about as about_
from .html import PAGE_WEIGHTS, render_page

CARD_SAMPLE = dict(length=400, temperature=0.8, seed=1)  # the model card's sample: `charrnn sample` reproduces it


def export_run(run: str | Path, fmt: str, out: str | Path, weights: str | None = None) -> dict[str, Any]:
    """Write `run` as `fmt` to `out`. `weights`: onnx fp32 (default) or int8 (ONNX Runtime's dynamic
    quantisation); html int8 (default), fp16 or fp32. Returns what was written."""
    if fmt not in FORMATS:
        raise CharrnnError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    allowed = {"onnx": ("fp32", "int8"), "hf": ("fp32",), "html": PAGE_WEIGHTS}[fmt]
    weights = weights or allowed[0]
    if weights not in allowed:
        raise CharrnnError(f"--weights for --format {fmt} must be one of {', '.join(allowed)}, not {weights}")
    out = Path(out)
    if fmt == "hf" and out.exists() and not out.is_dir():
        raise CharrnnError(f"-o {shown(out)} is a file; --format hf writes a folder")
    if fmt != "hf" and out.is_dir():
        raise CharrnnError(f"-o {shown(out)} is a folder; --format {fmt} writes a file")
    holder = out if fmt == "hf" else out.parent
    if any(is_regular(holder / n) for n in (LAST, BEST)) and (fmt == "hf" or out.name in RUN_FILES):
        raise CharrnnError(f"-o {shown(out)} would overwrite a training run's files: choose another place")
    model, tok, saved, path = load_run(run)
    about = about_.describe(model, saved, path)
    if fmt == "onnx":
        graph = step_graph(model, tok, about)
        data = quantize_int8(graph) if weights == "int8" else graph
        atomic_write(out, lambda f: f.write(data))
    elif fmt == "hf":
        write_folder(out, model, tok, about, model_card(model, tok, about, out))
    else:
        page = render_page(model, tok, about, weights).encode("utf-8")
        atomic_write(out, lambda f: f.write(page))
    size = sum((out / n).stat().st_size for n in FILES) if fmt == "hf" else out.stat().st_size
    return {"format": fmt, "weights": weights, "out": shown(out), "bytes": size, "checkpoint": shown(path),
            "about": about}


def model_card(model: torch.nn.Module, tok: CharTokenizer, about: dict[str, Any], folder: Path) -> str:
    """The folder's README.md: what the model is, how it was trained, a sample, how to load it."""
    sample = Sampler(model, tok, weights="fp32").sample(**CARD_SAMPLE)
    hours = about["train_seconds"] / 3600
    trained = f"{about['train_seconds']:,.0f} s" if hours < 1 else f"{hours:.1f} h"
    machine = about.get("machine") or "not recorded by this run"
    where = ", ".join(str(x) for x in (about.get("device"), about.get("precision")) if x)
    training = f"{about['steps']:,} steps, {trained}{f' ({where})' if where else ''}, " \
               f"{about.get('processes') or 1} process(es)"
    again = " ".join(f"--{k} {v}" for k, v in CARD_SAMPLE.items())
    fence = "````" if "```" in sample else "```"
    return f"""---
library_name: charrnn
pipeline_tag: text-generation
tags: [charrnn, character-level, {about['model']}]
---

# {about['corpus']}: a character-level {about['model']}

A character-level language model trained with [charrnn](https://pypi.org/project/charrnn-toolkit/) on
**{about['corpus']}** ({about['corpus_chars']:,} characters).

| | |
|---|---|
| model | {about['model']} {about['shape']}, {about['params']:,} parameters |
| vocabulary | {tok.n_chars} characters{' and 256 byte tokens (any text can be read)' if tok.byte_fallback else ''} |
| validation loss | {about_.loss_text(about)} |
| training | {training} |
| machine | {machine} |

## A sample

`charrnn sample {folder.name} {again} --weights fp32`:

{fence}
{sample}
{fence}

## Use it

```
pip install 'charrnn-toolkit[export]'
charrnn sample {folder.name} --prime "..." --length 500 --temperature 0.8
```

```python
from charrnn import Sampler
s = Sampler.load("{folder.name}")  # this folder, e.g. from huggingface_hub.snapshot_download(repo_id)
print(s.sample(prime="...", length=500, temperature=0.8))
```

The files: `model.safetensors` (the weights), `config.json` (the model's settings: `model_config`),
`tokenizer.json` (the vocabulary, a standard Hugging Face tokenizer). Loading reads them as data only.
"""
