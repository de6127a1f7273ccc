"""The contract every kind of model sits behind (`Family`), what a family declares about itself (its
`Option`s and `Preset`s), and the registry of families by `--model` kind.

A family is everything the rest of charrnn needs to know about a kind of model: the kinds it answers
to, how to build one, the options it reads (each declared once: the CLI's flag, its help, the preset
key and the check of a value, given or read from a checkpoint, all come from the declaration), its
presets, whether it carries a state (carried streams in training and evaluation) or reads windows,
how to size it and describe its shape, and which weights its sampling step runs. Shared code asks the
family; none of it compares a model's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import ModelConfig

# Characters of a prime a model with a carried state reads in one pass while sampling (`Family.read_prime`).
PRIME_CHUNK = 4096

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..evaluate import EvalResult
    from ..trainer import TrainConfig


@dataclass(frozen=True)
class Option:
    """A setting one family reads beyond `ModelConfig.COMMON_FIELDS`, held in `ModelConfig.options`."""

    name: str  # the key in ModelConfig.options, config.json and presets; the flag is --name-with-dashes
    type: type  # int or float
    default: int | float
    help: str
    min: float | None = None
    max: float | None = None
    min_open: bool = False  # min itself is not allowed
    max_open: bool = False
    speed: bool = True  # whether a training step's speed depends on it (presets are timed per distinct value)
    omit_default: bool = False  # left out of config.json at its default (an option added to a family later)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> str | None:
        """Why `value` is not a valid setting of this option, or None."""
        name = self.flag[2:]
        if self.type is int and not (isinstance(value, int) and not isinstance(value, bool)):
            return f"{name} must be a whole number, not {value!r}"
        if self.type is float and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return f"{name} must be a number, not {value!r}"
        if not math.isfinite(value):
            return f"{name} must be a finite number, not {value}"
        low = self.min is None or (value > self.min if self.min_open else value >= self.min)
        high = self.max is None or (value < self.max if self.max_open else value <= self.max)
        if low and high:
            return None
        if self.max is None:
            return f"{name} must be {'>' if self.min_open else '>='} {self.min:g}, not {value}"
        left, right = "(" if self.min_open else "[", ")" if self.max_open else "]"
        return f"{name} must be in {left}{self.min:g}, {self.max:g}{right}, not {value}"


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
    options: tuple[Option, ...] = ()  # what it reads beyond ModelConfig.COMMON_FIELDS
    refuses: dict[str, str] = {}  # training settings it does not take -> why (e.g. the Transformer's seq_len)
    presets: tuple[Preset, ...] = ()  # smallest first (presets.py chooses among them)
    presets_note: str = ""  # how the presets were chosen (compare's report says it)
    stateful: bool = True  # True: carried streams in training and evaluation; False: independent windows
    step_weights: tuple[str, ...] = ("fp32",)  # what `step(..., weights=)` runs; fp32 only: no such argument
    # What `grad_through_time` differentiates against, k characters back: a model's own quantity, so two
    # families' curves are shown on one axis only when they measure the same thing.
    gradient_of: str = "the recurrent state"
    # The weights with a row per token: "input" (every token: the characters, then the byte tokens) or
    # "output" (one per character predicted). Fine-tuning on text with new characters grows them; a
    # family that names none can be fine-tuned on text of its own characters only.
    token_rows: dict[str, str] = {}

    def build(self, config: ModelConfig) -> torch.nn.Module:
        raise NotImplementedError

    def option(self, name: str) -> Option:
        """The declaration of one of this family's options."""
        return next(o for o in self.options if o.name == name)

    # --- settings ---------------------------------------------------------------------------------
    def config(self, vocab_size: int, **settings: Any) -> ModelConfig:
        """A config of this family: the common fields and this family's options, each option not given at
        its default. A setting it does not read, or a value out of an option's range, is a ValueError."""
        common = {k: settings.pop(k) for k in ModelConfig.COMMON_FIELDS if k in settings}
        common.setdefault("model", self.kinds[0])
        if common["model"] not in self.kinds:
            raise ValueError(f"{self.name} builds {', '.join(self.kinds)}, not {common['model']!r}")
        declared = {o.name: o for o in self.options}
        unknown = [k for k in settings if k not in declared]
        if unknown:
            raise ValueError(f"--model {common['model']} has no setting {', '.join(map(repr, unknown))}")
        options = {name: settings.get(name, o.default) for name, o in declared.items()}
        for o in self.options:
            if (why := o.check(options[o.name])) is not None:
                raise ValueError(why)
        return ModelConfig(vocab_size=vocab_size, **common, options=options,
                           omit_defaults={o.name: o.default for o in self.options if o.omit_default})

    def derived(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Settings that follow from others (the Transformer trains on windows of its context)."""
        return settings

    def checks(self, m: ModelConfig, t: TrainConfig) -> list[tuple[bool, str]]:
        """(ok, message) for what holds between settings (heads that divide the width, say)."""
        return []

    def context(self, c: ModelConfig) -> int | None:
        """The most characters the model reads at once; None for no limit (a carried state)."""
        return None

    # --- data and evaluation ------------------------------------------------------------------------
    # batches.py and evaluate.py are imported where they are used: declaring a family must not import torch.
    def batcher(self, ids: np.ndarray, batch_size: int, seq_len: int, seed: int, rows: range | None = None):
        """Carried streams for a model with a state, independent random windows for one without."""
        from ..batches import StreamBatcher, WindowBatcher

        cls = StreamBatcher if self.stateful else WindowBatcher
        return cls(ids, batch_size, seq_len, seed=seed, rows=rows)

    def evaluate(self, model, ids: np.ndarray, device: torch.device, precision: str = "fp32", **kw: Any) -> EvalResult:
        """Mean loss over `ids`, every character after the first predicted once (evaluate.py): carried
        streams (`evaluate`'s n_streams, seq_len), or windows of the model's context (`evaluate_windows`'
        stride); either takes per_char, shard and limit."""
        from ..evaluate import evaluate, evaluate_windows

        if self.stateful:
            kw.pop("stride", None)
            return evaluate(model, ids, device, precision, **kw)
        for k in ("n_streams", "seq_len"):
            kw.pop(k, None)
        return evaluate_windows(model, ids, device, precision, context=self.context(model.config), **kw)

    # --- sampling ------------------------------------------------------------------------------------
    def read_prime(self, model, idx: torch.Tensor, prefill, step) -> tuple[torch.Tensor, Any]:
        """idx (B, T >= 1) -> the logits for the character after it and the state to step on, through the
        sampler's `prefill` and `step` (the model's, with its step weights). A model with a carried state
        reads a prime longer than PRIME_CHUNK a chunk at a time, the state carried (its forward pass, as in
        training), then the last character through `step`, as its prefill does: the memory is one chunk's
        and the time grows in proportion to the prime. One that reads windows keeps only its last (its
        prefill) and takes any prime in one call."""
        if not self.stateful or idx.size(1) <= PRIME_CHUNK:
            return prefill(idx)
        state = None
        for piece in idx[:, :-1].split(PRIME_CHUNK, dim=1):
            state = model(piece, state)[2]
        return step(idx[:, -1], state)

    def reorder_state(self, model, state: Any, index: torch.Tensor) -> Any:
        """The sampling state with its streams taken in the order of `index` (B',), repeats allowed: stream
        j of the result is stream index[j] of `state` (beam search keeps the hypotheses it extends). A
        carried state is a tuple of tensors with the streams on dim 1, or on the model's `state_batch_dim`
        (models.py's contract); a family whose state is laid out otherwise says how here."""
        dim = getattr(model, "state_batch_dim", 1)
        return tuple(t.index_select(dim, index) for t in state)

    def prime_pass(self, c: ModelConfig, prime_len: int) -> int:
        """The most characters of a prime of `prime_len` one pass of `read_prime` reads (for its memory)."""
        window = self.context(c)
        if window is not None:
            return min(prime_len, window)
        return min(prime_len, PRIME_CHUNK) if self.stateful else prime_len

    # --- sizes, by formula (nothing is built) ----------------------------------------------------------
    def param_count(self, c: ModelConfig) -> int:
        raise NotImplementedError

    def activation_floats(self, c: ModelConfig, rows: int, length: int, training: bool = True) -> int:
        """About how many floats one forward pass over (rows, length) keeps alive (and its backward)."""
        raise NotImplementedError

    def sampling_state_floats(self, c: ModelConfig, streams: int) -> int:
        """The state `streams` sampling streams carry, in floats (4 bytes each)."""
        raise NotImplementedError

    def macs_per_char(self, c: ModelConfig) -> dict[str, float]:
        """Multiply-adds per character of the matrix products: {"train": the forward pass and the backward,
        counted as twice the forward; "sample": what one sampling step multiplies}."""
        raise NotImplementedError

    # --- serving (`charrnn serve`: streams join and leave one batched step) -------------------------
    # True: streams at different positions can share a step, so requests join a running batch. The
    # defaults below read a state as the RNNs hold it: a tuple of tensors with the streams on dim 1.
    joins_batches: bool = True

    def join_states(self, states: list) -> Any:
        """Several batches' sampling states as one, rows in order (only where `joins_batches`)."""
        import torch  # here, as in batcher(): declaring a family must not import torch

        return tuple(torch.cat(parts, 1) for parts in zip(*states))

    def state_rows(self, state: Any, rows: torch.Tensor) -> Any:
        """The state of the streams `rows` ((k,) indices, repeats allowed), in that order."""
        return tuple(t.index_select(1, rows) for t in state)

    # --- describing and resizing ------------------------------------------------------------------
    def describe(self, cfg: dict[str, Any]) -> str:
        """The shape in a few words, from a model config's dict: "2x512, dropout 0.3"."""
        return f"{cfg['n_layers']}x{cfg['hidden']}" + (f", dropout {cfg['dropout']}" if cfg.get("dropout") else "")

    def width_step(self, settings: dict[str, Any]) -> int:
        """What `hidden` must be a multiple of."""
        return 1

    def with_width(self, settings: dict[str, Any], width: int) -> dict[str, Any]:
        """The settings that change when `hidden` becomes `width` (compare --params)."""
        return {"hidden": width}

    # --- export (charrnn export) ------------------------------------------------------------------
    def portable(self, model: torch.nn.Module) -> PortableStep:
        """The model's one-character step in plain tensor operations, for `charrnn export`. A family
        without one cannot be exported (export says so in one line)."""
        raise NotImplementedError


@dataclass(frozen=True)
class StateSpec:
    """One tensor of a portable step's carried state: its name and shape, "batch" where the streams go."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"  # or "int64"


@dataclass
class PortableStep:
    """What `charrnn export` asks of a family (`Family.portable`): the step as a module of plain tensor
    operations that torch.onnx.export traces, its state's layout, and how the web page runs it.

    module: forward(ids (B,) int64, *state) -> (logits (B, outputs), *new state), in eval mode, with no
      Python state of its own, so that one traced graph serves every call.
    window: for a model that reads windows rather than carrying a state: {"context": C, "stride": S}.
      Its state then holds at most C characters; when it is full, the driver keeps the last C - S of
      them, starts again from the zero state and steps through those and the new one (the sampler's
      rule, `charrnn.models.window_start`).
    web: the page's step for it, charrnn/web/<web>.js, reading the model's state_dict by name; None: no page.
    """

    module: torch.nn.Module
    state: tuple[StateSpec, ...]
    window: dict[str, int] | None = None
    web: str | None = None


_REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Make a family's kinds available to every command. A kind another family holds is refused, and so is
    an option another family declares otherwise (one flag serves both)."""
    for kind in family.kinds:
        held = _REGISTRY.get(kind)
        if held is not None and type(held) is not type(family):
            raise ValueError(f"--model {kind} is already {held.name}'s")
    for other in set(_REGISTRY.values()):
        for o in family.options:
            theirs = next((t for t in other.options if t.name == o.name), None)
            if theirs is not None and theirs.type is not o.type and type(other) is not type(family):
                raise ValueError(f"option {o.flag} is already {other.name}'s, as a {theirs.type.__name__}")
    for kind in family.kinds:
        _REGISTRY[kind] = family
    return family


def registered() -> dict[str, Family]:
    """Every kind registered so far, and its family (families/__init__.py loads the built-in ones and the
    plug-ins first)."""
    return _REGISTRY
