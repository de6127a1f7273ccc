"""How much of a text occurs verbatim in the training text: the memorization check behind makemore's
sample labels ("RNNs memorize sequences extremely well, but don't generalise well").

For a length n, the *share* of a text is the fraction of its n-grams (one per position, so a repeated
n-gram counts each time it occurs) that occur somewhere in the training text. A verbatim slice of the
training text has share 1.0 for every n up to its length; novel text has a share near 0.0 for long n.
A text shorter than n has no n-grams, and its share is None rather than a made-up 0.0.

n-grams are compared by a 64-bit hash, not by their characters, so the index keeps one uint64 per
distinct training n-gram (800 MB for 10^8 of them) and a query is a binary search. It is hashed, so a
match can be false: a query n-gram against m distinct training n-grams collides with probability about
m / 2^64 (5e-12 for m = 10^8), which is negligible. The hash is linear mod 2^64, so crafted strings of
length 2048 and more (Thue-Morse pairs) collide for any multiplier; natural text does not.

numpy only: importing this loads no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

__all__ = ["NgramIndex", "ngram_hashes", "overlap"]

_P = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: large and odd, so multiplying is a bijection mod 2^64
_MOD = 1 << 64


def _offset(n: int) -> int:
    """The constant that turns the plain polynomial hash into h = n; h = h * P + (id + 1) per character.

    Both the +1 (so a leading id 0 is not a no-op) and the start value n (so lengths never collide
    systematically) are independent of the characters, so they fold into one addition at the end instead
    of a pass over the array per character. Python ints: exact, no numpy overflow warnings."""
    return (n * pow(_P, n, _MOD) + sum(pow(_P, k, _MOD) for k in range(n))) % _MOD


def _as_ids(ids: np.ndarray) -> np.ndarray:
    """A 1-D array of non-negative integers in an unsigned dtype, without copying."""
    a = np.asarray(ids)  # a np.memmap becomes a plain view of the same pages: no copy, no read
    if a.ndim != 1:
        raise ValueError(f"ids must be a 1-D array, not {a.ndim}-D")
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"ids must be integers, not {a.dtype}")
    if np.issubdtype(a.dtype, np.signedinteger):
        if a.size and a.min() < 0:
            raise ValueError("ids must be non-negative")
        # uint64 + int64 promotes to float64 and would round; the unsigned view of the same bits does not
        a = a.view(a.dtype.str.replace("i", "u"))
    return a


def _check_n(n: int) -> int:
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1, not {n!r}")
    return int(n)


def _hashes(ids: np.ndarray, ns: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (n, hashes of every n-gram) for the ns that fit in ids, ascending, each a new array.

    One buffer grows every n-gram by a character per step, h_{n+1}[i] = h_n[i] * P + ids[i + n], so all
    ns together cost max(ns) passes rather than sum(ns), and memory stays at the buffer plus the yield."""
    length = len(ids)
    todo = sorted({n for n in ns if n <= length})
    if not todo:
        return
    h = ids.astype(np.uint64)  # the 1-grams; uint64 array arithmetic wraps mod 2^64 without warnings
    p = np.uint64(_P)
    n = 1
    for target in todo:
        while n < target:
            view = h[: length - n]  # in place: no temporaries of len(ids)
            np.multiply(view, p, out=view)
            np.add(view, ids[n:], out=view)  # any unsigned dtype adds into uint64 exactly
            n += 1
        yield n, np.add(h[: length - n + 1], np.uint64(_offset(n)))


def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """uint64 hashes of the len(ids) - n + 1 n-grams of a 1-D integer array, in order; empty if len < n.

    The hash is h = n, then h = h * P + (id + 1) for each character, mod 2^64."""
    n = _check_n(n)
    a = _as_ids(ids)
    return next((h for _, h in _hashes(a, [n])), np.empty(0, np.uint64))


def _sorted_unique(h: np.ndarray) -> np.ndarray:
    """Sort h in place and keep one of each value (np.unique would copy h once more)."""
    h.sort()
    if h.size < 2:
        return h
    keep = np.empty(h.size, bool)
    keep[0] = True
    np.not_equal(h[1:], h[:-1], out=keep[1:])
    return h[keep]


def _fraction_in(table: np.ndarray, q: np.ndarray) -> float:
    """The fraction of the query hashes q (duplicates each counted) found in the sorted array table."""
    if table.size == 0:
        return 0.0
    i = np.searchsorted(table, q)
    np.minimum(i, table.size - 1, out=i)  # past-the-end positions are misses; clip to compare safely
    return float(np.count_nonzero(table[i] == q)) / q.size


class NgramIndex:
    """The distinct n-grams of a training text, for several n, as sorted uint64 hashes.

    Built once (`NgramIndex(train_ids, ns=(10, 20, 40))`), then asked about any number of texts."""

    def __init__(self, train_ids: np.ndarray, ns: Iterable[int] = (10, 20, 40)) -> None:
        self.ns: tuple[int, ...] = tuple(dict.fromkeys(_check_n(n) for n in ns))
        if not self.ns:
            raise ValueError("ns must name at least one n-gram length")
        ids = _as_ids(train_ids)
        # a training text shorter than n has no n-grams: an empty table, so every query n-gram misses
        self._tables: dict[int, np.ndarray] = {n: np.empty(0, np.uint64) for n in self.ns}
        for n, h in _hashes(ids, self.ns):
            self._tables[n] = _sorted_unique(h)

    def distinct(self, n: int) -> int:
        """How many distinct n-grams the training text has."""
        return int(self._table(n).size)

    def share(self, ids: np.ndarray, n: int) -> float | None:
        """The fraction of the n-grams of ids (every position, duplicates included) found in the
        training text; None when ids has fewer than n characters."""
        table = self._table(n)
        q = ngram_hashes(ids, n)
        return _fraction_in(table, q) if q.size else None

    def shares(self, ids: np.ndarray) -> dict[int, float | None]:
        """share(ids, n) for every n of the index, hashing ids in one sweep."""
        out: dict[int, float | None] = dict.fromkeys(self.ns)
        for n, q in _hashes(_as_ids(ids), self.ns):
            out[n] = _fraction_in(self._tables[n], q)
        return out

    def _table(self, n: int) -> np.ndarray:
        try:
            return self._tables[n]
        except (KeyError, TypeError):
            raise ValueError(f"this index holds n in {list(self.ns)}, not {n!r}") from None

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}: {t.size}" for n, t in self._tables.items())
        return f"NgramIndex(distinct n-grams {{{sizes}}})"


def overlap(sample_ids: np.ndarray, train_ids: np.ndarray, ns: Iterable[int] = (10, 20, 40)) -> dict[int, float | None]:
    """{n: share of sample_ids's n-grams found in train_ids} for each n; build an NgramIndex instead to
    check many samples against the same training text."""
    return NgramIndex(train_ids, ns).shares(sample_ids)
