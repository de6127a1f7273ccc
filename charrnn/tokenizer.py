"""Lossless character-level tokenizer, stored as a standard Hugging Face `tokenizer.json`.

The vocabulary is the sorted set of characters seen in the training corpus (ids 0..n_chars-1, the
same order nanoGPT's shakespeare_char uses), optionally followed by 256 byte tokens `<0x00>`..`<0xFF>`.
It is a `tokenizers` BPE model with no merges, so every character is one token; with
`byte_fallback` a character outside the vocabulary becomes the bytes of its UTF-8 encoding, which
decode back exactly. `tokenizers.Tokenizer.from_file("tokenizer.json")` loads the same vocabulary.

`tokenizers` walks a long text at about 2 MB/s, so `encode` takes a numpy path instead: a lookup
table indexed by code point. Its ids are identical to `tokenizers`' (tests check it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models

from .errors import BadValue, CharrnnError, one_line, printable
from .fileio import read_bytes, shown

N_BYTES = 256
MAX_CODEPOINT = 0x110000


UNKNOWN = ("error", "bytes")  # what `encode` does with a character outside the vocabulary


def check_unknown(unknown: object) -> None:
    if unknown not in UNKNOWN:
        raise BadValue(f"unknown must be one of {', '.join(map(repr, UNKNOWN))}, not {one_line(repr(unknown), 40)}")


def _code_points(text: str) -> np.ndarray:
    """The code points of `text`; one line for a lone surrogate, which is no character (Python makes one
    of each byte that is not UTF-8 in a command line's arguments)."""
    try:
        return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    except UnicodeEncodeError as e:
        raise BadValue(f"the text is not valid UTF-8 (character {e.start + 1} is {printable(text[e.start])})") from None


def _byte_token(b: int) -> str:
    return f"<0x{b:02X}>"


class CharTokenizer:
    """Character vocabulary with a policy for characters never seen in training."""

    def __init__(self, hf: Tokenizer):
        self.hf = hf
        vocab = hf.get_vocab()  # token -> id
        byte_tokens = {_byte_token(b) for b in range(N_BYTES)}
        self.chars: list[str] = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in byte_tokens]
        if any(len(c) != 1 for c in self.chars):
            raise CharrnnError("tokenizer.json is not a charrnn character vocabulary")
        if [vocab[c] for c in self.chars] != list(range(len(self.chars))):
            raise CharrnnError("tokenizer.json: character ids must come first and be contiguous")
        self.n_chars = len(self.chars)
        self.byte_fallback = all(t in vocab for t in byte_tokens)
        if self.byte_fallback and [vocab[_byte_token(b)] for b in range(N_BYTES)] != list(
            range(self.n_chars, self.n_chars + N_BYTES)
        ):
            raise CharrnnError("tokenizer.json: byte tokens must follow the characters in order")
        self.vocab_size = len(vocab)
        # code point -> id, -1 for unknown. 1.1M int32 = 4.4 MB; it is what makes encoding fast.
        self._table = np.full(MAX_CODEPOINT, -1, dtype=np.int32)
        self._table[[ord(c) for c in self.chars]] = np.arange(self.n_chars, dtype=np.int32)
        # id -> text, for decoding the ids a model emits; byte tokens are handled in `decode`.
        self._itos = self.chars + [""] * (self.vocab_size - self.n_chars)

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_chars(cls, chars: Iterable[str], byte_fallback: bool = True) -> CharTokenizer:
        chars = sorted(set(chars))
        if not chars:
            raise CharrnnError("cannot build a vocabulary from empty text")
        vocab = {c: i for i, c in enumerate(chars)}
        if byte_fallback:
            for b in range(N_BYTES):
                vocab[_byte_token(b)] = len(vocab)
        hf = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=byte_fallback, fuse_unk=False))
        hf.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
        return cls(hf)

    @classmethod
    def from_file(cls, path: str | Path) -> CharTokenizer:
        try:
            return cls.from_str(read_bytes(path, "tokenizer file").decode("utf-8"))
        except UnicodeDecodeError:
            raise CharrnnError(f"{shown(path)} is not a readable tokenizer (not UTF-8)") from None

    @classmethod
    def from_str(cls, text: str) -> CharTokenizer:
        try:
            hf = Tokenizer.from_str(text)
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise CharrnnError(f"unreadable tokenizer: {one_line(e, 120) or type(e).__name__}") from None
        return cls(hf)

    def to_str(self) -> str:
        return self.hf.to_str()

    def save(self, path: str | Path) -> None:
        # Pretty-printed so `tokenizer.json` is readable; tokenizers' own `save` writes the same JSON.
        Path(path).write_text(json.dumps(json.loads(self.to_str()), indent=2, ensure_ascii=False), encoding="utf-8")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and (self.chars, self.byte_fallback) == (other.chars, other.byte_fallback)

    # --- encoding -----------------------------------------------------------------------------
    def _lookup(self, cps: np.ndarray) -> np.ndarray:
        # Code points are < MAX_CODEPOINT by construction, so "clip" never clips; it skips the bounds
        # checks that make plain fancy indexing twice as slow.
        return np.take(self._table, cps, mode="clip")

    def unknown_chars(self, text: str) -> list[str]:
        """Characters of `text` outside the vocabulary, in order of first appearance."""
        cps = _code_points(text)
        unknown = cps[self._lookup(cps) < 0]
        return list(dict.fromkeys(chr(c) for c in unknown.tolist()))

    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        """Text -> int32 ids. `unknown` is 'error' (name the characters) or 'bytes' (UTF-8 byte tokens)."""
        check_unknown(unknown)
        cps = _code_points(text)
        ids = self._lookup(cps)
        missing = ids < 0
        if not missing.any():
            return ids
        bad = list(dict.fromkeys(chr(c) for c in cps[missing].tolist()))
        if unknown == "error" or not self.byte_fallback:
            shown = ", ".join(repr(c) for c in bad[:10]) + (" ..." if len(bad) > 10 else "")
            if unknown == "error":
                hint = "; --unknown bytes reads them as their UTF-8 bytes" if self.byte_fallback else ""
                raise CharrnnError(f"{len(bad)} character(s) not in the vocabulary: {shown}{hint}")
            raise CharrnnError(f"{len(bad)} character(s) not in the vocabulary, which has no byte fallback: {shown}")
        # Byte fallback: each unknown character expands to its UTF-8 bytes, exactly as tokenizers does.
        pieces = {c: [self.n_chars + b for b in c.encode("utf-8")] for c in bad}
        lengths = np.ones(len(ids), dtype=np.int64)
        pos = np.flatnonzero(missing)
        lengths[pos] = [len(pieces[chr(c)]) for c in cps[pos].tolist()]
        out = np.repeat(ids, lengths)
        starts = np.cumsum(lengths) - lengths
        for p, c in zip(pos.tolist(), cps[pos].tolist()):
            seq = pieces[chr(c)]
            out[starts[p] : starts[p] + len(seq)] = seq
        return out

    # --- decoding -----------------------------------------------------------------------------
    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        if all(i < self.n_chars for i in ids):
            return "".join(self._itos[i] for i in ids)
        return self.hf.decode(ids, skip_special_tokens=False)

    def id_to_char(self, i: int) -> str:
        """One character id -> its text (byte tokens have none on their own)."""
        return self._itos[i]
