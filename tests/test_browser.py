"""The pages `charrnn inspect` and `charrnn compare` write, opened in a real headless Chromium: the coloured text
(in the colours of its scale) and the charts are in the rendered page, and no script error occurred."""

from __future__ import annotations

import copy
import json
import re

import pytest
from browser import render, require_chromium
from click.testing import CliRunner
from conftest import make_text

from charrnn.cli import cli
from charrnn.inspect_page import ACTIVATION_COLORS, LOSS_COLORS
from charrnn.report import render_html


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def spans_in(dom: str, box: str) -> list[str]:
    """The spans the page's script put into the element with id `box`."""
    m = re.search(rf'<div id="{box}" class="text">(.*?)</div>', dom, re.S)
    assert m, f"no #{box} in the rendered page"
    return re.findall(r"<span [^>]*>", m.group(1))


def test_inspect_page_renders_its_coloured_text_and_charts(trained_run, tmp_path):
    require_chromium()
    page = tmp_path / "inspect.html"
    assert run("inspect", trained_run, "--out", page, "--show", "400", "-q").exit_code == 0
    shown = render(page)
    assert shown.console_errors == [], shown.console_errors
    assert 'data-ready="1"' in shown.dom  # the script ran to its end
    assert re.search(r'<div id="errors"></div>', shown.dom)  # and window.onerror wrote nothing
    cells = spans_in(shown.dom, "cells-text")
    assert len(cells) == 400 and all("background" in s for s in cells)
    assert len({re.search(r"background: ([^;]+)", s).group(1) for s in cells}) > 20  # a unit that varies
    surprise = spans_in(shown.dom, "surprise-text")
    assert len(surprise) == 400 and sum("background" in s for s in surprise) == 399  # the first has no prediction
    assert shown.dom.count("<svg") == 4 and shown.dom.count('class="point"') == 3 * 2 * 32  # gates: 3 x layers x hidden
    grad = shown.dom[shown.dom.index("Gradients through time"):]
    assert grad.count('class="series"', 0, grad.index("</svg>")) == 2  # the run's curve and its untrained one's
    # every coloured character is a colour of its legend's scale, and the scales' ends are labelled
    for box, stops in (("cells-text", ACTIVATION_COLORS), ("surprise-text", LOSS_COLORS)):
        colours = {tuple(map(int, c)) for c in re.findall(r"background: rgb\((\d+), (\d+), (\d+)\)", " ".join(
            spans_in(shown.dom, box)))}
        assert len(colours) > 5 and all(on_scale(c, stops) for c in colours), (box, colours)
    assert label(shown.dom, "cells-scale-0") == "-1" and label(shown.dom, "cells-scale-2") == "+1"  # h in [-1, 1]
    assert label(shown.dom, "surprise-scale-0") == "0 nats" and label(shown.dom, "surprise-scale-2").endswith(" nats")
    # a link names the unit to show, and the page shows that one, its scale named for it
    linked = render(page, fragment="unit=cell/1/5")
    assert linked.console_errors == [] and "cell layer 1 unit 5: r with" in linked.dom
    assert label(linked.dom, "cells-scale-caption") == "the activation of cell layer 1 unit 5, which lies in [-1, 1]"


def label(dom: str, ident: str) -> str:
    return re.search(rf'id="{ident}"[^>]*>([^<]*)<', dom).group(1)


def on_scale(colour: tuple[int, ...], stops) -> bool:
    """Whether `colour` lies (to rounding) on the line through the scale's stops, as the legend draws it."""
    for a, b in zip(stops, stops[1:]):
        span = max(range(3), key=lambda c: abs(b[c] - a[c]))
        f = (colour[span] - a[span]) / (b[span] - a[span])
        if -0.01 <= f <= 1.01 and all(abs(a[c] + f * (b[c] - a[c]) - colour[c]) <= 1.5 for c in range(3)):
            return True
    return False


@pytest.mark.slow
def test_compare_page_renders_its_charts(tmp_path):
    require_chromium()
    corpus = tmp_path / "play.txt"
    corpus.write_text(make_text(30_000), encoding="utf-8")
    out = tmp_path / "report"
    result = run("compare", corpus, "--models", "rnn,lstm", "--max-time", "1s", "--params", "8k", "--out", out,
                 "--device", "cpu", "--precision", "fp32", "--quiet")
    assert result.exit_code == 0, result.output
    shown = render(out / "report.html")
    assert shown.console_errors == []
    # training curves, context probe, gradients through time (log scale), one line per model in each
    assert shown.dom.count("<svg") >= 3
    grad = shown.dom[shown.dom.index("Gradients through time"):]
    assert grad.count('class="series"', 0, grad.index("</svg>")) == 2
    assert "n-grams in<br>training text" in shown.dom and "validation text" in shown.dom
    assert "MACs/char" in shown.dom


# What a script measures in the page as laid out in a window 1000 pixels wide: how far each table reaches
# beyond the body's width, and in how many lines each of its headers is set.
MEASURE = """<script>
const lines = th => { const s = getComputedStyle(th);
  return Math.round((th.clientHeight - parseFloat(s.paddingTop) - parseFloat(s.paddingBottom)) / parseFloat(s.lineHeight)); };
document.body.dataset.layout = JSON.stringify([...document.querySelectorAll("table")].map(t => ({
  over: t.getBoundingClientRect().right - document.body.getBoundingClientRect().right + parseFloat(getComputedStyle(document.body).paddingRight),
  viewport: window.innerWidth, lines: Math.max(...[...t.querySelectorAll("th")].map(lines))})));
</script>"""


def test_the_report_tables_fit_a_laptop_screen(comparison, tmp_path):
    """Six models with long names, shapes and figures: the two tables at the top fit a window 1000 pixels
    wide, and no header of any table wraps onto more than two lines."""
    require_chromium()
    report = copy.deepcopy(comparison.report)
    row = report["rows"][0]
    report["rows"] = [dict(row, model=name, shape="6x192, 6 heads, context 128", params=12_345_678, steps=1_234_567,
                           chars_trained=987_654_321, train_chars_per_s=123_456.0, sample_1_chars_per_s=12_345.0,
                           sample_batched_chars_per_s=234_567.0, state_bytes=12_345_678, peak_rss_mib=12_345.0,
                           peak_gpu_mib=23_456.0, macs_per_char={"train": 1.23e9, "sample": 4.56e8})
                      for name in ("transformer", "minlstm", "mingru", "lstm", "gru", "rnn")]
    page = tmp_path / "report.html"
    page.write_text(render_html(report).replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    shown = render(page, flags=("--window-size=1000,800",))
    assert shown.console_errors == []
    layout = json.loads(re.search(r'data-layout="([^"]*)"', shown.dom).group(1).replace("&quot;", '"'))
    assert layout[0]["viewport"] == 1000
    results, costs = layout[:2]
    assert results["over"] <= 0 and costs["over"] <= 0, layout
    assert all(1 <= t["lines"] <= 2 for t in layout), layout
