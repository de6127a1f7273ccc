import pytest
import torch

from charrnn import Sampler
from charrnn import checkpoint as ck
from charrnn.errors import CharrnnError
from charrnn.sampler import SampleConfig, filter_logits


@pytest.fixture(scope="module")
def sampler(trained_run):
    return Sampler.load(trained_run)


def test_same_seed_same_text_and_other_seeds_differ(sampler):
    a = sampler.sample(prime="KING:", length=200, temperature=1.0, seed=1)
    b = sampler.sample(prime="KING:", length=200, temperature=1.0, seed=1)
    c = sampler.sample(prime="KING:", length=200, temperature=1.0, seed=2)
    assert a == b and a != c
    assert a.startswith("KING:") and len(a) == len("KING:") + 200


def test_stream_yields_the_same_text_as_sample(sampler):
    pieces = list(sampler.stream(prime="LORD:", length=120, seed=5, temperature=0.9))
    assert pieces[0] == "LORD:" and len(pieces) > 100  # character by character, not all at the end
    assert "".join(pieces) == sampler.sample(prime="LORD:", length=120, seed=5, temperature=0.9)


def test_greedy_follows_the_argmax_of_the_full_forward_pass(sampler):
    sampler = Sampler(sampler.model, sampler.tok, weights="fp32")  # the exact step path (auto may pick int8)
    text = sampler.sample(prime="QUEEN:\n", length=40, temperature=0)
    ids = torch.as_tensor(sampler.tok.encode(text)).unsqueeze(0)
    logits, _, _ = sampler.model(ids[:, :-1])
    predicted = logits[0, len("QUEEN:\n") - 1:, : sampler.tok.n_chars].argmax(-1)
    assert predicted.tolist() == ids[0, len("QUEEN:\n"):].tolist()
    assert sampler.sample(prime="QUEEN:\n", length=40, top_k=1, seed=3) == text


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, 1.0, 2, None)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, 1.0, None, 0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, 1.0, None, 0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, 1.0, None, 0.1)).tolist() == [[True, False, False, False]]


def test_stop_string_ends_the_sample_before_it(sampler):
    full = sampler.sample(prime="KING:", length=300, seed=4)
    cut = full.index("\n", len("KING:"))
    stopped = sampler.sample(prime="KING:", length=300, seed=4, stop=["\n"])
    assert stopped == full[:cut]
    streamed = "".join(sampler.stream(prime="KING:", length=300, seed=4, stop=["\n"]))
    assert streamed == stopped


def test_batched_samples(sampler):
    texts = sampler.sample_many(SampleConfig(length=50, prime="FOOL:", seed=9), 4)
    assert len(texts) == 4 and all(t.startswith("FOOL:") and len(t) == 55 for t in texts)
    assert len(set(texts)) > 1
    assert texts == sampler.sample_many(SampleConfig(length=50, prime="FOOL:", seed=9), 4)


def test_unknown_prime_characters(sampler):
    with pytest.raises(CharrnnError, match="'Z'"):
        sampler.sample(prime="Zebra", length=5)
    text = sampler.sample(prime="Zébra ", length=20, unknown="bytes", seed=1)
    assert text.startswith("Zébra ") and len(text) == len("Zébra ") + 20


def test_byte_tokens_are_never_sampled(sampler):
    chars = set(sampler.tok.chars)
    text = sampler.sample(length=2000, temperature=3.0, seed=0)
    assert set(text) <= chars


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=0),
                                 dict(length=-1), dict(stop=[""])])
def test_nonsense_settings_are_refused(sampler, bad):
    with pytest.raises(CharrnnError):
        sampler.sample(**bad)


def test_load_from_a_checkpoint_file_or_folder(trained_run):
    a = Sampler.load(trained_run / ck.LAST).sample(length=30, seed=1)
    assert len(a) == 30
    assert Sampler.load(trained_run).sample(length=30, seed=1) == \
           Sampler.load(trained_run / ck.BEST).sample(length=30, seed=1)
