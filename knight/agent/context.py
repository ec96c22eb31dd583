"""Building the proposer's context from the champion and what the database remembers."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from knight.evaluation import EvalReport
from knight.npu.profile import Profile
from knight.problems import Problem
from knight.proposal import Edit
from knight.proposers import Attempt, KnobStat, ProposalContext, SkillSummary
from knight.skills import Skill
from knight.store import Candidate, Iteration, Lesson, Run
from knight.tunables import read_knobs


@dataclass
class Champion:
    """The kernel every proposal starts from: its source, hash, score and evaluation."""

    hash: str
    source: str
    score_ns: float
    report: EvalReport


def profile_text(report: EvalReport) -> tuple[str, str]:
    """(summary, bottleneck) of a report's profile, or placeholders when it has none."""
    if not report.profile:
        return "(no profile recorded)", "unknown"
    prof = Profile(**report.profile)
    return prof.summary_text(), prof.bottleneck


def build_context(
    session: Session, run: Run, problem: Problem, champion: Champion, iteration: int, skills: dict[str, Skill],
    recent_n: int = 8,
) -> ProposalContext:
    """Everything a proposer may use for iteration `iteration` of `run`."""
    summary, bottleneck = profile_text(champion.report)
    knobs = read_knobs(champion.source)
    rows = _problem_iterations(session, run.problem_id)
    recent = [it for it in rows if it.run_id == run.id][-recent_n:]
    return ProposalContext(
        problem_id=problem.id,
        problem_title=problem.spec.title,
        problem_description=problem.spec.description,
        kernel_file=problem.spec.kernel_file,
        champion_source=champion.source,
        champion_hash=champion.hash,
        champion_score_ns=champion.score_ns,
        baseline_score_ns=run.baseline_score_ns,
        profile_summary=summary,
        bottleneck=bottleneck,
        knobs={k: v.value for k, v in sorted(knobs.items())},
        knob_choices={k: list(v.allowed) for k, v in sorted(knobs.items())},
        knob_stats=_knob_stats(session, rows),
        recent=[_attempt(it) for it in recent],
        lessons=_lessons(session, run.problem_id),
        skills=[SkillSummary(s.name, s.description) for s in sorted(skills.values(), key=lambda s: s.name)],
        iteration=iteration,
        seed=run.seed,
        tried_hashes={it.candidate_hash for it in rows if it.candidate_hash} | {champion.hash, run.baseline_hash},
        machine=run.machine,
    )


def _problem_iterations(session: Session, problem_id: str) -> list[Iteration]:
    q = (
        select(Iteration)
        .join(Run, Run.id == Iteration.run_id)
        .where(Run.problem_id == problem_id)
        .order_by(Iteration.run_id, Iteration.number)
    )
    return list(session.scalars(q))


def _attempt(it: Iteration) -> Attempt:
    message = (it.failure or {}).get("message") if it.failure else None
    if message is None and it.report and it.status != "accepted":
        message = (it.report.get("failure") or {}).get("message")
    return Attempt(
        number=it.number,
        hypothesis=it.hypothesis,
        edits=[Edit(**e) for e in it.edits],
        status=it.status,
        category=it.category,
        message=message,
        score_ns=it.score_ns,
        speedup_vs_parent=it.speedup_vs_parent,
        tags=list(it.tags),
    )


def _knob_stats(session: Session, rows: list[Iteration]) -> dict[tuple[str, str], KnobStat]:
    """Per (knob, value): how often setting it was tried, accepted, failed; the best gain."""
    hashes = {h for it in rows for h in (it.parent_hash, it.candidate_hash) if h}
    sources = dict(session.execute(select(Candidate.hash, Candidate.source).where(Candidate.hash.in_(hashes))).all())
    stats: dict[tuple[str, str], KnobStat] = {}
    for it in rows:
        if not it.candidate_hash or it.candidate_hash not in sources or it.parent_hash not in sources:
            continue
        before, after = read_knobs(sources[it.parent_hash]), read_knobs(sources[it.candidate_hash])
        for name, knob in after.items():
            if name in before and before[name].value != knob.value:
                st = stats.setdefault((name, repr(knob.value)), KnobStat())
                st.tried += 1
                st.accepted += it.status == "accepted"
                st.failed += it.status == "failed"
                if it.speedup_vs_parent is not None:
                    best = st.best_speedup_vs_parent
                    st.best_speedup_vs_parent = max(best, it.speedup_vs_parent) if best else it.speedup_vs_parent
    return stats


def _lessons(session: Session, problem_id: str, n: int = 12) -> list[str]:
    """The most recent lessons learned on this problem (other problems' knobs would mislead)."""
    rows = session.scalars(
        select(Lesson).join(Run, Run.id == Lesson.run_id).where(Run.problem_id == problem_id)
        .order_by(Lesson.id.desc()).limit(n)
    )
    return [f"[{row.kind}] {row.text}" for row in reversed(list(rows))]
