"""Building the proposer's context from the champion and what the run store remembers.

`ContextBuilder` keeps what it learned from earlier iterations (attempts, tried hashes, knob
statistics) and reads only iterations stored since its last call, so each source is parsed once
per run instead of once per iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from knight.evaluation import EvalReport
from knight.failure import IterationStatus
from knight.npu.profile import Profile
from knight.problems import Problem
from knight.proposers import Attempt, KnobStat, ProposalContext, SkillSummary, WorkloadView
from knight.skill_conditions import ConditionError, matches, profile_metrics
from knight.skills import Skill
from knight.store import IterationSummary, RunInfo, RunStore, WorkloadOutcome
from knight.store.records import workload_outcomes
from knight.tunables import read_knobs

RECENT_ATTEMPTS = 8  # of this run, shown to the proposer


@dataclass
class Champion:
    """The kernel every proposal starts from: its source, hash, score and evaluation."""

    hash: str
    source: str
    score_ns: float
    report: EvalReport
    iteration: int | None = None  # the accepted iteration that produced it (None: the baseline)


def profile_text(report: EvalReport) -> tuple[str, str]:
    """(summary, bottleneck) of a report's profile, or placeholders when it has none."""
    if not report.profile:
        return "(no profile recorded)", "unknown"
    prof = Profile(**report.profile)
    return prof.summary_text(), prof.bottleneck


def worst_workload(report: EvalReport) -> str | None:
    """The visible workload with the least speed-up over the baseline (ties: the first)."""
    ratios = [
        (w.latency_ns / w.baseline_latency_ns, i, w.name)
        for i, w in enumerate(report.workloads)
        if not w.heldout and w.latency_ns and w.baseline_latency_ns and w.profile
    ]
    return max(ratios, key=lambda r: (r[0], -r[1]))[2] if ratios else None


def digest(outcome: WorkloadOutcome) -> str:
    """One line of a workload's profile: its verdict, top critical categories and HBM share."""
    if not outcome.verdict:
        return ""
    parts = [outcome.verdict]
    if outcome.critical:
        parts.append("critical " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in outcome.critical))
    if outcome.hbm_utilisation is not None:
        parts.append(f"hbm {100 * outcome.hbm_utilisation:.0f}%")
    return "; ".join(parts)


def workload_views(problem: Problem, outcomes: list[WorkloadOutcome]) -> list[WorkloadView]:
    """The problem's visible workloads with a candidate's latencies and digests, where known."""
    by_name = {o.name: o for o in outcomes}
    views = []
    for w in problem.all_workloads(heldout=False):
        o = by_name.get(w.name)
        views.append(
            WorkloadView(
                name=w.name,
                params=dict(w.params),
                weight=w.weight,
                latency_ns=o.latency_ns if o else None,
                digest=digest(o) if o else "",
                floor_ns=o.floor_ns if o else None,
                floor_bound=o.floor_bound if o else None,
            )
        )
    return views


def suggested_skills(skills: dict[str, Skill], report: EvalReport) -> list[tuple[str, str]]:
    """Skills whose applies-when holds on the profile of any visible workload of the champion."""
    profiles = [w.profile for w in report.workloads if w.profile and not w.heldout]
    profiles = profiles or ([report.profile] if report.profile else [])
    metrics = [profile_metrics(p) for p in profiles]
    out = []
    for name, skill in sorted(skills.items()):
        condition = skill.metadata.get("applies-when")
        if not condition:
            continue
        try:
            if any(matches(condition, m) for m in metrics):
                out.append((name, condition))
        except ConditionError:
            continue  # a learned skill with a bad condition is simply not suggested
    return out


@dataclass
class ContextBuilder:
    """Builds each iteration's `ProposalContext` for one run, reading the store incrementally."""

    store: RunStore
    problem: Problem
    skills: dict[str, Skill]
    min_gain: float = 1.01  # the run's acceptance threshold, stated to the proposer
    _last_id: int = 0
    _attempts: dict[int, list[Attempt]] = field(default_factory=dict)  # run id -> its attempts
    _tried: set[str] = field(default_factory=set)
    _knob_stats: dict[tuple[str, str], KnobStat] = field(default_factory=dict)
    _lessons: list[str] = field(default_factory=list)

    def build(self, run: RunInfo, champion: Champion, iteration: int) -> ProposalContext:
        """Everything a proposer may use for iteration `iteration` of `run`."""
        self._catch_up()
        summary, bottleneck = profile_text(champion.report)
        tail = ""
        worst = worst_workload(champion.report)
        if worst is not None:
            report = next(w for w in champion.report.workloads if w.name == worst)
            prof = Profile(**report.profile)
            summary, bottleneck, tail = prof.summary_text(), prof.bottleneck, prof.tail_text()
        views = workload_views(self.problem, workload_outcomes(champion.report.model_dump()))
        baselines = {w.name: w.baseline_latency_ns for w in champion.report.workloads}
        for v in views:
            v.baseline_latency_ns = baselines.get(v.name)
        knobs = read_knobs(champion.source)
        skills = sorted(self.skills.values(), key=lambda s: s.name)
        return ProposalContext(
            problem_id=self.problem.id,
            problem_title=self.problem.spec.title,
            problem_description=self.problem.spec.description,
            kernel_file=self.problem.spec.kernel_file,
            champion_source=champion.source,
            champion_hash=champion.hash,
            champion_score_ns=champion.score_ns,
            baseline_score_ns=run.baseline_score_ns,
            profile_summary=summary,
            bottleneck=bottleneck,
            knobs={k: v.value for k, v in sorted(knobs.items())},
            knob_choices={k: list(v.allowed) for k, v in sorted(knobs.items())},
            knob_stats=dict(self._knob_stats),
            recent=self._attempts.get(run.id, [])[-RECENT_ATTEMPTS:],
            lessons=list(self._lessons),
            skills=[SkillSummary(s.name, s.description) for s in skills],
            iteration=iteration,
            seed=run.seed,
            tried_hashes=self._tried | {champion.hash, run.baseline_hash},
            machine=run.machine,
            cores=self.problem.spec.grid,
            min_gain=self.min_gain,
            workloads=views,
            worst_workload=worst,
            critical_tail=tail,
            suggested_skills=suggested_skills(self.skills, champion.report),
        )

    def _catch_up(self) -> None:
        """Fold in the iterations stored since the last call (by this run or any other)."""
        history = self.store.problem_history(self.problem.id, after_id=self._last_id)
        self._last_id = history.last_id
        self._lessons = history.lessons
        sources = history.sources
        for it in (row.summary for row in history.attempts):
            self._attempts.setdefault(it.run_id, []).append(_attempt(it, self.problem))
            if it.candidate_hash:
                self._tried.add(it.candidate_hash)
            _count_knobs(self._knob_stats, it, sources)


def _attempt(it: IterationSummary, problem: Problem) -> Attempt:
    message = it.message
    if message and it.failure_workload:
        params = next(
            (
                w.params
                for w in problem.all_workloads(heldout=True)
                if w.name == it.failure_workload
            ),
            None,
        )
        where = it.failure_workload + (f" {_params(params)}" if params else "")
        message = f"on workload {where}: {message}"
    return Attempt(
        number=it.number,
        hypothesis=it.hypothesis,
        edits=list(it.edits),
        status=it.status,
        category=it.category,
        message=message,
        score_ns=it.score_ns,
        speedup_vs_parent=it.speedup_vs_parent,
        tags=list(it.tags),
        skills_used=list(it.skills_cited),
        workloads=[v for v in workload_views(problem, it.workloads) if v.latency_ns or v.digest],
    )


def _params(params: dict) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"


def _count_knobs(
    stats: dict[tuple[str, str], KnobStat], it: IterationSummary, sources: dict[str, str]
) -> None:
    """Add one iteration to the per (knob, value) record: tried, accepted, failed, best gain."""
    if it.candidate_hash not in sources or it.parent_hash not in sources:
        return
    before, after = read_knobs(sources[it.parent_hash]), read_knobs(sources[it.candidate_hash])
    for name, knob in after.items():
        if name not in before or before[name].value == knob.value:
            continue
        stat = stats.setdefault((name, repr(knob.value)), KnobStat())
        stat.tried += 1
        stat.accepted += it.status is IterationStatus.accepted
        stat.failed += it.status is IterationStatus.failed
        if it.speedup_vs_parent is not None:
            best = stat.best_speedup_vs_parent
            stat.best_speedup_vs_parent = max(best or 0.0, it.speedup_vs_parent)
