"""Typed records of the run-history API: what callers hand to the store and what they get back.

Callers (the loop, the CLI, `knight serve`, `knight report`) use these pydantic models and never
see SQLAlchemy rows; `knight.store.runs.RunStore` converts at the boundary.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from knight.failure import Category, Failure, IterationStatus, RunStatus
from knight.proposal import Edit, ModelCall, Turn

LessonKind = Literal["win", "pitfall", "undo"]


class RunSpec(BaseModel):
    """What a new run is started with (the baseline already judged)."""

    problem_id: str
    problem_hash: str
    machine: str
    machine_hash: str
    knight_version: str
    proposer: str
    seed: int
    budget: int
    max_cost: float | None = None
    time_limit_s: float | None = None
    baseline_source: str
    baseline_score_ns: float
    config: dict[str, Any] = Field(default_factory=dict)  # min_gain, fix_rounds, proposer settings


class RunInfo(BaseModel):
    """One run as stored: what it optimises, its limits, where it stands."""

    id: int
    created_at: datetime
    finished_at: datetime | None
    problem_id: str
    problem_hash: str
    machine: str
    machine_hash: str
    knight_version: str
    proposer: str
    seed: int
    budget: int
    max_cost: float | None
    time_limit_s: float | None
    status: RunStatus
    baseline_hash: str
    baseline_score_ns: float | None
    champion_hash: str | None
    best_score_ns: float | None
    config: dict[str, Any]

    @property
    def speedup(self) -> float | None:
        """Baseline score over best score (None before any score exists)."""
        if not self.baseline_score_ns or not self.best_score_ns:
            return None
        return self.baseline_score_ns / self.best_score_ns


class RunProgress(BaseModel):
    """Counters of a run, from one aggregate query: what the budget checks read."""

    run_id: int
    status: RunStatus
    iterations: int
    accepted: int
    cost_usd: float
    proposer_outage_calls: int  # failed model calls recorded outside any iteration
    baseline_score_ns: float | None
    best_score_ns: float | None
    champion_hash: str | None

    @property
    def speedup(self) -> float:
        """Baseline over best (1.0 while nothing beat the baseline)."""
        if not self.baseline_score_ns or not self.best_score_ns:
            return 1.0
        return self.baseline_score_ns / self.best_score_ns


class LessonRecord(BaseModel):
    """A piece of experience the loop drew from an iteration."""

    kind: LessonKind
    text: str
    tags: list[str] = Field(default_factory=list)


class IterationRecord(BaseModel):
    """Everything one iteration produced, recorded in one transaction.

    `failure` is set for every iteration that was not accepted (its category is the iteration's
    category). Skill events are derived: `skills_read` gives `retrieved`, `skills_cited` gives
    `cited`, plus `won` or `failed` by the verdict.
    """

    number: int
    proposer: str
    parent_hash: str
    parent_score_ns: float | None
    parent_iteration: int | None = None  # the iteration that produced the parent (None: baseline)
    focus: str | None = None  # what this proposer call was asked to concentrate on (--parallel)
    candidate_source: str | None = None  # None when no candidate was built
    status: IterationStatus
    failure: Failure | None = None
    hypothesis: str
    rationale: str = ""
    tags: list[str] = Field(default_factory=list)
    skills_cited: list[str] = Field(default_factory=list)
    skills_read: list[str] = Field(default_factory=list)
    edits: list[Edit] = Field(default_factory=list)
    patch_rungs: list[str] = Field(default_factory=list)
    diff: str = ""
    score_ns: float | None = None
    report: dict[str, Any] | None = None  # the EvalReport as JSON
    harness: str | None = None
    started_at: datetime
    wall_s: float
    fix_rounds: int = 0
    transcript: list[Turn] = Field(default_factory=list)
    llm_calls: list[ModelCall] = Field(default_factory=list)
    lessons: list[LessonRecord] = Field(default_factory=list)

    @property
    def category(self) -> Category | None:
        """The failure or rejection category (None when accepted)."""
        return self.failure.category if self.failure is not None else None


class WorkloadOutcome(BaseModel):
    """A candidate on one visible workload: its latency and a digest of its profile."""

    name: str
    latency_ns: float | None
    correct: bool
    verdict: str | None = None  # the profile's bottleneck line
    critical: list[tuple[str, float]] = []  # top critical-path categories, share of the path
    hbm_utilisation: float | None = None
    floor_ns: float | None = None  # the workload's physical floor
    floor_bound: str | None = None  # the resource that sets it: "hbm", "tensor", "scalar", ...


def workload_outcomes(report: dict[str, Any] | None) -> list[WorkloadOutcome]:
    """The visible workloads of a stored EvalReport dict, with their profile digests."""
    out = []
    for w in (report or {}).get("workloads", []):
        if w.get("heldout"):
            continue
        prof = w.get("profile") or {}
        cp = prof.get("critical_path_ns") or 0.0
        critical = [(k, v / cp) for k, v in prof.get("critical_by_engine", [])[:3]] if cp else []
        out.append(
            WorkloadOutcome(
                name=w["name"],
                latency_ns=w.get("latency_ns"),
                correct=bool(w.get("correct")),
                verdict=prof.get("bottleneck"),
                critical=critical,
                hbm_utilisation=prof.get("hbm_utilisation"),
                floor_ns=w.get("floor_ns"),
                floor_bound=w.get("floor_bound"),
            )
        )
    return out


class IterationSummary(BaseModel):
    """One iteration as history tables and prompts show it."""

    run_id: int
    number: int
    status: IterationStatus
    category: Category | None
    hypothesis: str
    message: str | None  # the failure's one-line explanation
    score_ns: float | None
    parent_score_ns: float | None
    speedup_vs_baseline: float | None
    speedup_vs_parent: float | None
    fix_rounds: int
    proposer: str
    parent_hash: str
    parent_iteration: int | None  # the iteration whose candidate is the parent (None: baseline)
    focus: str | None  # what the proposer call was asked to concentrate on, if anything
    candidate_hash: str | None
    tags: list[str]
    edits: list[Edit]
    harness: str | None  # what judged the candidate (None when nothing was evaluated)
    skills_cited: list[str] = []  # skills the proposal named in skills_used
    failure_workload: str | None = None  # the workload whose run showed the failure
    workloads: list[WorkloadOutcome] = []  # per visible workload, accepted or rejected alike


class IterationDetail(IterationSummary):
    """One iteration in full (`knight show`)."""

    problem_id: str
    rationale: str
    patch_rungs: list[str]
    diff: str
    failure: Failure | None
    report: dict[str, Any] | None
    transcript: list[Turn]
    llm_calls: list[ModelCall]
    parent_profile: dict[str, Any]  # the parent's profile under the same harness, if stored
    started_at: datetime
    wall_s: float


class AttemptRow(BaseModel):
    """An iteration of some run of a problem, for building a proposer's context."""

    id: int  # increases with every stored iteration: callers read only rows after the last seen
    run_id: int
    summary: IterationSummary


class ProblemHistory(BaseModel):
    """Iterations of every run of a problem stored after `after_id`, and the newest lessons."""

    attempts: list[AttemptRow]
    sources: dict[str, str]  # hash -> source of every parent and candidate of `attempts`
    lessons: list[str]
    last_id: int
