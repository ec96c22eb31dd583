"""The proposer interface: what a proposer is given (a context) and what it returns.

The loop builds a `ProposalContext` each iteration (champion source, profile, recent attempts
with their real edits and outcomes, lessons, knob statistics, the skill catalog) and asks the
proposer for a `ProposalResult`. When the patch does not apply or the candidate fails at trace
time, the loop calls `fix()` with the structured error, up to a bounded number of rounds; a
conversational proposer answers in the same conversation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from knight.proposal import Edit, Proposal


@dataclass
class Attempt:
    """One earlier iteration, as the proposer sees it."""

    number: int
    hypothesis: str
    edits: list[Edit]
    status: str  # accepted / rejected / failed
    category: str | None  # failure or rejection category
    message: str | None  # one-line explanation
    score_ns: float | None
    speedup_vs_parent: float | None
    tags: list[str] = field(default_factory=list)


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


@dataclass
class LLMCallRecord:
    """One model call, for the `llm_calls` table and the cost budget."""

    model: str
    round: int
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    status: str = "ok"  # ok / error
    error: str | None = None
    duration_s: float = 0.0
    request: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProposalResult:
    """A proposal, or the reason there is none (category proposer_error / malformed_proposal)."""

    proposal: Proposal | None
    error_category: str | None = None
    error_message: str | None = None
    llm_calls: list[LLMCallRecord] = field(default_factory=list)
    transcript: list[dict[str, Any]] = field(default_factory=list)  # readable conversation turns
    exhausted: bool = False  # the proposer has nothing left to propose (the run ends; no iteration is spent)

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.llm_calls)


class ProposerUnavailable(Exception):
    """The proposer cannot run here (no API key, missing command); the message says why."""


class Proposer(Protocol):
    """Forms hypotheses and patches. `name` is stored with every iteration."""

    name: str

    def propose(self, ctx: ProposalContext) -> ProposalResult:
        """A new proposal for this iteration."""
        ...

    def fix(self, ctx: ProposalContext, error: str) -> ProposalResult | None:
        """A corrected proposal after `error` (a patch or trace failure), or None if it cannot."""
        ...
