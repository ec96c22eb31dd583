"""Baseline versus champion: profiles and timelines the database does not keep, computed through
the public evaluator API (the kernels run in the evaluator's isolated workers, never here)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from knight.evaluation import LocalEvaluator, MemoryCache, RunResult
from knight.problems import Problem
from knight.report.collect import kernel_source, stored_measurement
from knight.report.model import Comparison, KernelMeasurement, RunView
from knight.store import RunStore


class Profiler(Protocol):
    """An evaluator that can profile one run and export its timeline (`LocalEvaluator` does)."""

    def profile_run(
        self,
        source: str,
        problem: Problem,
        workload: str | None = None,
        seed: int | None = None,
        trace: bool = False,
    ) -> RunResult: ...


ProfilerFactory = Callable[[str], Profiler]  # machine preset name -> a profiler for it


class LocalProfilers:
    """A `ProfilerFactory` of local evaluators, one per machine preset, opened on first use and
    closed together (their worker processes run the kernels)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers
        self.open: dict[str, LocalEvaluator] = {}
        self._lock = threading.Lock()

    def __call__(self, machine: str) -> LocalEvaluator:
        with self._lock:
            if machine not in self.open:
                self.open[machine] = LocalEvaluator(
                    machine, workers=self.workers, cache=MemoryCache()
                )
            return self.open[machine]

    def close(self) -> None:
        """Stop every evaluator's workers."""
        with self._lock:
            for evaluator in self.open.values():
                evaluator.close()
            self.open.clear()


def stored_comparison(run: RunView) -> Comparison:
    """Baseline and champion profiles as the run stored them (no timelines: those are not kept)."""
    return Comparison(
        baseline=stored_measurement(run, "baseline"),
        champion=stored_measurement(run, "champion"),
        note="profiles as the run stored them (first workload, first seed); timelines are not stored",
    )


def evaluated_comparison(
    store: RunStore, run: RunView, problem: Problem, profiler: Profiler
) -> Comparison:
    """Profile baseline and champion now, on the problem's first workload, with their timelines."""
    workload = problem.spec.workloads[0]
    seed = workload.seeds[0]
    note = f"measured now on workload {workload.name}, seed {seed}, machine {run.machine}"
    if run.problem_hash and problem.hash != run.problem_hash:
        note += "; the problem changed since the run, so these figures may differ from the recorded ones"
    baseline = _measure(
        store, profiler, problem, "baseline", run.baseline_hash, workload.name, seed
    )
    champion = None
    chosen = run.champion_iteration()
    if chosen is not None and chosen.candidate_hash:
        champion = _measure(
            store, profiler, problem, "champion", chosen.candidate_hash, workload.name, seed
        )
    return Comparison(baseline=baseline, champion=champion, note=note)


def _measure(
    store: RunStore,
    profiler: Profiler,
    problem: Problem,
    label: str,
    candidate_hash: str,
    workload: str,
    seed: int,
) -> KernelMeasurement:
    source = kernel_source(store, candidate_hash)
    if source is None:
        return KernelMeasurement(
            label=label,
            candidate_hash=candidate_hash,
            workload=workload,
            seed=seed,
            error="the database does not hold this kernel's source",
        )
    result = profiler.profile_run(source, problem, workload, seed, trace=True)
    if not result.ok:
        why = result.failure.one_line() if result.failure else "the run failed"
        return KernelMeasurement(
            label=label,
            candidate_hash=candidate_hash,
            workload=workload,
            seed=seed,
            source="evaluated",
            error=why,
        )
    return KernelMeasurement(
        label=label,
        candidate_hash=candidate_hash,
        workload=workload,
        seed=seed,
        latency_ns=result.latency_ns,
        profile=result.profile,
        trace=result.trace,
        source="evaluated",
    )
