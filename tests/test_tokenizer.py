import numpy as np
import pytest
from tokenizers import Tokenizer

from charrnn.errors import CharrnnError
from charrnn.tokenizer import CharTokenizer

TRICKY = "line one\r\nline\ttwo\n  emoji 😀🎉 combining e\u0301 and é, nul-free \u200b zero-width, CJK 汉字\r\n"


def test_round_trip_is_exact_for_tricky_text():
    tok = CharTokenizer.from_chars(TRICKY)
    ids = tok.encode(TRICKY)
    assert tok.decode(ids) == TRICKY
    assert len(ids) == len(TRICKY)  # one id per code point: CRLF stays two characters


def test_ids_agree_with_tokenizers_including_byte_fallback(tmp_path):
    tok = CharTokenizer.from_chars("abc \n\r")
    text = "abc\r\n cab 😀 é\u0301 ba"  # unknown characters, several bytes each
    ours = tok.encode(text, unknown="bytes")
    tok.save(tmp_path / "tokenizer.json")
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert ours.tolist() == hf.encode(text).ids
    assert tok.decode(ours) == text
    assert hf.decode(ours.tolist()) == text


def test_ids_follow_sorted_characters_like_nanogpt():
    text = "hello world\n"
    tok = CharTokenizer.from_chars(text)
    chars = sorted(set(text))
    assert tok.chars == chars
    assert tok.encode("hello").tolist() == [chars.index(c) for c in "hello"]
    assert tok.vocab_size == len(chars) + 256


def test_unknown_characters_error_names_them():
    tok = CharTokenizer.from_chars("abc")
    with pytest.raises(CharrnnError, match=r"'x'.*'😀'"):
        tok.encode("abx😀x", unknown="error")
    assert tok.unknown_chars("abx😀x") == ["x", "😀"]


def test_without_byte_fallback_unknowns_cannot_be_read():
    tok = CharTokenizer.from_chars("abc", byte_fallback=False)
    assert tok.vocab_size == 3
    with pytest.raises(CharrnnError, match="no byte fallback"):
        tok.encode("abz", unknown="bytes")


def test_serialised_tokenizer_round_trips(tmp_path):
    tok = CharTokenizer.from_chars(TRICKY)
    tok.save(tmp_path / "t.json")
    again = CharTokenizer.from_file(tmp_path / "t.json")
    assert again == tok
    assert np.array_equal(again.encode(TRICKY), tok.encode(TRICKY))


def test_garbage_tokenizer_file_is_a_clear_error(tmp_path):
    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(CharrnnError, match="unreadable tokenizer"):
        CharTokenizer.from_file(tmp_path / "t.json")
