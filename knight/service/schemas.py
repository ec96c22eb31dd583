"""The service's request and response bodies (the report itself is `knight.evaluation.EvalReport`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "done", "error"]


class EvaluationRequest(BaseModel):
    """One evaluation, exactly the request of docs/evaluator-protocol.md §1."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="The candidate kernel file, UTF-8 text.")
    problem: str = Field(description="Problem id (rmsnorm, moe_router, moe_decode).")
    problem_hash: str | None = Field(
        default=None, description="The problem version the client expects; absent: the server's."
    )
    machine: str | None = Field(default=None, description="Machine preset; null: the problem's.")
    heldout: bool = Field(default=False, description="Also run the held-out workloads.")
    max_seeds: int | None = Field(default=None, ge=1, description="At most N seeds per workload.")
    profile: bool = Field(default=True, description="Keep the profile of the first run.")


class EvaluationJob(BaseModel):
    """An evaluation submitted to the server's queue, and its result once done."""

    id: str
    status: JobStatus
    problem: str
    problem_hash: str
    candidate_hash: str
    report: dict[str, Any] | None = Field(
        default=None, description="The EvalReport (with `problem_hash`) when status is done."
    )
    error: str | None = Field(default=None, description="Why the evaluator could not judge.")


ProposerName = Literal["offline", "scripted", "claude"]


class RunRequest(BaseModel):
    """A run to start in the server (the options of `knight run`)."""

    model_config = ConfigDict(extra="forbid")

    problem: str
    budget: int = Field(default=10, ge=1, le=10_000)
    proposer: ProposerName = "offline"
    seed: int = 0
    model: str | None = Field(default=None, description="Claude model (proposer claude).")
    script: list[dict[str, Any]] | None = Field(
        default=None, description="Proposals for the scripted proposer, one JSON object each."
    )
    machine: str | None = None
    max_cost: float | None = Field(default=None, gt=0)
    time_limit: float | None = Field(default=None, gt=0, description="Seconds.")
    min_gain: float = Field(default=1.01, ge=1.0)
    fix_rounds: int = Field(default=3, ge=0, le=20)


class ResumeRequest(BaseModel):
    """Continue a run; `budget` raises its total number of iterations."""

    model_config = ConfigDict(extra="forbid")

    budget: int | None = Field(default=None, ge=1, le=10_000)


class RunView(BaseModel):
    """A run as the API returns it: the fields of `knight runs --json` plus the server's view."""

    model_config = ConfigDict(extra="allow")  # every other field of knight.store.RunInfo

    run_id: int
    problem_id: str
    status: str
    budget: int
    speedup: float | None
    iterations: int = Field(description="Iterations recorded so far.")
    managed: bool = Field(description="A process of this server is running it (it can cancel it).")
    log: str | None = Field(default=None, description="Last lines of its log, when started here.")


class Health(BaseModel):
    """GET /v1/health."""

    status: Literal["ok"] = "ok"
    version: str
    problems: dict[str, str] = Field(
        description="Problem id -> the problem hash this server holds."
    )
