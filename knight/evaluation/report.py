"""The evaluator's typed results: what judged a candidate, per-workload outcomes, and failures.

These models are the wire format of the evaluator protocol (docs/evaluator-protocol.md): a
remote evaluator returns the same JSON.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from knight.failure import Failure


class RunResult(BaseModel):
    """One simulation of one kernel on one workload and seed (what a worker sends back)."""

    workload: str
    seed: int
    ok: bool
    latency_ns: float | None = None
    outputs: dict[str, str] = {}  # name -> hex of the output's canonical bits (NaNs normalised)
    output_dtypes: dict[str, str] = {}
    output_shapes: dict[str, list[int]] = {}
    inputs_mutated: list[str] = []
    floor_ns: float | None = None
    floor_bound: str | None = None  # resource that sets floor_ns: "hbm", "tensor", "scalar", ...
    profile: dict[str, Any] = {}
    trace: dict[str, Any] | None = None  # Chrome/Perfetto trace, when asked for
    failure: Failure | None = None
    wall_s: float = 0.0


class WorkloadReport(BaseModel):
    """A candidate's outcome on one workload, over its seeds."""

    name: str
    heldout: bool = False
    weight: float = 0.0
    latency_ns: float | None = None  # mean over seeds
    baseline_latency_ns: float | None = None
    floor_ns: float | None = None
    floor_bound: str | None = None  # resource that sets floor_ns
    roofline_fraction: float | None = None  # floor / latency
    correct: bool = False
    seeds: list[int] = []
    failure: Failure | None = None
    profile: dict[str, Any] = {}  # profile of the first seed (visible workloads), else empty


class EvalReport(BaseModel):
    """The whole verdict on one candidate: correctness, integrity, latency, and any failure."""

    candidate_hash: str
    problem: str
    harness: str  # fingerprint of what judged: Knight version, evaluator code, machine, problem
    machine: str
    status: Literal["ok", "failed"]
    score_ns: float | None = None
    baseline_score_ns: float | None = None
    speedup: float | None = None
    # The floor of the heaviest visible workload (largest floor_ns) and the resource setting it.
    floor_ns: float | None = None
    floor_bound: str | None = None
    workloads: list[WorkloadReport] = []
    failure: Failure | None = None
    integrity: dict[str, bool] = {}
    profile: dict[str, Any] = {}  # profile summary of the first visible workload's first seed
    cached_runs: int = 0
    simulated_runs: int = 0
    wall_s: float = 0.0
    versions: dict[str, str] = Field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"
