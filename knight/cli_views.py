"""Text renderings of run history for the CLI: the history table and one iteration in full.

Everything a proposer wrote is printed verbatim (callers print these strings with rich markup
off), and the history table fits 100 columns unless asked for the full text.
"""

from __future__ import annotations

from typing import Any

from knight.report.model import SCORE_LABEL, SCORE_MEANING
from knight.store import IterationDetail, IterationSummary

TABLE_WIDTH = 100
# number, parent, outcome, hypothesis, score µs, x base, x parent
_FIXED = "{:>4}  {:>4}  {:<24}  {}  {:>9}  {:>6}  {:>8}"


def _cut(text: str, width: int) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def history_lines(rows: list[IterationSummary], wide: bool = False) -> list[str]:
    """The history table: one line per iteration within 100 columns (`wide`: full hypotheses)."""
    hyp_width = TABLE_WIDTH - len(_FIXED.format("", "", "", "", "", "", ""))
    names = ("#", "from", "outcome", "hypothesis", "score µs", "x base", "x parent")
    if wide:
        lines = [_wide(*names)]
    else:
        lines = [_FIXED.format(*names[:3], names[3].ljust(hyp_width), *names[4:]).rstrip()]
    for it in rows:
        outcome = it.status.value + (f" {it.category.value}" if it.category else "")
        hypothesis = it.hypothesis if wide else _cut(it.hypothesis, hyp_width).ljust(hyp_width)
        score = f"{it.score_ns / 1000:.2f}" if it.score_ns else "-"
        base = f"{it.speedup_vs_baseline:.2f}" if it.speedup_vs_baseline else "-"
        parent = f"{it.speedup_vs_parent:.3f}" if it.speedup_vs_parent else "-"
        cells = (it.number, parent_label(it.parent_iteration), _cut(outcome, 24), hypothesis)
        cells += (score, base, parent)
        lines.append(_FIXED.format(*cells) if not wide else _wide(*cells))
    return lines


def history_title(run_id: int) -> str:
    """The line above the history table: the run, and what its "score" column is."""
    return f"run {run_id} · score µs: {SCORE_MEANING}; per workload: knight show N"


def parent_label(parent_iteration: int | None) -> str:
    """Where a candidate started from: `#N` (an accepted iteration) or `base` (the baseline)."""
    return "base" if parent_iteration is None else f"#{parent_iteration}"


def _wide(
    number: int | str,
    origin: str,
    outcome: str,
    hypothesis: str,
    score: str,
    base: str,
    parent: str,
) -> str:
    """A history row with the whole hypothesis last, so the columns still line up."""
    cells = f"{number:>4}  {origin:>4}  {outcome:<24}  {score:>9}  {base:>6}  {parent:>8}"
    return f"{cells}  {hypothesis}"


def profile_change(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Latency, DMA share and critical-path shares: parent -> candidate."""
    if not before or not after:
        return {}
    change: dict[str, Any] = {"total_ns": [before["total_ns"], after["total_ns"]]}
    if before.get("dma") and after.get("dma"):
        change["dma_active_share"] = [before["dma"]["active_share"], after["dma"]["active_share"]]
        change["dma_descriptors"] = [before["dma"]["descriptors"], after["dma"]["descriptors"]]
    b = dict(map(tuple, before.get("critical_by_engine", [])))
    a = dict(map(tuple, after.get("critical_by_engine", [])))
    change["critical_ns"] = {k: [b.get(k, 0.0), a.get(k, 0.0)] for k in sorted(set(b) | set(a))}
    change["bottleneck"] = [before.get("bottleneck"), after.get("bottleneck")]
    return change


def iteration_json(detail: IterationDetail) -> dict[str, Any]:
    """`knight show --json`: the stored iteration plus the profile change against its parent."""
    data = detail.model_dump(mode="json")
    report = detail.report or {}
    data["profile_change"] = profile_change(detail.parent_profile, report.get("profile", {}))
    return data


def iteration_text(v: IterationDetail, diff: bool = False) -> str:
    """A readable rendering of one iteration (`knight show`)."""
    head = f"iteration {v.number} of run {v.run_id} ({v.problem_id}) — {v.status.value}"
    out = [head + (f" [{v.category.value}]" if v.category else "") + f", proposer {v.proposer}"]
    out.append(f"parent: {_parent_text(v)}")
    if v.focus:
        out.append(f"focus: {v.focus}")
    out.append(f"hypothesis: {v.hypothesis}")
    if v.rationale:
        out.append(f"rationale:  {v.rationale}")
    if v.tags or v.skills_cited:
        out.append(f"tags: {', '.join(v.tags)}   skills: {', '.join(v.skills_cited) or '-'}")
    if v.score_ns and v.parent_score_ns:
        out.append(
            f"{SCORE_LABEL}: {v.score_ns / 1000:.2f} µs (parent {v.parent_score_ns / 1000:.2f} µs; "
            f"{v.speedup_vs_parent or 0:.3f}x vs parent, {v.speedup_vs_baseline or 0:.3f}x vs "
            "baseline)"
        )
    rungs = ", ".join(v.patch_rungs) or "-"
    out.append(f"edits: {len(v.edits)} (rungs: {rungs}), fix rounds: {v.fix_rounds}")
    for i, e in enumerate(v.edits):
        out.append(f"  [{i}] {e.file}: {_first_line(e.search)!r} -> {_first_line(e.replace)!r}")
    if v.failure is not None:
        f = v.failure
        out.append(f"failure: {f.one_line()}")
        where = (("workload", f.workload), ("instruction", f.instr_index), ("engine", f.engine))
        for key, value in (*where, ("core", f.core), ("hint", f.hint)):
            if value is not None:
                out.append(f"  {key}: {value}")
        for key, value in f.details.items():
            if value or key != "violations":
                out.append(f"  {key}: {value}")
    report = v.report or {}
    if report.get("workloads"):
        out += _workload_lines(report["workloads"])
    out += _profile_lines(profile_change(v.parent_profile, report.get("profile", {})))
    if v.transcript:
        out.append("conversation:")
        for turn in v.transcript:
            text = turn.content
            shown = text if len(text) < 400 else text[:400] + f" … ({len(text)} chars)"
            out.append(f"  [{turn.role}/{turn.kind}] {shown}")
    if v.llm_calls:
        cost = sum(c.cost_usd for c in v.llm_calls)
        tokens = sum(c.input_tokens + c.output_tokens for c in v.llm_calls)
        out.append(f"model calls: {len(v.llm_calls)}, {tokens} tokens, ${cost:.4f}")
    if diff and v.diff:
        out.append("diff:")
        out.append(v.diff.rstrip())
    return "\n".join(out)


def _us(ns: float | None) -> str:
    return f"{ns / 1000:.2f}" if ns else "-"


def _workload_lines(workloads: list[dict[str, Any]]) -> list[str]:
    """The per-workload latencies the score is the weighted geometric mean of (held-out: weight -)."""
    out = [
        "workloads (the score weighs these):",
        f"  {'workload':<16} {'weight':>6} {'latency µs':>11} {'baseline µs':>11} "
        f"{'speed-up':>8}  correct",
    ]
    for w in workloads:
        lat, base = w.get("latency_ns"), w.get("baseline_latency_ns")
        weight = "-" if w.get("heldout") else f"{w.get('weight', 0):g}"
        speedup = f"{base / lat:.2f}x" if lat and base else "-"
        name = w["name"] + (" (held out)" if w.get("heldout") else "")
        out.append(
            f"  {name:<16} {weight:>6} {_us(lat):>11} {_us(base):>11} {speedup:>8}  {w['correct']}"
        )
    return out


def run_workloads_line(best: IterationDetail | None) -> str:
    """Under a run's summary: the champion's latency on each workload next to the baseline's
    (`best`: the champion's iteration, or any evaluated one when nothing was accepted)."""
    report = (best.report or {}) if best is not None else {}
    workloads = [w for w in report.get("workloads") or [] if not w.get("heldout")]
    if best is None or not workloads:
        return "per workload: no candidate was evaluated"
    if best.status.value != "accepted":  # the champion is still the baseline
        cells = [f"{w['name']} {_us(w.get('baseline_latency_ns'))}" for w in workloads]
        return "per workload (baseline = champion, µs): " + ", ".join(cells)
    cells = [
        f"{w['name']} {_us(w.get('latency_ns'))}/{_us(w.get('baseline_latency_ns'))}"
        for w in workloads
    ]
    return "per workload (champion/baseline µs): " + ", ".join(cells)


def _parent_text(v: IterationDetail) -> str:
    """The parent kernel: the baseline or the accepted iteration that produced it, and its hash."""
    origin = "the baseline" if v.parent_iteration is None else f"iteration {v.parent_iteration}"
    return f"{origin} ({v.parent_hash[:12]})"


def _profile_lines(pc: dict[str, Any]) -> list[str]:
    if not pc:
        return []
    out = [
        f"profile of one workload vs parent: {pc['total_ns'][0] / 1000:.2f} -> {pc['total_ns'][1] / 1000:.2f} µs"
    ]
    if "dma_active_share" in pc:
        a, b = pc["dma_active_share"]
        da, db = pc["dma_descriptors"]
        out.append(f"  DMA active {100 * a:.0f}% -> {100 * b:.0f}%, descriptors {da} -> {db}")
    for engine, (a, b) in pc["critical_ns"].items():
        if a or b:
            out.append(f"  critical {engine:<13} {a / 1000:8.2f} -> {b / 1000:8.2f} µs")
    out.append(f"  bottleneck now: {pc['bottleneck'][1]}")
    return out


def _first_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return (lines[0].strip() + (" …" if len(lines) > 1 else "")) if lines else ""
