"""The lines of a corpus as two hash sets, its training split's and its validation split's: whether an
item (one generated line) is in the corpus, and in which split, as makemore labels its samples.

Built once from the corpus's ids (the run's id cache: the text it was trained on, split where training
split it), a few million characters at a time; each question is then one set lookup, however many
items are asked about. A line is the text between two newlines, without them; a carriage return before
a newline belongs to the newline (a CRLF corpus holds the same lines as its LF copy). A line belongs to
the split it starts in: the one line the split point cuts is a training line. Empty lines are no
items and are left out. Characters read as byte tokens (outside the vocabulary) are never sampled, so
a line holding one cannot equal an item: it is kept with a NUL in their place, which no corpus holds.

numpy only: importing this loads no torch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CorpusLines", "LABELS", "item_text"]

LABELS = ("train", "validation", "new")
CHUNK = 1 << 22  # ids decoded at a time: ~16 MB of code points, whatever the corpus's size


def item_text(line: str) -> str:
    """A line as an item: without the carriage return of a CRLF line ending."""
    return line[:-1] if line.endswith("\r") else line


class CorpusLines:
    """`label(line)`: "train", "validation" or "new"; `line in lines`: in either split."""

    def __init__(self, train: set[str], validation: set[str]):
        self.train, self.validation = train, validation
        self.train.discard("")
        self.validation.discard("")

    @classmethod
    def from_text(cls, text: str, n_train: int) -> CorpusLines:
        """The lines of `text`, whose first `n_train` characters are the training split."""
        table = {c: i for i, c in enumerate(sorted(set(text) | {"\n"}))}
        ids = np.fromiter((table[c] for c in text), dtype=np.int64, count=len(text))
        return cls.from_ids(ids, list(table), n_train)

    @classmethod
    def from_ids(cls, ids: np.ndarray, chars: list[str], n_train: int) -> CorpusLines:
        """The lines of a corpus given as ids: `chars[i]` is the character of id i (ids past them are
        byte tokens); the first `n_train` ids are the training split."""
        code = np.zeros(max(len(chars), int(ids.max()) + 1 if len(ids) else 0), dtype=np.uint32)
        code[: len(chars)] = [ord(c) for c in chars]  # byte tokens stay 0 (NUL)
        train: set[str] = set()
        validation: set[str] = set()
        n = len(ids)
        cuts = sorted({*range(0, n, CHUNK), min(max(n_train, 0), n), n})
        carry, carry_in_train = "", n_train > 0  # the unfinished line, and whether it started in train
        for lo, hi in zip(cuts, cuts[1:]):
            piece = carry + np.take(code, ids[lo:hi]).tobytes().decode("utf-32-le")
            lines = piece.replace("\r\n", "\n").split("\n") if "\r" in piece else piece.split("\n")
            carry = lines.pop()
            if lines:  # the first finishes the line carried in; the others started in [lo, hi)
                (train if carry_in_train else validation).add(lines[0])
                carry_in_train = hi <= n_train  # (no chunk straddles the split point)
                (train if carry_in_train else validation).update(lines[1:])
        (train if carry_in_train else validation).add(item_text(carry))
        return cls(train, validation)

    def label(self, line: str) -> str:
        if line in self.train:
            return "train"
        return "validation" if line in self.validation else "new"

    def __contains__(self, line: str) -> bool:
        return line in self.train or line in self.validation
