"""Validation loss over a whole split: every character after the first predicted exactly once.

The split is cut into `n_streams` contiguous streams read in chunks with the hidden state carried,
as in training. Stream b covers positions [b*L, (b+1)*L] and predicts positions b*L+1..(b+1)*L.
The few characters left over after B*L belong right after the last stream, so they are predicted
by continuing that stream's state. Each stream starts from a zero state, which costs a little
at its first characters; 16 streams over tinyshakespeare's 111k validation characters is
enough parallelism for speed and a negligible cold-start cost.

Under data-parallel training each rank scores a share of the streams (`shard`) and the ranks add
up their sums: the same streams, the same characters, the same figure as one process (up to the
order of float additions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .device import autocast


@dataclass
class EvalResult:
    loss_nats: float  # mean negative log-likelihood per character, natural log
    chars: int  # characters predicted

    @property
    def bpc(self) -> float:
        return self.loss_nats / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss_nats)

    def to_dict(self) -> dict:
        return {"loss_nats": self.loss_nats, "bpc": self.bpc, "perplexity": self.perplexity, "chars": self.chars}


def _ids(ids: np.ndarray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(ids[rows], dtype=np.int64)).to(device)


@torch.no_grad()
def evaluate(model, ids: np.ndarray, device: torch.device, precision: str = "fp32",
             n_streams: int = 16, seq_len: int = 256, shard: tuple[int, int] = (0, 1)) -> EvalResult:
    """Mean loss of `model` over `ids` (a 1-D array of token ids), on `device`.

    `shard=(i, n)` scores only the i-th of n near-equal contiguous groups of the streams (the last
    group also takes the leftover tail); the n results' loss_nats * chars add up to the whole sum.
    """
    n = len(ids)
    if n < 2:
        raise ValueError("need at least two characters to evaluate")
    n_streams = max(1, min(n_streams, (n - 1) // max(seq_len, 1), (n - 1)))
    L = (n - 1) // n_streams
    total = 0.0
    count = 0
    state = None
    mine = np.array_split(np.arange(n_streams), shard[1])[shard[0]]
    starts = mine * L
    if len(mine) == 0:  # more shards than streams: nothing for this one
        return EvalResult(0.0, 0)
    was_training = model.training
    model.eval()
    try:
        for t0 in range(0, L, seq_len):
            t1 = min(t0 + seq_len, L)
            window = _ids(ids, starts[:, None] + np.arange(t0, t1 + 1), device)  # (B, t1-t0+1)
            with autocast(device, precision):
                logits, _, state = model(window[:, :-1], state)
            total += F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), window[:, 1:].reshape(-1),
                                     reduction="sum").item()
            count += window[:, 1:].numel()
        rest = n - 1 - n_streams * L
        if rest > 0 and mine[-1] == n_streams - 1:  # continue the last stream over the tail
            last = None if state is None else tuple(s[:, -1:].contiguous() for s in state)
            pos = np.arange(n_streams * L, n)[None, :]
            window = _ids(ids, pos, device)
            with autocast(device, precision):
                logits, _, _ = model(window[:, :-1], last)
            total += F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), window[:, 1:].reshape(-1),
                                     reduction="sum").item()
            count += rest
    finally:
        model.train(was_training)
    return EvalResult(total / count, count)
