"""The microscope (`charrnn inspect`): traces against the fused forward pass, gradients through time against a
naive loop and a numeric gradient, the text features by hand, and the command's output and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.evaluate import evaluate_windows
from charrnn.families import build_model, macs_per_char, model_config
from charrnn.microscope import FEATURES, _Pearson, gradients_through_time, text_features

RNNS = ("lstm", "gru", "rnn")


def rnn(kind: str, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(model_config(vocab_size=11, model=kind, n_layers=2, hidden=12, embed=6, **kw)).eval()


def gpt(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(model_config(vocab_size=11, model="transformer", n_layers=2, hidden=16, heads=2, context=12)).eval()


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


# --- traces ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", RNNS)
def test_rnn_trace_matches_the_fused_pass_across_chunks(kind):
    model = rnn(kind)
    ids = torch.randint(0, 11, (500,), generator=torch.Generator().manual_seed(1))
    traces = list(model.iter_trace(ids, chunk=37))  # chunk boundaries carry the state
    assert [t.start for t in traces] == list(range(0, 500, 37))
    logits = torch.cat([t.logits for t in traces])
    ref, _, (h_n, *rest) = model(ids[None])
    torch.testing.assert_close(logits, ref[0], atol=1e-5, rtol=1e-5)
    hidden = torch.cat([t.units["hidden"] for t in traces])  # (T, L, H)
    torch.testing.assert_close(hidden[-1], h_n[:, 0], atol=1e-5, rtol=1e-5)  # every layer's last h
    gates = {g: torch.cat([t.gates[g] for t in traces]) for g in traces[0].gates}
    assert set(gates) == {"lstm": {"input", "forget", "output"}, "gru": {"reset", "update"}, "rnn": set()}[kind]
    assert all(((g >= 0) & (g <= 1)).all() for g in gates.values())
    if kind == "lstm":
        cell = torch.cat([t.units["cell"] for t in traces])  # tanh(c)
        torch.testing.assert_close(hidden, gates["output"] * cell, atol=1e-5, rtol=1e-5)  # h = o * tanh(c)
        torch.testing.assert_close(cell[-1], torch.tanh(rest[0][:, 0]), atol=1e-5, rtol=1e-5)


def test_transformer_trace_scores_each_character_as_eval_does():
    model = gpt()
    ids = torch.randint(0, 11, (100,), generator=torch.Generator().manual_seed(2))
    traces = list(model.iter_trace(ids))
    assert sum(len(t.logits) for t in traces) == 100 and traces[0].start == 0
    logits = torch.cat([t.logits for t in traces])[:-1]
    ce = F.cross_entropy(logits, ids[1:], reduction="none").numpy()
    ref = evaluate_windows(model, ids.numpy(), torch.device("cpu"), context=model.config.context, per_char=True).losses
    np.testing.assert_allclose(ce, ref, atol=1e-5)
    assert traces[0].units["residual"].shape == (12, 2, 16) and traces[0].gates == {}


# --- gradients through time --------------------------------------------------------------------------
def naive_gtt(model, rows: torch.Tensor, k_max: int) -> torch.Tensor:
    """The same measurement by the fused module, one character per call, with the state at each k made a
    leaf of its own graph: independent of `CharRNN.cell`'s equations and of the indexing."""
    B, W = rows.shape
    warm = W - 2 - k_max
    out = torch.zeros(B, k_max)
    with torch.no_grad():
        start = model(rows[:, :warm])[2]
    for k in range(1, k_max + 1):
        state = start
        with torch.no_grad():  # up to and including the input k characters before the last
            for j in range(warm, W - 1 - k):
                state = model(rows[:, j:j + 1], state)[2]
        leaf = tuple(s.detach().double().requires_grad_() for s in state)
        m64 = model.double()
        state = leaf
        for j in range(W - 1 - k, W - 1):
            logits, _, state = m64(rows[:, j:j + 1], state)
        loss = F.cross_entropy(logits[:, -1], rows[:, -1], reduction="sum")
        grads = torch.autograd.grad(loss, leaf)
        out[:, k - 1] = torch.sqrt(sum(g.pow(2).sum((0, 2)) for g in grads)).float()
        model.float()
    return out


@pytest.mark.parametrize("kind", RNNS)
def test_rnn_gradients_through_time_match_a_naive_loop(kind):
    model = rnn(kind, seed=3)
    rows = torch.randint(0, 11, (3, 20), generator=torch.Generator().manual_seed(4))
    got = model.grad_through_time(rows, 8)
    assert got.shape == (3, 8)
    torch.testing.assert_close(got, naive_gtt(model, rows, 8), rtol=1e-4, atol=1e-7)


def test_rnn_gradient_through_time_agrees_with_a_numeric_derivative():
    # torch-rnn's check: perturb the state k characters back, watch the loss move
    model = rnn("lstm", seed=5).double()
    rows = torch.randint(0, 11, (1, 12), generator=torch.Generator().manual_seed(6))
    k, W = 4, rows.size(1)
    with torch.no_grad():
        state = model(rows[:, :W - 1 - k])[2]  # after reading the input k characters before the last

        def loss(s):
            logits, _, _ = model(rows[:, W - 1 - k:W - 1], s)
            return F.cross_entropy(logits[0, -1:], rows[0, -1:], reduction="sum").item()

        eps, grad_sq = 1e-6, 0.0
        for t in range(len(state)):
            for idx in np.ndindex(*state[t].shape):
                plus = [s.clone() for s in state]
                minus = [s.clone() for s in state]
                plus[t][idx] += eps
                minus[t][idx] -= eps
                grad_sq += ((loss(tuple(plus)) - loss(tuple(minus))) / (2 * eps)) ** 2
    got = model.grad_through_time(rows, 4)[0, k - 1].item()
    assert got == pytest.approx(grad_sq ** 0.5, rel=1e-5)


def test_transformer_gradients_reach_only_inside_its_context():
    model = gpt(seed=7)
    rows = torch.randint(0, 11, (2, 40), generator=torch.Generator().manual_seed(8))
    g = model.grad_through_time(rows, 20)
    assert torch.isfinite(g[:, :11]).all() and (g[:, :11] > 0).all()  # positions 1..context-1 back
    assert torch.isnan(g[:, 11:]).all()  # beyond the window: unreachable
    # a numeric derivative for one position k back, along a random direction of its embedding
    k = 3
    model = model.double()
    inp = rows[:1, -13:-1]
    x0 = (model.wte(inp) + model.wpe(torch.arange(12))).detach()
    d = torch.zeros_like(x0)
    d[0, 11 - k] = torch.randn(16, generator=torch.Generator().manual_seed(9), dtype=torch.float64)

    def loss(x):
        for block in model.blocks:
            x = block(x)[0]
        return F.cross_entropy(model.head(model.ln_f(x[:, -1])), rows[:1, -1]).item()

    numeric = (loss(x0 + 1e-6 * d) - loss(x0 - 1e-6 * d)) / 2e-6
    x = x0.clone().requires_grad_()
    analytic = (torch.autograd.grad(F.cross_entropy(model.head(model.ln_f(
        _blocks(model, x)[:, -1])), rows[:1, -1]), x)[0] * d).sum().item()
    assert analytic == pytest.approx(numeric, rel=1e-5)
    assert model.grad_through_time(rows[:1], 20)[0, k - 1].item() == pytest.approx(
        torch.autograd.grad(F.cross_entropy(model.head(model.ln_f(_blocks(model, x)[:, -1])), rows[:1, -1]),
                            x)[0][0, 11 - k].norm().item(), rel=1e-6)


def _blocks(model, x):
    for block in model.blocks:
        x = block(x)[0]
    return x


def test_the_lesson_vanishing_in_a_plain_rnn_kept_by_an_open_forget_gate():
    """A tanh RNN whose recurrent weights shrink the state loses its gradient geometrically; an LSTM whose
    forget gates are held open (bias +8) passes it back almost undiminished through c."""
    torch.manual_seed(0)
    plain = build_model(model_config(vocab_size=11, model="rnn", n_layers=1, hidden=32, embed=8)).eval()
    lstm = build_model(model_config(vocab_size=11, model="lstm", n_layers=1, hidden=32, embed=8)).eval()
    with torch.no_grad():
        plain.rnn.weight_hh_l0.mul_(0.5)
        lstm.rnn.bias_hh_l0[32:64] = 8.0  # forget gate rows (i, f, g, o)
    ids = np.random.default_rng(0).integers(0, 11, 3000)
    ratio = {}
    for name, model in (("rnn", plain), ("lstm", lstm)):
        g, used = gradients_through_time(model, ids, torch.device("cpu"), k_max=60, positions=8)
        assert used == 8 and len(g) == 60
        ratio[name] = g[49] / g[0]
    assert ratio["rnn"] < 1e-6 and ratio["lstm"] > 1e-2


# --- features and correlation ----------------------------------------------------------------------
def test_text_features_by_hand():
    text = 'x = f("a b", (c[0]))  # done\n  if it\'s:\n'
    feats = text_features(list(text))
    col = {name: feats[:, j] for j, name in enumerate(FEATURES)}
    at = text.index
    assert col["inside double quotes"][at('"a') + 1] == 1 and col["inside double quotes"][at('",') + 1] == 0
    assert col["bracket depth"][at("0")] == 3 and col["bracket depth"][at("  #")] == 0
    assert col["inside brackets"][at("c")] == 1
    assert col["after # on the line"][at("done")] == 1 and col["after # on the line"][at("if")] == 0
    assert col["position in the line"][at("\n")] == 0 and col["position in the line"][at("x")] == 1
    assert col["indentation"][at("if") - 1] == 2 and col["indentation"][at("if") + 1] == 2
    assert col["start of a word"][at("done")] == 1 and col["start of a word"][at("one")] == 0
    assert col["position in the word"][at("one") + 2] == 4
    assert col["inside single quotes"][at("s:")] == 0  # an apostrophe inside a word opens nothing
    quoted = text_features(list("y = 'ab' + c\nz'"))[:, list(FEATURES).index("inside single quotes")]
    assert quoted.tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]


def test_streaming_correlation_equals_numpy():
    rng = np.random.default_rng(0)
    a, f = rng.normal(size=(1000, 5)), rng.normal(size=(1000, 3))
    f[:, 0] = a[:, 2] * 2 + 0.1 * rng.normal(size=1000)
    p = _Pearson(5, 4)
    for s in range(0, 1000, 333):
        p.add(a[s:s + 333], np.c_[f[s:s + 333], np.ones(len(a[s:s + 333]))])  # last feature never changes
    r = p.r()
    np.testing.assert_allclose(r[:, :3], np.corrcoef(a.T, f.T)[:5, 5:], atol=1e-10)
    assert np.isnan(r[:, 3]).all()


def _counted_macs(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2  # a multiply-add is two flops


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_an_rnn_s_multiply_adds_are_what_its_forward_and_its_sampling_step_compute(kind):
    c = model_config(vocab_size=65 + 256, n_outputs=65, model=kind, n_layers=2, hidden=48, embed=16)
    m = build_model(c).eval()
    state = m.init_state(1)
    layers = [tuple(s[k] for s in state) for k in range(c.n_layers)]

    def one_character():  # by the model's own cell equations (F.linear: what a counter sees)
        x = m.embed(torch.tensor([3]))
        for k in range(c.n_layers):
            x = m.cell(k, x, layers[k])[0]
        m.head(x)
    forward = _counted_macs(one_character)
    step = m._stepper("fp32")  # what sampling multiplies: the matrices it holds, one product each per character
    held = sum(layer[w].numel() for layer in step.layers for w in ("w_ih", "w_hh")
               if w in layer and not (w == "w_ih" and layer is step.layers[0])) + step.head_w.numel()
    assert macs_per_char(c) == {"train": 3 * forward, "sample": held}
    assert held < forward  # layer 0's input product is a table lookup when sampling


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
def test_a_min_rnn_s_multiply_adds_are_what_its_forward_and_its_step_compute(kind):
    c = model_config(vocab_size=65 + 256, n_outputs=65, model=kind, n_layers=2, hidden=48)
    m = build_model(c).eval()
    idx = torch.randint(0, 65, (1, 7))
    assert macs_per_char(c)["train"] == 3 * _counted_macs(lambda: m(idx)) / 7
    m.step(idx[:, 0])
    assert macs_per_char(c)["sample"] == _counted_macs(lambda: m.step(idx[:, 0]))


def test_a_transformer_s_cost_grows_with_its_context_not_a_state():
    a = macs_per_char(model_config(vocab_size=65, model="transformer", n_layers=2, hidden=64, heads=4, context=64))
    b = macs_per_char(model_config(vocab_size=65, model="transformer", n_layers=2, hidden=64, heads=4, context=128))
    dense = 12 * 64 * 64 * 2 + 64 * 65
    assert 3 * dense < a["train"] < b["train"] < 3 * dense * 1.5
    assert dense < a["sample"] < 3 * dense  # the window's rebuilds cost about one more pass per character


# --- the command ---------------------------------------------------------------------------------------
def test_inspect_writes_one_self_contained_page(trained_run, tmp_path):
    page = tmp_path / "page.html"
    result = run("inspect", trained_run, "--out", page, "--json", "--show", "300", "--quiet")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["page"] == str(page) and data["chars"] == 2000  # the run's validation split: 10 % of 20,000
    assert 0 < data["loss_nats"] < 4 and len(data["gradients"]) == 256 and data["gradient_ratio_50"] > 0
    assert data["best_units"] and all(-1 <= b["r"] <= 1 for b in data["best_units"])
    assert set(data["saturation"]) == {"input", "forget", "output"}
    html = page.read_text()
    assert "https://" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert html.count("<svg") == 4  # three gate scatters and the gradient curve
    again = run("inspect", trained_run, "--text", "KING:\nWhat", "--out", page, "--json", "-q")  # text itself
    assert json.loads(again.stdout)["chars"] == len("KING:\nWhat")


def test_inspect_writes_beside_the_checkpoint_by_default(trained_run, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(trained_run, run_dir)
    result = run("inspect", run_dir, "--chars", "600", "-q")
    assert result.exit_code == 0 and (run_dir / "inspect.html").is_file()
    assert result.stdout.strip().splitlines()[-1] == f"page       {run_dir / 'inspect.html'}"


@pytest.mark.parametrize("args, message", [
    (["no/such/file.txt"], "no such file or catalog corpus"),
    (["KING: a mistyped name is not taken for text"], "for text itself, use --text"),
    (["--chars", "1"], "--chars"),
    (["--show", "0"], "--show"),
])
def test_bad_inspect_input_is_one_line(trained_run, tmp_path, args, message):
    result = CliRunner().invoke(cli, ["inspect", str(trained_run), *args, "--out", str(tmp_path / "p.html"), "-q"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert not (tmp_path / "p.html").exists()


def test_a_long_text_gets_a_progress_bar_a_short_one_none(trained_run, tmp_path):
    from conftest import make_text

    other = tmp_path / "other.txt"  # not the run's corpus: read from its start
    other.write_text(make_text(25_000, seed=3), encoding="utf-8")
    long = CliRunner().invoke(cli, ["inspect", str(trained_run), str(other), "--chars", "20001", "--out",
                                    str(tmp_path / "a.html"), "--json"])
    short = CliRunner().invoke(cli, ["inspect", str(trained_run), str(other), "--chars", "20000", "--out",
                                     str(tmp_path / "b.html"), "--json"])
    assert long.exit_code == short.exit_code == 0
    assert json.loads(long.stdout)["source"] == str(other) and json.loads(long.stdout)["chars"] == 20_001
    assert "inspect:" in long.stderr and "char" in long.stderr and short.stderr == ""
