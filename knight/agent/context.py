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
from knight.proposers import Attempt, KnobStat, ProposalContext, SkillSummary
from knight.skills import Skill
from knight.store import IterationSummary, RunInfo, RunStore
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


@dataclass
class ContextBuilder:
    """Builds each iteration's `ProposalContext` for one run, reading the store incrementally."""

    store: RunStore
    problem: Problem
    skills: dict[str, Skill]
    _last_id: int = 0
    _attempts: dict[int, list[Attempt]] = field(default_factory=dict)  # run id -> its attempts
    _tried: set[str] = field(default_factory=set)
    _knob_stats: dict[tuple[str, str], KnobStat] = field(default_factory=dict)
    _lessons: list[str] = field(default_factory=list)

    def build(self, run: RunInfo, champion: Champion, iteration: int) -> ProposalContext:
        """Everything a proposer may use for iteration `iteration` of `run`."""
        self._catch_up()
        summary, bottleneck = profile_text(champion.report)
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
        )

    def _catch_up(self) -> None:
        """Fold in the iterations stored since the last call (by this run or any other)."""
        history = self.store.problem_history(self.problem.id, after_id=self._last_id)
        self._last_id = history.last_id
        self._lessons = history.lessons
        sources = history.sources
        for it in (row.summary for row in history.attempts):
            self._attempts.setdefault(it.run_id, []).append(_attempt(it))
            if it.candidate_hash:
                self._tried.add(it.candidate_hash)
            _count_knobs(self._knob_stats, it, sources)


def _attempt(it: IterationSummary) -> Attempt:
    return Attempt(
        number=it.number,
        hypothesis=it.hypothesis,
        edits=list(it.edits),
        status=it.status,
        category=it.category,
        message=it.message,
        score_ns=it.score_ns,
        speedup_vs_parent=it.speedup_vs_parent,
        tags=list(it.tags),
    )


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
