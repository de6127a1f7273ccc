"""4. Corpus encoding: charrnn against `tokenizers`' own encoder on the same 100 MB of text.

The text is ASCII-heavy play-like text with a sprinkle of non-ASCII words (accents, curly quotes, an
emoji, CJK), so nothing can take an ASCII-only path. Measured, in MB of UTF-8 per second:

- `build_tokenizer`: the vocabulary pass over the file;
- `encode_corpus`: file -> memory-mapped id cache, end to end (hashing, reading, decoding, encoding,
  writing), which is what `charrnn train` does before its first step;
- `CharTokenizer.encode` alone on the same text, in the 4M-character chunks `encode_corpus` uses;
- `tokenizers.Tokenizer.encode_batch_fast` over the text's lines, in batches of 10,000 lines (its
  parallel batch API; one `encode` call on one long string is far slower), using the run's own
  `tokenizer.json`. Its ids are compared with charrnn's, line by line, and must be identical.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from charrnn import data
from charrnn.data import build_tokenizer, encode_corpus, iter_text

from .common import Section, write_corpus


def measure(quick: bool = False) -> Section:
    sec = Section("encoding")
    n_bytes = (2 << 20) if quick else (100 << 20)
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as tmp:
        tmp = Path(tmp)
        path = write_corpus(tmp / "corpus.txt", n_bytes, seed=1)
        mb = path.stat().st_size / 1e6

        t0 = time.perf_counter()
        tok = build_tokenizer(path)
        t_vocab = time.perf_counter() - t0
        t0 = time.perf_counter()
        ids = encode_corpus(path, tok, tmp / "cache")
        t_corpus = time.perf_counter() - t0
        t_encode = 0.0
        for chunk in iter_text(path):
            t0 = time.perf_counter()
            tok.encode(chunk)
            t_encode += time.perf_counter() - t0

        # tokenizers, from the same tokenizer.json a run folder holds
        from tokenizers import Tokenizer

        tok.save(tmp / "tokenizer.json")
        hf = Tokenizer.from_file(str(tmp / "tokenizer.json"))
        t_hf, pos, mismatch = 0.0, 0, None
        for chunk in iter_text(path):
            lines = chunk.splitlines(keepends=True)  # concatenated, the lines' ids are the chunk's ids
            for i in range(0, len(lines), 10_000):
                batch = lines[i : i + 10_000]
                t0 = time.perf_counter()
                encs = hf.encode_batch_fast(batch, add_special_tokens=False)
                t_hf += time.perf_counter() - t0
                got = np.fromiter((t for e in encs for t in e.ids), dtype=np.int64)
                want = np.asarray(ids[pos : pos + len(got)], dtype=np.int64)
                if mismatch is None and not np.array_equal(got, want):
                    mismatch = pos  # the first batch that differs starts here
                pos += len(got)
        identical = mismatch is None and pos == len(ids)

    sec.row(f"text: {mb:.0f} MB UTF-8, {len(ids):,} characters", round(mb, 1), "MB",
            f"{tok.n_chars} distinct characters, chunk {data.CHUNK_CHARS:,} characters")
    sec.row("charrnn build_tokenizer (vocabulary pass)", round(mb / t_vocab, 1), "MB/s", f"{t_vocab:.2f} s")
    sec.row("charrnn encode_corpus (file -> id cache)", round(mb / t_corpus, 1), "MB/s", f"{t_corpus:.2f} s")
    sec.row("charrnn CharTokenizer.encode (in memory)", round(mb / t_encode, 1), "MB/s", f"{t_encode:.2f} s")
    sec.row("tokenizers encode_batch_fast (lines, 10k a batch)", round(mb / t_hf, 1), "MB/s", f"{t_hf:.2f} s")
    sec.row("ids identical to tokenizers'", 1.0 if identical else 0.0, "",
            "yes" if identical else f"NO: first difference in the batch from id {mismatch}, {pos:,} of {len(ids):,} compared")
    sec.row("charrnn encode_corpus / tokenizers", round(t_hf / t_corpus, 1), "x")
    sec.bar("encode_corpus throughput (ids identical to tokenizers)", ">= 50 MB/s",
            round(mb / t_corpus, 1) if identical else 0.0, lambda v: v >= 50)
    return sec
