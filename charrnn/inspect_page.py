"""The page `charrnn inspect` writes: one self-contained HTML file (inline CSS, SVG and script, no
network) showing a `microscope.Inspection`: cells, surprise, gates and gradients through time, each
coloured picture with its colour scale and each claim of the text computed from what is drawn."""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np

from .charts import color_scale, line_chart, scatter_chart
from .microscope import FEATURES, GTT_AT, SATURATED, TOP_K, WEAK_R, Inspection, encode_int8

# What the coloured text is coloured with: RGB stops, evenly spaced along the scale, linear between them.
# The script colours by them and the legend draws them, so the two cannot disagree.
ACTIVATION_COLORS = ((0, 0, 255), (255, 255, 255), (255, 0, 0))  # -1, 0, +1 of the unit's scale
LOSS_COLORS = ((255, 255, 255), (255, 51, 0))  # 0 nats, the scale's top

CELLS_TEXT = """\
Each character is coloured by one unit's activation after the model has read it, on the scale below:
blue for negative, white near zero, red for positive (Karpathy's 2015 pictures). The units below were
found automatically: over all {chars:,} characters analysed, every unit's activation was correlated
with simple features of the text (Pearson's r), and for each feature the unit that tracks it best is
listed. Pick any unit with the controls."""

WEAK_TEXT = """\
A unit is said to track a feature when |r| ≥ {weak:g}. A feature whose best unit stays below that is
marked weak: no unit tracks it (|r| < {weak:g}: the activation accounts for under a tenth of the
feature's variance), and its best unit is listed greyed only to show how far it falls short. Tracked
here: {tracked} of the {listed} features listed."""

SURPRISE_TEXT = """\
Each character coloured by the model's loss on it (nats: how surprised the model was to see it,
given everything before it), on the scale below: white for a confident right guess, deep red for a
surprise. Hover over a character for the model's top {k} predictions at that point."""

GATES_TEXT = """\
For each gate unit, the fraction of the {chars:,} characters on which it is left-saturated (below
{lo}: closed) and right-saturated (above {hi}: open), as in Karpathy, Johnson and Fei-Fei (2015).
Points near the right edge are gates that are nearly always closed; near the top, always open; on
the diagonal, units that switch cleanly between the two. A forget gate that is almost always open
(top) is a cell that keeps its memory for long."""

NO_GATES = """\
This {kind} has no gates: a plain RNN overwrites its whole state at every step, and a Transformer
keeps no state at all, so there is nothing to saturate. Compare an LSTM or a GRU trained on the same text."""

GRADIENT_TEXT = """\
The norm of the gradient of the loss on character t (predicted after reading character t - 1) with
respect to {of} after reading character t - 1 - k, for k = 1..{k_max}, averaged over {positions}
positions of the text, on a log scale. How far the curve stays up is how far back training can still
learn from: a gradient that falls by orders of magnitude within a few dozen characters carries next to
nothing from further back (vanishing gradients, the problem of backpropagation through time that gates
were invented to solve); one that climbs explodes."""

REFERENCE_TEXT = """\
Two curves, measured on the same positions: "{trained}" is this run's model; "{untrained}" is the same
configuration built by its family with seed {seed} (the seed the run's training built its model with)
and never trained. The gap between them is what training did to how far back the gradient reaches."""

COMPARE_TEXT = """\
To see kinds of model side by side (a plain RNN's curve against an LSTM's), charrnn compare draws one
curve per model on one chart."""

STYLE = """\
body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}
.text{font-family:monospace;white-space:pre-wrap;line-height:1.6;border:1px solid #ddd;padding:8px;
  max-height:32em;overflow-y:auto}
.text span{cursor:default}
table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}
button{cursor:pointer}
#tip{position:fixed;display:none;background:#fff;border:1px solid #888;padding:4px 8px;font-family:monospace;
  pointer-events:none;box-shadow:2px 2px 6px rgba(0,0,0,.2);white-space:pre}
#errors{color:#b00;font-weight:bold}
.controls{margin:0.5em 0}.controls input{width:5em}
.scatters svg{margin-right:1em}
tr.weak td{color:#999}
"""

SCRIPT = r"""
window.onerror = function (msg, src, line) {
  var e = document.getElementById("errors");
  e.textContent += "script error: " + msg + " (line " + line + ")\n";
};
(function () {
  var D = JSON.parse(document.getElementById("data").textContent);
  var pieces = D.pieces, n = pieces.length;
  function shown(p) { return p === "" ? "\u00b7" : p; }  // a byte token has no text of its own
  function decode(b64) {
    var s = atob(b64), a = new Int8Array(s.length);
    for (var i = 0; i < s.length; i++) a[i] = (s.charCodeAt(i) << 24) >> 24;
    return a;
  }
  function spans(box) {
    var out = [];
    for (var i = 0; i < n; i++) {
      var s = document.createElement("span");
      s.textContent = shown(pieces[i]);
      s.dataset.i = i;
      box.appendChild(s);
      out.push(s);
    }
    return out;
  }
  // cells: red for positive, blue for negative
  var kinds = D.units.map(function (u) { return Object.assign(u, {q: decode(u.data)}); });
  var cellSpans = spans(document.getElementById("cells-text"));
  var kindSel = document.getElementById("kind"), layerIn = document.getElementById("layer"),
      unitIn = document.getElementById("unit"), about = document.getElementById("unit-about");
  kinds.forEach(function (u, i) {
    var o = document.createElement("option"); o.value = i; o.textContent = u.name; kindSel.appendChild(o);
  });
  // t in [0, 1] along evenly spaced RGB stops, linear between them: the legend's CSS gradient
  function ramp(stops, t) {
    t = Math.max(0, Math.min(1, t));
    var x = t * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;
    return "rgb(" + [0, 1, 2].map(function (c) {
      return Math.round(stops[i][c] + (stops[i + 1][c] - stops[i][c]) * f);
    }).join(",") + ")";
  }
  function scaleEnd(u, scale) { return u.bounded ? "1" : scale.toPrecision(3); }
  function showUnit(k, layer, unit) {
    var u = kinds[k];
    layer = Math.max(0, Math.min(u.layers - 1, layer | 0)); unit = Math.max(0, Math.min(u.width - 1, unit | 0));
    kindSel.value = k; layerIn.value = layer; layerIn.max = u.layers - 1; unitIn.value = unit; unitIn.max = u.width - 1;
    var row = layer * u.width + unit, off = row * n, scale = u.scale[row];
    for (var i = 0; i < n; i++) {
      var v = u.q[off + i] / 127;
      cellSpans[i].style.background = ramp(D.colors.activation, (v + 1) / 2);
      cellSpans[i].title = (v * scale).toFixed(3);
    }
    var end = scaleEnd(u, scale), name = u.name + " layer " + layer + " unit " + unit;
    document.getElementById("cells-scale-0").textContent = "-" + end;
    document.getElementById("cells-scale-2").textContent = "+" + end;
    document.getElementById("cells-scale-caption").textContent = u.bounded
      ? "the activation of " + name + ", which lies in [-1, 1]"
      : "the activation of " + name + "; unbounded, so the scale ends at its largest |activation| in the text shown, " + end;
    var r = u.r[row], parts = [];
    D.features.forEach(function (f, j) { if (r[j] !== null) parts.push(f + " " + r[j].toFixed(2)); });
    about.textContent = u.name + " layer " + layer + " unit " + unit + ": r with " + parts.join(", ");
    history.replaceState(null, "", "#unit=" + u.name + "/" + layer + "/" + unit);  // a link to this view
  }
  function current() { showUnit(+kindSel.value, +layerIn.value, +unitIn.value); }
  kindSel.onchange = current; layerIn.onchange = current; unitIn.onchange = current;
  document.querySelectorAll("button.unit").forEach(function (b) {
    b.onclick = function () {
      var k = kinds.findIndex(function (u) { return u.name === b.dataset.kind; });
      showUnit(k, +b.dataset.layer, +b.dataset.unit);
    };
  });
  // a link may name the unit to show: page.html#unit=cell/0/17
  var asked = /^#unit=([a-z]+)\/(\d+)\/(\d+)$/.exec(location.hash);
  var first = asked ? {kind: asked[1], layer: +asked[2], unit: +asked[3]}
            : D.best.length ? D.best[0] : {kind: kinds[0].name, layer: 0, unit: 0};
  var k0 = kinds.findIndex(function (u) { return u.name === first.kind; });
  showUnit(k0 < 0 ? 0 : k0, first.layer, first.unit);
  // surprise: white to red by loss, top guesses on hover
  var surSpans = spans(document.getElementById("surprise-text"));
  var top = D.surprise_scale, tip = document.getElementById("tip");
  for (var i = 0; i < n; i++) {
    var l = D.surprise[i];
    if (l === null) continue;
    surSpans[i].style.background = ramp(D.colors.loss, l / top);
  }
  function label(c) { return c === "\n" ? "\\n" : c === " " ? "' '" : c === "" ? "(byte)" : c; }
  document.getElementById("surprise-text").addEventListener("mouseover", function (ev) {
    var i = ev.target.dataset ? ev.target.dataset.i : undefined;
    if (i === undefined || D.surprise[i] === null) { tip.style.display = "none"; return; }
    var lines = ["loss " + D.surprise[i].toFixed(2) + " nats on " + label(pieces[i])];
    D.guesses[i].forEach(function (g) { lines.push((100 * g[1]).toFixed(1).padStart(5) + "%  " + label(g[0])); });
    tip.textContent = lines.join("\n");
    tip.style.display = "block";
  });
  document.getElementById("surprise-text").addEventListener("mousemove", function (ev) {
    tip.style.left = (ev.clientX + 14) + "px"; tip.style.top = (ev.clientY + 14) + "px";
  });
  document.getElementById("surprise-text").addEventListener("mouseleave", function () { tip.style.display = "none"; });
  document.body.dataset.ready = "1";
})();
"""


WEAK_ROW = ' class="weak"'  # a best unit below WEAK_R: greyed (STYLE)


def _best_table(best: list[dict]) -> str:
    if not best:
        return "<p>No unit correlates with any feature (the features never change in this text).</p>"
    tracked = sum(not b["weak"] for b in best)
    said = f'<p id="weak-rule">{html.escape(WEAK_TEXT.format(weak=WEAK_R, tracked=tracked, listed=len(best)))}</p>'
    rows = "".join(
        f"<tr{WEAK_ROW if b['weak'] else ''}><td>{html.escape(b['feature'])}</td>"
        f"<td>{html.escape(b['kind'])}</td><td>{b['layer']}</td><td>{b['unit']}</td><td>{b['r']:+.2f}</td>"
        f"<td>{'no: weak, no unit tracks this' if b['weak'] else 'yes'}</td>"
        f"<td><button class=\"unit\" data-kind=\"{html.escape(b['kind'])}\" "
        f"data-layer=\"{b['layer']}\" data-unit=\"{b['unit']}\">show</button></td></tr>" for b in best)
    missing = [f for f in FEATURES if f not in {b["feature"] for b in best}]
    left_out = (f"<p>Not listed ({len(missing)}): {html.escape(', '.join(missing))}: never changing in this text, "
                "they correlate with nothing.</p>" if missing else "")
    return (f"{said}<table><thead><tr><th>feature</th><th>units</th><th>layer</th><th>unit</th><th>r</th>"
            f"<th>|r| &ge; {WEAK_R:g}</th><th></th></tr></thead><tbody>{rows}</tbody></table>{left_out}")


def _features_list() -> str:
    return "<ul>" + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in FEATURES.items()) + "</ul>"


def _gates(insp: Inspection, kind: str) -> str:
    if not insp.saturation:
        return f"<p>{html.escape(NO_GATES.format(kind=kind))}</p>"
    charts = []
    for gate, sat in insp.saturation.items():  # (layers, hidden, 2)
        groups = {f"layer {k}": [(float(a), float(b)) for a, b in sat[k]] for k in range(sat.shape[0])}
        charts.append(scatter_chart(groups, "fraction left-saturated", "fraction right-saturated", title=f"{gate} gate"))
    text = GATES_TEXT.format(chars=insp.chars, lo=SATURATED[0], hi=SATURATED[1])
    return f"<p>{html.escape(text)}</p><div class=\"scatters\">{''.join(charts)}</div>"


TRAINED, UNTRAINED = "trained", "untrained"  # the gradient chart's two curves, as its legend names them


def _times(x: float) -> str:
    """A ratio x in words: "378 times" (x >= 1 or 0) or "1/3.28e+06 of" (below 1)."""
    return f"{x:.3g} times" if x >= 1 or x == 0 else f"1/{1 / x:.3g} of"


def gradient_claims(insp: Inspection) -> str:
    """What the page says the gradient chart shows, every figure computed from its curves."""
    said = []
    for name, untrained in ((TRAINED, False), (UNTRAINED, True)):
        ratio = insp.gradient_ratio(GTT_AT, untrained=untrained)
        if ratio is not None:
            model = "the" if insp.untrained_gradients is None else f"the {name} model's"
            said.append(f"{model} gradient {GTT_AT} characters back is {_times(ratio)} its gradient 1 back")
    text = ("Here " + "; ".join(said) + ".") if said else ""
    v = insp.versus_untrained(GTT_AT)
    if v is not None:
        where = f"{v['k']} characters back" + ("" if v["k"] == GTT_AT else
                                               f" (the furthest both curves reach, short of {GTT_AT})")
        text += (f" {where[0].upper()}{where[1:]}, the trained model's gradient is {_times(v['ratio'])} its "
                 f"untrained one's ({v['trained']:.3g} against {v['untrained']:.3g}).")
    curves = {TRAINED: insp.gradients, UNTRAINED: insp.untrained_gradients} if insp.untrained_gradients else {}
    for name, g in (curves or {"": insp.gradients}).items():  # a curve that ends where its values reach 0
        last = max((k for k, v in enumerate(g, 1) if v is not None and v > 0), default=0)
        if last and 0 in g[last:] and all(v in (0, None) for v in g[last:]):
            text += (f" The{' ' + name if name else ''} curve stops at k = {last}: further back its gradient is 0 "
                     "in float32 arithmetic (too small to hold), which a log scale cannot draw.")
    return text.strip()


def _gradients(insp: Inspection, name: str, of: str) -> str:
    g = insp.gradients
    if not g:
        return "<p>The text is too short to measure gradients through time.</p>"
    text = GRADIENT_TEXT.format(k_max=len(g), positions=insp.gradient_positions, of=of)
    series = {name: [(k + 1, v) for k, v in enumerate(g)]}
    if insp.untrained_gradients is not None:
        series = {TRAINED: series[name], UNTRAINED: [(k + 1, v) for k, v in enumerate(insp.untrained_gradients)]}
        text += " " + REFERENCE_TEXT.format(trained=TRAINED, untrained=UNTRAINED, seed=insp.untrained_seed)
    text += " " + COMPARE_TEXT
    chart = line_chart(series, "k: characters back", "gradient norm (log scale)", log_y=True)
    claims = gradient_claims(insp)
    return (f"<p>{html.escape(text)}</p>" + (f'<p id="gradient-claims">{html.escape(claims)}</p>' if claims else "")
            + chart)


def _legends(data: dict[str, Any]) -> tuple[str, str]:
    """The colour scales of the coloured text: a unit's activation (relabelled by the script for each unit
    shown) and the loss on each character."""
    top = data["surprise_scale"]
    cells = color_scale(ACTIVATION_COLORS, [(0, "-1"), (0.5, "0"), (1, "+1")],
                        "the unit's activation (the script names the unit and its scale)", "cells-scale")
    surprise = color_scale(LOSS_COLORS, [(0, "0 nats"), (0.5, f"{top / 2:.3g}"), (1, f"≥ {top:.3g} nats")],
                           f"the loss on the character, in nats (1 nat = 1.44 bits); the scale ends at {top:.3g} nats, "
                           "the 99th percentile of the losses shown (at least 1 nat), and any loss above it is as red. "
                           "The first character has no prediction and stays white.", "surprise-scale")
    return cells, surprise


def page_data(insp: Inspection) -> dict[str, Any]:
    """What the page's script reads."""
    losses = [v for v in insp.surprise if v is not None]
    return {
        "pieces": insp.pieces,
        "features": list(FEATURES),
        "units": [{"name": u.name, "layers": u.layers, "width": u.width, "scale": u.scale, "bounded": u.bounded,
                   "data": encode_int8(u.shown),
                   "r": [[None if np.isnan(v) else round(float(v), 3) for v in row] for row in u.r]} for u in insp.units],
        "best": insp.best,
        "surprise": [None if v is None else round(v, 3) for v in insp.surprise],
        "surprise_scale": max(1.0, float(np.percentile(losses, 99))) if losses else 1.0,
        "guesses": insp.guesses,
        "colors": {"activation": ACTIVATION_COLORS, "loss": LOSS_COLORS},
    }


def render_inspect(insp: Inspection, meta: dict[str, Any]) -> str:
    """The page. `meta`: run, shape, source (where the text came from), command, gradient_of (what the
    gradients through time are taken with respect to: `Family.gradient_of`)."""
    shown = page_data(insp)
    data = json.dumps(shown, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    kind = meta.get("model", "model")
    cells_scale, surprise_scale = _legends(shown)
    parts = [
        f"<h1>charrnn inspect: {html.escape(str(meta['run']))}</h1>",
        f"<p><code>{html.escape(meta['command'])}</code><br>{html.escape(meta['shape'])}; "
        f"{insp.chars:,} characters of {html.escape(meta['source'])}, loss {insp.loss_nats:.4f} nats/char "
        f"({insp.loss_nats / 0.6931471805599453:.4f} bits); the first {len(insp.pieces):,} are shown.</p>",
        '<div id="errors"></div>',
        "<h2>Cells: what the state remembers</h2>",
        f"<p>{html.escape(CELLS_TEXT.format(chars=insp.chars))}</p>",
        _best_table(insp.best),
        "<details><summary>The features</summary>" + _features_list() + "</details>",
        '<div class="controls">units <select id="kind"></select> layer <input id="layer" type="number" min="0" value="0"> '
        'unit <input id="unit" type="number" min="0" value="0"> <span id="unit-about"></span></div>',
        cells_scale,
        '<div id="cells-text" class="text"></div>',
        "<h2>Surprise: the loss on each character</h2>",
        f"<p>{html.escape(SURPRISE_TEXT.format(k=TOP_K))}</p>",
        surprise_scale,
        '<div id="surprise-text" class="text"></div>',
        "<h2>Gates: saturation</h2>",
        _gates(insp, kind),
        "<h2>Gradients through time</h2>",
        _gradients(insp, kind, meta.get("gradient_of", "the model's state")),
        '<div id="tip"></div>',
        f'<script type="application/json" id="data">{data}</script>',
        f"<script>{SCRIPT}</script>",
    ]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>charrnn inspect</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
