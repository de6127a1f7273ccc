"""Validation loss over a whole split: every character after the first predicted exactly once.

A model's family says which method is its own (`Family.evaluate`; `families.evaluate_model` asks it):
carried streams for a model with a state (`evaluate`), strided windows for one that reads windows, as
the Transformer (`evaluate_windows`).

RNNs: the split is cut into `n_streams` contiguous streams read in chunks with the hidden state carried,
as in training. Stream b covers positions [b*L, (b+1)*L] and predicts positions b*L+1..(b+1)*L.
The few characters left over after B*L belong right after the last stream, so they are predicted
by continuing that stream's state. Each stream starts from a zero state, which costs a little at its
first characters: a few dozen streams give the batch its speed at a negligible cold-start cost.

Training's intermediate validations may pass `limit`: then only part of the split is scored (the first
characters of every stream, or evenly spaced windows), each character exactly as the whole pass would
score it, so successive checkpoints compare on the same text at a fraction of the cost.

Under data-parallel training each rank scores a shard (`shard=(i, n)`: the i-th of n near-equal
contiguous groups of the streams or windows) and the ranks add up their sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .device import autocast
from .fileio import json_safe
from .models import token_losses, window_start

# The validation batch: streams (or windows) at once, and characters per chunk. Training's validations,
# `charrnn eval` and compare all score with it, so their numbers are the same estimate.
EVAL_STREAMS, EVAL_LENGTH = 32, 256
# Logits one evaluation pass may produce at once (64 MB in fp32). A wide output layer (a corpus of
# 100,000 distinct characters) reads fewer positions per pass instead: the same losses, in more passes.
EVAL_LOGITS = 1 << 24


def eval_batch(outputs: int, size: int, wanted: int) -> int:
    """How many of `wanted` rows (or positions) an evaluation pass reads at once, each `size` positions (or
    rows), so that its logits stay within EVAL_LOGITS: `wanted`, fewer for a wide output layer, at least 1."""
    return max(1, min(wanted, EVAL_LOGITS // max(size * outputs, 1)))


@dataclass
class EvalResult:
    loss_nats: float  # mean negative log-likelihood per character, natural log
    chars: int  # characters predicted
    # with per_char=True: the loss of each predicted character (entry i predicts character i + 1)
    losses: np.ndarray | None = field(default=None, repr=False, compare=False)
    subset: bool = False  # only part of the split was scored (`limit`)

    @property
    def bpc(self) -> float:
        return self.loss_nats / math.log(2)

    @property
    def perplexity(self) -> float:
        """exp(loss); inf for a loss beyond what a float holds (above ~709 nats: a diverged model)."""
        return math.exp(self.loss_nats) if self.loss_nats < 709.78 else math.inf

    def to_dict(self) -> dict:
        """The numbers as strict JSON allows them: a value that is not finite is None."""
        out = {"loss_nats": self.loss_nats, "bpc": self.bpc, "perplexity": self.perplexity, "chars": self.chars}
        if self.subset:
            out["subset"] = True
        return json_safe(out)


def _ids(ids: np.ndarray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(ids[rows], dtype=np.int64)).to(device)


@torch.no_grad()
def evaluate(model, ids: np.ndarray, device: torch.device, precision: str = "fp32",
             n_streams: int = EVAL_STREAMS, seq_len: int = EVAL_LENGTH, per_char: bool = False,
             shard: tuple[int, int] = (0, 1), limit: int | None = None) -> EvalResult:
    """Mean loss of `model` over `ids` (a 1-D array of token ids), on `device`.

    `limit`: each stream stops after its first limit // n_streams characters (the tail is skipped),
    so the characters scored, and their losses, are those the whole pass starts with. Stopping the
    same streams early, rather than scoring short pieces of their own, keeps every stream start the
    whole pass has and no other: from a zero state a model trained on carried streams can misread a
    stretch of text badly, and extra cold starts would rank checkpoints by that.

    `shard=(i, n)` scores only the i-th of n near-equal contiguous groups of the streams (the last
    group also takes the leftover tail); the n results' loss_nats * chars add up to the whole sum.
    """
    n = len(ids)
    if n < 2:
        raise ValueError("need at least two characters to evaluate")
    n_streams = max(1, min(n_streams, (n - 1) // max(seq_len, 1), (n - 1)))
    L = (n - 1) // n_streams
    run = L if limit is None else max(1, min(L, limit // n_streams))  # characters each stream scores
    total = 0.0
    count = 0
    state = None
    mine = np.array_split(np.arange(n_streams), shard[1])[shard[0]]
    if len(mine) == 0:  # more shards than streams: nothing for this one
        return EvalResult(0.0, 0)
    starts = mine * L
    losses = np.zeros(n - 1) if per_char else None
    chunk = eval_batch(model.config.outputs, len(mine), seq_len)  # the state is carried: any chunk scores alike
    was_training = model.training
    model.eval()
    try:
        for t0 in range(0, run, chunk):
            t1 = min(t0 + chunk, run)
            rows = starts[:, None] + np.arange(t0, t1 + 1)
            window = _ids(ids, rows, device)  # (B, t1-t0+1)
            with autocast(device, precision):
                logits, _, state = model(window[:, :-1], state)
            ce = token_losses(logits, window[:, 1:])
            total += ce.sum().item()
            count += ce.numel()
            if per_char:
                losses[rows[:, :-1]] = ce.cpu().numpy()
        rest = n - 1 - n_streams * L
        if rest > 0 and mine[-1] == n_streams - 1 and run == L:  # continue the last stream over the tail
            last = None if state is None else tuple(s[:, -1:].contiguous() for s in state)
            pos = np.arange(n_streams * L, n)[None, :]
            window = _ids(ids, pos, device)
            with autocast(device, precision):
                logits, _, _ = model(window[:, :-1], last)
            ce = token_losses(logits, window[:, 1:])
            total += ce.sum().item()
            count += rest
            if per_char:
                losses[pos[:, :-1]] = ce.cpu().numpy()
    finally:
        model.train(was_training)
    return EvalResult(total / count, count, losses, subset=run < L)


@torch.no_grad()
def evaluate_windows(model, ids: np.ndarray, device: torch.device, precision: str = "fp32", *, context: int,
                     stride: int | None = None, batch_size: int = EVAL_STREAMS, per_char: bool = False,
                     shard: tuple[int, int] = (0, 1), limit: int | None = None) -> EvalResult:
    """Mean loss of a model that reads windows of at most `context` characters (a Transformer) over `ids`:
    every character after the first predicted exactly once.

    Windows of `context` characters start every `stride` characters (default context // 2).
    Window 0 scores all its predictions; each later window scores only its last `stride`, whose
    predictions see between context - stride + 1 and context characters. So character t is
    predicted from characters window_start(t)..t-1 (`models.window_start`), exactly the window the sampler
    uses, and the result equals scoring each character with its own forward pass over
    that window (tests/test_transformer.py checks it). The last window may be shorter.
    `shard=(i, n)` scores the i-th of n contiguous groups of the windows (the last takes the short one).
    `limit`: only evenly spaced full windows, about `limit` scored characters in all.
    """
    n, C = len(ids), context
    if n < 2:
        raise ValueError("need at least two characters to evaluate")
    S = max(1, C // 2) if stride is None else stride
    if not 1 <= S <= C:
        raise ValueError(f"stride must be in [1, context], not {S}")
    n_windows = 1 + window_start(n - 1, C, S) // S  # the last window holds the prediction of character n-1
    full = [w for w in range(n_windows) if w * S + C <= n - 1]  # windows of exactly C inputs
    n_full = len(full)
    every = 1 if limit is None else max(1, -(-n_full * S // max(limit, 1)))
    subset = every > 1
    full = full[::every]
    mine = np.array_split(np.arange(len(full)), shard[1])[shard[0]]
    last_shard = shard[0] == shard[1] - 1
    total, count = 0.0, 0
    losses = np.zeros(n - 1) if per_char else None

    def score(ws: list[int], length: int) -> None:
        nonlocal total, count
        rows = np.asarray(ws)[:, None] * S + np.arange(length + 1)  # inputs and the target after the last
        window = _ids(ids, rows, device)
        with autocast(device, precision):
            logits, _, _ = model(window[:, :-1])
        ce = token_losses(logits, window[:, 1:])
        keep = np.zeros((len(ws), length), dtype=bool)
        keep[:, C - S:] = True  # a later window scores its last S predictions ...
        keep[np.asarray(ws) == 0] = True  # ... the first one all of them
        keep_t = torch.from_numpy(keep).to(device)
        total += ce[keep_t].sum().item()
        count += int(keep.sum())
        if per_char:
            losses[rows[:, :-1][keep]] = ce.cpu().numpy()[keep]

    batch_size = eval_batch(model.config.outputs, C, batch_size)
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(mine), batch_size):
            score([full[j] for j in mine[i:i + batch_size]], C)
        if n_full < n_windows and last_shard and not subset:  # the shorter last window
            w = n_windows - 1
            score([w], n - 1 - w * S)
    finally:
        model.train(was_training)
    if shard[1] == 1 and not subset:
        assert count == n - 1, (count, n)
    return EvalResult(total / count if count else 0.0, count, losses, subset=subset)
