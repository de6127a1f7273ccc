"""Batches from a 1-D array of token ids: parallel streams for truncated BPTT (a model that carries a
state), random windows (one that reads windows, as the Transformer). Each batch is a pure function of
(seed, epoch, index), which is what makes a resumed run exact. A family says which its models take
(`Family.batcher`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import CharrnnError


@dataclass
class _Batches:
    """What both batchers share: the text, the global batch shape, the seed and this rank's rows."""

    ids: np.ndarray
    batch_size: int
    seq_len: int
    seed: int = 0
    rows: range | None = None  # the rows of the global batch this batcher yields

    def __post_init__(self) -> None:
        rows = self.rows
        if rows is not None and (len(rows) < 1 or min(rows) < 0 or max(rows) >= self.batch_size):
            raise ValueError(f"rows {rows} are not within a batch of {self.batch_size}")

    def _windows(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The windows of seq_len + 1 ids at `starts` -> x, y: (B, T) int64, y one character ahead of x."""
        idx = starts[:, None] + np.arange(self.seq_len + 1)
        chunk = torch.from_numpy(np.asarray(self.ids[idx], dtype=np.int64))
        return chunk[:, :-1], chunk[:, 1:]


# --- batching for truncated BPTT -------------------------------------------------------------------
@dataclass
class StreamBatcher(_Batches):
    """Cuts `ids` into `batch_size` parallel streams; batch k+1 continues batch k stream by stream.

    Stream b of epoch e covers ids[off + b*L : off + (b+1)*L + 1], where L = (N - 1 - off) // B.
    Epoch 0 starts at off = 0; each later epoch starts at a seeded random off in [0, seq_len), so
    chunk boundaries move between epochs. The hidden state is reset to zero at each epoch start
    (the trainer's job), since a new epoch's streams do not continue the old ones' text.
    Everything is a pure function of (epoch, k): that is what makes resume exact.

    `rows` picks which streams of that global layout `batch` returns (None: all of them). Under
    data-parallel training each rank passes its own contiguous range, so the ranks together read
    exactly the single-process batch, and a run can resume with any number of ranks.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batches_per_epoch(0) < 1:
            raise CharrnnError(
                f"corpus too small: {len(self.ids):,} training characters cannot fill one batch of "
                f"{self.batch_size} streams x {self.seq_len} characters (lower --batch-size or --seq-len)"
            )

    def _offset(self, epoch: int) -> int:
        if epoch == 0:
            return 0
        g = np.random.default_rng([self.seed, epoch])
        return int(g.integers(self.seq_len))

    def _stream_len(self, epoch: int) -> int:
        return (len(self.ids) - 1 - self._offset(epoch)) // self.batch_size

    def batches_per_epoch(self, epoch: int) -> int:
        return max(self._stream_len(epoch), 0) // self.seq_len

    def batch(self, epoch: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x, y: (B, T) int64, y shifted one character ahead of x; B = len(rows) when rows are given."""
        length = self._stream_len(epoch)
        streams = np.arange(self.batch_size) if self.rows is None else np.asarray(self.rows)
        return self._windows(self._offset(epoch) + streams * length + k * self.seq_len)


# --- batching for the Transformer ------------------------------------------------------------------
@dataclass
class WindowBatcher(_Batches):
    """Random windows of `seq_len` characters: the Transformer's batches (it carries no state).

    Batch k of epoch e draws `batch_size` start offsets uniformly from [0, N - seq_len - 1] with a
    generator seeded by (seed, e, k), so a batch is a pure function of (seed, epoch, k) and resume
    stays exact. An "epoch" is as many windows as it takes to cover the text's characters once.
    `rows` picks which windows of that global batch `batch` returns, as for `StreamBatcher`.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.ids) < self.seq_len + 1:
            raise CharrnnError(
                f"corpus too small: {len(self.ids):,} training characters cannot fill one window of "
                f"{self.seq_len} characters (lower --context)"
            )

    def batches_per_epoch(self, epoch: int) -> int:
        return max(1, (len(self.ids) - 1) // (self.batch_size * self.seq_len))

    def batch(self, epoch: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x, y: (B, T) int64, y shifted one character ahead of x."""
        g = np.random.default_rng([self.seed, epoch, k])
        starts = g.integers(0, len(self.ids) - self.seq_len, size=self.batch_size)
        if self.rows is not None:
            starts = starts[np.asarray(self.rows)]
        return self._windows(starts)

