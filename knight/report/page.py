"""HTML assembly: the self-contained report document and the run sections the live pages reuse.

Nothing here fetches anything: styles, plots (inline SVG) and the few lines of script are inline.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from html import escape
from typing import Any

from knight import __version__
from knight.report import charts, profile_charts
from knight.report.highlight import diff_html, style_css
from knight.report.model import SCORE_LABEL, Comparison, IterationView, KernelMeasurement, RunView
from knight.report.timeline import legend_svg, timeline_svg, trace_end_us
from knight.report.units import percent, times, us

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1080px;margin:0 auto;padding:16px 24px 64px}
h1{font-size:22px;margin:8px 0}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:16px;margin:18px 0 6px}h4{font-size:14px;margin:12px 0 4px}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
svg.chart{display:block;max-width:100%;height:auto;background:#fff;border:1px solid #e5e5e5;margin:6px 0}
svg.chart text{fill:#222;font-family:inherit}svg.chart text.muted{fill:#888}svg.chart text.on-bar{fill:#fff}
svg.legend{border:none;background:none}
.muted{color:#777}.ok{color:#00734f}.bad{color:#b34700}
.accepted{color:#00734f}.rejected{color:#a86b00}.failed{color:#b34700}
details.iteration{background:#fff;border:1px solid #e2e2e2;border-radius:4px;margin:6px 0;padding:4px 10px}
details.iteration>summary{cursor:pointer;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
pre{background:#fff;border:1px solid #e5e5e5;padding:8px;overflow-x:auto;font-size:12px;white-space:pre-wrap}
pre.code span.add{background:#e6ffec;display:inline-block;width:100%}
pre.code span.del{background:#ffebe9;display:inline-block;width:100%}
pre.code span.hunk{color:#6f42c1}pre.code span.file{color:#555;font-weight:bold}
.turn{border-left:3px solid #ccc;padding-left:8px;margin:6px 0}.turn .who{font-size:12px;color:#555}
.side{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.badge{display:inline-block;padding:0 6px;border-radius:3px;background:#eee;font-size:12px}
nav a{margin-right:12px}
"""

OPEN_DETAILS_JS = """
function knightOpen(){var id=decodeURIComponent(location.hash.slice(1));if(!id)return;
var el=document.getElementById(id);if(el&&el.tagName==='DETAILS'){el.open=true;el.scrollIntoView();}}
window.addEventListener('hashchange',knightOpen);window.addEventListener('DOMContentLoaded',knightOpen);
"""


def document(title: str, body: str, script: str = "") -> str:
    """A complete HTML page with the report's styles and scripts inline."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="generator" content="knight {escape(__version__)}">'
        # An empty inline icon: browsers would otherwise ask the server for /favicon.ico.
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title><style>{CSS}{style_css()}</style></head>"
        f"<body><main>{body}</main><script>{OPEN_DETAILS_JS}{script}</script></body></html>\n"
    )


def report_document(runs: list[RunView], comparisons: dict[int, Comparison], database: str) -> str:
    """The static report: every run, the overlay of their curves, each iteration in full."""
    parts = [
        f'<h1>Knight report</h1><p class="muted">database {escape(database)} · '
        f"{len(runs)} run{'s' if len(runs) != 1 else ''} · knight {escape(__version__)}</p>"
    ]
    parts.append(runs_index(runs, link=lambda r: f"#run-{r.id}"))
    if len(runs) > 1:
        parts.append("<h2>Runs compared</h2>")
        parts.append(charts.overlay_chart(runs))
    for run in runs:
        parts.append(
            f'<section id="run-{run.id}">{run_body(run, comparisons.get(run.id))}</section>'
        )
    return document(f"Knight report: {', '.join(f'run {r.id}' for r in runs)}", "".join(parts))


def runs_index(runs: list[RunView], link) -> str:
    """A table of runs with their outcome, each linking to its section or page."""
    rows = []
    for r in runs:
        counts = _counts(r)
        rows.append(
            f'<tr><td><a href="{escape(link(r))}">run {r.id}</a></td><td>{escape(r.problem)}</td>'
            f"<td>{escape(r.proposer)}</td><td>{escape(r.machine)}</td><td>{escape(r.status)}</td>"
            f"<td class=num>{len(r.iterations)}</td><td class=num>{counts['accepted']}</td>"
            f"<td class=num>{us(r.baseline_score_ns)}</td><td class=num>{us(r.best_score_ns)}</td>"
            f"<td class=num>{times(r.speedup)}</td></tr>"
        )
    head = (
        "<tr><th>run</th><th>problem</th><th>proposer</th><th>machine</th><th>status</th><th>iterations</th>"
        "<th>accepted</th><th>baseline score</th><th>best score</th><th>speed-up</th></tr>"
    )
    note = f'<p class="muted">score = {escape(SCORE_LABEL.split(" (")[1].rstrip(")"))}, simulated µs</p>'
    return f"<table class=runs>{head}{''.join(rows)}</table>{note}"


def run_body(
    run: RunView,
    comparison: Comparison | None,
    *,
    trace_href: Callable[[KernelMeasurement], str] | None = None,
    timelines_href: str | None = None,
) -> str:
    """Everything about one run: summary, plots, lineage, baseline vs champion, iterations."""
    parts = [
        f"<h2>Run {run.id}: {escape(run.problem)}, {escape(run.proposer)} proposer</h2>",
        _summary(run),
    ]
    parts.append("<h3>Speed-up vs iteration</h3>")
    parts.append(
        '<p class="muted">Each point is one candidate (click it for the iteration); the green steps '
        "are the accepted chain. Reference lines: the baseline, the score a kernel would reach at "
        "round fractions of the roofline, and the physical floor (the slowest resource: HBM bytes ÷ "
        "bandwidth or declared engine work ÷ its peak, as a score).</p>"
    )
    parts.append(charts.speedup_chart(run))
    parts.append("<h3>Failure and rejection categories over time</h3>")
    parts.append(charts.failures_chart(run))
    parts.append("<h3>Model tokens and cost per iteration</h3>")
    parts.append(charts.usage_chart(run))
    parts.append("<h3>Lineage</h3>")
    parts.append(
        '<p class="muted">The baseline at the root; every iteration hangs off the kernel it patched.</p>'
    )
    parts.append(charts.lineage_tree(run))
    parts.append("<h3>Baseline vs champion</h3>")
    parts.append(
        comparison_html(run, comparison, trace_href=trace_href, timelines_href=timelines_href)
    )
    parts.append(f"<h3>Iterations ({len(run.iterations)})</h3>")
    parts.extend(iteration_html(run, it) for it in run.iterations)
    return "".join(parts)


def _summary(run: RunView) -> str:
    counts = _counts(run)
    floor = run.floor_score_ns
    roof = (floor / run.best_score_ns) if (floor and run.best_score_ns) else None
    rows = [
        (
            "problem",
            f"{run.problem} (hash {run.problem_hash[:12]})" if run.problem_hash else run.problem,
        ),
        ("machine", run.machine),
        ("proposer", run.proposer),
        ("status", run.status),
        ("started", run.created_at + (f", finished {run.finished_at}" if run.finished_at else "")),
        ("budget / seed", f"{run.budget} iterations, seed {run.seed}"),
        (
            "iterations",
            f"{len(run.iterations)}: {counts['accepted']} accepted, {counts['rejected']} rejected, "
            f"{counts['failed']} failed",
        ),
        (f"baseline {SCORE_LABEL}", us(run.baseline_score_ns)),
        (f"best {SCORE_LABEL}", f"{us(run.best_score_ns)} ({times(run.speedup)} vs baseline)"),
        (
            "physical floor as a score",
            f"{us(floor)}"
            + (f"; the champion is at {100 * roof:.2g}% of the roofline" if roof else ""),
        ),
        ("knight version", run.knight_version),
        ("harness", run.harness or "-"),
    ]
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table class=summary>{body}</table>"


def iteration_html(run: RunView, it: IterationView) -> str:
    """One iteration as a collapsible section: proposal, diff, evaluation, failure, profile, transcript."""
    sp = f" {it.speedup_vs_baseline:.3f}x" if it.speedup_vs_baseline else ""
    verdict = it.status + (f" ({it.category})" if it.category else "")
    parts = [
        f'<details class="iteration" id="{charts.iteration_anchor(run.id, it.number)}">',
        f'<summary><b>#{it.number}</b> <span class="{escape(it.status)}">{escape(verdict)}</span>{sp} — '
        f"{escape(it.hypothesis)}</summary>",
        _kv(
            [
                ("hypothesis", it.hypothesis),
                ("rationale", it.rationale or "-"),
                ("tags", ", ".join(it.tags) or "-"),
                ("skills cited", ", ".join(it.skills_cited) or "-"),
                ("proposer", it.proposer),
                ("parent", f"#{it.parent_number}" if it.parent_number else "baseline"),
                (
                    "patch",
                    f"{it.edits} edit(s), rungs {', '.join(it.patch_rungs) or '-'}, {it.fix_rounds} fix round(s)",
                ),
                (SCORE_LABEL, _score_line(it)),
                ("model usage", _usage_line(it)),
                ("wall time", f"{it.wall_s:.1f} s"),
            ]
        ),
        "<h4>Diff</h4>",
        diff_html(it.diff),
    ]
    if it.workloads:
        parts += ["<h4>Evaluation per workload</h4>", workloads_table(it)]
    if it.integrity:
        checks = " ".join(
            f'<span class="badge {"ok" if v else "bad"}">{escape(k)} {"✓" if v else "✗"}</span>'
            for k, v in it.integrity.items()
        )
        parts.append(f"<p>integrity: {checks}</p>")
    if it.failure:
        parts += ["<h4>Failure attribution</h4>", failure_html(it.failure)]
    if it.profile:
        parent = _parent_profile(run, it)
        profiles = ([(parent[0], parent[1])] if parent else []) + [(f"#{it.number}", it.profile)]
        parts += [
            f"<h4>Profile (workload {escape(_first_workload(it))}, first seed)</h4>",
            f"<p>verdict: {escape(str(it.profile.get('bottleneck', '-')))}</p>",
            profile_charts.engine_bars(profiles),
            profile_charts.dma_histogram(profiles),
            profile_charts.critical_path(it.profile, f"#{it.number}"),
            critical_lines(it.profile),
        ]
    if it.transcript:
        parts += [
            f"<h4>Transcript ({len(it.transcript)} turns)</h4>",
            transcript_html(it.transcript),
        ]
    parts.append("</details>")
    return "".join(parts)


def _parent_profile(run: RunView, it: IterationView) -> tuple[str, dict] | None:
    """The profile of the kernel this iteration patched, to draw beside its own."""
    if it.parent_number is None:
        return ("baseline", run.baseline_profile) if run.baseline_profile else None
    parent = next((p for p in run.iterations if p.number == it.parent_number), None)
    return (
        (f"parent #{parent.number}", parent.profile)
        if parent is not None and parent.profile
        else None
    )


def _first_workload(it: IterationView) -> str:
    return next((w["name"] for w in it.workloads if not w.get("heldout")), "?")


def workloads_table(it: IterationView) -> str:
    """Per-workload latencies next to the score they combine into."""
    rows = []
    for w in it.workloads:
        lat, base = w.get("latency_ns"), w.get("baseline_latency_ns")
        rows.append(
            f"<tr><td>{escape(w['name'])}{' (held out)' if w.get('heldout') else ''}</td>"
            f"<td class=num>{w.get('weight', 0):g}</td><td class=num>{us(lat)}</td><td class=num>{us(base)}</td>"
            f"<td class=num>{times(base / lat if (lat and base) else None)}</td><td class=num>{us(w.get('floor_ns'))}</td>"
            f"<td class=num>{percent(w.get('roofline_fraction'))}</td>"
            f'<td class="{"ok" if w.get("correct") else "bad"}">{"bit-exact" if w.get("correct") else "no"}</td></tr>'
        )
    head = (
        "<tr><th>workload</th><th>weight</th><th>latency</th><th>baseline</th><th>speed-up</th>"
        "<th>physical floor</th><th>roofline</th><th>correct</th></tr>"
    )
    total = (
        f"<tr><th>{escape(SCORE_LABEL)}</th><td></td><td class=num>{us(it.score_ns)}</td>"
        f"<td></td><td class=num>{times(it.speedup_vs_baseline)}</td><td colspan=3></td></tr>"
    )
    return f"<table>{head}{''.join(rows)}{total}</table>"


def failure_html(failure: dict[str, Any]) -> str:
    """The typed failure: category, stage, where, what, the details and the hint."""
    where = failure.get("file") or ""
    if where and failure.get("line"):
        where = f"{where}:{failure['line']}"
    rows = [
        ("category", f"{failure.get('category')} (stage {failure.get('stage') or '-'})"),
        ("message", failure.get("message") or "-"),
        ("location", where or "-"),
    ]
    for key in ("workload", "seed", "instr_index", "engine", "core", "hint"):
        if failure.get(key) is not None:
            rows.append((key, str(failure[key])))
    html = _kv(rows)
    if failure.get("details"):
        html += f"<pre>{escape(json.dumps(failure['details'], indent=2, default=str))}</pre>"
    return html


def critical_lines(profile: dict) -> str:
    """The kernel source lines that carry the most critical-path time."""
    lines = profile.get("critical_by_line") or []
    if not lines:
        return ""
    total = sum(v for _, v in lines) or 1.0
    rows = "".join(
        f"<tr><td><code>{escape(str(k))}</code></td><td class=num>{v / 1000:.2f} µs</td>"
        f"<td class=num>{100 * v / total:.0f}%</td></tr>"
        for k, v in lines[:8]
    )
    return f"<table><tr><th>critical-path line</th><th>time</th><th>share</th></tr>{rows}</table>"


def transcript_html(turns: list[dict[str, Any]]) -> str:
    """The proposer's conversation, verbatim."""
    out = []
    for turn in turns:
        who = f"{turn.get('role', '?')} · {turn.get('kind', '?')}"
        content = turn.get("content", "")
        text = content if isinstance(content, str) else json.dumps(content, indent=2, default=str)
        out.append(
            f'<div class="turn"><div class="who">{escape(who)}</div><pre>{escape(text)}</pre></div>'
        )
    return "".join(out)


def comparison_html(
    run: RunView,
    comparison: Comparison | None,
    *,
    trace_href: Callable[[KernelMeasurement], str] | None = None,
    timelines_href: str | None = None,
) -> str:
    """Baseline and champion side by side: engines, DMA, critical path and both timelines.

    Trace downloads link to `trace_href(m)` when given (live pages), else embed the JSON; without
    timelines, `timelines_href` points to a page that computes them."""
    if comparison is None or (comparison.baseline is None and comparison.champion is None):
        parts = [
            '<p class="muted">no profile of the baseline or champion is stored for this run</p>'
        ]
        if timelines_href:
            parts.append(_timelines_link(timelines_href))
        return "".join(parts)
    measured = [m for m in (comparison.baseline, comparison.champion) if m is not None]
    parts = [f'<p class="muted">{escape(comparison.note)}</p>']
    for m in measured:
        if m.error:
            parts.append(f'<p class="bad">{escape(m.label)}: {escape(m.error)}</p>')
    ok = [m for m in measured if m.profile]
    if comparison.champion is None:
        parts.append('<p class="muted">no accepted iteration yet: the champion is the baseline</p>')
    if ok:
        parts.append(profile_table(ok))
        labelled = [(m.label, m.profile) for m in ok]
        parts.append(profile_charts.engine_bars(labelled))
        parts.append(profile_charts.dma_histogram(labelled))
        parts.extend(profile_charts.critical_path(m.profile, m.label) for m in ok)
    traced = [m for m in ok if m.trace]
    if traced:
        span = max(trace_end_us(m.trace) for m in traced if m.trace)
        parts.append("<h4>Timelines (same time axis)</h4>")
        parts.append(legend_svg())
        links = []
        for m in traced:
            assert m.trace is not None
            title = f"{m.label} {m.candidate_hash[:12]} on {m.workload}"
            parts.append(timeline_svg(m.trace, title, span_us=span))
            href = trace_href(m) if trace_href else _data_uri(m.trace)
            name = f"run{run.id}-{m.label}-{m.candidate_hash[:12]}.perfetto.json"
            links.append(
                f'<a download="{escape(name)}" href="{escape(href)}">'
                f"{escape(m.label)} trace (Perfetto JSON)</a>"
            )
        parts.append(
            f"<p>Download: {' · '.join(links)} — open in ui.perfetto.dev or chrome://tracing.</p>"
        )
    elif timelines_href:
        parts.append(_timelines_link(timelines_href))
    return "".join(parts)


def _timelines_link(href: str) -> str:
    return (
        f'<p><a href="{escape(href)}">Timelines of baseline and champion</a> (profiles both kernels '
        "now, in the evaluator's isolated workers: a few seconds)</p>"
    )


def profile_table(measured: list[KernelMeasurement]) -> str:
    """Per-engine busy time and DMA figures, one column per kernel."""
    keys = list(dict.fromkeys(k for m in measured for k in m.profile.get("engines", {})))
    head = (
        "<tr><th></th>"
        + "".join(f"<th>{escape(m.label)} {escape(m.candidate_hash[:12])}</th>" for m in measured)
        + "</tr>"
    )
    rows = [
        (
            "latency (" + (measured[0].workload if measured else "?") + ")",
            [us(m.latency_ns) for m in measured],
        )
    ]
    for key in keys:
        rows.append((f"{key} busy", [_engine_cell(m.profile, key) for m in measured]))
    dma = [m.profile.get("dma") or {} for m in measured]
    rows += [
        ("DMA bytes", [f"{d.get('bytes', 0):,}" for d in dma]),
        (
            "DMA transfers / descriptors",
            [f"{d.get('transfers', 0)} / {d.get('descriptors', 0)}" for d in dma],
        ),
        ("DMA effective bandwidth", [f"{d.get('bandwidth_gbps', 0):.1f} GB/s" for d in dma]),
        ("DMA active share", [percent(d.get("active_share")) for d in dma]),
        ("bottleneck", [str(m.profile.get("bottleneck", "-")) for m in measured]),
    ]
    body = "".join(
        f"<tr><th>{escape(k)}</th>" + "".join(f"<td>{escape(v)}</td>" for v in vals) + "</tr>"
        for k, vals in rows
    )
    return f"<table>{head}{body}</table>"


def _engine_cell(profile: dict, key: str) -> str:
    e = profile.get("engines", {}).get(key)
    return "-" if e is None else f"{e['busy_ns'] / 1000:.2f} µs ({100 * e['utilisation']:.0f}%)"


def _data_uri(trace: dict) -> str:
    payload = base64.b64encode(json.dumps(trace, separators=(",", ":")).encode()).decode()
    return f"data:application/json;base64,{payload}"


def _kv(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<table class=kv>{body}</table>"


def _score_line(it: IterationView) -> str:
    if it.score_ns is None:
        return "no score (the candidate failed before it was measured)"
    parent = (
        f", parent {us(it.parent_score_ns)} ({times(it.speedup_vs_parent)} vs parent)"
        if it.parent_score_ns
        else ""
    )
    return f"{us(it.score_ns)} ({times(it.speedup_vs_baseline)} vs baseline{parent})"


def _usage_line(it: IterationView) -> str:
    u = it.usage
    if not u.calls:
        return "no model calls"
    return (
        f"{u.calls} call(s), {u.input_tokens:,} in / {u.output_tokens:,} out / {u.cache_read_tokens:,} cache read "
        f"/ {u.cache_write_tokens:,} cache write tokens, ${u.cost_usd:.4f}"
    )


def _counts(run: RunView) -> dict[str, int]:
    counts = {"accepted": 0, "rejected": 0, "failed": 0}
    for it in run.iterations:
        counts[it.status] = counts.get(it.status, 0) + 1
    return counts
