"""Kinds of model, each behind one contract: `Family`.

A family is everything the rest of charrnn needs to know about a kind of model: the `--model` names
it answers to, how to build it, the options it reads and refuses, its presets, its batcher and
evaluation method, how to size it and describe its shape, and which step weights its sampler runs.
The pipeline, presets, compare, evaluate, probe, memory and the CLI ask the family; none of them
compares a model's name. Built in: `rnn` (lstm, gru, rnn), `transformer` and `minrnn` (mingru,
minlstm), one module each.

A plug-in family is a module that calls `register(MyFamily())` on import. It is loaded from the
`charrnn.families` entry-point group of an installed package, or from the modules named in the
CHARRNN_FAMILIES environment variable (comma-separated), which spawned processes (compare's
training runs) inherit.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..evaluate import EvalResult
    from ..models import ModelConfig
    from ..trainer import TrainConfig

# ModelConfig fields every family reads; each family names the others it reads in `Family.options`.
COMMON_FIELDS = ("vocab_size", "model", "n_layers", "hidden", "dropout", "n_outputs")
PLUGINS_ENV = "CHARRNN_FAMILIES"
ENTRY_POINTS = "charrnn.families"


@dataclass(frozen=True)
class Preset:
    name: str
    min_chars: float  # characters this preset must be able to train on in the budget to be chosen
    settings: dict[str, Any]
    # the most times over the training split it may read in the budget (when the split's length is
    # known): a larger model that would reread a small corpus loses to a smaller, regularised one
    max_epochs: float = float("inf")


class Family:
    """The contract. Subclasses set the attributes and implement the methods that raise here."""

    name: str = ""  # the family's own name, for messages
    summary: str = ""  # one line for `charrnn models`
    kinds: tuple[str, ...] = ()  # the --model values it builds, in the order compare lists them
    options: tuple[str, ...] = ()  # ModelConfig fields it reads beyond COMMON_FIELDS
    refuses: dict[str, str] = {}  # training settings it does not take -> why (e.g. the Transformer's seq_len)
    presets: tuple[Preset, ...] = ()  # smallest first (presets.py chooses among them)
    presets_note: str = ""  # how the presets were chosen (compare's report says it)
    stateful: bool = True  # True: carried streams in training and evaluation; False: independent windows
    step_weights: tuple[str, ...] = ("fp32",)  # what `step(..., weights=)` runs; fp32 only: no such argument

    def build(self, config: ModelConfig) -> torch.nn.Module:
        raise NotImplementedError

    # --- settings ---------------------------------------------------------------------------------
    def derived(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Settings that follow from others (the Transformer trains on windows of its context)."""
        return settings

    def checks(self, m: ModelConfig, t: TrainConfig) -> list[tuple[bool, str]]:
        """(ok, message) for the family's own options."""
        return []

    def context(self, c: ModelConfig) -> int | None:
        """The most characters the model reads at once; None for no limit (a carried state)."""
        return None

    # --- data and evaluation ------------------------------------------------------------------------
    def batcher(self, ids: np.ndarray, batch_size: int, seq_len: int, seed: int, rows=None):
        from ..data import StreamBatcher, WindowBatcher

        cls = StreamBatcher if self.stateful else WindowBatcher
        return cls(ids, batch_size, seq_len, seed=seed, rows=rows)

    def evaluate(self, model, ids: np.ndarray, device: torch.device, precision: str = "fp32", *,
                 n_streams: int = 16, seq_len: int = 256, stride: int | None = None, per_char: bool = False,
                 shard: tuple[int, int] = (0, 1), limit: int | None = None) -> EvalResult:
        """Mean loss over `ids`, every character after the first predicted once (evaluate.py)."""
        from ..evaluate import evaluate, evaluate_windows

        if self.stateful:
            return evaluate(model, ids, device, precision, n_streams=n_streams, seq_len=seq_len, per_char=per_char,
                            shard=shard, limit=limit)
        return evaluate_windows(model, ids, device, precision, stride=stride, per_char=per_char, shard=shard,
                                limit=limit)

    # --- sizes, by formula (nothing is built) ----------------------------------------------------------
    def param_count(self, c: ModelConfig) -> int:
        raise NotImplementedError

    def activation_floats(self, c: ModelConfig, rows: int, length: int, training: bool = True) -> int:
        """About how many floats one forward pass over (rows, length) keeps alive (and its backward)."""
        raise NotImplementedError

    def sampling_state_floats(self, c: ModelConfig, streams: int) -> int:
        raise NotImplementedError

    def macs_per_char(self, c: ModelConfig) -> dict[str, float]:
        """Multiply-adds per character: {"train": forward and backward, "sample": one step}."""
        raise NotImplementedError

    # --- serving (`charrnn serve`: streams join and leave one batched step) -------------------------
    # True: streams at different positions can share a step, so requests join a running batch. The
    # defaults below read a state as the RNNs hold it: a tuple of tensors with the streams on dim 1.
    joins_batches: bool = True

    def join_states(self, states: list) -> Any:
        """Several batches' sampling states as one, rows in order (only where `joins_batches`)."""
        import torch

        return tuple(torch.cat(parts, 1) for parts in zip(*states))

    def state_rows(self, state: Any, rows: torch.Tensor) -> Any:
        """The state of the streams `rows` ((k,) indices, repeats allowed), in that order."""
        return tuple(t.index_select(1, rows) for t in state)

    # --- compare --------------------------------------------------------------------------------
    def describe(self, cfg: dict[str, Any]) -> str:
        """The shape in a few words, from a model config's dict: "2x512, dropout 0.3"."""
        return f"{cfg['n_layers']}x{cfg['hidden']}" + (f", dropout {cfg['dropout']}" if cfg.get("dropout") else "")

    def width_step(self, settings: dict[str, Any]) -> int:
        """What `hidden` must be a multiple of."""
        return 1

    def with_width(self, settings: dict[str, Any], width: int) -> dict[str, Any]:
        """The settings that change when `hidden` becomes `width` (compare --params)."""
        return {"hidden": width}


_REGISTRY: dict[str, Family] = {}
_loaded = False


def register(family: Family) -> Family:
    """Make a family's kinds available to every command. A kind another family holds is refused."""
    for kind in family.kinds:
        held = _REGISTRY.get(kind)
        if held is not None and type(held) is not type(family):
            raise ValueError(f"--model {kind} is already {held.name}'s")
    for kind in family.kinds:
        _REGISTRY[kind] = family
    return family


def _load() -> None:
    """The built-in families, then the plug-ins (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import rnn  # noqa: F401  (each registers itself, in the order --model lists them)
    from . import minrnn  # noqa: F401
    from . import transformer  # noqa: F401

    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    for name in names:
        importlib.import_module(name)
    for ep in entry_points(group=ENTRY_POINTS):
        ep.load()


def kinds() -> tuple[str, ...]:
    """Every --model value, family by family."""
    _load()
    return tuple(_REGISTRY)


def family_of(kind: str) -> Family:
    """The family that builds `kind` (a --model value)."""
    _load()
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise ValueError(f"model must be one of {', '.join(_REGISTRY)}, not {kind!r}") from None
