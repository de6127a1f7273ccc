from __future__ import annotations

import warnings

import numpy as np
import pytest

from charrnn.memorization import NgramIndex, ngram_hashes, overlap

MOD = 1 << 64
P = 0x9E3779B97F4A7C15


def naive_share(sample: list[int], train: list[int], n: int) -> float | None:
    """The definition, with sets of tuples: no hashing, so no false matches."""
    if len(sample) < n:
        return None
    seen = {tuple(train[i : i + n]) for i in range(len(train) - n + 1)}
    grams = [tuple(sample[i : i + n]) for i in range(len(sample) - n + 1)]
    return sum(g in seen for g in grams) / len(grams)


def naive_hash(gram: list[int]) -> int:
    """The documented recurrence, h = n; h = h * P + (id + 1), in exact Python ints."""
    h = len(gram)
    for x in gram:
        h = (h * P + x + 1) % MOD
    return h


NS = (1, 2, 3, 5, 8)


@pytest.mark.parametrize("seed", range(6))
def test_matches_naive_on_random_texts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    alphabet = int(rng.integers(2, 6))  # small alphabets: many shared short n-grams, few long ones
    train = rng.integers(0, alphabet, int(rng.integers(30, 300)))
    start = int(rng.integers(0, len(train) - 20))
    copied = train[start : start + int(rng.integers(5, 20))]
    fresh = rng.integers(0, alphabet, int(rng.integers(0, 40)))
    sample = np.concatenate([fresh[: len(fresh) // 2], copied, fresh[len(fresh) // 2 :]])
    index = NgramIndex(train, ns=NS)
    got = index.shares(sample)
    want = {n: naive_share(sample.tolist(), train.tolist(), n) for n in NS}
    assert got == want  # exact: same counts over the same number of n-grams
    assert {n: index.share(sample, n) for n in NS} == want
    assert overlap(sample, train, ns=NS) == want


def test_hash_is_the_documented_recurrence() -> None:
    ids = np.array([0, 7, 0, 65535, 3, 3, 0], np.uint16)
    for n in (1, 2, 4, 7):
        want = [naive_hash(ids[i : i + n].tolist()) for i in range(len(ids) - n + 1)]
        got = ngram_hashes(ids, n)
        assert got.dtype == np.uint64 and got.tolist() == want


def test_verbatim_slice_is_one_and_absent_symbols_are_zero() -> None:
    rng = np.random.default_rng(1)
    train = rng.integers(0, 50, 2000).astype(np.uint16)
    index = NgramIndex(train)
    assert index.shares(train[123:623]) == {10: 1.0, 20: 1.0, 40: 1.0}
    assert index.shares(rng.integers(50, 100, 500)) == {10: 0.0, 20: 0.0, 40: 0.0}


def test_half_copy_half_fresh_gives_the_exact_count() -> None:
    rng = np.random.default_rng(2)
    train = rng.integers(0, 30, 1000)
    sample = np.concatenate([train[200:300], rng.integers(30, 60, 100)])
    # 100 copied characters hold 100 - n + 1 training n-grams; any n-gram touching a fresh symbol misses
    for n in (10, 20, 40):
        assert NgramIndex(train, ns=[n]).share(sample, n) == (100 - n + 1) / (200 - n + 1)
        assert naive_share(sample.tolist(), train.tolist(), n) == (100 - n + 1) / (200 - n + 1)


def test_duplicates_in_the_query_count_each_time() -> None:
    train = np.array([1, 2, 3, 4])
    index = NgramIndex(train, ns=[2])
    # 2-grams (1,2) (2,1) (1,2) (2,1) (1,2) (2,9): (1,2) is in training, three times out of six
    assert index.share(np.array([1, 2, 1, 2, 1, 2, 9]), 2) == 0.5
    assert index.share(np.array([3, 4] * 5), 2) == 5 / 9  # (3,4) five times, (4,3) four times


def test_shorter_than_n_is_none() -> None:
    index = NgramIndex(np.arange(100), ns=(3, 10))
    assert index.shares(np.arange(5)) == {3: 1.0, 10: None}
    assert index.share(np.arange(9), 10) is None
    assert index.share(np.array([], np.int64), 3) is None
    assert ngram_hashes(np.arange(4), 5).size == 0 and ngram_hashes(np.arange(4), 5).dtype == np.uint64
    assert ngram_hashes(np.arange(4), 4).size == 1


def test_training_text_shorter_than_n_matches_nothing() -> None:
    index = NgramIndex(np.arange(5), ns=(3, 10))
    assert index.distinct(10) == 0
    assert index.shares(np.arange(20)) == {3: 3 / 18, 10: 0.0}


def test_n_equal_one_counts_characters() -> None:
    index = NgramIndex(np.array([5, 6, 7]), ns=[1])
    assert index.share(np.array([5, 8, 6, 9]), 1) == 0.5
    assert index.distinct(1) == 3


def test_id_zero_and_the_largest_uint16_count() -> None:
    top = np.iinfo(np.uint16).max
    train = np.array([0, 0, 0, top, top, 0, top], np.uint16)
    index = NgramIndex(train, ns=(1, 2, 3))
    assert index.distinct(1) == 2 and index.distinct(2) == 4 and index.distinct(3) == 5
    assert index.shares(np.array([0, 0, 0, 0], np.uint16)) == {1: 1.0, 2: 1.0, 3: 1.0}
    assert index.shares(np.array([top, top, top], np.uint16)) == {1: 1.0, 2: 1.0, 3: 0.0}
    # a run of zeros is not a no-op: (0, 0, x) and (x,) and (0, x) are all different n-grams
    assert len({int(ngram_hashes(np.array([0] * k + [1]), k + 1)[0]) for k in range(5)}) == 5
    # the same ids in any dtype hash alike (the signed ones through their unsigned view)
    ids = np.array([0, 1, top, 2, 0])
    assert all(np.array_equal(ngram_hashes(ids.astype(t), 3), ngram_hashes(ids, 3))
               for t in (np.uint16, np.uint32, np.uint64, np.int32, np.int64))


def test_works_on_a_uint16_memmap(tmp_path) -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 65536, 5000).astype(np.uint16)
    path = tmp_path / "train.bin"
    data.tofile(path)
    train = np.memmap(path, dtype=np.uint16, mode="r")
    index = NgramIndex(train, ns=(4, 10))
    assert index.shares(np.asarray(data[1000:1100])) == {4: 1.0, 10: 1.0}
    assert index.shares(train[4000:]) == {4: 1.0, 10: 1.0}
    assert np.array_equal(ngram_hashes(train, 10), ngram_hashes(data, 10))


def test_order_matters() -> None:
    gram = [1, 2, 3, 4, 5]
    index = NgramIndex(np.array(gram), ns=[5])
    assert index.share(np.array(gram), 5) == 1.0
    for perm in ([5, 4, 3, 2, 1], [2, 1, 3, 4, 5], [1, 2, 3, 5, 4], [3, 4, 5, 1, 2]):
        assert index.share(np.array(perm), 5) == 0.0


def test_no_overflow_warnings_on_large_ids() -> None:
    ids = np.full(1000, np.iinfo(np.uint64).max, np.uint64)  # every product and sum wraps
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index = NgramIndex(ids, ns=(1, 10, 40))
        assert index.shares(ids) == {1: 1.0, 10: 1.0, 40: 1.0}
    assert index.distinct(40) == 1


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        ngram_hashes(np.array([1, -1, 2]), 2)
    with pytest.raises(ValueError):
        ngram_hashes(np.zeros((2, 3), np.int64), 2)
    with pytest.raises(TypeError):
        ngram_hashes(np.array([1.0, 2.0]), 1)
    with pytest.raises(ValueError):
        ngram_hashes(np.arange(5), 0)
    with pytest.raises(ValueError):
        NgramIndex(np.arange(5), ns=(3,)).share(np.arange(5), 4)  # n the index was not built for
