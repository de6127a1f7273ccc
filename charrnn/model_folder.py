"""A Hugging Face-style model folder (`charrnn export --format hf`): the one module that writes and reads it.

    model.safetensors  the weights (safetensors: a JSON header and raw tensors; nothing in it runs)
    config.json        {"model_type": "charrnn", "format": "charrnn-hf/1", "model_config": {...}, "about": {...}}
    tokenizer.json     the run's tokenizer (a standard Hugging Face tokenizer.json)
    README.md          the model card (written by charrnn/export/run.py, which samples from the model for it)

The layout the Hub expects, so `huggingface_hub.upload_folder(folder_path=..., repo_id=...)` publishes it
as it is. Reading it back (`read_folder`; `Sampler.load` and `charrnn sample` call it) executes nothing
from the files and checks them as a checkpoint is checked: the model config's settings and sizes, the
weights' names, shapes and finiteness, the tokenizer against the weights; anything wrong is one line.
A weight tied to another (the Transformer's output layer is its embedding) is stored once, and the
safetensors header's metadata names the alias, as safetensors' own save_model does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .checkpoint import check_model_config, check_weights, model_from
from .errors import CharrnnError, one_line
from .extras import optional
from .fileio import atomic_write, read_bytes, shown, to_json
from .tokenizer import CharTokenizer

FORMAT = "charrnn-hf/1"
WEIGHTS, CONFIG, TOKENIZER, CARD = "model.safetensors", "config.json", "tokenizer.json", "README.md"
FILES = (WEIGHTS, CONFIG, TOKENIZER, CARD)
WHAT = "model folder"


def is_hf_folder(path: str | Path) -> bool:
    """Whether `path` is a folder `charrnn export --format hf` wrote (it holds model.safetensors)."""
    return Path(path).is_dir() and (Path(path) / WEIGHTS).exists()


def write_folder(folder: Path, model: torch.nn.Module, tok: CharTokenizer, about: dict[str, Any], card: str) -> None:
    """Write the four files into `folder` (each atomically; other files there are left alone)."""
    st = optional("safetensors.torch")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CharrnnError(f"{shown(folder)} is a file, not a folder")
    weights, aliases = unique_weights(model)
    data = st.save(weights, metadata={"format": "pt", **aliases})
    config = {"model_type": "charrnn", "format": FORMAT, "model_config": model.config.to_dict(), "about": about}
    atomic_write(folder / WEIGHTS, lambda f: f.write(data))
    atomic_write(folder / CONFIG, lambda f: f.write((to_json(config, indent=2) + "\n").encode("utf-8")))
    tokenizer = json.dumps(json.loads(tok.to_str()), indent=2, ensure_ascii=False) + "\n"
    atomic_write(folder / TOKENIZER, lambda f: f.write(tokenizer.encode("utf-8")))
    atomic_write(folder / CARD, lambda f: f.write(card.encode("utf-8")))


def unique_weights(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state_dict with each tensor once, and {alias: name} for the names that share one (tied weights)."""
    weights, aliases, seen = {}, {}, {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            weights[name] = t.detach().contiguous().cpu()
    return weights, aliases


def read_folder(folder: str | Path) -> tuple[torch.nn.Module, CharTokenizer, dict[str, Any]]:
    """The model (eval mode, CPU), its tokenizer and config.json's `about`, checked."""
    folder = Path(folder)
    where = shown(folder)
    config = _read_config(folder / CONFIG, where)
    tok = CharTokenizer.from_file(folder / TOKENIZER)
    mc = config["model_config"]
    if tok.vocab_size != mc["vocab_size"]:
        raise CharrnnError(f"{where}: tokenizer.json has {tok.vocab_size} tokens but the weights expect "
                           f"{mc['vocab_size']}")
    weights = _read_weights(folder / WEIGHTS, where)
    return model_from(mc, weights, where).eval(), tok, config.get("about") or {}


def _damaged(where: str, why: str) -> CharrnnError:
    return CharrnnError(f"{where}: damaged {WHAT} ({why})")


def _read_config(path: Path, where: str) -> dict[str, Any]:
    try:
        config = json.loads(read_bytes(path, "config file").decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _damaged(where, f"{CONFIG} is not JSON: {one_line(e, 80)}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CharrnnError(f"{where}: {CONFIG} is not a charrnn model folder's (no format {FORMAT!r})")
    if not isinstance(config.get("about", {}), dict):
        raise _damaged(where, "about is not a table")
    check_model_config(config.get("model_config"), where, WHAT)
    return config


def _read_weights(path: Path, where: str) -> dict[str, torch.Tensor]:
    st = optional("safetensors.torch")
    data = read_bytes(path, "weights file")
    try:
        weights = st.load(data)
        n = int.from_bytes(data[:8], "little")  # the header: its length, then JSON (the library has read it)
        metadata = json.loads(data[8:8 + n]).get("__metadata__") or {}
    except Exception as e:  # safetensors raises its own SafetensorError on a truncated or crafted header
        raise _damaged(where, f"{WEIGHTS} is unreadable: {one_line(e, 80) or type(e).__name__}") from None
    check_weights(weights, where, WHAT)
    for alias, name in metadata.items():
        if alias == "format":
            continue
        if alias in weights or name not in weights:
            raise _damaged(where, f"{WEIGHTS} ties {one_line(repr(alias), 40)} to a weight it does not hold")
        weights[alias] = weights[name]
    return weights
