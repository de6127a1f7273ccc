"""What an exported model is, in the words every export carries: the ONNX file's metadata, the model
folder's config.json and card, the page's line."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import Saved, read_config
from ..errors import CharrnnError
from ..families import family_of


def describe(model: torch.nn.Module, saved: Saved, path: Path) -> dict[str, Any]:
    """The run behind a checkpoint: corpus, shape, loss, training time and machine."""
    c, run = saved.model_config, saved.run
    try:  # config.json is for people and tools; a checkpoint outside a run folder has none
        record = read_config(Path(path).parent)
    except CharrnnError:
        record = {}
    loss = saved.best_loss
    return {"corpus": Path(run.corpus).name, "corpus_chars": run.train_chars + run.val_chars, "model": c["model"],
            "shape": family_of(c["model"]).describe(c), "params": model.num_params(),
            "val_loss_nats": loss, "val_bpc": None if loss is None else loss / math.log(2),
            "steps": saved.step, "train_seconds": round(saved.progress.get("elapsed", 0.0), 1),
            "device": record.get("device"), "machine": record.get("machine"), "precision": run.precision,
            "processes": record.get("world_size")}


def loss_text(about: dict[str, Any]) -> str:
    loss = about.get("val_loss_nats")
    return "not validated" if loss is None else f"{loss:.4f} nats ({about['val_bpc']:.4f} bits) per character"


def line(about: dict[str, Any]) -> str:
    """One line: "lstm 2x512, 3,400,000 parameters; tinyshakespeare (1,115,394 characters); validation loss ..."."""
    return (f"{about.get('model')} {about.get('shape')}, {about.get('params', 0):,} parameters; trained on "
            f"{about.get('corpus')} ({about.get('corpus_chars', 0):,} characters); validation loss {loss_text(about)}")
