"""The report's plots, each one function from typed run data to an inline `<svg>` string."""

from __future__ import annotations

import math

from knight.evaluation import Category
from knight.report import svg
from knight.report.model import SCORE_LABEL, IterationView, RunView
from knight.report.svg import PALETTE, Frame
from knight.report.units import percent, us

OUTCOME_COLOURS = {"accepted": "#009E73", "rejected": "#E69F00", "failed": "#D55E00"}
ROOFLINE_MARKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1.0)
# One colour per failure category, fixed by the taxonomy's order so every chart agrees.
CATEGORY_PALETTE = (
    "#D55E00",
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#8C564B",
    "#7F7F7F",
    "#BCBD22",
    "#17BECF",
    "#9467BD",
    "#F0E442",
    "#1F77B4",
    "#FF7F0E",
    "#2CA02C",
    "#D62728",
)


def category_colour(category: str) -> str:
    """The colour of a failure or rejection category (stable across runs and charts)."""
    names = [c.value for c in Category]
    index = names.index(category) if category in names else len(names)
    return CATEGORY_PALETTE[index % len(CATEGORY_PALETTE)]


def iteration_anchor(run_id: int, number: int) -> str:
    """The in-page anchor of an iteration's section."""
    return f"run-{run_id}-it-{number}"


def _best_so_far(run: RunView) -> list[tuple[int, float]]:
    """(iteration, speed-up of the champion after it) for the accepted chain, from (0, 1.0)."""
    steps = [(0, 1.0)]
    for it in run.iterations:
        if it.status == "accepted" and it.speedup_vs_baseline:
            steps.append((it.number, it.speedup_vs_baseline))
    return steps


def speedup_chart(run: RunView) -> str:
    """Every candidate's speed-up over the baseline score, the accepted chain as a step line, the
    physical floor and roofline fractions as reference lines."""
    its = run.iterations
    if not its:
        return svg.empty(f"run {run.id} has no iterations yet")
    frame = Frame(width=760, height=330, right=110, top=40)
    n = max(it.number for it in its)
    scored = [it.speedup_vs_baseline for it in its if it.speedup_vs_baseline]
    lo, hi = svg.nice_range([1.0, *scored], pad=0.08)
    lo = max(0.0, min(lo, 0.95))
    floor = run.floor_speedup
    if floor and floor <= hi * 1.6:  # close enough to show in full
        hi = max(hi, floor * 1.04)
    xs = frame.x_scale(0, max(n, 1))
    ys = frame.y_scale(lo, hi)
    svg.axes(
        frame,
        xs,
        ys,
        x_label="iteration",
        y_label=f"speed-up vs baseline {SCORE_LABEL.split(' (')[0]}",
        y_format=lambda v: f"{v:.2f}x" if v < 10 else f"{v:.0f}x",
        x_ticks=_int_ticks(max(n, 1)),
    )
    _roofline_lines(frame, ys, run, lo, hi)
    base_y = ys(1.0)
    frame.add(svg.line(frame.x0, base_y, frame.x1, base_y, stroke="#777", dash="2 3"))
    frame.add(svg.text(frame.x1 + 4, base_y + 4, "baseline 1x", size=10))
    chain = [(xs(x), ys(y)) for x, y in _best_so_far(run)]
    frame.add(
        svg.polyline(svg.step_points(chain, xs(n)), stroke=OUTCOME_COLOURS["accepted"], width=2)
    )
    for it in its:
        colour = OUTCOME_COLOURS.get(it.status, "#999")
        href = "#" + iteration_anchor(run.id, it.number)
        if it.speedup_vs_baseline:
            tip = (
                f"#{it.number} {it.status}{' ' + it.category if it.category else ''}: "
                f"{it.speedup_vs_baseline:.3f}x, score {us(it.score_ns)} — {it.hypothesis}"
            )
            frame.add(svg.circle(xs(it.number), ys(it.speedup_vs_baseline), 4.5, colour, tip, href))
        else:  # no score: failed before measuring; drawn on the axis so it still counts
            tip = f"#{it.number} {it.status} ({it.category or 'no score'}) — {it.hypothesis}"
            x = xs(it.number)
            frame.add(svg.circle(x, frame.y0 - 5, 3.5, colour, tip, href, stroke=colour))
    svg.legend(
        frame,
        [
            (OUTCOME_COLOURS["accepted"], "accepted (and champion so far)"),
            (OUTCOME_COLOURS["rejected"], "rejected"),
            (OUTCOME_COLOURS["failed"], "failed (no score: on the axis)"),
        ],
    )
    return frame.svg(f"run {run.id}: speed-up vs iteration", css_class="chart speedup")


def _roofline_lines(frame: Frame, ys: svg.Scale, run: RunView, lo: float, hi: float) -> None:
    """Dashed lines where the score would reach a round fraction of the roofline (floor / score),
    and the physical floor itself; a note at the top when the floor is far above the chart."""
    floor = run.floor_speedup
    if not floor:
        frame.add(svg.text(frame.x1 + 4, frame.y1 + 10, "floor unknown", size=10, cls="muted"))
        return
    for share in ROOFLINE_MARKS:
        value = share * floor
        y = ys(value)
        # Skip a mark that would sit on the baseline line: its label would hide "baseline 1x".
        if lo < value < hi and share < 1.0 and abs(y - ys(1.0)) > 12:
            frame.add(svg.line(frame.x0, y, frame.x1, y, stroke="#56B4E9", dash="5 4"))
            frame.add(svg.text(frame.x1 + 4, y + 4, f"{percent(share)} of roofline", size=10))
    if floor <= hi:
        y = ys(floor)
        frame.add(svg.line(frame.x0, y, frame.x1, y, stroke="#D55E00", width=2))
        frame.add(svg.text(frame.x1 + 4, y + 4, "physical floor", size=10))
    else:  # far above the points: say where it is instead of squashing them against the axis
        best = run.speedup or 1.0
        note = (
            f"physical floor: {floor:,.0f}x the baseline score (off the chart); "
            f"the champion is at {percent(best / floor)} of the roofline"
        )
        frame.add(svg.text(frame.x0, 30, note, size=10))


def failures_chart(run: RunView) -> str:
    """Failure and rejection categories over time: stacked counts per window of iterations."""
    its = run.iterations
    bad = [it for it in its if it.status != "accepted"]
    if not bad:
        return svg.empty("no failed or rejected iterations")
    n = max(it.number for it in its)
    width = max(1, math.ceil(n / 30))
    bins = math.ceil(n / width)
    counts: list[dict[str, int]] = [{} for _ in range(bins)]
    for it in bad:
        label = it.category or it.status
        slot = counts[(it.number - 1) // width]
        slot[label] = slot.get(label, 0) + 1
    present = sorted({k for c in counts for k in c}, key=_category_order)
    frame = Frame(width=760, height=240, top=40)
    xs = frame.x_scale(0, bins)
    ys = frame.y_scale(0, max(1, max(sum(c.values()) for c in counts)))
    label = "iteration" if width == 1 else f"iterations (windows of {width})"
    svg.axes(frame, xs, ys, x_label=label, y_label="failed or rejected", x_ticks=[])
    bar = (frame.x1 - frame.x0) / bins
    for i, slot in enumerate(counts):
        first, last = i * width + 1, min(n, (i + 1) * width)
        frame.add(
            svg.text(
                xs(i + 0.5),
                frame.y0 + 14,
                str(first) if width == 1 else f"{first}-{last}",
                anchor="middle",
                size=9,
            )
        )
        level = 0
        for name in present:
            k = slot.get(name, 0)
            if not k:
                continue
            y_top = ys(level + k)
            frame.add(
                svg.rect(
                    xs(i) + 2,
                    y_top,
                    bar - 4,
                    ys(level) - y_top,
                    category_colour(name),
                    f"iterations {first}-{last}: {k} × {name}",
                )
            )
            level += k
    svg.legend(frame, [(category_colour(name), name) for name in present], y=14)
    return frame.svg(f"run {run.id}: failure categories over time", css_class="chart failures")


def _category_order(name: str) -> int:
    names = [c.value for c in Category]
    return names.index(name) if name in names else len(names)


def usage_chart(run: RunView) -> str:
    """Tokens (stacked by kind) and cost per iteration for model proposers."""
    its = [it for it in run.iterations if it.usage.calls]
    if not its:
        return svg.empty(f"no model calls recorded: the {run.proposer} proposer used no tokens")
    n = max(it.number for it in run.iterations)
    frame = Frame(width=760, height=240, right=70, top=40)
    xs = frame.x_scale(0.5, n + 0.5)
    ys = frame.y_scale(0, max(it.usage.tokens for it in its) * 1.1)
    svg.axes(frame, xs, ys, x_label="iteration", y_label="tokens", x_ticks=_int_ticks(n, start=1))
    kinds = (
        ("input_tokens", PALETTE[0], "input"),
        ("output_tokens", PALETTE[1], "output"),
        ("cache_read_tokens", PALETTE[4], "cache read"),
        ("cache_write_tokens", PALETTE[3], "cache write"),
    )
    bar = max(2.0, (frame.x1 - frame.x0) / n - 3)
    for it in its:
        level = 0
        for field, colour, label in kinds:
            k = getattr(it.usage, field)
            if k:
                y_top = ys(level + k)
                frame.add(
                    svg.rect(
                        xs(it.number) - bar / 2,
                        y_top,
                        bar,
                        ys(level) - y_top,
                        colour,
                        f"#{it.number}: {k:,} {label} tokens",
                    )
                )
                level += k
    cost_max = max(it.usage.cost_usd for it in its) or 1.0
    cs = frame.y_scale(0, cost_max * 1.1)
    points = [(xs(it.number), cs(it.usage.cost_usd)) for it in its]
    frame.add(svg.polyline(points, stroke="#000", width=1.5))
    for (x, y), it in zip(points, its, strict=True):
        frame.add(svg.circle(x, y, 3, "#000", f"#{it.number}: ${it.usage.cost_usd:.4f}"))
    for value in cs.ticks(4):
        frame.add(svg.text(frame.x1 + 6, cs(value) + 4, f"${value:.3g}", size=10))
    total = sum(it.usage.cost_usd for it in its)
    svg.legend(
        frame,
        [(c, label) for _, c, label in kinds]
        + [("#000", f"cost (right axis; total ${total:.4f})")],
    )
    return frame.svg(f"run {run.id}: tokens and cost per iteration", css_class="chart usage")


def overlay_chart(runs: list[RunView]) -> str:
    """Several runs' champion speed-ups over iterations, one step line each."""
    frame = Frame(width=760, height=300, top=40)
    n = max((max((it.number for it in r.iterations), default=1) for r in runs), default=1)
    tops = [y for r in runs for _, y in _best_so_far(r)]
    lo, hi = svg.nice_range([1.0, *tops], pad=0.08)
    xs, ys = frame.x_scale(0, n), frame.y_scale(max(0.0, min(lo, 0.95)), hi)
    svg.axes(
        frame,
        xs,
        ys,
        x_label="iteration",
        y_label="champion speed-up vs baseline",
        y_format=lambda v: f"{v:.2f}x",
        x_ticks=_int_ticks(n),
    )
    entries = []
    for i, run in enumerate(runs):
        colour = PALETTE[i % len(PALETTE)]
        last = max((it.number for it in run.iterations), default=0)
        chain = [(xs(x), ys(y)) for x, y in _best_so_far(run)]
        frame.add(svg.polyline(svg.step_points(chain, xs(last)), stroke=colour, width=2.5))
        entries.append(
            (colour, f"run {run.id} {run.problem} {run.proposer} ({(run.speedup or 1):.2f}x)")
        )
    svg.legend(frame, entries)
    return frame.svg("speed-up curves of several runs", css_class="chart overlay")


def lineage_tree(run: RunView) -> str:
    """The lineage: the baseline at the root, every iteration a child of the kernel it patched;
    accepted iterations grow the tree, the others are leaves. Each node links to its iteration."""
    children: dict[int | None, list[IterationView]] = {}
    for it in run.iterations:
        children.setdefault(it.parent_number, []).append(it)
    rows: dict[int | None, float] = {}
    depth: dict[int | None, int] = {None: 0}
    cursor = [0.0]

    def place(node: int | None) -> float:
        kids = children.get(node, [])
        for kid in kids:
            depth[kid.number] = depth[node] + 1
        # Leaves first, then the branch that continues: the chain stays on one straight row.
        ordered = [k for k in kids if k.number not in children] + [
            k for k in kids if k.number in children
        ]
        if not ordered:
            rows[node] = cursor[0]
            cursor[0] += 1
            return rows[node]
        positions = [place(k.number) for k in ordered]
        rows[node] = (
            positions[-1]
            if node is not None and ordered[-1].number in children
            else sum(positions) / len(positions)
        )
        return rows[node]

    place(None)
    by_number = {it.number: it for it in run.iterations}
    levels = max(depth.values()) + 1
    height = int(max(cursor[0], 1) * 16 + 40)
    frame = Frame(width=max(360, levels * 90 + 120), height=height, left=40, top=20, bottom=20)
    xs = frame.x_scale(0, max(levels - 1, 1))
    ys = svg.Scale(0, max(cursor[0] - 1, 1), frame.y1, frame.y0)
    for node, kids in children.items():
        for kid in kids:
            frame.add(
                svg.polyline(
                    [
                        (xs(depth[node]), ys(rows[node])),
                        (xs(depth[node]) + 20, ys(rows[kid.number])),
                        (xs(depth[kid.number]), ys(rows[kid.number])),
                    ],
                    stroke="#bbb",
                    width=1,
                )
            )
    frame.add(svg.circle(xs(0), ys(rows[None]), 7, "#333", f"baseline {run.baseline_hash[:12]}"))
    frame.add(svg.text(xs(0), ys(rows[None]) - 10, "baseline", anchor="middle", size=10))
    for number, row in rows.items():
        if number is None:
            continue
        it = by_number[number]
        x, y = xs(depth[number]), ys(row)
        colour = OUTCOME_COLOURS.get(it.status, "#999")
        sp = f" {it.speedup_vs_baseline:.2f}x" if it.speedup_vs_baseline else ""
        tip = (
            f"#{number} {it.status}{' ' + it.category if it.category else ''}{sp} — {it.hypothesis}"
        )
        frame.add(
            svg.circle(
                x,
                y,
                6 if it.status == "accepted" else 4,
                colour,
                tip,
                "#" + iteration_anchor(run.id, number),
            )
        )
        frame.add(svg.text(x + 8, y + 4, f"#{number}{sp}", size=10))
    return frame.svg(f"run {run.id}: lineage", css_class="chart lineage")


def _int_ticks(n: int, start: int = 0) -> list[float]:
    step = max(1, math.ceil(n / 12))
    return [float(v) for v in range(start, n + 1, step)]
