"""Corpora as data: read and check their text, encode it once into a memmapped id cache, and split it
(the batches are cut by batches.py, as each model's family asks).

A corpus is read in chunks and its ids live in a `numpy.memmap`, so a corpus larger than RAM trains.
"""

from __future__ import annotations

import codecs
import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .corpora import file_sha256
from .errors import CharrnnError
from .fileio import atomic_file, open_regular, reason, shown
from .tokenizer import MAX_CODEPOINT, CharTokenizer

CHUNK_CHARS = 1 << 22  # 4M characters (bytes) per read: ~100 MB of transient arrays whatever the corpus size
BOM = b"\xef\xbb\xbf"


# --- reading text ----------------------------------------------------------------------------------
def has_bom(path: Path) -> bool:
    with open_regular(path, "text file") as f:
        return f.read(3) == BOM


def iter_text(path: Path) -> Iterator[str]:
    """The corpus as text chunks: UTF-8 strictly, a leading BOM dropped, CRLF kept as it is.

    Bytes are read and decoded incrementally (a character split between two reads is joined):
    twice as fast as a text-mode file, whose decoder also tracks newlines.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    offset = 0  # bytes decoded before this read, for error messages
    try:
        with open_regular(path, "text file") as f:
            started = False  # the first character has been read (only there is a BOM dropped)
            while True:
                block = f.read(CHUNK_CHARS)
                if b"\x00" in block:  # checked before decoding, so a binary file is named as such
                    raise CharrnnError(f"{shown(path)} looks binary (it holds NUL bytes), not text")
                chunk = decoder.decode(block, final=not block)
                if not started and chunk:
                    started = True
                    chunk = chunk[1:] if chunk.startswith("\ufeff") else chunk
                if chunk:
                    yield chunk
                if not block:
                    return
                offset += len(block)
    except UnicodeDecodeError as e:
        raise CharrnnError(f"{shown(path)} is not UTF-8 text ({e.reason} near byte {offset + e.start})") from None
    except OSError as e:
        raise CharrnnError(f"cannot read {shown(path)}: {reason(e)}") from None


def read_text(path: Path) -> str:
    return "".join(iter_text(path))


# A corpus with thousands of distinct characters (Unicode tables, many scripts) pays for every one of
# them in each step's output layer, however rarely it occurs (50 MB of Python's standard library holds
# thousands, most seen a handful of times), and the output layer can then cost more than the recurrence.
# So above MANY_CHARS distinct characters, and only with byte fallback, those seen fewer than RARE_COUNT
# times are left out of the vocabulary: read as their UTF-8 bytes, never predicted, scored as any
# character outside the vocabulary (models.unscored_loss). benchmarks/README.md, "A large alphabet".
MANY_CHARS = 1024
RARE_COUNT = 5


def build_tokenizer(path: Path, byte_fallback: bool = True) -> CharTokenizer:
    """The vocabulary of a corpus."""
    return scan_corpus(path, byte_fallback)[0]


def vocabulary(counts: np.ndarray, byte_fallback: bool = True) -> list[str]:
    """The characters a corpus's vocabulary holds, from its code points' counts (`MANY_CHARS`)."""
    seen = np.flatnonzero(counts)
    if byte_fallback and len(seen) > MANY_CHARS:
        seen = seen[counts[seen] >= RARE_COUNT]
    return [chr(c) for c in seen.tolist()]


def scan_corpus(path: Path, byte_fallback: bool = True) -> tuple[CharTokenizer, int, int]:
    """The vocabulary of a corpus, its length in characters, and how many distinct characters the
    vocabulary leaves to byte fallback (`MANY_CHARS`); counted chunk by chunk (bincount over code
    points: fast)."""
    counts = np.zeros(MAX_CODEPOINT, dtype=np.int64)
    n = 0
    for chunk in iter_text(path):
        cps = np.frombuffer(chunk.encode("utf-32-le"), dtype=np.uint32)
        counts += np.bincount(cps, minlength=MAX_CODEPOINT)
        n += len(cps)
    if n == 0:
        raise CharrnnError(f"{shown(path)} is empty")
    chars = vocabulary(counts, byte_fallback)
    if not chars:  # every character rare: a vocabulary of bytes alone could predict nothing
        chars = vocabulary(counts, byte_fallback=False)
    return CharTokenizer.from_chars(chars, byte_fallback=byte_fallback), n, int(np.count_nonzero(counts)) - len(chars)


def training_unknown(tok: CharTokenizer) -> str:
    """How a run encodes its own corpus: characters the vocabulary left out (`MANY_CHARS`) as bytes."""
    return "bytes" if tok.byte_fallback else "error"


# --- the id cache ----------------------------------------------------------------------------------
# <corpus sha256, 16 hex>-<vocabulary key, 12 hex>-<unknown policy>.<dtype>: the name says what the ids are
CACHE_FILE = r"[0-9a-f]{16}-[0-9a-f]{12}-(?:error|bytes)\.uint(?:16|32)"


def _vocab_key(tok: CharTokenizer) -> str:
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()[:12]


def encode_corpus(path: Path, tok: CharTokenizer, cache_dir: Path | None, unknown: str = "error",
                  sha256: str | None = None) -> np.ndarray:
    """Ids of the whole corpus as a read-only memmap, cached under `cache_dir`.

    The cache file is keyed by the corpus content and the vocabulary, so a changed file or another
    vocabulary never reads stale ids. It is written to a temporary name and renamed when complete, and
    checked each time it is read (`_cached`): a damaged one (truncated, overwritten, emptied) is
    encoded again. With `cache_dir=None` the ids are encoded into memory instead. `sha256` is the
    corpus file's digest when the caller already has it.
    """
    dtype = _dtype(tok)
    if cache_dir is None:  # nowhere to cache: encode into memory
        ids = np.concatenate([tok.encode(c, unknown=unknown).astype(dtype) for c in iter_text(path)] or [np.zeros(0, dtype)])
        if len(ids) == 0:
            raise CharrnnError(f"{shown(path)} is empty")
        return ids
    cache = _cache_file(cache_dir, sha256 or file_sha256(path), tok, unknown)
    ids = _cached(cache, dtype, tok.vocab_size)
    if ids is None:
        with atomic_file(cache) as out:  # complete, or not there at all
            written = 0
            for chunk in iter_text(path):
                written += out.write(memoryview(tok.encode(chunk, unknown=unknown).astype(dtype)))  # no bytes copy
            if not written:  # (the temporary file goes with the error: no empty cache is left)
                raise CharrnnError(f"{shown(path)} is empty")
        ids = np.memmap(cache, dtype=dtype, mode="r")
    return ids


def cached_ids(cache_dir: Path, sha256: str, tok: CharTokenizer, unknown: str) -> np.ndarray | None:
    """The ids `encode_corpus` cached under `cache_dir` for the corpus of this digest and vocabulary, without
    the corpus file (moved or deleted since); None where there are none, or they are damaged."""
    dtype = _dtype(tok)
    return _cached(_cache_file(cache_dir, sha256, tok, unknown), dtype, tok.vocab_size)


def _dtype(tok: CharTokenizer) -> np.dtype:
    return np.dtype(np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32)


def _cache_file(cache_dir: Path, sha256: str, tok: CharTokenizer, unknown: str) -> Path:
    return cache_dir / f"{sha256[:16]}-{_vocab_key(tok)}-{unknown}.{_dtype(tok).name}"


def _cached(cache: Path, dtype: np.dtype, vocab_size: int) -> np.ndarray | None:
    """The ids in a cache file, or None where there is none or it is damaged: not a regular file, empty
    (no corpus encodes to nothing), a size that is not a whole number of ids, or an id outside the
    vocabulary (one vectorised pass over the memmap: cheap beside reading the corpus to encode it)."""
    try:
        st = cache.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or st.st_size % dtype.itemsize:
        return None
    ids = np.memmap(cache, dtype=dtype, mode="r")
    return ids if int(ids.max()) < vocab_size else None


def split(ids: np.ndarray, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Train is the first part, validation the last `val_frac`, contiguous (nanoGPT's split)."""
    n_train = int(len(ids) * (1 - val_frac))
    return ids[:n_train], ids[n_train:]
