"""Inline SVG drawing: scales, axes and marks, written as text so the report needs no chart library.

Every function returns SVG markup; text is escaped here, so callers pass plain strings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

# Outcome and series colours (colour-blind-safe palette, Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def fmt(value: float) -> str:
    """A coordinate with two decimals, trailing zeros dropped (keeps the markup small)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def tick_label(value: float) -> str:
    """A short human label for an axis tick."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{value:.0e}"
    if magnitude >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3g}"


@dataclass(frozen=True)
class Scale:
    """Maps data values in [lo, hi] to pixels in [start, end], linearly or logarithmically."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    def __call__(self, value: float) -> float:
        """The pixel coordinate of `value` (clamped to the domain)."""
        value = min(max(value, self.lo), self.hi)
        if self.log:
            a, b, v = math.log10(self.lo), math.log10(self.hi), math.log10(value)
        else:
            a, b, v = self.lo, self.hi, value
        share = (v - a) / (b - a) if b != a else 0.5
        return self.start + share * (self.end - self.start)

    def ticks(self, count: int = 5) -> list[float]:
        """Round tick values inside the domain."""
        if self.log:
            return _log_ticks(self.lo, self.hi)
        return _linear_ticks(self.lo, self.hi, count)


def _linear_ticks(lo: float, hi: float, count: int) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    step = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= step * mult:
            step *= mult
            break
    first = math.ceil(lo / step) * step
    ticks, value = [], first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for exponent in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for mult in (1, 2, 5):
            value = mult * 10.0**exponent
            if lo <= value <= hi:
                ticks.append(value)
    if len(ticks) > 8:  # many decades: keep the powers of ten only
        ticks = [t for t in ticks if math.isclose(math.log10(t), round(math.log10(t)))]
    return ticks or [lo, hi]


def nice_range(
    values: list[float], *, include_zero: bool = False, pad: float = 0.05
) -> tuple[float, float]:
    """A data range with a little headroom; never empty."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if include_zero:
        finite.append(0.0)
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    if hi == lo:
        return (lo - 1, hi + 1) if lo else (0.0, 1.0)
    span = hi - lo
    return (lo if include_zero and lo == 0 else lo - pad * span), hi + pad * span


@dataclass
class Frame:
    """A plot area inside an SVG of `width` x `height`, with margins for axes and a legend."""

    width: int = 720
    height: int = 300
    left: int = 64
    right: int = 24
    top: int = 28
    bottom: int = 44
    parts: list[str] = field(default_factory=list)

    @property
    def x0(self) -> float:
        return self.left

    @property
    def x1(self) -> float:
        return self.width - self.right

    @property
    def y0(self) -> float:
        return self.height - self.bottom

    @property
    def y1(self) -> float:
        return self.top

    def x_scale(self, lo: float, hi: float, log: bool = False) -> Scale:
        """A horizontal scale over the plot area."""
        return Scale(lo, hi, self.x0, self.x1, log)

    def y_scale(self, lo: float, hi: float, log: bool = False) -> Scale:
        """A vertical scale over the plot area (larger values higher up)."""
        return Scale(lo, hi, self.y0, self.y1, log)

    def add(self, markup: str) -> None:
        """Append markup to the drawing."""
        self.parts.append(markup)

    def svg(self, title: str, css_class: str = "chart") -> str:
        """The finished `<svg>` element with an accessible title."""
        body = "".join(self.parts)
        return (
            f'<svg class="{css_class}" viewBox="0 0 {self.width} {self.height}" '
            f'width="{self.width}" height="{self.height}" role="img" '
            f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{body}</svg>'
        )


def text(
    x: float, y: float, label: str, *, anchor: str = "start", size: int = 11, cls: str = ""
) -> str:
    """A text label."""
    klass = f' class="{cls}"' if cls else ""
    return (
        f'<text x="{fmt(x)}" y="{fmt(y)}" text-anchor="{anchor}" font-size="{size}"{klass}>'
        f"{escape(label)}</text>"
    )


def line(
    x1: float,
    y1: float,
    x2: float,
    y2: float,
    *,
    stroke: str = "#999",
    width: float = 1,
    dash: str = "",
) -> str:
    """A straight line segment."""
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line x1="{fmt(x1)}" y1="{fmt(y1)}" x2="{fmt(x2)}" y2="{fmt(y2)}" stroke="{stroke}" '
        f'stroke-width="{fmt(width)}"{dashed}/>'
    )


def rect(
    x: float, y: float, w: float, h: float, fill: str, tooltip: str = "", href: str = ""
) -> str:
    """A filled rectangle with an optional tooltip and link."""
    tip = f"<title>{escape(tooltip)}</title>" if tooltip else ""
    shape = (
        f'<rect x="{fmt(x)}" y="{fmt(y)}" width="{fmt(max(w, 0.0))}" height="{fmt(max(h, 0.0))}" '
        f'fill="{fill}">{tip}</rect>'
    )
    return f'<a href="{escape(href)}">{shape}</a>' if href else shape


def circle(
    x: float, y: float, r: float, fill: str, tooltip: str = "", href: str = "", stroke: str = "#fff"
) -> str:
    """A point mark with an optional tooltip and link."""
    tip = f"<title>{escape(tooltip)}</title>" if tooltip else ""
    shape = (
        f'<circle cx="{fmt(x)}" cy="{fmt(y)}" r="{fmt(r)}" fill="{fill}" stroke="{stroke}" '
        f'stroke-width="1">{tip}</circle>'
    )
    return f'<a href="{escape(href)}">{shape}</a>' if href else shape


def polyline(
    points: list[tuple[float, float]], stroke: str, width: float = 2, dash: str = ""
) -> str:
    """An open line through `points`."""
    if not points:
        return ""
    coords = " ".join(f"{fmt(x)},{fmt(y)}" for x, y in points)
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<polyline points="{coords}" fill="none" stroke="{stroke}" stroke-width="{fmt(width)}"'
        f"{dashed}/>"
    )


def step_points(xy: list[tuple[float, float]], x_end: float) -> list[tuple[float, float]]:
    """A staircase through (x, y) pixel pairs: each value holds until the next x, the last until
    `x_end`."""
    out: list[tuple[float, float]] = []
    for i, (x, y) in enumerate(xy):
        if i:
            out.append((x, xy[i - 1][1]))
        out.append((x, y))
    if xy:
        out.append((x_end, xy[-1][1]))
    return out


def axes(
    frame: Frame,
    xs: Scale,
    ys: Scale,
    *,
    x_label: str,
    y_label: str,
    y_format=tick_label,
    x_ticks: list[float] | None = None,
) -> None:
    """Grid lines, ticks and axis labels for both axes."""
    for value in ys.ticks():
        y = ys(value)
        frame.add(line(frame.x0, y, frame.x1, y, stroke="#e3e3e3"))
        frame.add(text(frame.x0 - 6, y + 4, y_format(value), anchor="end", size=10))
    for value in x_ticks if x_ticks is not None else xs.ticks(8):
        x = xs(value)
        frame.add(line(x, frame.y0, x, frame.y0 + 4, stroke="#666"))
        frame.add(text(x, frame.y0 + 16, tick_label(value), anchor="middle", size=10))
    frame.add(line(frame.x0, frame.y0, frame.x1, frame.y0, stroke="#666"))
    frame.add(line(frame.x0, frame.y0, frame.x0, frame.y1, stroke="#666"))
    frame.add(text((frame.x0 + frame.x1) / 2, frame.height - 8, x_label, anchor="middle"))
    frame.add(
        f'<text transform="translate(14,{fmt((frame.y0 + frame.y1) / 2)}) rotate(-90)" '
        f'text-anchor="middle" font-size="11">{escape(y_label)}</text>'
    )


def legend(
    frame: Frame, entries: list[tuple[str, str]], *, x: float | None = None, y: float = 14
) -> None:
    """A one-row legend of (colour, label) swatches along the top margin."""
    cursor = frame.x0 if x is None else x
    for colour, label in entries:
        frame.add(rect(cursor, y - 8, 10, 10, colour))
        frame.add(text(cursor + 14, y + 1, label, size=10))
        cursor += 24 + 6.2 * len(label)


def empty(message: str, width: int = 720, height: int = 60) -> str:
    """A small SVG saying there is nothing to plot (keeps every chart slot an SVG)."""
    frame = Frame(width=width, height=height)
    frame.add(text(width / 2, height / 2 + 4, message, anchor="middle", cls="muted"))
    return frame.svg(message, css_class="chart empty")
