"""What every kind of model shares: its config, the loss, and the contract the trainer, sampler and
evaluator rely on. The models themselves live with their families (charrnn/families/):

    forward(idx, state=None, targets=None) -> (logits, loss, state)
    prefill(idx) -> (logits, state)                 # read a prime; logits predict what follows it
    step(idx, state=None) -> (logits, state)        # one character per stream, for sampling
    init_state(batch_size, device) -> state         # the zero state (a Transformer's empty cache)
    num_params() -> int
    iter_trace(ids) -> Iterator[Trace]              # what the units do on a text (`charrnn inspect`)
    grad_through_time(rows, k_max) -> (B, k_max)    # how far back the loss's gradient reaches

A carried state is a tuple of tensors with the streams on dim 1 (a model laid out otherwise sets
`state_batch_dim`); a stateless model's forward returns None.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

State = tuple[torch.Tensor, ...]
TRACE_CHUNK = 1024  # characters per Trace: long enough to be fast, short enough for a progress bar


@dataclass
class Trace:
    """What a model computes on one stretch of a text, one entry per character read (for the
    microscope, `charrnn inspect`). Entry t is the model after reading character `start + t`."""

    start: int
    logits: torch.Tensor  # (T, outputs): the prediction of the character after each one
    units: dict[str, torch.Tensor]  # kind -> (T, n_layers, width), e.g. "hidden", "cell" (tanh c)
    gates: dict[str, torch.Tensor]  # gate -> (T, n_layers, hidden) in [0, 1]; empty without gates


@dataclass
class ModelConfig:
    vocab_size: int
    model: str = "lstm"  # a --model value: the family that builds it (families.kinds())
    n_layers: int = 2  # recurrent layers, or Transformer blocks
    hidden: int = 512  # hidden units per layer, or the Transformer's width
    dropout: float = 0.0
    # Read by some families only (each names its own in Family.options; the others refuse them):
    embed: int = 64  # character embedding size (the classic RNNs)
    weight_drop: float = 0.0  # DropConnect on the recurrent matrices in training (the classic RNNs)
    heads: int = 4  # attention heads (Transformer); must divide hidden
    context: int = 128  # the most characters the Transformer attends to (its block size)
    # Tokens the output layer scores: the corpus's characters, which come first in the vocabulary. The
    # byte tokens after them are read (a prime or an eval text may hold characters the corpus has not)
    # but never predicted, so they cost nothing in training. None: every token, as checkpoints written
    # before this field have it.
    n_outputs: int | None = None

    def __post_init__(self) -> None:
        family(self)  # a ValueError naming the kinds there are, for one that is not
        if self.n_outputs is not None and not 1 <= self.n_outputs <= self.vocab_size:
            raise ValueError(f"n_outputs must be in [1, vocab_size={self.vocab_size}], not {self.n_outputs}")

    @property
    def outputs(self) -> int:
        return self.vocab_size if self.n_outputs is None else self.n_outputs

    def to_dict(self) -> dict:
        """The fields this kind of model reads (an RNN's config has no heads or context)."""
        from .families import COMMON_FIELDS

        keep = set(COMMON_FIELDS) | set(family(self).options)
        if self.n_outputs is None:  # an old config reads back as it was written
            keep.discard("n_outputs")
        if self.weight_drop == 0:  # absent means none, as in configs written before it existed
            keep.discard("weight_drop")
        return {k: v for k, v in asdict(self).items() if k in keep}


def with_input_only_rows(table: nn.Embedding, vocab_size: int, std: float = 1.0) -> nn.Embedding:
    """`table` (one row per output) grown to `vocab_size` rows with the byte tokens' rows, drawn after
    every other weight: the model's initial weights, and so its whole training on text without byte
    tokens, are then the same with byte fallback as without."""
    extra = vocab_size - table.num_embeddings
    if extra <= 0:
        return table
    rows = torch.randn(extra, table.embedding_dim, device=table.weight.device, dtype=table.weight.dtype) * std
    return nn.Embedding.from_pretrained(torch.cat([table.weight.detach(), rows]), freeze=False)



def pooled_mask(holder: nn.Module, like: torch.Tensor, p: float, salt: int = 0) -> torch.Tensor:
    """A dropout mask shaped as `like`: each entry 0 with probability p, else 1 / (1 - p).

    It is a window, at a random offset, into a fixed pool of at least twice its size, held by `holder`
    (outside its state_dict): a fresh Bernoulli draw costs a fifth of a 1x384 LSTM's training step on
    a CPU, and a third of a 1x512's when it masks the recurrent matrices; a window costs next to
    nothing. The entries of one mask are as independent as fresh ones, and two steps share an entry's
    draw only if they draw the same offset. The offset comes from the global RNG, so a resumed run
    draws the masks the unbroken one did; `salt` keeps two pools of one holder apart. Under
    torch.compile the mask is a fresh draw: the compiled kernel generates it cheaply, and reading the
    offset back to Python would break the graph."""
    if torch.compiler.is_compiling():
        return F.dropout(torch.ones_like(like), p, training=True)
    n = like.numel()
    pools = holder.__dict__.setdefault("_mask_pools", {})
    pool = pools.get(salt)
    if pool is None or pool.numel() < 2 * n or pool.device != like.device or pool.dtype != like.dtype:
        g = torch.Generator(device=like.device).manual_seed(salt)
        keep = torch.rand(2 * n, generator=g, device=like.device) >= p
        pool = pools[salt] = keep.to(like.dtype) / (1 - p)
    start = int(torch.randint(pool.numel() - n + 1, ()))
    return pool[start:start + n].view_as(like)


class PooledDropout(nn.Module):
    """nn.Dropout with its mask drawn by `pooled_mask`: the same regularisation, without the draw's cost."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * pooled_mask(self, x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def warm_state(model: nn.Module, rows: torch.Tensor, k_max: int) -> tuple[int, State]:
    """For grad_through_time of a model with a carried state: how many characters of each row (B, W) warm the
    state up (all but the last k_max + 2), and the state after them, without gradient."""
    B, W = rows.shape
    warm = W - 2 - k_max
    if warm < 0:
        raise ValueError(f"rows of {W} characters are too short for k_max={k_max}")
    with torch.no_grad():
        return warm, (model(rows[:, :warm])[2] if warm else model.init_state(B, rows.device))


def family(config: ModelConfig):
    """The family that builds `config.model` (families/)."""
    from .families import family_of

    return family_of(config.model)


def build_model(config: ModelConfig) -> nn.Module:
    """The model `config.model` names, built by its family."""
    return family(config).build(config)


def unscored_loss(outputs: int) -> float:
    """The loss charged for a token the output layer does not score: a byte token, which stands for a
    character outside the corpus's vocabulary (each of its UTF-8 bytes is one token). The model never
    predicts bytes, so each costs ln(outputs) + ln(256) nats, a uniform guess among the characters it
    knows and then among the 256 byte values: finite, and more than any character it can predict costs
    a model no better than uniform."""
    return math.log(outputs) + math.log(256)


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(..., outputs), (...) -> (...) losses in fp32; a target beyond the outputs costs `unscored_loss`."""
    outputs = logits.size(-1)
    beyond = targets >= outputs
    ce = F.cross_entropy(logits.float().reshape(-1, outputs), targets.clamp(max=outputs - 1).reshape(-1),
                         reduction="none").view(targets.shape)
    return torch.where(beyond, torch.full_like(ce, unscored_loss(outputs)), ce)


def finite_weights(model: nn.Module) -> bool:
    """Whether every weight is a finite number (one host sync, however many tensors)."""
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())



# --- sizes, without building anything ---------------------------------------------------------------
# So that a model or batch too large for this machine is refused before anything is allocated (and
# a config with a million layers is not built just to be counted); each family gives the formulas,
# and tests/test_models.py checks them against the built models.
def param_count(c: ModelConfig) -> int:
    """The parameters `build_model(c)` has."""
    return family(c).param_count(c)


def activation_floats(c: ModelConfig, rows: int, length: int, training: bool = True) -> int:
    """About how many floats one forward pass over (rows, length) keeps alive, and its backward with
    `training`."""
    return family(c).activation_floats(c, rows, length, training)


def sampling_state_floats(c: ModelConfig, streams: int) -> int:
    """The state `streams` sampling streams carry."""
    return family(c).sampling_state_floats(c, streams)


def macs_per_char(c: ModelConfig) -> dict[str, float]:
    """Multiply-adds per character: {"train": forward and backward, "sample": one step}. Counted are
    the matrix products as the model defines them (embedding lookups, elementwise work and the
    sampler's shortcuts are not); the backward pass counts as twice the forward."""
    return family(c).macs_per_char(c)
