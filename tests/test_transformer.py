"""The Transformer baseline: its contract, causality, the key/value cache, the strided evaluation,
random-window batches, and training through the same pipeline as the RNNs."""

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charrnn import SampleConfig, Sampler
from charrnn import checkpoint as ck
from charrnn.batches import WindowBatcher
from charrnn.evaluate import evaluate_windows
from charrnn.families import build_model, family_of, model_config
from charrnn.families.transformer.model import GPT
from charrnn.models import window_start
from charrnn.tokenizer import CharTokenizer
from charrnn.training import RunOptions, train

TINY_GPT = dict(model="transformer", n_layers=2, hidden=32, heads=4, context=16, dropout=0.0, batch_size=8,
                max_steps=40, lr=3e-3, warmup_steps=5, seed=7)


def _gpt(context=8, layers=2, dropout=0.0, std=None, vocab=40, seed=0):
    torch.manual_seed(seed)
    m = GPT(model_config(vocab_size=vocab, model="transformer", n_layers=layers, hidden=16, heads=4, context=context,
                        dropout=dropout))
    if std is not None:  # larger weights: sharp, strongly context-dependent predictions
        with torch.no_grad():
            for p in m.parameters():
                if p.dim() >= 2:
                    p.normal_(0, std)
    return m.eval()


def _opts(corpus, out, **kw):
    return RunOptions(corpus=str(corpus), out=out, precision="fp32", device="cpu", quiet=True, sample_len=0, **kw)


def _records(run, kind):
    return [r for r in map(json.loads, (run / ck.METRICS).read_text().splitlines()) if r["kind"] == kind]


# --- the model ------------------------------------------------------------------------------------
def test_forward_contract_and_shapes():
    m = _gpt(context=8)
    idx = torch.randint(0, 40, (3, 8))
    logits, loss, state = m(idx, targets=idx)
    assert logits.shape == (3, 8, 40) and state is None
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert m(idx[:, :5])[0].shape == (3, 5, 40) and m(idx)[1] is None
    assert not family_of("transformer").stateful and family_of("lstm").stateful
    with pytest.raises(ValueError, match="longer than the context"):
        m(torch.randint(0, 40, (1, 9)))
    assert isinstance(build_model(m.config), GPT)
    assert m.head.weight is m.wte.weight  # tied: counted once
    tensors = m.state_dict()  # names the tied matrix twice
    assert m.num_params() == sum(t.numel() for t in tensors.values()) - tensors["head.weight"].numel()


def test_a_change_at_position_t_never_alters_logits_before_t():
    m = _gpt(context=12, layers=3, std=0.3)
    idx = torch.randint(0, 40, (2, 12))
    base = m(idx)[0]
    for t in range(12):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % 40
        out = m(changed)[0]
        assert torch.equal(out[:, :t], base[:, :t]), t
        assert not torch.allclose(out[:, t:], base[:, t:])  # and it does alter what comes after


def test_window_start_rule():
    # up to the context everything is visible; then the window jumps by context // 2 when full
    assert [window_start(t, 8) for t in range(1, 9)] == [0] * 8
    assert [window_start(t, 8) for t in range(9, 22)] == [4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12, 16]
    assert [window_start(t, 8, stride=1) for t in (8, 9, 10)] == [0, 1, 2]
    for t in range(1, 200):  # every prediction sees between context - stride + 1 and context characters
        assert 8 - 4 + 1 <= t - window_start(t, 8) <= 8 or t <= 4


@pytest.mark.parametrize("context", [1, 5, 8])
def test_step_and_prefill_equal_forward_over_the_window_past_the_context(context):
    m = _gpt(context=context, std=0.2)
    idx = torch.randint(0, 40, (3, 4 * context + 3))
    state = None
    for t in range(idx.size(1)):  # step through, sliding several times
        logits, state = m.step(idx[:, t], state)
        ref = m(idx[:, window_start(t + 1, context):t + 1])[0][:, -1]
        torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    for T in (1, context, context + 1, 3 * context + 2):
        logits, cache = m.prefill(idx[:, :T])
        torch.testing.assert_close(logits, m(idx[:, window_start(T, context):T])[0][:, -1], rtol=1e-5, atol=1e-5)
        assert cache.length == T - window_start(T, context)


class NoCache(torch.nn.Module):
    """The reference sampler path: a full forward pass over the window for every character."""

    def __init__(self, gpt, stride=None):
        super().__init__()
        self.gpt, self.stride = gpt, stride

    def _logits(self, hist):
        return self.gpt(hist[:, window_start(hist.size(1), self.gpt.config.context, self.stride):])[0][:, -1]

    def prefill(self, idx):
        return self._logits(idx), idx

    def step(self, idx, hist):
        hist = idx[:, None] if hist is None else torch.cat([hist, idx[:, None]], 1)
        return self._logits(hist), hist


def test_kv_cache_sampling_equals_no_cache_sampling_past_the_context():
    tok = CharTokenizer.from_chars("abcdefghij \n")
    m = _gpt(context=8, vocab=tok.vocab_size, std=0.3)
    cached, plain = Sampler(m, tok), Sampler(NoCache(m), tok)
    for kw in (dict(prime="abc", temperature=1.0, seed=3), dict(prime="", temperature=0.7, top_k=5, seed=4),
               dict(prime="hij" * 9, temperature=1.0, seed=5), dict(prime="ab", temperature=0)):
        a = cached.sample(length=60, **kw)  # 60 characters: the 8-character window slides many times
        assert a == plain.sample(length=60, **kw), kw
        assert a == cached.sample(length=60, **kw)  # seeded sampling is reproducible
    # the check has teeth: a window that slides one character at a time samples other text
    assert cached.sample(prime="abc", length=60, seed=3) != Sampler(NoCache(m, stride=1), tok).sample(
        prime="abc", length=60, seed=3)
    many = cached.sample_many(SampleConfig(length=30, prime="ab", seed=2), 3)  # a batch of streams
    assert many == plain.sample_many(SampleConfig(length=30, prime="ab", seed=2), 3) and len(set(many)) > 1


# --- evaluation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 9, 10, 17, 50])
@pytest.mark.parametrize("stride", [None, 1, 3, 8])
def test_strided_eval_equals_scoring_each_character_on_its_own(n, stride):
    m = _gpt(context=8, std=0.2)
    ids = np.random.default_rng(n).integers(0, 40, n)
    result = evaluate_windows(m, ids, torch.device("cpu"), context=m.config.context, stride=stride, batch_size=3,
                              per_char=True)
    brute = []
    for t in range(1, n):  # character t from its own window, one forward pass each
        x = torch.as_tensor(ids[window_start(t, 8, stride):t], dtype=torch.long)[None]
        brute.append(F.cross_entropy(m(x)[0][0, -1:], torch.tensor([int(ids[t])])).item())
    assert result.chars == n - 1  # every character after the first, exactly once
    np.testing.assert_allclose(result.losses, brute, rtol=1e-5, atol=1e-6)
    assert result.loss_nats == pytest.approx(np.mean(brute), rel=1e-5)


# --- batches --------------------------------------------------------------------------------------
def test_window_batches_are_a_pure_function_of_seed_epoch_and_k():
    ids = np.arange(3000)
    b = WindowBatcher(ids, batch_size=5, seq_len=16, seed=3)
    x, y = b.batch(2, 7)
    assert x.shape == y.shape == (5, 16) and x.dtype == torch.int64
    assert torch.equal(y, x + 1)  # windows of contiguous text, targets one ahead
    again = WindowBatcher(ids, batch_size=5, seq_len=16, seed=3).batch(2, 7)
    assert torch.equal(again[0], x)
    assert not torch.equal(b.batch(2, 8)[0], x) and not torch.equal(b.batch(3, 7)[0], x)
    assert b.batches_per_epoch(0) == 2999 // (5 * 16)
    starts = np.concatenate([b.batch(0, k)[0][:, 0].numpy() for k in range(200)])
    assert starts.min() < 100 and starts.max() > 2880  # the whole text is drawn from


def test_corpus_shorter_than_one_window():
    from charrnn.errors import CharrnnError

    with pytest.raises(CharrnnError, match="corpus too small"):
        WindowBatcher(np.arange(10), batch_size=2, seq_len=16)


# --- training through the pipeline ----------------------------------------------------------------
def test_transformer_loss_falls_below_the_unigram_entropy(corpus, tmp_path):
    text = corpus.read_text()
    unigram = -sum(n / len(text) * math.log(n / len(text)) for n in Counter(text).values())
    summary = train(_opts(corpus, tmp_path / "run"), dict(TINY_GPT, max_steps=150, log_interval=5))
    vals = [r["loss_nats"] for r in _records(tmp_path / "run", "val")]
    assert vals[-1] < unigram - 0.8 and summary["best_val"] == min(vals)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["seq_len"] == 16 and "embed" not in config["model"]  # windows of --context


def test_interrupted_and_resumed_transformer_run_equals_unbroken_run(corpus, tmp_path):
    settings = dict(TINY_GPT, dropout=0.1, log_interval=1, eval_interval=10)
    train(_opts(corpus, tmp_path / "a"), settings)
    stop = lambda t: t.hooks.on_step.append(lambda t: t.request_stop() if t.progress.step == 17 else None)  # noqa: E731
    assert train(_opts(corpus, tmp_path / "b"), settings, on_trainer=stop)["step"] == 17
    assert train(_opts(corpus, tmp_path / "b", resume=True), {})["step"] == 40
    assert [(r["step"], r["loss"]) for r in _records(tmp_path / "b", "train")] == \
           [(r["step"], r["loss"]) for r in _records(tmp_path / "a", "train")]
    wa, wb = (ck.load_checkpoint(tmp_path / d / ck.LAST)["model"] for d in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_rnn_checkpoints_keep_their_config_keys():
    old = {"vocab_size": 70, "model": "lstm", "n_layers": 2, "hidden": 64, "embed": 16, "dropout": 0.0}
    cfg = model_config(**old)  # a config written before the Transformer existed loads unchanged
    assert cfg.to_dict() == old
    assert set(model_config(vocab_size=5, model="transformer").to_dict()) == \
           {"vocab_size", "model", "n_layers", "hidden", "dropout", "heads", "context"}


# --- on a GPU -------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_cache_equals_forward_and_sampling_matches_no_cache():
    m = _gpt(context=16, std=0.2).cuda()
    idx = torch.randint(0, 40, (4, 70), device="cuda")
    state = None
    for t in range(idx.size(1)):
        logits, state = m.step(idx[:, t], state)
        ref = m(idx[:, window_start(t + 1, 16):t + 1])[0][:, -1]
        torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)
    tok = CharTokenizer.from_chars("abcdefghij \n")
    m = _gpt(context=8, vocab=tok.vocab_size, std=0.3).cuda()
    a = Sampler(m, tok, "cuda").sample(prime="abc", length=50, temperature=0)
    assert a == Sampler(NoCache(m), tok, "cuda").sample(prime="abc", length=50, temperature=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_transformer_trains_in_mixed_precision_and_resumes(corpus, tmp_path):
    settings = dict(TINY_GPT, max_steps=30, log_interval=1, eval_interval=10)
    opts = lambda out, **kw: RunOptions(corpus=str(corpus), out=out, device="cuda", precision="auto",  # noqa: E731
                                        quiet=True, sample_len=0, **kw)
    summary = train(opts(tmp_path / "a"), settings)
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["precision"] in ("bf16", "fp16") and summary["step"] == 30
    vals = [r["loss_nats"] for r in _records(tmp_path / "a", "val")]
    assert vals[-1] < vals[0]
    stop = lambda t: t.hooks.on_step.append(lambda t: t.request_stop() if t.progress.step == 12 else None)  # noqa: E731
    train(opts(tmp_path / "b"), settings, on_trainer=stop)
    train(opts(tmp_path / "b", resume=True), {})
    got = [r["loss"] for r in _records(tmp_path / "b", "train")]
    want = [r["loss"] for r in _records(tmp_path / "a", "train")]
    np.testing.assert_allclose(got, want, rtol=1e-3)  # cuDNN/cuBLAS kernels need not be bitwise repeatable
    text = Sampler.load(tmp_path / "a", device="cuda").sample(prime="KING:", length=40, seed=1)
    assert text.startswith("KING:") and len(text) == 45
