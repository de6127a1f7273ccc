import hashlib
import json

import numpy as np
import pytest

from charrnn import corpora, data
from charrnn.batches import StreamBatcher
from charrnn.corpora import resolve_corpus
from charrnn.data import build_tokenizer, encode_corpus, iter_text, split
from charrnn.errors import CharrnnError


def test_bom_is_dropped_and_crlf_kept(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfab\r\ncd\r\n")
    assert "".join(iter_text(path)) == "ab\r\ncd\r\n"
    tok = build_tokenizer(path)
    assert "\ufeff" not in tok.chars and "\r" in tok.chars


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"ok text \xff\xfe broken", "not UTF-8"),
    (b"\x00\x01\x02binary\x00", "binary"),
])
def test_bad_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(CharrnnError, match=message):
        build_tokenizer(path)


def test_encode_cache_is_a_memmap_reused_and_keyed_by_content(tmp_path, corpus):
    tok = build_tokenizer(corpus)
    ids = encode_corpus(corpus, tok, tmp_path / "cache")
    assert isinstance(ids, np.memmap)
    assert tok.decode(ids) == corpus.read_text(encoding="utf-8")
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    encode_corpus(corpus, tok, tmp_path / "cache")
    assert files[0].stat().st_mtime_ns == mtime  # reused, not rewritten
    corpus.write_text(corpus.read_text()[::-1], encoding="utf-8")
    encode_corpus(corpus, tok, tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 2  # new content, new cache file


def test_encoding_in_chunks_equals_one_pass(tmp_path, corpus, monkeypatch):
    tok = build_tokenizer(corpus)
    whole = encode_corpus(corpus, tok, tmp_path / "a")
    monkeypatch.setattr(data, "CHUNK_CHARS", 777)
    assert np.array_equal(encode_corpus(corpus, tok, tmp_path / "b"), whole)


def test_split_matches_nanogpt_on_tinyshakespeare(shared_corpus, tmp_path):
    tok = build_tokenizer(shared_corpus)
    assert tok.n_chars == 65
    ids = encode_corpus(shared_corpus, tok, tmp_path)
    train, val = split(ids, 0.1)
    assert (len(train), len(val)) == (1_003_854, 111_540)
    assert np.array_equal(np.concatenate([train, val]), ids)


def test_batches_continue_stream_by_stream():
    ids = np.arange(1000) % 65000
    b = StreamBatcher(ids, batch_size=4, seq_len=10)
    L = (1000 - 1) // 4
    x0, y0 = b.batch(0, 0)
    x1, _ = b.batch(0, 1)
    assert x0.shape == (4, 10)
    assert np.array_equal(x0[:, 0].numpy(), np.arange(4) * L)  # stream b starts at b*L
    assert np.array_equal(y0.numpy(), x0.numpy() + 1)  # targets are the next character
    assert np.array_equal(x1[:, 0].numpy(), x0[:, -1].numpy() + 1)  # batch k+1 continues batch k
    # one epoch reads every stream once, contiguously, and no two streams overlap
    seen = np.concatenate([b.batch(0, k)[0].numpy() for k in range(b.batches_per_epoch(0))], axis=1)
    assert len(np.unique(seen)) == seen.size


def test_later_epochs_shift_offsets_deterministically():
    ids = np.arange(5000)
    b = StreamBatcher(ids, batch_size=4, seq_len=32, seed=3)
    starts = [int(b.batch(e, 0)[0][0, 0]) for e in range(6)]
    assert starts[0] == 0 and len(set(starts[1:])) > 1
    assert starts == [int(StreamBatcher(ids, 4, 32, seed=3).batch(e, 0)[0][0, 0]) for e in range(6)]


def test_corpus_too_small_for_one_batch():
    with pytest.raises(CharrnnError, match="corpus too small"):
        StreamBatcher(np.arange(100), batch_size=8, seq_len=64)


def test_catalog_name_uses_local_copy_from_env(tmp_path, monkeypatch):
    (tmp_path / "tinyshakespeare.txt").write_text("local copy\n")
    monkeypatch.setenv("CHARRNN_CORPORA", str(tmp_path))
    assert resolve_corpus("tinyshakespeare") == tmp_path / "tinyshakespeare.txt"
    monkeypatch.setenv("CHARRNN_CORPORA", str(tmp_path / "nowhere"))
    with pytest.raises(CharrnnError, match="holds no tinyshakespeare.txt"):
        resolve_corpus("tinyshakespeare")


def _fake_catalog(tmp_path, monkeypatch, payload: bytes, sha: str):
    source = tmp_path / "remote.txt"
    source.write_bytes(payload)
    repo = tmp_path / "corpora"
    repo.mkdir()
    (tmp_path / "catalog.json").write_text(json.dumps(
        {"demo": {"url": source.as_uri(), "sha256": sha, "bytes": len(payload), "description": "demo"}}))
    monkeypatch.setattr(corpora, "CATALOG", tmp_path / "catalog.json")
    monkeypatch.setattr(corpora, "REPO_CORPORA", repo)
    return repo


def test_catalog_download_is_verified_and_done_once(tmp_path, monkeypatch):
    payload = b"downloaded text\n"
    repo = _fake_catalog(tmp_path, monkeypatch, payload, hashlib.sha256(payload).hexdigest())
    path = resolve_corpus("demo", quiet=True)
    assert path == repo / "demo.txt" and path.read_bytes() == payload
    (tmp_path / "remote.txt").unlink()  # a second resolve must not download again
    assert resolve_corpus("demo", quiet=True) == path


def test_catalog_download_with_wrong_checksum_is_not_kept(tmp_path, monkeypatch):
    repo = _fake_catalog(tmp_path, monkeypatch, b"tampered\n", "0" * 64)
    with pytest.raises(CharrnnError, match="does not match its sha256"):
        resolve_corpus("demo", quiet=True)
    assert not (repo / "demo.txt").exists()
    assert not [p for p in repo.iterdir() if p.name.startswith(".demo")]


def test_reading_in_tiny_chunks_joins_split_characters_and_drops_only_the_leading_bom(tmp_path, monkeypatch):
    text = "\ufeffé😀 x\ufeff\r\n汉字" * 5  # a BOM inside the text is text; only the first is dropped
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(data, "CHUNK_CHARS", 1)  # one byte a read: every multi-byte character is split
    assert "".join(iter_text(path)) == text[1:]
    path.write_bytes("abc".encode() + b"\xff" + b"def")
    with pytest.raises(CharrnnError, match="near byte 3"):
        list(iter_text(path))


def test_a_runs_corpus_is_its_recorded_file_else_the_catalog_corpus_with_its_text(tmp_path, monkeypatch):
    payload = b"the run's own text\n"
    sha = hashlib.sha256(payload).hexdigest()
    repo = _fake_catalog(tmp_path, monkeypatch, payload, sha)
    recorded = tmp_path / "mine.txt"
    recorded.write_bytes(payload)
    assert corpora.run_corpus(str(recorded), sha) == recorded
    recorded.write_bytes(b"edited since\n")  # the file there holds other text now: the catalog's copy
    assert corpora.run_corpus(str(recorded), sha, quiet=True) == repo / "demo.txt"
    with pytest.raises(CharrnnError, match="has changed: name a corpus"):
        corpora.run_corpus(str(recorded), "0" * 64)
    recorded.unlink()
    with pytest.raises(CharrnnError, match="is not there any more"):
        corpora.run_corpus(str(recorded), "0" * 64)
