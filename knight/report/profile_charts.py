"""Profile plots: engine busy time, the DMA descriptor-size histogram and the critical path."""

from __future__ import annotations

from knight.report import svg
from knight.report.charts import CATEGORY_PALETTE
from knight.report.svg import PALETTE, Frame
from knight.report.units import us


def engine_bars(profiles: list[tuple[str, dict]]) -> str:
    """Busy time per engine for one or more labelled profiles, as grouped horizontal bars."""
    profiles = [(label, p) for label, p in profiles if p.get("engines")]
    if not profiles:
        return svg.empty("no profile recorded")
    keys = list(dict.fromkeys(k for _, p in profiles for k in p["engines"]))
    keys = [
        k for k in keys if any(p["engines"].get(k, {}).get("busy_ns") for _, p in profiles)
    ] or keys
    per_row = len(profiles)
    height = 30 + len(keys) * (per_row * 12 + 8) + 6
    frame = Frame(width=760, height=height, left=130, right=150, top=30, bottom=10)
    top = max(
        max(p["engines"].get(k, {}).get("busy_ns", 0.0), p.get("total_ns", 0.0))
        for _, p in profiles
        for k in keys
    )
    xs = frame.x_scale(0, top or 1.0)
    y = frame.y1
    for key in keys:
        frame.add(svg.text(frame.x0 - 6, y + 6 * per_row + 3, key, anchor="end", size=10))
        for i, (label, p) in enumerate(profiles):
            e = p["engines"].get(key, {"busy_ns": 0.0, "utilisation": 0.0})
            width = xs(e["busy_ns"]) - frame.x0
            colour = PALETTE[i % len(PALETTE)]
            frame.add(
                svg.rect(
                    frame.x0,
                    y,
                    width,
                    11,
                    colour,
                    f"{label} {key}: busy {e['busy_ns'] / 1000:.2f} µs, {100 * e['utilisation']:.0f}% utilised",
                )
            )
            frame.add(
                svg.text(
                    frame.x0 + width + 4,
                    y + 9,
                    f"{e['busy_ns'] / 1000:.2f} µs ({100 * e['utilisation']:.0f}%)",
                    size=9,
                )
            )
            y += 12
        y += 8
    svg.legend(
        frame,
        [
            (PALETTE[i % len(PALETTE)], f"{label} (latency {us(p.get('total_ns'))})")
            for i, (label, p) in enumerate(profiles)
        ],
        y=14,
    )
    return frame.svg("busy time and utilisation per engine", css_class="chart engines")


def dma_histogram(profiles: list[tuple[str, dict]]) -> str:
    """Descriptor-size histogram (DMA efficiency): bytes moved per descriptor-size bucket."""
    profiles = [(label, p) for label, p in profiles if (p.get("dma") or {}).get("histogram")]
    if not profiles:
        return svg.empty("no DMA recorded")
    buckets = [b["bucket"] for b in profiles[0][1]["dma"]["histogram"]]
    frame = Frame(width=520, height=240, top=40)
    xs = frame.x_scale(0, len(buckets))
    ys = frame.y_scale(0, 100)
    svg.axes(
        frame,
        xs,
        ys,
        x_label="descriptor size (larger moves closer to peak bandwidth)",
        y_label="% of DMA bytes",
        x_ticks=[],
        y_format=lambda v: f"{v:.0f}%",
    )
    group = (frame.x1 - frame.x0) / len(buckets)
    bar = (group - 12) / len(profiles)
    for b, name in enumerate(buckets):
        frame.add(svg.text(xs(b + 0.5), frame.y0 + 14, name, anchor="middle", size=10))
        for i, (label, p) in enumerate(profiles):
            entry = p["dma"]["histogram"][b]
            share = 100 * entry["bytes"] / max(1, p["dma"]["bytes"])
            x = xs(b) + 6 + i * bar
            frame.add(
                svg.rect(
                    x,
                    ys(share),
                    bar - 2,
                    frame.y0 - ys(share),
                    PALETTE[i % len(PALETTE)],
                    f"{label} {name}: {entry['count']} descriptors, {entry['bytes']:,} bytes ({share:.0f}%)",
                )
            )
    svg.legend(
        frame,
        [
            (
                PALETTE[i % len(PALETTE)],
                f"{label}: {p['dma']['bandwidth_gbps']:.0f} GB/s, active {100 * p['dma']['active_share']:.0f}%",
            )
            for i, (label, p) in enumerate(profiles)
        ],
    )
    return frame.svg("DMA descriptor-size histogram", css_class="chart dma")


def critical_path(profile: dict, label: str = "") -> str:
    """Where the critical path goes: one stacked bar by engine or DMA phase."""
    parts = [(k, v) for k, v in profile.get("critical_by_engine") or [] if v > 0]
    if not parts:
        return svg.empty("no critical path recorded")
    total = sum(v for _, v in parts)
    frame = Frame(width=760, height=78, left=10, right=10, top=30, bottom=8)
    xs = frame.x_scale(0, total)
    level = 0.0
    for i, (name, v) in enumerate(parts):
        x0, x1 = xs(level), xs(level + v)
        colour = CATEGORY_PALETTE[(i + 1) % len(CATEGORY_PALETTE)]
        frame.add(
            svg.rect(
                x0,
                frame.y1,
                x1 - x0,
                28,
                colour,
                f"{name}: {v / 1000:.2f} µs ({100 * v / total:.0f}%)",
            )
        )
        if x1 - x0 > 60:
            frame.add(
                svg.text(
                    (x0 + x1) / 2,
                    frame.y1 + 18,
                    f"{name} {100 * v / total:.0f}%",
                    anchor="middle",
                    size=10,
                    cls="on-bar",
                )
            )
        level += v
    title = (
        f"{label + ': ' if label else ''}critical path {total / 1000:.2f} µs by engine / DMA phase"
    )
    frame.add(svg.text(frame.x0, 18, title, size=11))
    return frame.svg(title, css_class="chart critical")
