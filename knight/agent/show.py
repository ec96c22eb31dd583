"""`knight show`: one iteration in full — what was tried, how it was judged, and the conversation."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from knight.store import Database, Evaluation, LLMCall, get_iteration, get_run


def iteration_view(db: Database, run_id: int, number: int) -> dict[str, Any]:
    """Everything recorded about iteration `number` of `run_id`, as one JSON-ready dict."""
    with db.session() as s:
        run = get_run(s, run_id)
        it = get_iteration(s, run_id, number)
        calls = s.scalars(select(LLMCall).where(LLMCall.run_id == run_id, LLMCall.iteration_number == number)
                          .order_by(LLMCall.id)).all()
        report = it.report or {}
        parent_profile = _profile_of(s, it.parent_hash, it.harness) if it.harness else {}
        return {
            "run_id": run_id, "problem": run.problem_id, "number": it.number, "status": it.status,
            "category": it.category, "proposer": it.proposer, "hypothesis": it.hypothesis, "rationale": it.rationale,
            "tags": it.tags, "skills_cited": it.skills_cited, "edits": it.edits, "patch_rungs": it.patch_rungs,
            "diff": it.diff, "parent_hash": it.parent_hash, "candidate_hash": it.candidate_hash,
            "score_ns": it.score_ns, "parent_score_ns": it.parent_score_ns,
            "speedup_vs_baseline": it.speedup_vs_baseline, "speedup_vs_parent": it.speedup_vs_parent,
            "failure": it.failure, "fix_rounds": it.fix_rounds, "wall_s": it.wall_s, "harness": it.harness,
            "workloads": report.get("workloads", []), "integrity": report.get("integrity", {}),
            "profile": report.get("profile", {}), "parent_profile": parent_profile,
            "profile_change": _profile_change(parent_profile, report.get("profile", {})),
            "transcript": it.transcript or [],
            "llm_calls": [{
                "model": c.model, "round": c.round, "input_tokens": c.input_tokens, "output_tokens": c.output_tokens,
                "cache_read_tokens": c.cache_read_tokens, "cache_write_tokens": c.cache_write_tokens,
                "cost_usd": c.cost_usd, "status": c.status, "error": c.error, "duration_s": c.duration_s,
            } for c in calls],
        }


def _profile_of(s, candidate_hash: str, harness: str) -> dict[str, Any]:
    rows = s.scalars(select(Evaluation).where(Evaluation.candidate_hash == candidate_hash,
                                              Evaluation.harness == harness)).all()
    for row in rows:
        if row.report.get("profile"):
            return row.report["profile"]
    return {}


def _profile_change(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Latency, DMA share and critical-path shares: parent -> candidate."""
    if not before or not after:
        return {}
    change: dict[str, Any] = {"total_ns": [before["total_ns"], after["total_ns"]]}
    if before.get("dma") and after.get("dma"):
        change["dma_active_share"] = [before["dma"]["active_share"], after["dma"]["active_share"]]
        change["dma_descriptors"] = [before["dma"]["descriptors"], after["dma"]["descriptors"]]
    b, a = dict(map(tuple, before["critical_by_engine"])), dict(map(tuple, after["critical_by_engine"]))
    change["critical_ns"] = {k: [b.get(k, 0.0), a.get(k, 0.0)] for k in sorted(set(b) | set(a))}
    change["bottleneck"] = [before.get("bottleneck"), after.get("bottleneck")]
    return change


def render_text(v: dict[str, Any], diff: bool = False) -> str:
    """A readable rendering of `iteration_view`."""
    out = [f"iteration {v['number']} of run {v['run_id']} ({v['problem']}) — {v['status']}"
           + (f" [{v['category']}]" if v["category"] else "") + f", proposer {v['proposer']}"]
    out.append(f"hypothesis: {v['hypothesis']}")
    if v["rationale"]:
        out.append(f"rationale:  {v['rationale']}")
    if v["tags"] or v["skills_cited"]:
        out.append(f"tags: {', '.join(v['tags'])}   skills: {', '.join(v['skills_cited']) or '-'}")
    if v["score_ns"]:
        out.append(f"score: {v['score_ns'] / 1000:.2f} µs (parent {v['parent_score_ns'] / 1000:.2f} µs; "
                   f"{v['speedup_vs_parent']:.3f}x vs parent, {v['speedup_vs_baseline']:.3f}x vs baseline)")
    out.append(f"edits: {len(v['edits'])} (rungs: {', '.join(v['patch_rungs']) or '-'}), fix rounds: {v['fix_rounds']}")
    for i, e in enumerate(v["edits"]):
        out.append(f"  [{i}] {e['file']}: {_first_line(e['search'])!r} -> {_first_line(e['replace'])!r}")
    if v["failure"]:
        f = v["failure"]
        where = f" at {f['file']}:{f['line']}" if f.get("file") and f.get("line") else ""
        out.append(f"failure: {f.get('category')}{where}: {f.get('message')}")
        for key in ("workload", "instr_index", "engine", "core", "hint"):
            if f.get(key) is not None:
                out.append(f"  {key}: {f[key]}")
        for key, val in (f.get("details") or {}).items():
            if key not in ("violations",) or val:
                out.append(f"  {key}: {val}")
    if v["workloads"]:
        out.append("workloads:")
        for w in v["workloads"]:
            lat = f"{w['latency_ns'] / 1000:.2f} µs" if w.get("latency_ns") else "-"
            out.append(f"  {w['name']:<14} {lat:>12}  correct: {w['correct']}")
    pc = v["profile_change"]
    if pc:
        out.append(f"profile vs parent: {pc['total_ns'][0] / 1000:.2f} -> {pc['total_ns'][1] / 1000:.2f} µs")
        if "dma_active_share" in pc:
            a, b = pc["dma_active_share"]
            out.append(f"  DMA active {100 * a:.0f}% -> {100 * b:.0f}%, descriptors {pc['dma_descriptors'][0]} -> "
                       f"{pc['dma_descriptors'][1]}")
        for k, (a, b) in pc["critical_ns"].items():
            if a or b:
                out.append(f"  critical {k:<13} {a / 1000:8.2f} -> {b / 1000:8.2f} µs")
        out.append(f"  bottleneck now: {pc['bottleneck'][1]}")
    if v["transcript"]:
        out.append("conversation:")
        for turn in v["transcript"]:
            text = str(turn.get("content", ""))
            label = f"{turn.get('role', '?')}/{turn.get('kind', '?')}"
            out.append(f"  [{label}] " + (text if len(text) < 400 else text[:400] + f" … ({len(text)} chars)"))
    if v["llm_calls"]:
        cost = sum(c["cost_usd"] for c in v["llm_calls"])
        toks = sum(c["input_tokens"] + c["output_tokens"] for c in v["llm_calls"])
        out.append(f"model calls: {len(v['llm_calls'])}, {toks} tokens, ${cost:.4f}")
    if diff and v["diff"]:
        out.append("diff:")
        out.append(v["diff"].rstrip())
    return "\n".join(out)


def _first_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return (lines[0].strip() + (" …" if len(lines) > 1 else "")) if lines else ""
