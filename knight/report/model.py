"""What the report shows, as typed data: runs, iterations, model usage, baseline-vs-champion.

These models are also the JSON the live pages poll (`/runs/{id}/state.json`, `/runs/{id}.json`).
Times are simulated nanoseconds; a "score" is always the weighted geometric mean of the
per-workload latencies (SCORE_LABEL), never the latency of one workload.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

SCORE_MEANING = "weighted geometric mean of workload latencies"
SCORE_LABEL = f"score ({SCORE_MEANING})"


class ModelUsage(BaseModel):
    """Model calls made for one iteration: tokens and cost."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def tokens(self) -> int:
        """Every token sent or received (cache reads and writes included)."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


class IterationView(BaseModel):
    """One iteration as recorded: the proposal, the patch, the verdict and the evaluation."""

    number: int
    status: str
    category: str | None = None
    proposer: str = ""
    hypothesis: str = ""
    rationale: str = ""
    tags: list[str] = []
    skills_cited: list[str] = []
    patch_rungs: list[str] = []
    edits: int = 0
    diff: str = ""
    parent_hash: str = ""
    candidate_hash: str | None = None
    parent_number: int | None = None  # the iteration that produced the parent; None: the baseline
    score_ns: float | None = None
    parent_score_ns: float | None = None
    speedup_vs_baseline: float | None = None
    speedup_vs_parent: float | None = None
    failure: dict[str, Any] | None = None
    workloads: list[dict[str, Any]] = []
    integrity: dict[str, bool] = {}
    profile: dict[str, Any] = {}
    transcript: list[dict[str, Any]] = []
    fix_rounds: int = 0
    wall_s: float = 0.0
    usage: ModelUsage = Field(default_factory=ModelUsage)


class RunView(BaseModel):
    """One run with every iteration, in number order."""

    id: int
    problem: str
    problem_hash: str = ""
    proposer: str
    machine: str
    status: str
    created_at: str
    finished_at: str | None = None
    budget: int
    seed: int
    knight_version: str
    baseline_hash: str
    champion_hash: str | None = None
    baseline_score_ns: float | None = None
    best_score_ns: float | None = None
    floor_score_ns: float | None = (
        None  # the score a kernel moving only the required bytes would get
    )
    harness: str | None = None
    iterations: list[IterationView] = []
    baseline_profile: dict[str, Any] = {}  # as stored by the evaluator (first workload, first seed)

    @property
    def speedup(self) -> float | None:
        """Best score over baseline score (higher is better)."""
        if self.baseline_score_ns and self.best_score_ns:
            return self.baseline_score_ns / self.best_score_ns
        return None

    @property
    def floor_speedup(self) -> float | None:
        """The speed-up a kernel at the physical floor would reach: the ceiling of the chart."""
        if self.baseline_score_ns and self.floor_score_ns:
            return self.baseline_score_ns / self.floor_score_ns
        return None

    def champion_iteration(self) -> IterationView | None:
        """The accepted iteration that produced the current champion, if any."""
        accepted = [it for it in self.iterations if it.status == "accepted"]
        return accepted[-1] if accepted else None


class RunState(BaseModel):
    """What a live page polls to know whether to refresh: changes whenever an iteration lands."""

    run_id: int
    status: str
    iterations: int
    last_number: int | None = None
    best_score_ns: float | None = None
    version: str  # opaque; a new value means "fetch the page again"


class KernelMeasurement(BaseModel):
    """One kernel profiled on one workload and seed, with its timeline when it was computed."""

    label: str  # "baseline" or "champion"
    candidate_hash: str
    workload: str
    seed: int
    latency_ns: float | None = None
    profile: dict[str, Any] = {}
    trace: dict[str, Any] | None = None  # Chrome Trace Event JSON (Perfetto)
    source: str = "stored"  # "stored" (read from the database) or "evaluated" (computed now)
    harness: str | None = None
    error: str | None = None


class Comparison(BaseModel):
    """Baseline and champion of a run, measured the same way."""

    baseline: KernelMeasurement | None = None
    champion: KernelMeasurement | None = None
    note: str = ""
