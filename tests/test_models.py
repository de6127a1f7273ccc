import pytest
import torch

from charrnn.device import cpu_supports_bf16
from charrnn.families import build_model, model_config
from charrnn.families.rnn import RNN_TYPES
from charrnn.families.rnn.model import CharRNN
from charrnn.models import PooledDropout
from charrnn.quant import int8_supported


def _model(kind, layers=2, dropout=0.0):
    torch.manual_seed(0)
    return CharRNN(model_config(vocab_size=50, model=kind, n_layers=layers, hidden=24, embed=8, dropout=dropout))


@pytest.mark.parametrize("kind", RNN_TYPES)
def test_forward_contract_and_shapes(kind):
    m = _model(kind)
    idx = torch.randint(0, 50, (3, 7))
    logits, loss, state = m(idx, targets=idx)
    assert logits.shape == (3, 7, 50)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert len(state) == (2 if kind == "lstm" else 1)
    assert all(s.shape == (2, 3, 24) for s in state)
    assert m(idx)[1] is None


@pytest.mark.parametrize("kind", RNN_TYPES)
def test_chunked_run_with_carried_state_equals_one_full_run(kind):
    m = _model(kind, layers=3).eval()
    idx = torch.randint(0, 50, (2, 30))
    full, _, full_state = m(idx)
    state, pieces = None, []
    for chunk in idx.split([7, 11, 1, 11], dim=1):
        logits, _, state = m(chunk, state)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-5, atol=1e-5)
    for a, b in zip(state, full_state):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", RNN_TYPES)
def test_step_path_equals_fused_forward(kind):
    m = _model(kind, dropout=0.3).eval()
    idx = torch.randint(0, 50, (4, 12))
    full, _, full_state = m(idx)
    state, steps = None, []
    for t in range(idx.size(1)):
        logits, state = m.step(idx[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-5, atol=1e-5)
    for a, b in zip(state, full_state):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", RNN_TYPES)
def test_weight_drop_masks_the_recurrent_matrices_in_training_only(kind):
    torch.manual_seed(0)
    m = CharRNN(model_config(vocab_size=50, model=kind, n_layers=2, hidden=24, embed=8, weight_drop=0.5))
    plain = CharRNN(model_config(vocab_size=50, model=kind, n_layers=2, hidden=24, embed=8))
    plain.load_state_dict(m.state_dict())
    idx = torch.randint(0, 50, (3, 9))
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    # evaluation and sampling read the weights as they are
    torch.testing.assert_close(m.eval()(idx)[0], plain.eval()(idx)[0], rtol=0, atol=0)
    m.train(), plain.train()
    first, second, ref = m(idx, targets=idx)[1], m(idx, targets=idx)[1], plain(idx, targets=idx)[1]
    assert first != second and first != ref  # a fresh mask for every batch
    m.zero_grad()
    m(idx, targets=idx)[1].backward()
    for layer in range(2):  # entries of W_hh masked out for the batch get no gradient; W_ih is untouched
        hh, ih = getattr(m.rnn, f"weight_hh_l{layer}").grad, getattr(m.rnn, f"weight_ih_l{layer}").grad
        assert 0.3 < (hh == 0).float().mean() < 0.7 and (ih == 0).float().mean() < 0.1
    assert all(torch.equal(p, before[n]) for n, p in m.named_parameters())  # the mask never touches the weights


def test_pooled_dropout_drops_and_scales_as_dropout_does_with_a_fresh_mask_each_call():
    drop = PooledDropout(0.25)
    x = torch.ones(4, 50, 64, requires_grad=True)
    torch.manual_seed(3)
    masks = [drop(x) for _ in range(40)]
    for m in masks:  # each mask: entries 0 or 1 / (1 - p), zero at rate p
        assert set(m.unique().tolist()) <= {0.0, torch.tensor(1 / 0.75).item()}
        assert 0.2 < (m == 0).float().mean() < 0.3
    # across calls the same entry is dropped independently: its mean over calls is about 1, not 0 or 4/3
    per_entry = torch.stack(masks).mean(0)
    assert (per_entry == masks[0]).float().mean() < 0.01 and abs(per_entry.mean().item() - 1) < 0.02
    masks[0].sum().backward()  # the gradient flows through the kept entries only, scaled
    torch.testing.assert_close(x.grad, masks[0].detach())
    torch.manual_seed(3)  # the draw follows the global RNG: a resumed run draws the same masks
    assert torch.equal(drop(x), masks[0])
    assert drop.eval()(x) is x and PooledDropout(0.0)(x) is x


def test_pooled_dropout_draws_afresh_inside_a_compiled_graph(monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # as dynamo reports while tracing
    drop = PooledDropout(0.5)
    m = drop(torch.ones(64, 64))
    assert 0.4 < (m == 0).float().mean() < 0.6 and set(m.unique().tolist()) <= {0.0, 2.0}
    assert "_mask_pools" not in drop.__dict__  # no offset read back to Python, which would break the graph


@pytest.mark.parametrize("weights", ["fp32", "int8"])
def test_step_path_follows_weight_updates(weights):
    if weights == "int8" and not int8_supported():
        pytest.skip("int8 step weights need fbgemm")
    m = _model("lstm").eval()
    idx = torch.tensor([1, 2])
    before, _ = m.step(idx, weights=weights)
    with torch.no_grad():  # the step path keeps derived copies of these (embedding x input weights, int8)
        m.rnn.weight_ih_l0.mul_(3.0)
        m.rnn.weight_ih_l1.mul_(3.0)
    after, _ = m.step(idx, weights=weights)
    full, _, _ = m(idx[:, None])
    assert not torch.allclose(after, before, atol=1e-3)
    torch.testing.assert_close(after, full[:, 0], rtol=0, atol=1e-5 if weights == "fp32" else 0.05)


@pytest.mark.skipif(not cpu_supports_bf16(), reason="CPU has no native bf16")
@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_bf16_autocast_forward_backward_runs_on_cpu(kind):
    torch.manual_seed(0)
    m = _model("lstm") if kind == "lstm" else build_model(
        model_config(vocab_size=50, model="transformer", n_layers=2, hidden=24, heads=4, context=16))
    idx = torch.randint(0, 50, (2, 9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss, _ = m(idx, targets=idx)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_step_equals_forward():
    m = _model("lstm").cuda().eval()
    idx = torch.randint(0, 50, (2, 5), device="cuda")
    full, _, _ = m(idx)
    state, steps = None, []
    for t in range(5):
        logits, state = m.step(idx[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("config", [
    dict(model="lstm", n_layers=1, hidden=24, embed=8), dict(model="gru", n_layers=3, hidden=17, embed=5),
    dict(model="rnn", n_layers=2, hidden=40, embed=64), dict(model="transformer", n_layers=3, hidden=24, heads=4,
                                                             context=19)])
def test_param_count_by_formula_equals_the_built_model(config):
    from charrnn.families import param_count

    c = model_config(vocab_size=77, **config)
    assert param_count(c) == build_model(c).num_params()


def _contiguous_flatten(rnn, weights):
    """A stand-in for cuDNN's flattening on the CPU: the weights, in order, as views of one buffer."""
    buf = torch.empty(sum(w.numel() for w in weights), dtype=weights[0].dtype)
    offset = 0
    with torch.no_grad():
        for w in weights:
            view = buf[offset:offset + w.numel()].view_as(w)
            view.copy_(w)
            w.set_(view)
            offset += w.numel()


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_weight_drop_for_cudnn_runs_on_one_buffer_and_equals_the_plain_path(kind, monkeypatch):
    """FlatWeightDrop, the route cuDNN takes, driven on the CPU with a stand-in for cuDNN's layout: the
    same losses, gradients and updates as the functional path, with every weight the kernel reads a view
    of one buffer and the W_hh parameters apart from it."""
    from charrnn.families.rnn import model as rnn_module

    torch.manual_seed(0)
    flat = CharRNN(model_config(vocab_size=50, model=kind, n_layers=2, hidden=24, embed=8, weight_drop=0.5))
    plain = CharRNN(model_config(vocab_size=50, model=kind, n_layers=2, hidden=24, embed=8, weight_drop=0.5))
    plain.load_state_dict(flat.state_dict())
    monkeypatch.setattr(rnn_module, "cudnn_flatten", _contiguous_flatten)
    monkeypatch.setattr(CharRNN, "_flat_weight_drop_applies", lambda self, x: self is flat)
    opts = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (flat, plain)]
    idx = torch.randint(0, 50, (3, 9))
    for step in range(3):
        losses = []
        for m, opt in zip((flat, plain), opts):
            torch.manual_seed(step)  # the same masks
            opt.zero_grad()
            loss = m.train()(idx, targets=idx)[1]
            loss.backward()
            losses.append(loss)
            opt.step()
        torch.testing.assert_close(losses[0], losses[1])
        for (name, a), b in zip(flat.named_parameters(), plain.parameters()):
            torch.testing.assert_close(a.grad, b.grad, msg=name)
            torch.testing.assert_close(a, b, msg=name)
    torch.testing.assert_close(flat.eval()(idx)[0], plain.eval()(idx)[0])
    drop = flat._flat_drop
    buffer = {w.untyped_storage().data_ptr() for w in drop._weights()}
    assert len(buffer) == 1 and len(drop.slots) == 2  # what the kernel reads: one buffer, W_hh slots in it
    hh = [w for n, w in flat.rnn.named_parameters() if n.startswith("weight_hh")]
    assert all(w.untyped_storage().data_ptr() not in buffer for w in hh)
    assert flat.state_dict().keys() == plain.state_dict().keys()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cuda_weight_drop_hands_cudnn_flat_weights(kind):
    """On cuDNN, DropConnect copies nothing but the masked W_hh: no 'not part of single contiguous chunk'
    warning (cuDNN's per-call copy comes with it), one buffer, the functional path's numbers."""
    import warnings

    torch.manual_seed(0)
    cfg = model_config(vocab_size=50, model=kind, n_layers=2, hidden=64, embed=16, weight_drop=0.3)
    m, ref = CharRNN(cfg).cuda(), CharRNN(cfg).cuda()
    ref.load_state_dict(m.state_dict())
    ref._flat_weight_drop_applies = lambda x: False  # the functional path, for reference
    idx = torch.randint(0, 50, (4, 32), device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for step in range(2):
            losses = []
            for model in (m, ref):
                torch.manual_seed(step)
                model.zero_grad()
                losses.append(model.train()(idx, targets=idx)[1])
                losses[-1].backward()
            torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-4)
        m.eval()(idx)
    assert len({w.untyped_storage().data_ptr() for w in m._flat_drop._weights()}) == 1
    for a, b in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-5)
