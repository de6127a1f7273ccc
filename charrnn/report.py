"""The `charrnn compare` report: a table, the probes and samples as Markdown, the same as a self-contained
HTML page whose charts are inline SVG (it opens offline in any browser), and the raw numbers as JSON.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from .charts import line_chart
from .evaluate import EVAL_STREAMS
from .fileio import atomic_write, to_json

LN2 = math.log(2)

TABLE_COLUMNS = (
    ("model", "model"), ("shape", "shape"), ("params", "parameters"), ("train_chars_per_s", "train chars/s"),
    ("val_loss", "val loss (nats)"), ("val_bpc", "val bits/char"), ("sample_1_chars_per_s", "sample chars/s, 1 stream"),
    ("sample_batched_chars_per_s", "sample chars/s, batched"), ("state_bytes", "state per stream"),
    ("macs_per_char", "multiply-adds/char, train / sample"), ("memorized", "sample n-grams in training text, n=10/20/40"),
    ("peak_rss_mib", "peak memory"), ("sample", "sample (seed 1)"),
)
GRADIENT_KS = (1, 2, 4, 8, 16, 32, 50, 64, 128, 256)  # the columns of the Markdown table
SAMPLE_CELL = 40  # characters of the seeded sample shown in the table; the full one is further down

METHOD = """\
**How to read it.** Every model trained on the same training split for the same wall-clock budget
(validation passes included), one after another on the same machine, each with the settings
`charrnn train` picks for that budget{params}. *train chars/s* is the median of the logged training
rates (validation excluded). *val loss* is `charrnn eval` on the validation split in fp32: every
character after the first predicted once; the RNNs carry their state through {streams} streams, the
Transformer reads strided windows (each prediction sees between half its context and its full
context), so the numbers compare. *sample chars/s* times `Sampler` generating {speed} characters for
one stream, and {batch_len} characters for each of {batch} streams at once (all streams counted);
the Transformer samples with a key/value cache. Weights while sampling: {weights}. *state per stream* is what one sampling stream
carries from character to character: an RNN's hidden state, the same size however long the text, or
the Transformer's key/value cache, which grows with its context. *peak memory* is the peak resident memory of the
training process (the Python interpreter and torch included){gpu}. *multiply-adds/char* counts the matrix
products per character of training (the forward pass and the backward, counted as twice the forward) and
those a sampling step computes (an RNN's sampler folds its first layer's input product into a table lookup;
`Family.macs_per_char`),
beside the state a stream carries: an RNN's state is its whole memory and its step cost grows with the
square of it, while a Transformer's per-character cost follows its width and context, not a state it must
squeeze the past into. *sample n-grams in training text*: see Memorization below."""

CONTEXT_TEXT = """\
**Where memory runs out: loss against the context a model may read.** For {positions} fixed characters
of the validation text, each model predicts the character from only the last *k* characters before it,
starting from a fresh state. The curve falls while more context still helps and flattens where the
model stops using it. A Transformer reads at most its context, so its row is flat beyond that by
construction; an RNN reads whatever its state has kept. The last column scores the same characters
with all the text before them (from the start of the validation split), as `charrnn eval` does; the
gap between it and the longest k is what a model gets from text further back."""

BRACKET_TEXT = """\
**Brackets and quotes (Karpathy, Johnson and Fei-Fei 2015).** For each closing bracket or quote in the
first {chars:,} validation characters whose opener is there too ({pairs} pairs), the loss on the closing
character, by its distance to the opener. A model that remembers the open bracket predicts the closer
cheaply at any distance; its loss rises where its memory gives out. The RNNs read the text as one
stream from its start; the Transformer through its windows, so an opener further back than its window
is invisible to it."""

NO_BRACKETS = """\
**Brackets and quotes.** The first {chars:,} validation characters hold {pairs} matched brackets or quotes
(fewer than 10), so the bracket-distance probe of Karpathy, Johnson and Fei-Fei (2015) has nothing to
measure here; run `charrnn compare` on text that has them (source code, Wikipedia, novels) to see it.
The context probe above measures the same thing on any text."""


GRADIENT_TEXT = """\
**Gradients through time.** The norm of the gradient of the loss on character t with respect to what the
model held k characters earlier, after reading character t - 1 - k, averaged over {positions} positions of
the validation text. What that is depends on the kind of model, so each quantity has its own table and
chart. A plain RNN's gradient with respect to its state usually shrinks by orders of magnitude within a few
dozen characters (vanishing gradients: truncated BPTT cannot teach it what lies further back); the gated
cells keep it far longer. A Transformer has no state: its gradient with respect to its input at each
position reaches every position in its window directly and nothing beyond it (-)."""

MEMO_TEXT = """\
**Memorization.** Of all n-grams in a {chars:,}-character sample of each model (seeded, temperature 1:
the model's own distribution), the share that occurs verbatim in the training text; the last row is
the same share for the start of the validation text, which is what a model that generalises like the
author would produce. A share well above that row is text recalled rather than composed ("RNNs
memorize sequences extremely well"); shares are of every position, so repeats in a sample count each time."""


def _fmt(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key == "params":
        return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.0f}k"
    if key in ("val_loss", "val_bpc"):
        return f"{value:.4f}"
    if key == "peak_rss_mib":
        return f"{value:,.0f} MiB"
    if key == "state_bytes":
        return f"{value / 2**20:.1f} MiB" if value >= 2**20 else f"{value / 2**10:.1f} KiB"
    if key.endswith("chars_per_s"):
        return f"{value:,.0f}"
    if key == "macs_per_char":
        return f"{_si(value['train'])} / {_si(value['sample'])}"
    if key == "memorized":
        return _shares(value)
    if key == "sample":
        return value.strip()[:SAMPLE_CELL].rstrip().replace("\r", "").replace("\n", " \u23ce ")
    return str(value)


def _si(v: float) -> str:
    return next((f"{v / d:.3g}{u}" for d, u in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if v >= d), f"{v:.3g}")


def _shares(shares: dict[str, float | None]) -> str:
    return " / ".join("-" if v is None else f"{100 * v:.0f}" for v in shares.values()) + " %"


def _memory(row: dict[str, Any]) -> str:
    text = _fmt("peak_rss_mib", row.get("peak_rss_mib"))
    if row.get("peak_gpu_mib") is not None:
        text += f" (GPU {row['peak_gpu_mib']:,.0f} MiB)"
    return text


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = [label for _, label in TABLE_COLUMNS]
    body = []
    for row in report["rows"]:
        body.append([_memory(row) if key == "peak_rss_mib" else _fmt(key, row.get(key)) for key, _ in TABLE_COLUMNS])
    return head, body


def terminal_table(report: dict[str, Any]) -> str:
    """The comparison table as the terminal shows it (Markdown, which reads as plain text too)."""
    return markdown_table(*table_rows(report))


def markdown_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def _method(report: dict[str, Any]) -> str:
    s = report["settings"]
    text = METHOD.format(
        params=f", sized to about {s['params']:,} parameters" if s.get("params") else "",
        streams=EVAL_STREAMS, speed=s["speed_chars"], batch=s["batch_streams"],
        batch_len=max(s["speed_chars"] // 4, 1),
        gpu="; on a GPU, the peak memory torch allocated there too" if report["device"].startswith("cuda") else "",
        weights=_weights_text(report["rows"]),
    )
    return text


def _weights_text(rows: list[dict[str, Any]]) -> str:
    text = ", ".join(f"{r['model']} {r.get('sample_weights', 'fp32')}" for r in rows)
    if any(r.get("sample_weights") == "int8" for r in rows):
        text += (" (`Sampler`'s default for an RNN on an x86 CPU: faster for one stream than fp32 at a slight cost"
                 " in loss, measured in benchmarks/README.md; `charrnn sample --weights fp32` is exact)")
    return text


def _probe_tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(explanation, head, body) for each probe that has something to show."""
    out = []
    cp = report["context_probe"]
    if cp["lengths"] and cp["loss"]:
        head = ["model"] + [f"k={k}" for k in cp["lengths"]] + ["all before it"]
        body = [[name] + [f"{v / LN2:.3f}" for v in losses] for name, losses in cp["loss"].items()]
        out.append((CONTEXT_TEXT.format(positions=cp["positions"]) + " Bits per character:", head, body))
    br = report["brackets"]
    if "labels" in br:
        head = ["distance"] + br["labels"]
        body = [["closers"] + [str(c) for c in br["counts"]]]
        body += [[name] + ["-" if v is None else f"{v / LN2:.3f}" for v in losses] for name, losses in br["loss"].items()]
        out.append((BRACKET_TEXT.format(chars=report["probe_chars"], pairs=br["pairs"])
                    + " Bits on the closing character:", head, body))
    else:
        out.append((NO_BRACKETS.format(chars=report["probe_chars"], pairs=br["pairs"]), [], []))
    gr = report.get("gradients")  # reports written before these measurements have none
    if gr and any(gr["loss"].values()):
        out.append((GRADIENT_TEXT.format(positions=gr["positions"]), [], []))
        for of, curves in gradient_groups(gr).items():
            ks = [k for k in GRADIENT_KS if any(len(g) >= k for g in curves.values())]
            body = [[name] + ["-" if len(g) < k or g[k - 1] is None else f"{g[k - 1]:.2e}" for k in ks]
                    for name, g in curves.items()]
            out.append((f"*Gradient norm with respect to {of}:*", ["model"] + [f"k={k}" for k in ks], body))
    if report.get("memorized_validation"):
        ns = list(report["memorized_validation"])
        body = [[r["model"]] + [_share(r["memorized"][n]) for n in ns] for r in report["rows"] if r.get("memorized")]
        body.append(["validation text"] + [_share(v) for v in report["memorized_validation"].values()])
        out.append((MEMO_TEXT.format(chars=report["settings"]["memo_chars"]),
                    ["sample of"] + [f"{n}-grams" for n in ns], body))
    return out


def gradient_groups(gr: dict[str, Any]) -> dict[str, dict[str, list]]:
    """The gradient curves grouped by what they differentiate against (reports from before that was
    recorded: every curve in one group, as they were shown)."""
    groups: dict[str, dict[str, list]] = {}
    for name, g in gr["loss"].items():
        groups.setdefault(gr.get("of", {}).get(name, "the state k characters back"), {})[name] = g
    return groups


def _share(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def chosen_by(row: dict[str, Any]) -> str:
    """How a row's settings were chosen: the preset the budget picked (and what it measured), and where
    that family's presets come from."""
    p = row.get("preset")
    if not p:
        return f"sized to --params from the budget's preset; presets {row.get('chosen_by', '')}"
    epochs = f", {p['epochs']:g} epochs" if p.get("epochs") is not None else ""
    return f"preset {p['preset']} ({p['chars_per_s'] / 1000:.0f}k chars/s measured{epochs}); {row.get('chosen_by', '')}"


def render_markdown(report: dict[str, Any]) -> str:
    head, body = table_rows(report)
    parts = [
        f"# charrnn compare: {Path(report['corpus']).name}",
        f"`{report['command']}`  \n{report['machine']}, device {report['device']}; "
        f"{report['corpus_chars']:,} characters, the last {report['val_chars']:,} held out for validation.",
        markdown_table(head, body),
        _method(report),
    ]
    for text, h, b in _probe_tables(report):
        parts.append(text)
        if h:
            parts.append(markdown_table(h, b))
    parts.append("## Samples\n\nEach model, seed 1, temperature 0.8, from a line break:")
    for row in report["rows"]:
        parts.append(f"**{row['model']}** ({row['shape']})\n\n```\n{row['sample'].strip()}\n```")
    parts.append("## Settings\n\nEach family's presets come from the same rule: the largest preset the measured "
                 "training speed affords in the budget, its dropout from the epochs that buys (`charrnn models`).")
    parts.append(markdown_table(["model", "chosen by", "model config", "train config", "steps", "chars trained"], [
        [r["model"], chosen_by(r), json.dumps(r["model_config"]), json.dumps(r["train_config"]), f"{r['steps']:,}",
         f"{r['chars_trained']:,}"] for r in report["rows"]]))
    return "\n\n".join(parts) + "\n"


def _html_table(head: list[str], body: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _md_inline(text: str) -> str:
    """The little Markdown the explanations use (**bold**, *italic*, `code`) as HTML."""
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t, flags=re.S)
    t = re.sub(r"\*(.+?)\*", r"<i>\1</i>", t, flags=re.S)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def render_html(report: dict[str, Any]) -> str:
    head, body = table_rows(report)
    curves = {r["model"]: [(t, b) for t, b in r["curve"]] for r in report["rows"]}
    parts = [
        f"<h1>charrnn compare: {html.escape(Path(report['corpus']).name)}</h1>",
        f"<p><code>{html.escape(report['command'])}</code><br>{html.escape(report['machine'])}, device "
        f"{html.escape(report['device'])}; {report['corpus_chars']:,} characters, the last "
        f"{report['val_chars']:,} held out for validation.</p>",
        _html_table(head, body),
        f"<p>{_md_inline(_method(report))}</p>",
        "<h2>Validation bits per character against training time</h2>",
        line_chart(curves, "seconds of training (validation included)", "validation bits/char"),
    ]
    cp = report["context_probe"]
    for text, h, b in _probe_tables(report):
        parts.append(f"<p>{_md_inline(text)}</p>")
        if h:
            parts.append(_html_table(h, b))
        if text.startswith("**Where memory") and cp["loss"]:
            series = {name: [(k, v / LN2) for k, v in zip(cp["lengths"], losses)] for name, losses in cp["loss"].items()}
            # zip stops at the last k: the "all before it" value has no x position of its own
            parts.append(line_chart(series, "characters of context k (log scale)", "bits/char", log2_x=True))
        if text.startswith("**Brackets and quotes (") and h:
            br = report["brackets"]
            series = {name: [(i, None if v is None else v / LN2) for i, v in enumerate(losses)]
                      for name, losses in br["loss"].items()}
            parts.append(line_chart(series, "characters from the opener to the closer", "bits on the closer",
                                    x_names=br["labels"]))
        if text.startswith("*Gradient norm with respect to "):
            of = text[len("*Gradient norm with respect to "):-2]
            series = {name: [(k + 1, v) for k, v in enumerate(g)]
                      for name, g in gradient_groups(report["gradients"])[of].items()}
            parts.append(line_chart(series, "k: characters back", "gradient norm (log scale)", log_y=True))
    parts.append("<h2>Samples</h2><p>Each model, seed 1, temperature 0.8, from a line break.</p>")
    for row in report["rows"]:
        parts.append(f"<h3>{html.escape(row['model'])} <small>({html.escape(row['shape'])})</small></h3>"
                     f"<pre>{html.escape(row['sample'].strip())}</pre>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}pre{background:#f6f6f6;padding:8px;white-space:pre-wrap}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>charrnn compare</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_reports(out: Path, report: dict[str, Any]) -> None:
    """report.md, report.html and report.json in `out`, each written atomically."""
    out = Path(out)
    atomic_write(out / "report.md", lambda f: f.write(render_markdown(report).encode("utf-8")))
    atomic_write(out / "report.html", lambda f: f.write(render_html(report).encode("utf-8")))
    atomic_write(out / "report.json", lambda f: f.write((to_json(report, indent=1) + "\n").encode("utf-8")))
