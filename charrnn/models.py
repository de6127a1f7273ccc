"""What every kind of model is built from: the carried state, what a trace of it holds, the loss, dropout
masks, and the rule by which a model that reads windows sees a long text (its config is config.py). The models
themselves live with their families (charrnn/families/), behind this contract:

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
from dataclasses import dataclass

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
    (outside its state_dict): a fresh Bernoulli draw costs a sizeable share of a small RNN's training
    step on a CPU (benchmarks/README.md, "A pooled dropout mask"), a window next to nothing. The entries of
    one mask are as independent as fresh ones, and two steps share an entry's draw only if they draw the
    same offset. The offset comes from the global RNG, so a resumed run draws the masks the unbroken one
    did; `salt` keeps two pools of one holder apart. Under torch.compile the mask is a fresh draw: the
    compiled kernel generates it cheaply, and reading the offset back to Python would break the graph."""
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


def window_start(t: int, context: int, stride: int | None = None) -> int:
    """Where the window starts that a model reading at most `context` characters (the Transformer) reads
    to predict character t from characters 0..t-1: the rule its sampling and its evaluation share, so
    that the loss `charrnn eval` reports is the loss of the distribution the sampler draws from.

    Up to `context` characters it sees everything. Beyond that the window jumps forward by `stride`
    (default context // 2) whenever it is full, rather than by one character: learned absolute
    positions change every key when the window moves, so each move costs a fresh pass over the
    window, and jumping by half a window keeps that at O(context) per character amortised. Every
    prediction therefore sees between context - stride + 1 and context characters.
    """
    stride = max(1, context // 2) if stride is None else stride
    if t <= context:
        return 0
    return stride * -(-(t - context) // stride)  # stride * ceil((t - context) / stride)


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


