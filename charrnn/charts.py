"""Inline SVG charts for the HTML pages (`charrnn compare`'s report, `charrnn inspect`): a line chart
and a scatter plot, drawn as plain SVG so a page opens offline in any browser; and a colour scale, the
legend of anything a page colours by value."""

from __future__ import annotations

import html
import math
import zlib

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _usable(v: float | None, log: bool) -> bool:
    return v is not None and math.isfinite(v) and (v > 0 or not log)


def _axes(left: int, top: int, pw: float, ph: float, width: int, height: int, x_label: str, y_label: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'font-family="sans-serif" font-size="12">',
            f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
            f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle">{html.escape(x_label)}</text>',
            f'<text x="14" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 14 {top + ph / 2})">'
            f'{html.escape(y_label)}</text>']


def line_chart(series: dict[str, list[tuple[float, float | None]]], x_label: str, y_label: str, log2_x: bool = False,
               x_names: list[str] | None = None, log_y: bool = False, width: int = 680, height: int = 380,
               marks: dict[str, list[tuple[float, float]]] | None = None, key: tuple[str, str] | None = None,
               y_max: float | None = None) -> str:
    """One line with markers per series, axes, ticks and a legend. `x_names`: the x values are 0..n-1
    and these are their tick labels (categories). `log_y`: a log10 y axis (values <= 0 are left out).
    `marks`: points drawn as dots in the colour of the series of the same name (its own checks, as
    the validations beside a training curve; its lines then have no markers of their own), and `key`
    says under the legend what a line and what a dot are. `y_max`: the top of the y axis; the lines
    are cut off above it."""
    marks = marks or {}
    pts = [p for s in [*series.values(), *marks.values()] for p in s if _usable(p[1], log_y)]
    if not pts:
        return ""
    left, right, top, bottom = 64, 150, 16, 48
    tx = (lambda v: math.log2(v)) if log2_x else (lambda v: v)
    ty = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    xs, ys = [tx(p[0]) for p in pts], [ty(p[1]) for p in pts]
    if y_max is not None and _usable(y_max, log_y) and ty(y_max) > min(ys):
        ys = [min(y, ty(y_max)) for y in ys]
    x0, x1 = (min(xs), max(xs)) if max(xs) > min(xs) else (min(xs) - 1, max(xs) + 1)
    pad = (max(ys) - min(ys)) * 0.05 or 0.1
    y0, y1 = min(ys) - pad, max(ys) + pad
    pw, ph = width - left - right, height - top - bottom

    def X(v: float) -> float:
        return left + (tx(v) - x0) / (x1 - x0) * pw

    def Y(v: float) -> float:  # v already on the axis's scale
        return top + (y1 - v) / (y1 - y0) * ph

    out = _axes(left, top, pw, ph, width, height, x_label, y_label)
    if log_y:
        every = max(1, math.ceil((math.floor(y1) - math.ceil(y0) + 1) / 8))  # at most about 8 labelled decades
        yticks = [(float(e), f"1e{e}") for e in range(math.ceil(y0), math.floor(y1) + 1) if e % every == 0]
        if len(yticks) < 2:  # less than a decade: label the ends
            yticks = [(y0 + pad, f"{10 ** (y0 + pad):.3g}"), (y1 - pad, f"{10 ** (y1 - pad):.3g}")]
    else:
        yticks = [(v, f"{v:g}") for v in _nice_ticks(y0, y1)]
    for v, name in yticks:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{name}</text>')
    if x_names:
        xticks = [(i, name) for i, name in enumerate(x_names)]
    elif log2_x:
        xticks = [(v, f"{v:g}") for v in sorted({p[0] for p in pts})]
    else:
        xticks = [(v, f"{v:g}") for v in _nice_ticks(x0, x1) if x0 <= v <= x1]
    for v, name in xticks:
        out.append(f'<line x1="{X(v):.1f}" x2="{X(v):.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#999"/>'
                   f'<text x="{X(v):.1f}" y="{top + ph + 18}" text-anchor="middle">{html.escape(name)}</text>')
    # the lines stay inside the plot (an id from what the chart shows: one page may hold several)
    clip = f"clip{zlib.crc32(repr((x_label, y_label, list(series), width, height)).encode()):x}"
    out.append(f'<clipPath id="{clip}"><rect x="{left}" y="{top}" width="{pw}" height="{ph}"/></clipPath>')
    many = bool(marks) or max(len(s) for s in series.values()) > 40  # a dense curve reads better without markers
    for i, (name, s) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        s = [(x, y) for x, y in s if _usable(y, log_y)]
        path = " ".join(f"{X(x):.1f},{Y(ty(y)):.1f}" for x, y in s)
        out.append(f'<polyline class="series" points="{path}" fill="none" stroke="{color}" stroke-width="2" '
                   f'clip-path="url(#{clip})"><title>{html.escape(name)}</title></polyline>')
        if not many:
            out += [f'<circle cx="{X(x):.1f}" cy="{Y(ty(y)):.1f}" r="3" fill="{color}"><title>{html.escape(name)}: '
                    f'{x:g}, {y:.4g}</title></circle>' for x, y in s]
        out += [f'<circle class="mark" cx="{X(x):.1f}" cy="{Y(ty(y)):.1f}" r="4" fill="{color}" stroke="white">'
                f'<title>{html.escape(name)}: {x:g}, {y:.4g}</title></circle>'
                for x, y in marks.get(name, []) if _usable(y, log_y) and (y_max is None or y <= y_max)]
        ly = top + 14 + 18 * i
        out.append(f'<line x1="{left + pw + 12}" x2="{left + pw + 32}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" '
                   f'stroke-width="2"/><text x="{left + pw + 38}" y="{ly}">{html.escape(name)}</text>')
    if key:
        ly = top + 14 + 18 * (len(series) + 1)
        out.append(f'<line x1="{left + pw + 12}" x2="{left + pw + 32}" y1="{ly - 4}" y2="{ly - 4}" stroke="#666" '
                   f'stroke-width="2"/><text x="{left + pw + 38}" y="{ly}">{html.escape(key[0])}</text>'
                   f'<circle cx="{left + pw + 22}" cy="{ly + 14}" r="4" fill="#666"/>'
                   f'<text x="{left + pw + 38}" y="{ly + 18}">{html.escape(key[1])}</text>')
    out.append("</svg>")
    return "\n".join(out)


def scatter_chart(groups: dict[str, list[tuple[float, float]]], x_label: str, y_label: str, title: str = "",
                  size: int = 300) -> str:
    """Points in the unit square, one colour per group (legend below), with the diagonal x + y = 1
    (no point lies beyond it when x and y are fractions of disjoint events)."""
    left, top, bottom = 48, 24 if title else 10, 62
    pw = ph = size - left - 12
    width, height = size, top + ph + bottom

    def X(v: float) -> float:
        return left + v * pw

    def Y(v: float) -> float:
        return top + (1 - v) * ph

    out = _axes(left, top, pw, ph, width, height - 22, x_label, y_label)
    if title:
        out.append(f'<text x="{left + pw / 2}" y="16" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>')
    out.append(f'<line x1="{X(0)}" y1="{Y(1)}" x2="{X(1)}" y2="{Y(0)}" stroke="#ccc" stroke-dasharray="4 3"/>')
    for v in (0, 0.5, 1):
        out.append(f'<text x="{left - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:g}</text>'
                   f'<text x="{X(v):.1f}" y="{top + ph + 16}" text-anchor="middle">{v:g}</text>')
    for i, (name, pts) in enumerate(groups.items()):
        color = COLORS[i % len(COLORS)]
        out += [f'<circle class="point" cx="{X(x):.1f}" cy="{Y(y):.1f}" r="2.5" fill="{color}" fill-opacity="0.6">'
                f'<title>{html.escape(name)} unit {j}: {x:.2f} left, {y:.2f} right</title></circle>'
                for j, (x, y) in enumerate(pts)]
        lx = left + 70 * i
        out.append(f'<circle cx="{lx + 4}" cy="{height - 8}" r="4" fill="{color}"/>'
                   f'<text x="{lx + 12}" y="{height - 4}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def color_scale(stops: list[tuple[int, int, int]], ticks: list[tuple[float, str]], caption: str, ident: str,
                width: int = 260) -> str:
    """A colour bar in HTML: the RGB `stops` evenly spaced along it, linear between them (a page's script
    must colour by the same rule), `ticks` (position 0..1, label) under it, flush with the bar at its
    ends and centred elsewhere, and a caption saying what the colour is, in which units. Tick i's label
    has the id `{ident}-{i}`, the caption `{ident}-caption`, so that a script can relabel them."""
    css = ", ".join(f"rgb({r},{g},{b}) {100 * i / (len(stops) - 1):g}%" for i, (r, g, b) in enumerate(stops))
    labels = "".join(f'<span id="{ident}-{i}" class="scale-tick" style="position:absolute;top:17px;left:{100 * at:g}%;'
                     f'transform:translateX({0 if at <= 0 else -100 if at >= 1 else -50}%);white-space:nowrap">'
                     f'{html.escape(name)}</span>' for i, (at, name) in enumerate(ticks))
    return (f'<div class="scale" id="{ident}" style="display:flex;align-items:flex-start;gap:2em;margin:0.4em 0;'
            f'font-size:12px"><div style="position:relative;width:{width}px;height:32px;flex:none">'
            f'<div class="scale-bar" style="height:14px;border:1px solid #999;background:linear-gradient(to right, '
            f'{css})"></div>{labels}</div><span id="{ident}-caption">{html.escape(caption)}</span></div>')
