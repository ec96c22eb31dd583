"""Reading runs for the report through the store's typed run-history API (`RunStore`)."""

from __future__ import annotations

import hashlib

from knight.errors import NotFoundError
from knight.problems import weighted_geomean
from knight.report.model import IterationView, KernelMeasurement, ModelUsage, RunState, RunView
from knight.store import IterationDetail, RunStore


def run_ids(store: RunStore, wanted: list[int] | None = None) -> list[int]:
    """The runs to report: `wanted` in the order given (each must exist), else every run."""
    if wanted:
        return [store.run(run_id).id for run_id in dict.fromkeys(wanted)]
    return [run.id for run in store.list_runs()]


def load_run(store: RunStore, run_id: int) -> RunView:
    """Everything the report shows about one run (NotFoundError if there is none)."""
    run = store.run(run_id)
    details = [store.iteration(run_id, it.number) for it in store.history(run_id)]
    produced_by = {d.candidate_hash: d.number for d in details if d.status.value == "accepted"}
    iterations = [_iteration_view(d, produced_by) for d in details]
    return RunView(
        id=run.id,
        problem=run.problem_id,
        problem_hash=run.problem_hash,
        proposer=run.proposer,
        machine=run.machine,
        status=run.status.value,
        created_at=run.created_at.isoformat(timespec="seconds"),
        finished_at=run.finished_at.isoformat(timespec="seconds") if run.finished_at else None,
        budget=run.budget,
        seed=run.seed,
        knight_version=run.knight_version,
        baseline_hash=run.baseline_hash,
        champion_hash=run.champion_hash,
        baseline_score_ns=run.baseline_score_ns,
        best_score_ns=run.best_score_ns,
        floor_score_ns=_floor_score(iterations),
        harness=next((d.harness for d in reversed(details) if d.harness), None),
        iterations=iterations,
        baseline_profile=next(
            (
                d.parent_profile
                for d in details
                if d.parent_hash == run.baseline_hash and d.parent_profile
            ),
            {},
        ),
    )


def run_state(store: RunStore, run_id: int) -> RunState:
    """A small summary that changes whenever the run records an iteration or changes status."""
    run = store.run(run_id)
    progress = store.progress(run_id)
    last = store.history(run_id, limit=1)
    number = last[0].number if last else None
    key = f"{run.status}|{progress.iterations}|{number}|{run.best_score_ns}|{run.finished_at}"
    return RunState(
        run_id=run.id,
        status=run.status.value,
        iterations=progress.iterations,
        last_number=number,
        best_score_ns=run.best_score_ns,
        version=hashlib.sha256(key.encode()).hexdigest()[:16],
    )


def stored_measurement(run: RunView, label: str) -> KernelMeasurement | None:
    """The profile the run stored for its baseline or champion (first workload, first seed)."""
    if label == "baseline":
        if not run.baseline_profile:
            return None
        first = next((w for it in run.iterations for w in it.workloads if not w.get("heldout")), {})
        return KernelMeasurement(
            label=label,
            candidate_hash=run.baseline_hash,
            workload=first.get("name", "?"),
            seed=(first.get("seeds") or [0])[0],
            latency_ns=run.baseline_profile.get("total_ns"),
            profile=run.baseline_profile,
            harness=run.harness,
        )
    champion = run.champion_iteration()
    if champion is None or not champion.candidate_hash or not champion.profile:
        return None
    first = next((w for w in champion.workloads if not w.get("heldout")), {})
    return KernelMeasurement(
        label=label,
        candidate_hash=champion.candidate_hash,
        workload=first.get("name", "?"),
        seed=(first.get("seeds") or [0])[0],
        latency_ns=champion.profile.get("total_ns"),
        profile=champion.profile,
        harness=run.harness,
    )


def kernel_source(store: RunStore, candidate_hash: str) -> str | None:
    """The stored source of a candidate, or None when the database does not hold it."""
    try:
        return store.candidate_source(candidate_hash)
    except NotFoundError:
        return None


def _iteration_view(d: IterationDetail, produced_by: dict[str | None, int]) -> IterationView:
    report = d.report or {}
    usage = ModelUsage()
    for call in d.llm_calls:
        usage.calls += 1
        usage.input_tokens += call.input_tokens
        usage.output_tokens += call.output_tokens
        usage.cache_read_tokens += call.cache_read_tokens
        usage.cache_write_tokens += call.cache_write_tokens
        usage.cost_usd += call.cost_usd
    parent = produced_by.get(d.parent_hash)
    return IterationView(
        number=d.number,
        status=d.status.value,
        category=d.category.value if d.category is not None else None,
        proposer=d.proposer,
        hypothesis=d.hypothesis,
        rationale=d.rationale,
        tags=list(d.tags),
        skills_cited=list(d.skills_cited),
        patch_rungs=list(d.patch_rungs),
        edits=len(d.edits),
        diff=d.diff,
        parent_hash=d.parent_hash,
        candidate_hash=d.candidate_hash,
        # The earlier accepted iteration whose candidate this one patched; None: the baseline.
        parent_number=parent if parent is not None and parent < d.number else None,
        score_ns=d.score_ns,
        parent_score_ns=d.parent_score_ns,
        speedup_vs_baseline=d.speedup_vs_baseline,
        speedup_vs_parent=d.speedup_vs_parent,
        failure=d.failure.model_dump(mode="json") if d.failure is not None else None,
        workloads=list(report.get("workloads") or []),
        integrity=dict(report.get("integrity") or {}),
        profile=dict(report.get("profile") or {}),
        transcript=[t.model_dump(mode="json") for t in d.transcript],
        fix_rounds=d.fix_rounds,
        wall_s=d.wall_s,
        usage=usage,
    )


def _floor_score(iterations: list[IterationView]) -> float | None:
    """The physical floor expressed as a score: the weighted geometric mean of the per-workload
    floors (the slowest resource's floor: HBM bytes or declared engine work), over the scored
    workloads."""
    for it in iterations:
        scored = [w for w in it.workloads if not w.get("heldout") and w.get("weight")]
        if scored and all(w.get("floor_ns") for w in scored):
            return weighted_geomean(
                {w["name"]: w["floor_ns"] for w in scored}, {w["name"]: w["weight"] for w in scored}
            )
    return None
