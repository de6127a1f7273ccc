"""Long-range probes: where does each model's memory run out?

Two measurements on held-out text, both from the model's own per-character losses:

* `bracket_probe`, the analysis of Karpathy, Johnson and Fei-Fei (2015, "Visualizing and
  Understanding Recurrent Networks", the figure on closing braces): for every closing bracket or
  quote whose opener is in the text, the loss on the closing character, bucketed by the distance
  back to its opener. A model that remembers the opener predicts the closer cheaply at any
  distance; the loss rises where its memory gives out. It needs text that has brackets or quotes
  (source code, Wikipedia, novels); tinyshakespeare has none.
* `context_probe`, which works on any text: the loss on the same characters when the model may read
  only the last k characters before each, for k = 1, 2, 4, ... The curve falls while more context
  still helps and flattens where the model stops using it; a Transformer sees at most its context
  (its curve is flat beyond it by construction), an RNN whatever its state has kept.

The RNNs read the text as one stream with their state carried from the first character
(`evaluate(n_streams=1)`), the Transformer through its strided windows, as `charrnn eval` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .families import evaluate_model, family_of
from .models import token_losses

OPEN_CLOSE = {"(": ")", "[": "]", "{": "}", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb"}
SELF_CLOSING = ('"',)  # a straight double quote opens and closes by turns
# distance buckets: [1, 4], [5, 8], [9, 16], ... (the lower edges); the last is open-ended
BUCKET_EDGES = (1, 5, 9, 17, 33, 65, 129, 257, 513)
MIN_PAIRS = 10  # fewer matched pairs than this: the probe says so instead of guessing


def bucket_labels() -> list[str]:
    edges = BUCKET_EDGES
    return [f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])] + [f"{edges[-1]}+"]


def find_pairs(text: str) -> list[tuple[int, int]]:
    """(opener, closer) positions of matched brackets and quotes, each kind matched on its own stack."""
    closers = {v: k for k, v in OPEN_CLOSE.items()}
    stacks: dict[str, list[int]] = {k: [] for k in (*OPEN_CLOSE, *SELF_CLOSING)}
    pairs = []
    for i, ch in enumerate(text):
        if ch in SELF_CLOSING:
            if stacks[ch]:
                pairs.append((stacks[ch].pop(), i))
            else:
                stacks[ch].append(i)
        elif ch in OPEN_CLOSE:
            stacks[ch].append(i)
        elif ch in closers and stacks[closers[ch]]:  # a closer with no opener is skipped
            pairs.append((stacks[closers[ch]].pop(), i))
    return sorted(pairs, key=lambda p: p[1])


@dataclass
class BracketProbe:
    labels: list[str]  # distance buckets
    counts: list[int]  # closers per bucket
    loss: dict[str, list[float | None]]  # model name -> mean loss (nats) on closers per bucket
    pairs: int  # matched pairs found

    def to_dict(self) -> dict:
        return {"labels": self.labels, "counts": self.counts, "loss": self.loss, "pairs": self.pairs}


def char_losses(model, ids: np.ndarray, device: torch.device) -> np.ndarray:
    """Loss of each character after the first, each with all the context the model can use."""
    return evaluate_model(model, ids, device, "fp32", n_streams=1, per_char=True).losses


def bracket_probe(losses: dict[str, np.ndarray], pairs: list[tuple[int, int]]) -> BracketProbe:
    """Mean loss on closing characters by distance to their opener, from each model's `char_losses`."""
    edges = np.asarray(BUCKET_EDGES)
    dist = np.asarray([c - o for o, c in pairs], dtype=np.int64)
    closer = np.asarray([c for _, c in pairs], dtype=np.int64)
    bucket = np.searchsorted(edges, dist, side="right") - 1
    counts = [int((bucket == b).sum()) for b in range(len(edges))]
    out: dict[str, list[float | None]] = {}
    for name, per_char in losses.items():
        picked = per_char[closer - 1]  # entry i is the loss of character i + 1
        out[name] = [float(picked[bucket == b].mean()) if counts[b] else None for b in range(len(edges))]
    return BracketProbe(bucket_labels(), counts, out, len(pairs))


def probe_targets(n: int, k_max: int, count: int, seed: int = 0) -> np.ndarray:
    """`count` fixed positions in [k_max, n), each with at least k_max characters before it."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(np.arange(k_max, n), size=min(count, n - k_max), replace=False))


@torch.no_grad()
def context_probe(model, ids: np.ndarray, device: torch.device, lengths: list[int], targets: np.ndarray,
                  batch_size: int = 100) -> list[float]:
    """Mean loss (nats) on the characters at `targets` when the model reads only the last k characters
    before each, for each k in `lengths` (a Transformer reads at most its context)."""
    was_training = model.training
    model.eval()
    cap = family_of(model.config.model).context(model.config)
    out = []
    try:
        for k in lengths:
            k = min(k, cap) if cap else k
            total = 0.0
            for i in range(0, len(targets), batch_size):
                t = targets[i:i + batch_size]
                rows = torch.from_numpy(np.asarray(ids[t[:, None] + np.arange(-k, 1)], dtype=np.int64)).to(device)
                logits, _, _ = model(rows[:, :-1])  # from a fresh state: only these k characters
                total += token_losses(logits[:, -1], rows[:, -1]).sum().item()
            out.append(total / len(targets))
    finally:
        model.train(was_training)
    return out
