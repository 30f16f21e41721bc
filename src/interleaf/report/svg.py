"""Inline SVG charts for the run report: stacked horizontal bars, plain bars and histograms.

No plotting library: each chart is a few dozen SVG elements written by hand, sized by a viewBox so it scales
with the page, labelled with its numbers (a reader should not have to estimate a bar's length), and given a
<title> and an aria-label so that a screen reader announces what it shows. Colours are the Okabe-Ito
palette (Okabe & Ito 2008, "Color Universal Design"), distinguishable with the common colour-vision
deficiencies; every colour also has its label and number next to it, so colour is never the only cue.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np

KEPT = "#0072B2"  # blue: what survives
# Okabe-Ito, minus the blue used for KEPT; grey (OTHER) for the long tail
DROP_COLOURS = ("#E69F00", "#D55E00", "#CC79A7", "#009E73", "#56B4E9", "#F0E442")
OTHER = "#9A9A9A"
INK, MUTED, GRID = "#222", "#666", "#e4e4e4"
FONT = 'font-family="system-ui,-apple-system,Segoe UI,Roboto,DejaVu Sans,sans-serif"'
CHAR_W = 7.0  # mean advance of a 12 px sans-serif character, for layout without font metrics


@dataclass(frozen=True)
class Segment:
    label: str  # what the segment counts ("kept", a drop reason)
    value: float
    colour: str


@dataclass(frozen=True)
class Row:
    label: str  # left of the bar
    segments: list[Segment]
    note: str = ""  # right of the bar, e.g. "45 → 29 (64%)"


def esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def fmt(n: float) -> str:
    """A count or measure, short: 1234 -> "1,234", 12345678 -> "12.3M", 0.2812 -> "0.281"."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "–"
    if abs(n) >= 1e7:
        return f"{n / 1e6:.1f}M"
    if float(n).is_integer():
        return f"{int(n):,}"
    return f"{n:.3g}" if abs(n) < 100 else f"{n:,.0f}"


def _text_colour(fill: str) -> str:
    """Black or white, whichever contrasts more with `fill` (WCAG relative luminance)."""
    r, g, b = (int(fill[i:i + 2], 16) / 255 for i in (1, 3, 5))
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "#000" if (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) else "#fff"


def _svg(width: float, height: float, title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'width="{width:.0f}" height="{height:.0f}" role="img" aria-label="{esc(title)}" class="chart" '
            f'{FONT} font-size="12">'
            f"<title>{esc(title)}</title>" + "".join(body) + "</svg>")


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str, extra: str = "") -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}"{extra}/>'


def _text(x: float, y: float, s: object, *, anchor: str = "start", fill: str = INK, size: int | None = None,
          weight: str | None = None) -> str:
    extra = (f' font-size="{size}"' if size else "") + (f' font-weight="{weight}"' if weight else "")
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}"{extra}>{esc(s)}</text>'


def legend(items: list[tuple[str, str]]) -> str:
    """An HTML legend (wraps with the page, unlike SVG text): [(label, colour)]."""
    return '<div class="legend">' + "".join(
        f'<span><i style="background:{c}"></i>{esc(label)}</span>' for label, c in items) + "</div>"


# ---------------------------------------------------------------- bars


def stacked_bars(rows: list[Row], title: str, *, width: int = 1080, scale_max: float | None = None,
                 label_w: int | None = None, bar_h: int = 22, inside: bool = True) -> str:
    """One horizontal bar per row, split into segments; a segment wide enough shows its number inside, and
    every segment names its label and number in its tooltip. Bars share one scale (`scale_max`, default
    the largest row total), so lengths compare across rows."""
    gap, top = max(4, bar_h // 2), 6
    label_w = label_w or int(min(220, 12 + CHAR_W * max((len(r.label) for r in rows), default=4)))
    note_w = int(min(260, 10 + CHAR_W * max((len(r.note) for r in rows), default=0)))
    plot_w = width - label_w - note_w - 8
    total_max = scale_max or max((sum(s.value for s in r.segments) for r in rows), default=0) or 1
    body, y = [], top
    for r in rows:
        body.append(_text(label_w - 8, y + bar_h * 0.68, r.label, anchor="end"))
        x = label_w
        for s in r.segments:
            w = plot_w * s.value / total_max
            if s.value <= 0:
                continue
            w = max(w, 1.5)  # a non-zero count stays visible
            body.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{s.colour}">'
                        f"<title>{esc(r.label)}: {esc(s.label)} {fmt(s.value)}</title></rect>")
            number = fmt(s.value)
            if inside and w > CHAR_W * len(number) + 6:
                body.append(_text(x + w / 2, y + bar_h * 0.68, number, anchor="middle",
                                  fill=_text_colour(s.colour)))
            x += w
        body.append(_text(x + 6, y + bar_h * 0.68, r.note, fill=MUTED))
        y += bar_h + gap
    return _svg(width, y - gap + top, title, body)


def bars(items: list[tuple[str, float]], title: str, *, width: int = 700, colour: str = KEPT,
         unit: str = "", bar_h: int = 18) -> str:
    """A plain horizontal bar chart with the value at the end of each bar."""
    rows = [Row(label, [Segment(label, v, colour)], f"{fmt(v)}{unit}") for label, v in items]
    return stacked_bars(rows, title, width=width, bar_h=bar_h, inside=False)


# ---------------------------------------------------------------- histograms


def nice_step(span: float, target: int) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) that cuts `span` into about `target` parts."""
    raw = max(span, 1e-12) / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if raw <= m * mag * 1.0000001)


def bin_edges(values: np.ndarray, *, kind: str = "auto", bins: int = 20,
              extent: tuple[float, float] | None = None) -> tuple[np.ndarray, str]:
    """Bin edges for `values` (widened to `extent` when given) and the scale used: "int" (one bin per small
    integer), "log" (counts and sizes that span orders of magnitude) or "linear"."""
    v = values[np.isfinite(values)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    if extent:
        lo, hi = min(lo, extent[0]), max(hi, extent[1])
    if kind == "auto":
        integral = v.size and np.all(v == np.round(v))
        kind = ("int" if integral and lo >= 0 and hi <= 30 else
                "log" if lo > 0 and hi / lo >= 50 else "linear")
    if kind == "int":
        return np.arange(math.floor(lo), math.floor(hi) + 2, dtype=float) - 0.5, "int"
    if kind == "log" and lo > 0:
        return np.geomspace(lo, hi * 1.0001, bins + 1), "log"
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    step = nice_step(hi - lo, bins)  # round bin edges: 0.60-0.62, not 0.6186-0.6397
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step + 1e-9) * step
    return np.linspace(lo, hi, round((hi - lo) / step) + 1), "linear"


class _Axis:
    """Value -> x position along a histogram's bins (linear, log, or one bin per integer)."""

    def __init__(self, edges: np.ndarray, scale: str, left: float, width: float):
        self.edges, self.scale, self.left, self.width = edges, scale, left, width
        self.lo, self.hi = float(edges[0]), float(edges[-1])

    def x(self, v: float) -> float | None:
        if not self.lo <= v <= self.hi:
            return None
        if self.scale == "log":
            frac = (math.log(v) - math.log(self.lo)) / (math.log(self.hi) - math.log(self.lo))
        else:
            frac = (v - self.lo) / (self.hi - self.lo)
        return self.left + frac * self.width

    def ticks(self) -> list[float]:
        """Round values to label, as many as fit about 45 px apart."""
        fit = max(int(self.width / 45), 2)
        if self.scale == "int":
            first, last = self.lo + 0.5, self.hi - 0.5
            step = max(1, math.ceil((last - first + 1) / fit))
            return list(np.arange(first, last + 1, step))
        if self.scale == "log":
            exps = range(math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1)
            for mults in ((1, 2, 5), (1, 3), (1,)):
                ticks = [m * 10 ** e for e in exps for m in mults if self.lo <= m * 10 ** e <= self.hi]
                if len(ticks) <= fit:
                    break
            if len(ticks) >= 2:
                return ticks
        step = nice_step(self.hi - self.lo, min(fit, 6))
        return list(np.arange(math.ceil(self.lo / step - 1e-9) * step, self.hi + step * 1e-6, step))


def histogram(series: list[tuple[str, np.ndarray, str]], title: str, *, x_label: str, width: int = 330,
              kind: str = "auto", bins: int = 20, markers: list[tuple[float, str]] | None = None) -> str:
    """Counts of values in bins, one stacked colour per series [(name, values, colour)]; the count of each
    bar above it when it fits, round values along the axis, and vertical `markers` [(x, label)] such as a
    threshold or the median (the bins widen to include them)."""
    values = np.concatenate([np.asarray(v, dtype=float) for _, v, _ in series]) if series else np.array([])
    marks = [(float(x), label) for x, label in markers or [] if x is not None and math.isfinite(x)]
    extent = (min(x for x, _ in marks), max(x for x, _ in marks)) if marks else None
    edges, scale = bin_edges(values, kind=kind, bins=bins, extent=extent)
    if scale == "log" and marks:
        marks = [(x, label) for x, label in marks if x > 0]
    counts = [np.histogram(np.clip(np.asarray(v, float), edges[0], edges[-1]), bins=edges)[0]
              for _, v, _ in series]
    total = np.sum(counts, axis=0) if counts else np.zeros(len(edges) - 1)
    left, right, top, plot_h = 36, 12, 30, 140
    plot_w = width - left - right
    height = top + plot_h + 40
    axis = _Axis(edges, scale, left, plot_w)
    peak = max(int(total.max()) if total.size else 0, 1)
    step = max(1, nice_step(peak, 4))
    y_max = math.ceil(peak / step) * step
    body = []
    for tick in np.arange(step, y_max + step / 2, step):  # gridlines, labelled with their count
        gy = top + plot_h * (1 - tick / y_max)
        body.append(_line(left, gy, left + plot_w, gy, GRID))
        body.append(_text(left - 5, gy + 4, fmt(tick), anchor="end", fill=MUTED, size=11))
    body.append(_line(left, top + plot_h, left + plot_w, top + plot_h, MUTED))
    for i in range(len(edges) - 1):
        x0, x1 = axis.x(edges[i]), axis.x(edges[i + 1])
        bw, base = x1 - x0, top + plot_h
        for (name, _, colour), c in zip(series, counts):
            if c[i] <= 0:
                continue
            h = max(plot_h * c[i] / y_max, 1.0)
            base -= h
            body.append(f'<rect x="{x0 + 0.5:.1f}" y="{base:.1f}" width="{max(bw - 1, 1):.1f}" '
                        f'height="{h:.1f}" fill="{colour}"><title>{esc(_bin_label(edges, i, scale))}: '
                        f'{fmt(c[i])} {esc(name)}'
                        f"</title></rect>")
        if total[i] and bw >= CHAR_W * 0.85 * len(fmt(total[i])):
            body.append(_text(x0 + bw / 2, base - 3, fmt(total[i]), anchor="middle", size=11))
    for tick in axis.ticks():
        x = axis.x(tick)
        if x is None:
            continue
        body.append(_line(x, top + plot_h, x, top + plot_h + 4, MUTED))
        body.append(_text(x, top + plot_h + 15, _short(tick), anchor="middle", fill=MUTED, size=11))
    for value, label in marks:
        x = axis.x(value)
        if x is None:
            continue
        body.append(_line(x, top - 8, x, top + plot_h, INK, ' stroke-dasharray="4 3"'))
        anchor = "end" if x > left + plot_w * 0.6 else "start"
        body.append(_text(x + (-4 if anchor == "end" else 4), top - 14, label, anchor=anchor, size=11))
    body.append(_text(left + plot_w / 2, height - 6, x_label + (" (log scale)" if scale == "log" else ""),
                      anchor="middle", fill=MUTED))
    return _svg(width, height, title, body)


def _short(v: float) -> str:
    if abs(v) >= 1e6:
        return f"{v / 1e6:.3g}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.3g}k"
    if abs(v) >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.2g}" if abs(v) < 1 else f"{v:.3g}"


def _bin_label(edges: np.ndarray, i: int, scale: str) -> str:
    if scale == "int":
        return fmt(edges[i] + 0.5)
    return f"{_short(edges[i])}–{_short(edges[i + 1])}"


# ---------------------------------------------------------------- scatter


def scatter(x: np.ndarray, y: np.ndarray, title: str, *, x_label: str, y_label: str, width: int = 330,
            max_points: int = 3000, colour: str = KEPT) -> str:
    """Points on a square plot with one scale for both axes (log when the values span orders of magnitude),
    and the diagonal x = y; at most `max_points`, evenly sampled, so a large run stays light."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size > max_points:
        keep = np.linspace(0, x.size - 1, max_points).astype(int)
        x, y = x[keep], y[keep]
    both = np.concatenate([x, y])
    lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    scale = "log" if lo > 0 and hi / lo >= 30 else "linear"
    if scale == "linear":
        step = nice_step(hi - min(lo, 0), 5)
        lo, hi = 0.0, math.ceil(hi / step) * step or 1.0
    else:  # the nearest 1, 2 or 5 times a power of ten outside the data
        lo = max(m * 10 ** e for e in range(math.floor(math.log10(lo)) - 1, math.floor(math.log10(lo)) + 1)
                 for m in (1, 2, 5) if m * 10 ** e <= lo)
        hi = min(m * 10 ** e for e in range(math.floor(math.log10(hi)), math.floor(math.log10(hi)) + 2)
                 for m in (1, 2, 5) if m * 10 ** e >= hi)
    left, top, bottom = 44, 10, 36
    side = width - left - 20
    height = top + side + bottom
    axis = _Axis(np.array([lo, hi]), scale, 0, side)
    body = [f'<rect x="{left}" y="{top}" width="{side}" height="{side}" fill="none" stroke="{GRID}"/>']
    for tick in axis.ticks():
        p = axis.x(tick)
        if p is None:
            continue
        body.append(_line(left + p, top, left + p, top + side, GRID))
        body.append(_line(left, top + side - p, left + side, top + side - p, GRID))
        body.append(_text(left + p, top + side + 15, _short(tick), anchor="middle", fill=MUTED, size=11))
        body.append(_text(left - 5, top + side - p + 4, _short(tick), anchor="end", fill=MUTED, size=11))
    body.append(f'<line x1="{left}" y1="{top + side}" x2="{left + side}" y2="{top}" stroke="{MUTED}" '
                f'stroke-dasharray="4 3"><title>square: width = height</title></line>')
    body.append(f'<g fill="{colour}" fill-opacity="0.55" stroke="{colour}" stroke-width="0.6">')
    for a, b in zip(x, y):
        px, py = axis.x(a), axis.x(b)
        if px is not None and py is not None:
            body.append(f'<circle cx="{left + px:.1f}" cy="{top + side - py:.1f}" r="3.2">'
                        f"<title>{fmt(a)} × {fmt(b)}</title></circle>")
    body.append("</g>")
    log_note = " (log scale)" if scale == "log" else ""
    body.append(_text(left + side / 2, height - 6, x_label + log_note, anchor="middle", fill=MUTED))
    body.append(f'<text transform="translate(12 {top + side / 2:.0f}) rotate(-90)" text-anchor="middle" '
                f'fill="{MUTED}">{esc(y_label + log_note)}</text>')
    return _svg(width, height, title, body)
