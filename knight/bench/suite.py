"""Benchmarking a proposer over the problem suite: one stored run per problem, then the figures.

`run_suite` starts one run of the loop per problem (all bundled problems by default, so a new
problem folder is picked up without a code change), in one run store and with one evaluator whose
cache is the store's (the champion's final judgement is a cache hit). Per problem it reports the
speed-up over the baseline and the fraction of the physical floor the champion reaches; over the
suite, the geometric means. See docs/bench.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from pydantic import BaseModel

from knight.agent.config import RunConfig
from knight.agent.loop import Events, Runner
from knight.errors import KnightError
from knight.evaluation import EvalReport, Evaluator
from knight.failure import RunStatus
from knight.problems import Problem, weighted_geomean
from knight.proposers import Proposer
from knight.skills import Skill
from knight.source import canonical_source
from knight.store import RunStore


class ProblemResult(BaseModel):
    """One problem's benchmark outcome (a stored run), or why it has none."""

    problem: str
    run_id: int | None = None
    status: str  # the run's status ("finished", "interrupted"), or "error"
    iterations: int = 0
    accepted: int = 0
    baseline_score_ns: float | None = None
    best_score_ns: float | None = None
    speedup: float | None = None
    floor_ns: float | None = None  # the floor in score terms (weighted geomean of workload floors)
    floor_bound: str | None = None  # the resource that sets the floor, when the evaluator says
    baseline_floor_fraction: float | None = None
    floor_fraction: float | None = None  # floor_ns / best_score_ns
    stop_reason: str = ""
    wall_s: float = 0.0
    error: str | None = None


class BenchReport(BaseModel):
    """The whole benchmark: settings, per-problem results and the geometric means."""

    proposer: str
    strategy: str | None = None
    budget: int
    seed: int
    db: str
    problems: list[ProblemResult]
    geomean_speedup: float | None = None
    geomean_floor_fraction: float | None = None
    failed: list[str] = []  # problems without a result
    wall_s: float = 0.0


def floor_figures(report: EvalReport) -> tuple[float | None, float | None]:
    """(floor in score terms, fraction of it reached) over the report's visible workloads.

    The score is a weighted geometric mean of workload latencies, so the floor is the same mean
    of the workload floors and the fraction is their ratio (a weighted geomean of the workloads'
    roofline fractions); None when a workload has no floor or no latency.
    """
    visible = [w for w in report.workloads if not w.heldout]
    if not visible or not all(w.floor_ns and w.latency_ns for w in visible):
        return None, None
    weights = {w.name: w.weight for w in visible}
    floor = weighted_geomean({w.name: w.floor_ns for w in visible if w.floor_ns}, weights)
    score = weighted_geomean({w.name: w.latency_ns for w in visible if w.latency_ns}, weights)
    return floor, floor / score


def geomean(values: Sequence[float]) -> float | None:
    """The geometric mean of positive values (None for none)."""
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def bench_problem(
    store: RunStore,
    problem: Problem,
    evaluator: Evaluator,
    proposer: Proposer,
    config: RunConfig,
    *,
    skills: dict[str, Skill] | None = None,
    events: Events | None = None,
    machine: str | None = None,
) -> ProblemResult:
    """Run the loop on one problem and judge its champion (a cache hit) for the floor figures."""
    runner = Runner(
        store, problem, evaluator, proposer, skills=skills, events=events, machine=machine
    )
    try:
        summary = runner.start(config)
    except KnightError as e:
        return ProblemResult(problem=problem.id, status="error", error=str(e))
    baseline = evaluator.evaluate(canonical_source(problem.baseline_source()), problem)
    champion = evaluator.evaluate(store.candidate_source(summary.champion_hash), problem)
    floor, fraction = floor_figures(champion)
    _, baseline_fraction = floor_figures(baseline)
    return ProblemResult(
        problem=problem.id,
        run_id=summary.run_id,
        status=summary.status.value,
        iterations=summary.iterations,
        accepted=summary.accepted,
        baseline_score_ns=summary.baseline_score_ns,
        best_score_ns=summary.best_score_ns,
        speedup=summary.speedup,
        floor_ns=floor,
        # Set by evaluators with compute-aware floors (the engine that binds); older ones lack it.
        floor_bound=getattr(champion, "floor_bound", None),
        baseline_floor_fraction=baseline_fraction,
        floor_fraction=fraction,
        stop_reason=summary.stop_reason,
        wall_s=summary.wall_s,
    )


def summarise(results: list[ProblemResult], **settings: object) -> BenchReport:
    """The benchmark report: `results` with their geometric means."""
    speedups = [r.speedup for r in results if r.speedup]
    fractions = [r.floor_fraction for r in results if r.floor_fraction]
    return BenchReport(
        problems=results,
        geomean_speedup=geomean(speedups),
        geomean_floor_fraction=geomean(fractions),
        failed=[r.problem for r in results if r.status == "error"],
        **settings,  # type: ignore[arg-type]
    )


def run_suite(
    store: RunStore,
    problems: Sequence[Problem],
    evaluator: Evaluator,
    make_proposer: Callable[[], Proposer],
    config: RunConfig,
    *,
    skills: dict[str, Skill] | None = None,
    events_for: Callable[[Problem], Events | None] = lambda _: None,
    machine: str | None = None,
) -> list[ProblemResult]:
    """Bench every problem in order, each with a fresh proposer (no state shared across problems).

    An interrupted run (Ctrl-C, a proposer that keeps failing) ends the suite after it.
    """
    results: list[ProblemResult] = []
    for problem in problems:
        result = bench_problem(
            store,
            problem,
            evaluator,
            make_proposer(),
            config,
            skills=skills,
            events=events_for(problem),
            machine=machine,
        )
        results.append(result)
        if result.status == RunStatus.interrupted.value:
            break
    return results
