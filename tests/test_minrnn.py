"""minGRU and minLSTM: the parallel pass against the sequential step, the scan against a numeric
gradient, and the family through training, resume, grad-accum, sampling, eval and torchrun."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_text

from charrnn import checkpoint as ck
from charrnn.analysis import eval_run
from charrnn.errors import CharrnnError
from charrnn.families import model_config, param_count
from charrnn.families.minrnn import model as minrnn
from charrnn.families.minrnn.model import MinRNN, scan
from charrnn.sampler import Sampler
from charrnn.tokenizer import CharTokenizer
from charrnn.training import RunOptions, train

KINDS = ("mingru", "minlstm")
TINY = dict(n_layers=2, hidden=32, dropout=0.0, batch_size=4, seq_len=16, max_steps=40, lr=1e-2, warmup_steps=5,
            seed=7)


def _model(kind, layers=2, hidden=48, seed=0):
    torch.manual_seed(seed)
    return MinRNN(model_config(vocab_size=70, n_outputs=60, model=kind, n_layers=layers, hidden=hidden)).eval()


def _naive(z_logit, cand, h0):
    """h_t = (1 - z_t) h_{t-1} + z_t g(cand_t), one step at a time, in float64, g by its definition."""
    h, out = h0.double(), []
    for zl, c in zip(z_logit.double(), cand.double()):
        z = torch.sigmoid(zl)
        h = (1 - z) * h + z * torch.where(c >= 0, c + 0.5, torch.sigmoid(c))
        out.append(h)
    return torch.stack(out)


@pytest.mark.parametrize("parallel", [True, False], ids=["log-space parallel scan", "one pass over time"])
def test_both_scans_solve_the_recurrence_and_have_its_gradient(parallel):
    torch.manual_seed(0)
    z_logit = torch.randn(300, 3, 8) * 3  # saturated gates too: z from 1e-4 to 1 - 1e-4
    cand = torch.randn(300, 3, 8) * 2
    h0 = torch.rand(3, 8)
    got = scan(z_logit, cand, h0, parallel=parallel)
    want = _naive(z_logit, cand, h0)
    assert ((got.double() - want).abs() / want).max() < 1e-5
    args = (torch.randn(37, 2, 3, dtype=torch.double), torch.randn(37, 2, 3, dtype=torch.double),
            torch.rand(2, 3, dtype=torch.double))
    assert torch.autograd.gradcheck(lambda a, b, h: scan(a, b, h, parallel=parallel),
                                    tuple(x.requires_grad_() for x in args))


def test_a_zero_state_is_exact_in_the_log_space_scan():
    z_logit, cand = torch.randn(5, 2, 4), torch.randn(5, 2, 4)
    torch.testing.assert_close(scan(z_logit, cand, torch.zeros(2, 4), parallel=True),
                               _naive(z_logit, cand, torch.zeros(2, 4)).float(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("parallel", [True, False], ids=["log-space parallel scan", "one pass over time"])
@pytest.mark.parametrize("kind", KINDS)
def test_sequential_step_equals_the_parallel_pass_over_1000_characters(kind, parallel, monkeypatch):
    """Training's chunks (state carried between them) and sampling's steps give the same logits."""
    real = minrnn.scan
    monkeypatch.setattr(minrnn, "scan", lambda a, b, h: real(a, b, h, parallel=parallel))
    m = _model(kind)
    ids = torch.randint(0, 60, (2, 1000))
    state, pieces = None, []
    for chunk in ids.split(256, 1):
        logits, _, state = m(chunk, state)
        pieces.append(logits)
    parallel_logits = torch.cat(pieces, 1)
    step_state, steps = None, []
    for t in range(ids.size(1)):
        logits, step_state = m.step(ids[:, t], step_state)
        steps.append(logits)
    assert (torch.stack(steps, 1) - parallel_logits).abs().max() < 1e-5
    assert (step_state[0] - state[0]).abs().max() < 1e-5
    logits, pre = m.prefill(ids[:, :300])  # the sampler's prime: the parallel pass, then one step
    assert (logits - parallel_logits[:, 299]).abs().max() < 1e-5


@pytest.mark.parametrize("kind", KINDS)
def test_chunks_with_carried_state_equal_one_pass(kind):
    m = _model(kind, layers=3)
    ids = torch.randint(0, 70, (2, 50))  # byte tokens (60..69) are read too
    full, _, full_state = m(ids)
    state, pieces = None, []
    for chunk in ids.split([7, 20, 1, 22], 1):
        logits, _, state = m(chunk, state)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state[0], full_state[0], rtol=1e-5, atol=1e-5)
    assert full.shape == (2, 50, 60) and full_state[0].shape == (3, 2, 48)


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_autocast_trains_with_the_scan_in_fp32(kind):
    m = _model(kind).train()
    ids = torch.randint(0, 60, (2, 33))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss, state = m(ids[:, :-1], None, ids[:, 1:])
    loss.backward()
    assert state[0].dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_param_count_and_instruments(kind):
    m = _model(kind, layers=3, hidden=24)
    assert param_count(m.config) == m.num_params()
    ids = torch.randint(0, 60, (300,))
    traces = list(m.iter_trace(ids, chunk=128))
    logits = torch.cat([t.logits for t in traces])
    torch.testing.assert_close(logits, m(ids[None])[0][0], rtol=1e-5, atol=1e-5)  # the trace is the model
    gates = traces[0].gates
    assert set(gates) == set(minrnn.GATES[kind]) and all(((g >= 0) & (g <= 1)).all() for g in gates.values())
    if kind == "minlstm":  # the normalised gates add up to one
        torch.testing.assert_close(gates["forget"] + gates["input"], torch.ones_like(gates["input"]))
    g = m.grad_through_time(torch.randint(0, 60, (4, 40)), 16)
    assert g.shape == (4, 16) and torch.isfinite(g).all() and (g > 0).all()


def test_gradient_through_time_agrees_with_a_numeric_derivative():
    """torch-rnn's check: perturb the state k characters back, watch the loss move."""
    model = _model("minlstm", layers=2, hidden=6).double()
    rows = torch.randint(0, 60, (1, 12), generator=torch.Generator().manual_seed(6))
    k, W = 4, rows.size(1)
    with torch.no_grad():
        state = model(rows[:, :W - 1 - k])[2][0]  # after reading the input k characters before the last

        def loss(s):
            logits = model(rows[:, W - 1 - k:W - 1], (s,))[0]
            return F.cross_entropy(logits[0, -1:], rows[0, -1:], reduction="sum").item()

        eps, grad_sq = 1e-6, 0.0
        for idx in np.ndindex(*state.shape):
            plus, minus = state.clone(), state.clone()
            plus[idx] += eps
            minus[idx] -= eps
            grad_sq += ((loss(plus) - loss(minus)) / (2 * eps)) ** 2
    got = model.grad_through_time(rows, 4)[0, k - 1].item()
    assert got == pytest.approx(grad_sq ** 0.5, rel=1e-5)


def _opts(corpus, out, **kw):
    return RunOptions(corpus=str(corpus), out=out, precision="fp32", device="cpu", quiet=True, sample_len=0, **kw)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "play.txt"
    path.write_text(make_text(20_000), encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_trains_resumes_exactly_samples_and_evaluates(kind, corpus, tmp_path):
    settings = dict(TINY, model=kind, log_interval=1, eval_interval=10)
    whole = train(_opts(corpus, tmp_path / "a"), settings)
    records = ck.read_metrics(tmp_path / "a", "train")
    assert records[-1]["loss"] < records[0]["loss"] - 1.0  # it learns
    train(_opts(corpus, tmp_path / "b"), settings,
          on_trainer=lambda t: t.hooks.on_step.append(lambda t: t.request_stop() if t.progress.step == 17 else None))
    train(_opts(corpus, tmp_path / "b", resume=True), {})
    assert [r["loss"] for r in ck.read_metrics(tmp_path / "b", "train")] == [r["loss"] for r in records]
    wa, wb = (ck.load_checkpoint(tmp_path / d / ck.LAST)["model"] for d in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    result = eval_run(tmp_path / "a", str(corpus))
    assert math.isclose(result.loss_nats, whole["best_val"], rel_tol=1e-4)
    text = Sampler.load(tmp_path / "a").sample(prime="KING", length=80, seed=1)
    assert text.startswith("KING") and len(text) == 84


def test_grad_accum_gives_the_same_steps(corpus, tmp_path):
    settings = dict(TINY, model="mingru", max_steps=12, eval_interval=6)
    train(_opts(corpus, tmp_path / "one"), settings)
    train(_opts(corpus, tmp_path / "acc"), {**settings, "grad_accum": 2})
    a, b = (ck.load_checkpoint(tmp_path / d / ck.LAST)["model"] for d in ("one", "acc"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fbgemm", [True, False], ids=["int8 available", "no fbgemm"])
def test_int8_step_weights_where_fbgemm_runs(fbgemm, monkeypatch):
    from charrnn import quant

    if fbgemm and not quant.int8_supported():
        pytest.skip("this torch build has no fbgemm")
    monkeypatch.setattr(quant, "int8_supported", lambda: fbgemm)
    tok = CharTokenizer.from_chars("abcdefghij \n")
    m = MinRNN(model_config(vocab_size=tok.vocab_size, n_outputs=tok.n_chars, model="minlstm", n_layers=2, hidden=32))
    assert Sampler(m, tok, weights="auto").weights == ("int8" if fbgemm else "fp32")
    if not fbgemm:
        with pytest.raises(CharrnnError, match="int8 weights need a CPU with fbgemm"):
            Sampler(m, tok, weights="int8")
        return
    ids = torch.randint(0, tok.n_chars, (3, 40))
    from charrnn.quant import Int8Linear

    assert isinstance(m._stepper("int8").head, Int8Linear)  # int8 is what runs, not a silent fp32
    exact, approx = (m.prefill(ids, weights=w)[0].softmax(-1) for w in ("fp32", "int8"))
    assert (exact - approx).abs().max() > 0  # (an fp32 step would give exactly the same numbers)
    assert (exact - approx).abs().max() < 0.02  # an approximation, close to the exact step
