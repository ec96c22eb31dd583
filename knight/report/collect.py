"""Reading runs for the report out of the store; the only module of the report that queries it."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from knight.problems import weighted_geomean
from knight.report.model import IterationView, KernelMeasurement, ModelUsage, RunState, RunView
from knight.store import (
    Candidate,
    Database,
    Evaluation,
    Iteration,
    LLMCall,
    get_run,
    list_iterations,
    list_runs,
)


def run_ids(database: Database, wanted: list[int] | None = None) -> list[int]:
    """The runs to report: `wanted` in the order given (each must exist), else every run."""
    with database.session() as session:
        if wanted:
            return [get_run(session, run_id).id for run_id in dict.fromkeys(wanted)]
        return [run.id for run in list_runs(session)]


def load_run(database: Database, run_id: int) -> RunView:
    """Everything the report shows about one run (NotFoundError if there is none)."""
    with database.session() as session:
        run = get_run(session, run_id)
        rows = list_iterations(session, run_id=run_id)
        usage = _usage_by_iteration(session, run_id)
        produced_by = {it.candidate_hash: it.number for it in rows if it.status == "accepted"}
        iterations = [_iteration_view(it, usage.get(it.number), produced_by) for it in rows]
        return RunView(
            id=run.id,
            problem=run.problem_id,
            problem_hash=run.problem_hash,
            proposer=run.proposer,
            machine=run.machine,
            status=run.status,
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
            harness=next((it.harness for it in reversed(rows) if it.harness), None),
            iterations=iterations,
        )


def run_state(database: Database, run_id: int) -> RunState:
    """A small summary that changes whenever the run records an iteration or changes status."""
    with database.session() as session:
        run = get_run(session, run_id)
        rows = list_iterations(session, run_id=run_id)
        last = rows[-1].number if rows else None
        key = f"{run.status}|{len(rows)}|{last}|{run.best_score_ns}|{run.finished_at}"
        return RunState(
            run_id=run.id,
            status=run.status,
            iterations=len(rows),
            last_number=last,
            best_score_ns=run.best_score_ns,
            version=hashlib.sha256(key.encode()).hexdigest()[:16],
        )


def stored_measurement(
    database: Database, label: str, candidate_hash: str, harness: str | None
) -> KernelMeasurement | None:
    """The profile the evaluator stored for a kernel under `harness`, if it kept one."""
    if harness is None:
        return None
    with database.session() as session:
        rows = session.scalars(
            select(Evaluation)
            .where(Evaluation.candidate_hash == candidate_hash, Evaluation.harness == harness)
            .order_by(Evaluation.id)
        ).all()
        for row in rows:
            if row.report.get("profile"):
                return KernelMeasurement(
                    label=label,
                    candidate_hash=candidate_hash,
                    workload=row.workload,
                    seed=row.seed,
                    latency_ns=row.latency_ns,
                    profile=row.report["profile"],
                    harness=harness,
                )
    return None


def _usage_by_iteration(session: Session, run_id: int) -> dict[int, ModelUsage]:
    calls = session.scalars(
        select(LLMCall).where(LLMCall.run_id == run_id).order_by(LLMCall.id)
    ).all()
    usage: dict[int, ModelUsage] = {}
    for call in calls:
        if call.iteration_number is None:
            continue
        u = usage.setdefault(call.iteration_number, ModelUsage())
        u.calls += 1
        u.input_tokens += call.input_tokens
        u.output_tokens += call.output_tokens
        u.cache_read_tokens += call.cache_read_tokens
        u.cache_write_tokens += call.cache_write_tokens
        u.cost_usd += call.cost_usd
    return usage


def _iteration_view(
    it: Iteration, usage: ModelUsage | None, produced_by: dict[Any, int]
) -> IterationView:
    report = it.report or {}
    return IterationView(
        number=it.number,
        status=it.status,
        category=it.category,
        proposer=it.proposer,
        hypothesis=it.hypothesis,
        rationale=it.rationale or "",
        tags=list(it.tags or []),
        skills_cited=list(it.skills_cited or []),
        patch_rungs=list(it.patch_rungs or []),
        edits=len(it.edits or []),
        diff=it.diff or "",
        parent_hash=it.parent_hash,
        candidate_hash=it.candidate_hash,
        parent_number=_parent_number(it, produced_by),
        score_ns=it.score_ns,
        parent_score_ns=it.parent_score_ns,
        speedup_vs_baseline=it.speedup_vs_baseline,
        speedup_vs_parent=it.speedup_vs_parent,
        failure=it.failure,
        workloads=list(report.get("workloads") or []),
        integrity=dict(report.get("integrity") or {}),
        profile=dict(report.get("profile") or {}),
        transcript=list(it.transcript or []),
        fix_rounds=it.fix_rounds,
        wall_s=it.wall_s,
        usage=usage or ModelUsage(),
    )


def _parent_number(it: Iteration, produced_by: dict[Any, int]) -> int | None:
    """The earlier accepted iteration whose candidate this one started from (None: the baseline)."""
    number = produced_by.get(it.parent_hash)
    return number if number is not None and number < it.number else None


def _floor_score(iterations: list[IterationView]) -> float | None:
    """The physical floor expressed as a score: the weighted geometric mean of the per-workload
    floors (bytes that must move / bandwidth), over the scored workloads."""
    for it in iterations:
        scored = [w for w in it.workloads if not w.get("heldout") and w.get("weight")]
        if scored and all(w.get("floor_ns") for w in scored):
            return weighted_geomean(
                {w["name"]: w["floor_ns"] for w in scored}, {w["name"]: w["weight"] for w in scored}
            )
    return None


def kernel_source(database: Database, candidate_hash: str) -> str | None:
    """The stored source of a candidate, or None when the database does not hold it."""
    with database.session() as session:
        candidate = session.get(Candidate, candidate_hash)
        return candidate.source if candidate is not None else None
