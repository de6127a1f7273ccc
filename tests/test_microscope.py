"""The microscope (`charrnn inspect`): traces against the fused forward pass, gradients through time against a
naive loop and a numeric gradient, the text features by hand, the command's output and refusals, and a page
that explains itself (colour scales, weak correlations marked, the gradients beside the untrained model's)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from charrnn import checkpoint as ck
from charrnn.analysis import describe_inspection
from charrnn.cli import cli
from charrnn.data import encode_corpus, split
from charrnn.evaluate import evaluate_windows
from charrnn.families import build_model, macs_per_char, model_config
from charrnn.inspect_page import ACTIVATION_COLORS, LOSS_COLORS, _times, gradient_claims, render_inspect
from charrnn.microscope import (
    FEATURES,
    WEAK_R,
    Inspection,
    UnitKind,
    _Pearson,
    best_units,
    gradients_through_time,
    inspect_model,
    text_features,
    untrained,
)
from charrnn.tokenizer import CharTokenizer

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


# --- a page that explains itself (issue 30): scales, weak correlations, the untrained reference ---------
def page_json(html: str) -> dict:
    """What the page's script reads (its data block)."""
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S).group(1)
                      .replace("<\\/", "</"))


def gradient_svg(html: str) -> str:
    at = html.index("<h2>Gradients through time</h2>")
    return html[at:html.index("</svg>", at)]


def test_inspect_page_has_colour_scales_the_weak_line_and_an_untrained_reference(trained_run, tmp_path):
    page = tmp_path / "page.html"
    result = run("inspect", trained_run, "--out", page, "--json", "--show", "300", "-q")
    assert result.exit_code == 0, result.output
    data, html = json.loads(result.stdout), page.read_text()
    # a colour scale above each coloured text, drawn from the colours the script colours with
    shown = page_json(html)
    assert shown["colors"] == {"activation": [list(c) for c in ACTIVATION_COLORS], "loss": [list(c) for c in LOSS_COLORS]}
    for ident, stops in (("cells-scale", ACTIVATION_COLORS), ("surprise-scale", LOSS_COLORS)):
        bar = re.search(rf'<div class="scale" id="{ident}".*?class="scale-bar" style="([^"]*)"', html, re.S).group(1)
        assert [tuple(map(int, c)) for c in re.findall(r"rgb\((\d+),(\d+),(\d+)\)", bar)] == list(stops)
    assert html.index('id="cells-scale"') < html.index('id="cells-text"')
    assert html.index('id="surprise-scale"') < html.index('id="surprise-text"')
    # the loss scale's ends in nats: 0 and the top the script divides by (the 99th percentile, at least 1)
    top = max(1.0, float(np.percentile([v for v in shown["surprise"] if v is not None], 99)))
    assert shown["surprise_scale"] == pytest.approx(top, rel=1e-3)  # the data holds the losses to 3 decimals
    top = shown["surprise_scale"]
    assert '<span id="surprise-scale-0"' in html and re.search(r'id="surprise-scale-0"[^>]*>0 nats<', html)
    assert re.search(rf'id="surprise-scale-2"[^>]*>≥ {top:.3g} nats<', html)
    # the threshold, stated, and every best unit judged by it
    assert f"|r| ≥ {WEAK_R:g}" in re.search(r'<p id="weak-rule">(.*?)</p>', html, re.S).group(1)
    assert data["weak_r"] == WEAK_R and all(b["weak"] == (abs(b["r"]) < WEAK_R) for b in data["best_units"])
    # the reference: the run's configuration, built from the run's seed, untrained, measured on the same rows
    g, u = data["gradients"], data["untrained_gradients"]
    assert data["untrained_seed"] == 7 and len(u) == len(g) == 256  # conftest.TINY's seed
    model, tok, ckpt, _ = ck.load_run(trained_run)
    torch.manual_seed(7)
    fresh = build_model(model.config)
    ids = split(encode_corpus(trained_run.parent.parent / "play.txt", tok, None), ckpt.run.val_frac)[1][:20_000]
    expected, _ = gradients_through_time(fresh, np.asarray(ids), torch.device("cpu"), positions=32, seed=0)
    np.testing.assert_allclose([np.nan if v is None else v for v in u], [np.nan if v is None else v for v in expected],
                               rtol=1e-5)
    assert not np.allclose(g[:50], u[:50], rtol=0.1)  # training changed how far back the gradient reaches
    # drawn as a second curve with a legend
    svg = gradient_svg(html)
    lines = re.findall(r'<polyline class="series" points="([^"]*)"[^>]*><title>([^<]*)</title>', svg)
    assert [name for _, name in lines] == ["trained", "untrained"] and lines[0][0] != lines[1][0]
    assert re.search(r">trained</text>", svg) and re.search(r">untrained</text>", svg)
    # and what the text claims is computed from the two curves
    claims = re.search(r'<p id="gradient-claims">(.*?)</p>', html, re.S).group(1)
    ratio = g[49] / u[49]
    said = f"{ratio:.3g} times" if ratio >= 1 else f"1/{1 / ratio:.3g} of"
    assert f"50 characters back, the trained model&#x27;s gradient is {said} its untrained one&#x27;s" in claims
    assert f"({g[49]:.3g} against {u[49]:.3g})" in claims
    assert f"{_times(g[49] / g[0])} its gradient 1 back" in claims and f"{_times(u[49] / u[0])} its gradient" in claims
    assert "stays high much longer" not in html  # no claim the picture cannot show
    # the printed lines say the same
    text = run("inspect", trained_run, "--out", page, "--show", "300", "-q").stdout
    assert f"50 characters back, trained / untrained = {ratio:.3g}" in text
    assert f"(untrained, seed 7: {u[49] / u[0]:.3g})" in text


def _inspection(best_r: list[float], trained: list[float | None], untrained: list[float | None] | None) -> Inspection:
    """A made-up inspection: one unit kind whose unit j correlates best_r[j] with feature j, and these curves."""
    r = np.full((4, len(FEATURES)), np.nan)
    for j, v in enumerate(best_r):
        r[:, j] = [v, v / 2, 0.0, -v / 3]
    units = [UnitKind("hidden", 1, 4, True, [1.0] * 4, np.zeros((1, 4, 3), dtype=np.int8), r)]
    return Inspection(chars=3, loss_nats=1.0, pieces=list("abc"), surprise=[None, 0.5, 2.0],
                      guesses=[[], [("b", 0.5)], [("c", 0.1)]], units=units, saturation={}, gradients=trained,
                      gradient_positions=4, best=best_units(units), untrained_gradients=untrained,
                      untrained_seed=None if untrained is None else 3)


META = {"run": "r", "model": "lstm", "shape": "lstm", "source": "s", "command": "c", "gradient_of": "the state"}


def test_a_weak_correlation_is_marked_weak_and_a_strong_one_is_not():
    insp = _inspection([-0.08, 0.7], [1.0] * 60, None)
    assert [(b["feature"], b["weak"]) for b in insp.best] == [(list(FEATURES)[1], False), (list(FEATURES)[0], True)]
    html = render_inspect(insp, META)
    rows = re.findall(r"<tr( class=\"weak\")?><td>([^<]*)</td>.*?</tr>", html.split("<tbody>")[1])
    assert rows == [("", list(FEATURES)[1]), (' class="weak"', list(FEATURES)[0])]
    words = " ".join(html.split())
    assert "no: weak, no unit tracks this" in words and "Tracked here: 1 of the 2 features listed." in words
    assert f"Not listed ({len(FEATURES) - 2})" in words  # the features that never change, said how many and why
    lines = describe_inspection({**insp.summary(), "best_units": insp.best})
    assert lines[0] == f"best unit  hidden layer 0 unit 0: r = +0.70 with {list(FEATURES)[1]} (1 of 2 features " \
                       f"tracked, |r| >= {WEAK_R:g})"
    weak_only = _inspection([-0.08], [1.0] * 60, None)
    assert describe_inspection(weak_only.summary())[0].startswith("best unit  none: no unit tracks a feature")


def test_the_gradient_text_is_computed_from_the_curves():
    k = np.arange(1, 61)
    one = _inspection([0.5], list(1.0 * 0.9 ** (k - 1)), list(1.0 * 0.5 ** (k - 1)))
    other = _inspection([0.5], list(1.0 * 0.5 ** (k - 1)), list(1.0 * 0.9 ** (k - 1)))
    a, b = gradient_claims(one), gradient_claims(other)
    ratio = 0.9 ** 49 / 0.5 ** 49
    assert f"50 characters back, the trained model's gradient is {ratio:.3g} times its untrained one's" in a
    assert f"50 characters back, the trained model's gradient is 1/{ratio:.3g} of its untrained one's" in b
    assert f"the trained model's gradient 50 characters back is 1/{1 / 0.9 ** 49:.3g} of its gradient 1 back" in a
    # a Transformer's curves end at its context: compared at the furthest k both reach
    short = _inspection([0.5], [1.0] * 20 + [None] * 40, [0.25] * 20 + [None] * 40)
    assert "20 characters back (the furthest both curves reach, short of 50), the trained model's gradient is " \
           "4 times its untrained one's" in gradient_claims(short)
    # a curve that underflows to 0 is said to stop, not left to look cut off
    stops = gradient_claims(_inspection([0.5], [1.0] * 60, [1.0] * 30 + [0.0] * 30))
    assert "The untrained curve stops at k = 30: further back its gradient is 0" in stops
    assert "30 characters back (the furthest both curves reach, short of 50)" in stops
    assert "untrained model's gradient 50 characters back is 0 times" in stops and "The trained curve stops" not in stops


def test_a_model_that_gives_no_gradients_gets_no_reference(monkeypatch):
    model = rnn("lstm")
    monkeypatch.setattr(type(model), "grad_through_time", lambda self, rows, k_max: torch.full((len(rows), k_max), np.nan))
    tok = CharTokenizer.from_chars("abcdefghijk", byte_fallback=False)
    insp = inspect_model(model, tok, np.random.default_rng(0).integers(0, 11, 400), torch.device("cpu"), show=50,
                         positions=4, untrained_seed=0)
    assert insp.untrained_gradients is None and insp.untrained_seed is None and insp.summary()["trained_over_untrained"] is None
    html = render_inspect(insp, META)
    assert "untrained" not in html and "gradient-claims" not in html
    monkeypatch.undo()  # one that gives them gets its reference
    insp = inspect_model(model, tok, np.random.default_rng(0).integers(0, 11, 400), torch.device("cpu"), show=50,
                         positions=4, untrained_seed=0)
    assert insp.untrained_gradients is not None and insp.untrained_seed == 0


def test_the_untrained_reference_is_the_configuration_as_its_seed_builds_it_and_draws_nothing_else():
    model = rnn("gru", seed=1)
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    ref = untrained(model, 2, torch.device("cpu"))
    assert torch.rand(1) == before  # the global random state is left as it was
    fresh = rnn("gru", seed=2)
    assert not ref.training and all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(),
                                                                    fresh.state_dict().values()))
    assert not torch.equal(ref.state_dict()["head.weight"], model.state_dict()["head.weight"])
