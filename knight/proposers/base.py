"""The proposer interface: what a proposer is given (a context) and what it returns.

The loop builds a `ProposalContext` each iteration (champion source, profile, recent attempts
with their real edits and outcomes, lessons, knob statistics, the skill catalog) and asks the
proposer for a `ProposalResult`. When the patch does not apply or the candidate fails before it
runs (static or trace stage), the loop calls `fix()` with the typed `Failure`, up to a bounded
number of rounds; a conversational proposer answers in the same conversation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from knight.failure import Category, Failure, IterationStatus
from knight.proposal import Edit, ModelCall, Proposal, Turn


@dataclass
class Attempt:
    """One earlier iteration, as the proposer sees it."""

    number: int
    hypothesis: str
    edits: list[Edit]
    status: IterationStatus
    category: Category | None  # failure or rejection category
    message: str | None  # one-line explanation
    score_ns: float | None
    speedup_vs_parent: float | None
    tags: list[str] = field(default_factory=list)
    skills_used: list[str] = field(default_factory=list)
    workloads: list[WorkloadView] = field(default_factory=list)  # accepted or rejected alike


@dataclass
class WorkloadView:
    """A visible workload as the proposer sees it: parameters, weight, latency, profile digest."""

    name: str
    params: dict[str, Any]
    weight: float
    latency_ns: float | None = None
    baseline_latency_ns: float | None = None
    digest: str = ""  # one line: verdict and the top critical-path categories
    floor_ns: float | None = None  # physical floor: the slowest resource's time for the work
    floor_bound: str | None = None  # the resource setting it: "hbm" or an engine ("tensor", ...)


@dataclass
class SkillSummary:
    """A skill's catalog entry: its name and when to use it."""

    name: str
    description: str


@dataclass
class KnobStat:
    """What the database says about setting one knob to one value."""

    tried: int = 0
    accepted: int = 0
    failed: int = 0
    best_speedup_vs_parent: float | None = None


@dataclass
class ProposalContext:
    """Everything a proposer may use to form its next hypothesis."""

    problem_id: str
    problem_title: str
    problem_description: str
    kernel_file: str  # the name edits must use for the kernel
    champion_source: str
    champion_hash: str
    champion_score_ns: float | None
    baseline_score_ns: float | None
    profile_summary: str  # human-readable profile of the champion
    bottleneck: str  # one line
    knobs: dict[str, Any]  # current values of the champion's declared knobs
    knob_choices: dict[str, list[Any]]  # allowed values per knob
    knob_stats: dict[tuple[str, str], KnobStat]  # (knob, repr(value)) -> record in this database
    recent: list[Attempt]
    lessons: list[str]
    skills: list[SkillSummary]
    iteration: int  # the number of the iteration being proposed
    seed: int
    tried_hashes: set[str] = field(default_factory=set)  # candidate hashes already evaluated
    machine: str = "trn2"  # the preset the run is judged on (its figures go into prompts)
    # Parallel rounds (--parallel): what this call should concentrate on, so concurrent calls
    # differ, and its rank among the round's calls that start from the same parent (0 = first).
    focus: str | None = None
    sibling: int = 0
    cores: int = 2  # the problem's grid: physical cores the kernel runs on
    min_gain: float = 1.01  # acceptance threshold: candidate speed-up over the champion
    workloads: list[WorkloadView] = field(default_factory=list)  # visible, with the champion's
    worst_workload: str | None = None  # whose full profile `profile_summary` is
    critical_tail: str = ""  # the champion's critical path, last instructions with their lines
    suggested_skills: list[tuple[str, str]] = field(default_factory=list)  # (name, applies-when)


@dataclass
class ProposalResult:
    """A proposal, or the failure that left none (category proposer_error / malformed_proposal).

    `transient` marks a failure caused only by the model provider or the network (rate limit,
    overload, 5xx, timeout): an outage the loop waits out without spending an iteration.
    """

    proposal: Proposal | None
    failure: Failure | None = None
    transient: bool = False
    retry_after_s: float | None = None  # the provider's requested wait, when it said
    llm_calls: list[ModelCall] = field(default_factory=list)
    transcript: list[Turn] = field(default_factory=list)  # readable conversation turns
    skills_read: list[str] = field(default_factory=list)  # skills whose bodies the proposer read
    exhausted: bool = False  # nothing left to propose (the run ends; no iteration is spent)

    @classmethod
    def failed(
        cls, category: Category, message: str, *, transient: bool = False, **more: Any
    ) -> ProposalResult:
        """A result without a proposal, failing with `category` and `message`."""
        return cls(None, Failure(category=category, message=message), transient=transient, **more)

    @property
    def cost_usd(self) -> float:
        """What this result's model calls cost."""
        return sum(c.cost_usd for c in self.llm_calls)


class ProposerUnavailable(Exception):
    """The proposer cannot run here (no API key, missing command); the message says why."""


class Proposer(Protocol):
    """Forms hypotheses and patches. `name` is stored with every iteration."""

    name: str

    def propose(self, ctx: ProposalContext) -> ProposalResult:
        """A new proposal for this iteration."""
        ...

    def fix(self, ctx: ProposalContext, failure: Failure) -> ProposalResult | None:
        """A corrected proposal after `failure` (a patch, static or trace failure), or None."""
        ...
