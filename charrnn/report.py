"""The `charrnn compare` report: the results, the probes, the samples and the settings in sections with a
table of contents, as Markdown, and the same as a self-contained HTML page whose charts are inline SVG
(it opens offline in any browser); the raw numbers as JSON.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .charts import line_chart
from .evaluate import EVAL_STREAMS
from .fileio import atomic_write, to_json
from .units import format_duration

LN2 = math.log(2)

# A table's columns: the row's key, the header in one or two short lines (a narrow table on a laptop's
# screen, no header wrapped further), and what the key under the table says of it. The first table holds
# what most readers compare; the second what costs what.
RESULT_COLUMNS = (
    ("model", ("model",), ""),
    ("params", ("params",), "parameters"),
    ("val_bpc", ("val", "bpc"), "validation loss in bits per character (lower is better)"),
    ("steps", ("steps",), "optimizer steps trained in the budget"),
    ("chars_trained", ("chars", "trained"), "characters trained on in the budget"),
    ("train_chars_per_s", ("train", "chars/s"), "median training speed, validation excluded"),
    ("sample_1_chars_per_s", ("sample", "chars/s"), "characters sampled per second by one stream"),
)
COST_COLUMNS = (
    ("model", ("model",), ""),
    ("shape", ("shape",), ""),
    ("val_loss", ("val loss", "nats"), "the validation loss in nats per character"),
    ("sample_batched_chars_per_s", ("sample chars/s", "{batch} streams"), "characters sampled per second by "
                                                                          "{batch} streams at once, all counted"),
    ("state_bytes", ("state", "per stream"), "what one sampling stream carries from character to character"),
    ("macs_per_char", ("MACs/char", "train / sample"), "multiply-adds per character of training and of one "
                                                        "sampling step"),
    ("peak_rss_mib", ("peak", "memory"), "peak memory of the training process"),
    ("memorized", ("n-grams in", "training text"), "shares of the 10-, 20- and 40-grams of a sample found in "
                                                    "the training text (Memorization)"),
)
GRADIENT_KS = (1, 2, 4, 8, 16, 32, 50, 64, 128, 256)  # the columns of the Markdown table

METHOD = """\
Every model trained on the same training split for the same wall-clock budget
(validation passes included), one after another on the same machine, each with the settings
`charrnn train` picks for that budget{params}. *train chars/s* is the median of the logged training
rates (validation excluded). *val bpc* and *val loss* are `charrnn eval` on the validation split in fp32: every
character after the first predicted once; the RNNs carry their state through {streams} streams, the
Transformer reads strided windows (each prediction sees between half its context and its full
context), so the numbers compare. *sample chars/s* times `Sampler` generating {speed} characters for
one stream, and {batch_len} characters for each of {batch} streams at once (all streams counted);
the Transformer samples with a key/value cache. Weights while sampling: {weights}. *state per stream* is what one sampling stream
carries from character to character: an RNN's hidden state, the same size however long the text, or
the Transformer's key/value cache, which grows with its context. *peak memory* is the peak resident memory of the
training process (the Python interpreter and torch included){gpu}. *MACs/char* counts the matrix
products per character of training (the forward pass and the backward, counted as twice the forward) and
those a sampling step computes (an RNN's sampler folds its first layer's input product into a table lookup;
`Family.macs_per_char`),
beside the state a stream carries: an RNN's state is its whole memory and its step cost grows with the
square of it, while a Transformer's per-character cost follows its width and context, not a state it must
squeeze the past into. *n-grams in training text*: see Memorization below."""

CONTEXT_TEXT = """\
Loss against the context a model may read. For {positions} fixed characters
of the validation text, each model predicts the character from only the last *k* characters before it,
starting from a fresh state. The curve falls while more context still helps and flattens where the
model stops using it. A Transformer reads at most its context, so its row is flat beyond that by
construction; an RNN reads whatever its state has kept. The last column scores the same characters
with all the text before them (from the start of the validation split), as `charrnn eval` does; the
gap between it and the longest k is what a model gets from text further back."""

BRACKET_TEXT = """\
After Karpathy, Johnson and Fei-Fei (2015). For each closing bracket or quote in the
first {chars:,} validation characters whose opener is there too ({pairs} pairs), the loss on the closing
character, by its distance to the opener. A model that remembers the open bracket predicts the closer
cheaply at any distance; its loss rises where its memory gives out. The RNNs read the text as one
stream from its start; the Transformer through its windows, so an opener further back than its window
is invisible to it."""

NO_BRACKETS = """\
The first {chars:,} validation characters hold {pairs} matched brackets or quotes
(fewer than 10), so the bracket-distance probe of Karpathy, Johnson and Fei-Fei (2015) has nothing to
measure here; run `charrnn compare` on text that has them (source code, Wikipedia, novels) to see it.
The context probe above measures the same thing on any text."""


GRADIENT_TEXT = """\
The norm of the gradient of the loss on character t with respect to what the
model held k characters earlier, after reading character t - 1 - k, averaged over {positions} positions of
the validation text. What that is depends on the kind of model, so each quantity has its own table and
chart. A plain RNN's gradient with respect to its state usually shrinks by orders of magnitude within a few
dozen characters (vanishing gradients: truncated BPTT cannot teach it what lies further back); the gated
cells keep it far longer. A Transformer has no state: its gradient with respect to its input at each
position reaches every position in its window directly and nothing beyond it (-)."""

MEMO_TEXT = """\
Of all n-grams in a {chars:,}-character sample of each model (seeded, temperature 1:
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
    if key.endswith("chars_per_s") or key == "steps":
        return f"{value:,.0f}"
    if key == "chars_trained":
        return _si(value)
    if key == "macs_per_char":
        return f"{_si(value['train'])} / {_si(value['sample'])}"
    if key == "memorized":
        return _shares(value)
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


def _columns(columns: tuple, report: dict[str, Any]) -> list[tuple[str, tuple[str, ...], str]]:
    batch = report["settings"]["batch_streams"]
    return [(key, tuple(h.format(batch=batch) for h in head), about.format(batch=batch))
            for key, head, about in columns]


def table_rows(report: dict[str, Any], columns: tuple = RESULT_COLUMNS) -> tuple[list[tuple], list[list[str]]]:
    """A table's header (each in its lines) and its rows, formatted."""
    cols = _columns(columns, report)
    body = [[_memory(row) if key == "peak_rss_mib" else _fmt(key, row.get(key)) for key, _, _ in cols]
            for row in report["rows"]]
    return [head for _, head, _ in cols], body


def _key(columns: tuple, report: dict[str, Any]) -> str:
    """What the table's headers stand for, in a line under it."""
    return "; ".join(f"*{' '.join(head)}*: {about}" for _, head, about in _columns(columns, report) if about) + "."


def terminal_table(report: dict[str, Any]) -> str:
    """The results table as the terminal shows it (Markdown, which reads as plain text too)."""
    return markdown_table(*table_rows(report))


def markdown_table(head: list, body: list[list[str]]) -> str:
    """`head`: each header a string, or its lines (joined into one here)."""
    head = [h if isinstance(h, str) else " ".join(h) for h in head]
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


# --- the sections ------------------------------------------------------------------------------------
@dataclass
class Section:
    """A titled part of the report. Its blocks, in order: ("text", Markdown), ("table", head, body),
    ("key", Markdown: what a table's headers stand for), ("sample", title, text), and those only the page
    shows: ("chart", svg), ("caption", Markdown: what a chart shows). Markdown leaves out a section of
    charts alone."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        """The title as GitHub makes a heading's anchor: lower case, punctuation dropped, spaces as hyphens."""
        return re.sub(r"[^\w\- ]", "", self.title.lower()).replace(" ", "-")

    def in_markdown(self) -> bool:
        return any(b[0] not in ("chart", "caption") for b in self.blocks)


def sections(report: dict[str, Any]) -> list[Section]:
    rows = report["rows"]
    out = [Section(title, [("table", *table_rows(report, columns)), ("key", _key(columns, report))])
           for title, columns in (("Results", RESULT_COLUMNS), ("Cost and memory", COST_COLUMNS))]
    chart = _loss_chart(rows)
    if chart:
        out.append(Section("Loss over time", [
            ("caption", "Lines: each model's training loss as it logged it (consecutive records averaged where there "
                     "are many; dropout on, in the run's precision). Dots: its validations (fp32; the earlier ones "
                     "on a part of the split, the last on all of it)."),
            ("chart", chart)]))
    out.append(Section("How to read it", [("text", _method(report))]))
    cp = report["context_probe"]
    if cp["lengths"] and cp["loss"]:
        series = {name: [(k, v / LN2) for k, v in zip(cp["lengths"], losses)] for name, losses in cp["loss"].items()}
        # zip stops at the last k: the "all before it" value has no x position of its own
        out.append(Section("Where memory runs out", [
            ("text", CONTEXT_TEXT.format(positions=cp["positions"]) + " Bits per character:"),
            ("table", ["model"] + [f"k={k}" for k in cp["lengths"]] + ["all before it"],
             [[name] + [f"{v / LN2:.3f}" for v in losses] for name, losses in cp["loss"].items()]),
            ("chart", line_chart(series, "characters of context k (log scale)", "bits/char", log2_x=True))]))
    br = report["brackets"]
    if "labels" in br:
        series = {name: [(i, None if v is None else v / LN2) for i, v in enumerate(losses)]
                  for name, losses in br["loss"].items()}
        body = [["closers"] + [str(c) for c in br["counts"]]]
        body += [[name] + ["-" if v is None else f"{v / LN2:.3f}" for v in losses]
                 for name, losses in br["loss"].items()]
        out.append(Section("Brackets and quotes", [
            ("text", BRACKET_TEXT.format(chars=report["probe_chars"], pairs=br["pairs"])
             + " Bits on the closing character:"),
            ("table", ["distance"] + br["labels"], body),
            ("chart", line_chart(series, "characters from the opener to the closer", "bits on the closer",
                                 x_names=br["labels"]))]))
    else:
        out.append(Section("Brackets and quotes", [("text", NO_BRACKETS.format(chars=report["probe_chars"],
                                                                               pairs=br["pairs"]))]))
    gr = report.get("gradients")  # reports written before these measurements have none
    if gr and any(gr["loss"].values()):
        blocks = [("text", GRADIENT_TEXT.format(positions=gr["positions"]))]
        for of, curves in gradient_groups(gr).items():
            ks = [k for k in GRADIENT_KS if any(len(g) >= k for g in curves.values())]
            body = [[name] + ["-" if len(g) < k or g[k - 1] is None else f"{g[k - 1]:.2e}" for k in ks]
                    for name, g in curves.items()]
            series = {name: [(k + 1, v) for k, v in enumerate(g)] for name, g in curves.items()}
            blocks += [("text", f"*Gradient norm with respect to {of}:*"),
                       ("table", ["model"] + [f"k={k}" for k in ks], body),
                       ("chart", line_chart(series, "k: characters back", "gradient norm (log scale)", log_y=True))]
        out.append(Section("Gradients through time", blocks))
    if report.get("memorized_validation"):
        ns = list(report["memorized_validation"])
        body = [[r["model"]] + [_share(r["memorized"][n]) for n in ns] for r in rows if r.get("memorized")]
        body.append(["validation text"] + [_share(v) for v in report["memorized_validation"].values()])
        out.append(Section("Memorization", [("text", MEMO_TEXT.format(chars=report["settings"]["memo_chars"])),
                                            ("table", ["sample of"] + [f"{n}-grams" for n in ns], body)]))
    out.append(Section("Samples", [("text", "Each model, seed 1, temperature 0.8, from a line break:")]
                       + [("sample", f"{r['model']} ({r['shape']})", r["sample"].strip()) for r in rows]))
    out.append(Section("Settings", [
        ("text", "Each family's presets come from the same rule: the largest preset the measured training speed "
                 "affords in the budget, its dropout from the epochs that buys (`charrnn models`)."),
        ("table", ["model", "chosen by", "model config", "train config", "steps", "chars trained"],
         [[r["model"], chosen_by(r), json.dumps(r["model_config"]), json.dumps(r["train_config"]), f"{r['steps']:,}",
           f"{r['chars_trained']:,}"] for r in rows])]))
    return out


def _loss_chart(rows: list[dict[str, Any]]) -> str:
    """Each model's training loss records as a line, its validations as dots. The y axis stops at the
    highest validation or training loss logged after a model's first validation: the first records of
    an untrained model would squeeze what differs into the bottom of the chart."""
    train = {r["model"]: [tuple(p) for p in r.get("train_curve") or []] for r in rows}
    val = {r["model"]: [tuple(p) for p in r.get("curve") or []] for r in rows}
    later = [b for name in train for t, b in train[name] if not val[name] or t >= val[name][0][0]]
    later += [b for points in val.values() for _, b in points]
    top = max((b for b in later if math.isfinite(b)), default=None)
    return line_chart(train, "seconds of training (validation included)", "bits per character", marks=val,
                      key=("training", "validation"), y_max=top)


def _intro(report: dict[str, Any]) -> str:
    text = (f"`{report['command']}`  \n{report['machine']}, device {report['device']}; {report['corpus_chars']:,} "
            f"characters, the last {report['val_chars']:,} held out for validation.")
    if report.get("wall_s") is not None:
        plan = report.get("plan")
        estimated = f" (estimated {format_duration(plan['total_s'])} at its start)" if plan else ""
        text += f" The comparison took {format_duration(report['wall_s'])}{estimated}."
    return text


def render_markdown(report: dict[str, Any]) -> str:
    parts = [f"# charrnn compare: {Path(report['corpus']).name}", _intro(report)]
    shown = [sec for sec in sections(report) if sec.in_markdown()]
    parts.append("## Contents\n\n" + "\n".join(f"{i}. [{sec.title}](#{sec.anchor})" for i, sec in enumerate(shown, 1)))
    for sec in shown:
        parts.append(f"## {sec.title}")
        for block in sec.blocks:
            kind = block[0]
            if kind in ("text", "key"):
                parts.append(block[1])
            elif kind == "table":
                parts.append(markdown_table(block[1], block[2]))
            elif kind == "sample":
                parts.append(f"**{block[1]}**\n\n```\n{block[2]}\n```")
    return "\n\n".join(parts) + "\n"


TEXT_COLUMNS = ("shape", "chosen by", "model config", "train config")  # set left, as words read (the first is too)


def _html_table(head: list, body: list[list[str]]) -> str:
    """Each header in its lines (at most two, by the columns' definitions), kept from wrapping further."""
    lines = [(h,) if isinstance(h, str) else h for h in head]
    left = [' class="text"' if " ".join(h) in TEXT_COLUMNS else "" for h in lines]
    th = "".join(f"<th{a}>" + "<br>".join(html.escape(line) for line in h) + "</th>" for h, a in zip(lines, left))
    trs = "".join("<tr>" + "".join(f"<td{a}>{html.escape(c)}</td>" for c, a in zip(row, left)) + "</tr>" for row in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _md_inline(text: str) -> str:
    """The little Markdown the explanations use (**bold**, *italic*, `code`, a line break) as HTML."""
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t, flags=re.S)
    t = re.sub(r"\*(.+?)\*", r"<i>\1</i>", t, flags=re.S)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    return t.replace("  \n", "<br>")


STYLE = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;line-height:1.45}"
         "table{border-collapse:collapse;margin:1em 0;font-variant-numeric:tabular-nums}"
         "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{white-space:nowrap;vertical-align:bottom}"
         "td:first-child,th:first-child,.text{text-align:left}p.key{font-size:90%;color:#444;margin-top:-0.5em}"
         "pre{background:#f6f6f6;padding:8px;white-space:pre-wrap}nav ol{columns:2}")


def render_html(report: dict[str, Any]) -> str:
    secs = sections(report)
    toc = "".join(f'<li><a href="#{sec.anchor}">{html.escape(sec.title)}</a></li>' for sec in secs)
    parts = [f"<h1>charrnn compare: {html.escape(Path(report['corpus']).name)}</h1>",
             f"<p>{_md_inline(_intro(report))}</p>", f'<nav id="contents"><h2>Contents</h2><ol>{toc}</ol></nav>']
    for sec in secs:
        parts.append(f'<h2 id="{sec.anchor}">{html.escape(sec.title)}</h2>')
        for block in sec.blocks:
            kind = block[0]
            if kind in ("text", "caption"):
                parts.append(f"<p>{_md_inline(block[1])}</p>")
            elif kind == "key":
                parts.append(f'<p class="key">{_md_inline(block[1])}</p>')
            elif kind == "table":
                parts.append(_html_table(block[1], block[2]))
            elif kind == "chart":
                parts.append(block[1])
            elif kind == "sample":
                parts.append(f"<h3>{html.escape(block[1])}</h3><pre>{html.escape(block[2])}</pre>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>charrnn compare</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_reports(out: Path, report: dict[str, Any]) -> None:
    """report.md, report.html and report.json in `out`, each written atomically."""
    out = Path(out)
    atomic_write(out / "report.md", lambda f: f.write(render_markdown(report).encode("utf-8")))
    atomic_write(out / "report.html", lambda f: f.write(render_html(report).encode("utf-8")))
    atomic_write(out / "report.json", lambda f: f.write((to_json(report, indent=1) + "\n").encode("utf-8")))
