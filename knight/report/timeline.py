"""A Chrome/Perfetto trace drawn as an SVG timeline: one row per core and engine or DMA queue.

Events closer together than a pixel are merged into one bar (its tooltip says how many), so a
trace of any length stays a few hundred elements.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from knight.report import svg
from knight.report.svg import Frame

UNIT_COLOURS = {
    "tensor": "#0072B2",
    "vector": "#009E73",
    "scalar": "#E69F00",
    "gpsimd": "#CC79A7",
    "sync": "#56B4E9",
    "scalar-dge": "#F0E442",
    "dma": "#D55E00",
}
ROW_HEIGHT = 13


@dataclass
class _Bar:
    start: float
    end: float
    ops: Counter = field(default_factory=Counter)


@dataclass
class _Track:
    name: str
    category: str = ""
    bars: list[_Bar] = field(default_factory=list)


def trace_end_us(trace: dict) -> float:
    """The time the last event of the trace ends, microseconds."""
    return max(
        (e["ts"] + e.get("dur", 0.0) for e in trace.get("traceEvents", []) if e.get("ph") == "X"),
        default=0.0,
    )


def timeline_svg(
    trace: dict, title: str, *, span_us: float | None = None, width: int = 1000
) -> str:
    """The trace as rows of bars on a shared time axis of `span_us` (default: its own length)."""
    end = span_us or trace_end_us(trace)
    if end <= 0:
        return svg.empty(f"{title}: empty trace")
    tracks = _tracks(trace)
    frame = Frame(
        width=width, height=len(tracks) * ROW_HEIGHT + 60, left=150, right=16, top=24, bottom=34
    )
    xs = frame.x_scale(0, end)
    us_per_px = end / (frame.x1 - frame.x0)
    for row, track in enumerate(tracks):
        y = frame.y1 + row * ROW_HEIGHT
        frame.add(svg.text(frame.x0 - 6, y + 10, track.name, anchor="end", size=9))
        colour = UNIT_COLOURS.get(track.category, "#888")
        for bar in _merge(track.bars, us_per_px):
            ops = ", ".join(f"{k} ×{v}" if v > 1 else k for k, v in bar.ops.most_common(4))
            tip = f"{track.name}: {bar.start:.3f}-{bar.end:.3f} µs: {ops}"
            frame.add(
                svg.rect(
                    xs(bar.start),
                    y + 1,
                    max(xs(bar.end) - xs(bar.start), 1.0),
                    ROW_HEIGHT - 3,
                    colour,
                    tip,
                )
            )
    bottom = frame.y1 + len(tracks) * ROW_HEIGHT + 2
    for value in xs.ticks(10):
        frame.add(svg.line(xs(value), bottom, xs(value), bottom + 4, stroke="#666"))
        frame.add(svg.text(xs(value), bottom + 15, svg.tick_label(value), anchor="middle", size=9))
    frame.add(svg.text(frame.x1, bottom + 28, "µs", anchor="end", size=10))
    frame.add(svg.text(frame.x0, 16, f"{title} ({trace_end_us(trace):.2f} µs)", size=11))
    return frame.svg(title, css_class="chart timeline")


def _tracks(trace: dict) -> list[_Track]:
    """Tracks in Perfetto's order (process, then thread sort index), only those with events."""
    events = trace.get("traceEvents", [])
    processes = {
        e["pid"]: e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e["name"] == "process_name"
    }
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e["name"] == "thread_name"
    }
    tracks: dict[tuple[int, int], _Track] = {}
    for e in events:
        if e.get("ph") != "X":
            continue
        key = (e["pid"], e["tid"])
        if key not in tracks:
            name = f"{processes.get(e['pid'], e['pid'])} {threads.get(key, e['tid'])}"
            tracks[key] = _Track(name=name, category=e.get("cat", ""))
        tracks[key].bars.append(_Bar(e["ts"], e["ts"] + e.get("dur", 0.0), Counter({e["name"]: 1})))
    return [tracks[k] for k in sorted(tracks)]


def _merge(bars: list[_Bar], us_per_px: float) -> list[_Bar]:
    """Join bars separated by less than one pixel."""
    merged: list[_Bar] = []
    for bar in sorted(bars, key=lambda b: b.start):
        if merged and bar.start - merged[-1].end < us_per_px:
            last = merged[-1]
            last.end = max(last.end, bar.end)
            last.ops.update(bar.ops)
        else:
            merged.append(_Bar(bar.start, bar.end, Counter(bar.ops)))
    return merged


def legend_svg() -> str:
    """The colour key of the timelines."""
    frame = Frame(width=760, height=24, left=10, top=4, bottom=4)
    svg.legend(frame, list((colour, unit) for unit, colour in UNIT_COLOURS.items()), y=14)
    return frame.svg("timeline colours", css_class="chart legend")
