"""Beam search: the most likely continuations of a prime under a model's own probabilities.

K slots. At each step every live hypothesis is extended by every character it can take, and the
candidates are taken best first by total log-probability (all of one length at that step, so the total
and the mean per character rank them alike), until the K slots are full: a candidate that *ends* (the
caller's `judge` says where: a stop string, the length, an item's newline) leaves the search holding
its slot for good; one the judge *drops* (an item already in the corpus, a line cut by the length)
gives its place to the next; the rest are the live hypotheses of the next step. The search ends when
no live hypothesis is left. The K ended ones are returned best first by their total log-probability,
the ending's included (the stop string's characters, an item's newline), ties in the order they ended.

No length normalisation, by choice: "most likely" is then what it says, the probability that the model
makes exactly this text and ends it there. Without a stop string every continuation has the same
length, so there is nothing to normalise; with one, or for items, a shorter text is more likely, and
it should be. Dividing by the length instead (the mean per character) prefers long runs of likely
characters: on a small model the best "item" was a letter followed by spaces up to the length, the
loops beam search is known for. Each result still reports its mean per character, to compare across lengths.

With K = 1 this is greedy decoding; with K at least the number of hypotheses there can be, it is an
exhaustive search (tests/test_sampling_modes.py checks both). Nothing is drawn at random: the same model
and prime give the same result. The live hypotheses are the rows of one batch; the model's state is
reordered to follow them (`reorder`: the family's `reorder_state`), so K hypotheses cost one batched
step of K rows, not K samplers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

LIVE = object()  # what `judge` returns for a text that goes on
DROP = object()  # ... for one that is no result and must not go on


@dataclass(frozen=True)
class Ended:
    text: str  # what the judge made of it (the stop string or the newline taken off)
    ids: tuple[int, ...]  # every character generated, its ending included
    logprob: float  # total natural-log probability of `ids`

    @property
    def per_char(self) -> float:
        return self.logprob / max(1, len(self.ids))


def beam_search(logits: torch.Tensor, state: Any, step: Callable, reorder: Callable, k: int, chars: list[str],
                judge: Callable[[str], Any], max_steps: int | None = None) -> list[Ended]:
    """logits (1, >= len(chars)) after the prime and the state it left; `step(ids (B,), state) -> (logits,
    state)`; `reorder(state, index (B',)) -> state`; `chars[i]`: the text of id i (the ids a model may
    emit). `judge(text)` -> LIVE, DROP, or the text to return (it ended). `max_steps`: a safety bound (the
    judge should end or drop every text by then)."""
    n_chars = len(chars)
    live: list[tuple[str, tuple[int, ...]]] = [("", ())]
    scores = torch.zeros(1, dtype=torch.float64)
    ended: list[Ended] = []
    steps = 0
    while live and len(ended) < k and (max_steps is None or steps < max_steps):
        steps += 1
        logp = torch.log_softmax(logits[:, :n_chars].cpu().double(), dim=-1)  # (B, V), on the CPU: any device
        total = (scores[:, None] + logp).flatten()
        order = torch.sort(total, descending=True, stable=True).indices.tolist()
        flat = total.tolist()
        rows, nxt, kept, new_scores = [], [], [], []
        for j in order:
            if len(ended) + len(kept) >= k or flat[j] == float("-inf"):
                break
            row, c = divmod(j, n_chars)
            text, ids = live[row][0] + chars[c], live[row][1] + (c,)
            verdict = judge(text)
            if verdict is LIVE:
                rows.append(row)
                nxt.append(c)
                kept.append((text, ids))
                new_scores.append(flat[j])
            elif verdict is not DROP:
                ended.append(Ended(verdict, ids, flat[j]))
        live = kept
        if live and len(ended) < k:
            index = torch.as_tensor(rows, dtype=torch.long, device=logits.device)
            logits, state = step(torch.as_tensor(nxt, dtype=torch.long, device=logits.device), reorder(state, index))
            scores = torch.as_tensor(new_scores, dtype=torch.float64)
    return sorted(ended, key=lambda e: -e.logprob)
