"""Runs and iterations as the API returns them (the same fields as `knight runs/history --json`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from knight.store import Database, Iteration, Run, get_run, list_iterations


def iteration_item(it: Iteration) -> dict[str, Any]:
    """One iteration as `knight history --json` lists it."""
    return {
        "number": it.number,
        "status": it.status,
        "category": it.category,
        "hypothesis": it.hypothesis,
        "score_ns": it.score_ns,
        "speedup_vs_baseline": it.speedup_vs_baseline,
        "speedup_vs_parent": it.speedup_vs_parent,
        "fix_rounds": it.fix_rounds,
        "proposer": it.proposer,
    }


def run_history(
    database: Database,
    run_id: int,
    *,
    status: str | None = None,
    category: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """A run's iterations, oldest first, as `knight history --json` prints them."""
    with database.session() as s:
        get_run(s, run_id)  # NotFoundError for an unknown run
        rows = list_iterations(s, run_id=run_id, status=status, category=category, limit=limit)
        return {"run_id": run_id, "iterations": [iteration_item(it) for it in rows]}


def iterations_after(
    database: Database, run_id: int, after: int
) -> tuple[list[dict[str, Any]], str]:
    """Iterations numbered above `after` and the run's status (what the event stream sends next)."""
    with database.session() as s:
        run = get_run(s, run_id)
        rows = s.scalars(
            select(Iteration)
            .where(Iteration.run_id == run_id, Iteration.number > after)
            .order_by(Iteration.number)
        ).all()
        return [iteration_item(it) for it in rows], run.status


def run_item(run: Run, iterations: int) -> dict[str, Any]:
    """A run as `knight runs --json` lists it, plus its iteration count and end time."""
    best, base = run.best_score_ns, run.baseline_score_ns
    return {
        "run_id": run.id,
        "problem": run.problem_id,
        "status": run.status,
        "proposer": run.proposer,
        "machine": run.machine,
        "budget": run.budget,
        "iterations": iterations,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "baseline_score_ns": base,
        "best_score_ns": best,
        "speedup": (base / best) if (base and best) else None,
    }


def runs(database: Database, run_id: int | None = None) -> list[dict[str, Any]]:
    """Every run (or the one `run_id`), oldest first, with iteration counts."""
    with database.session() as s:
        query = select(Run).order_by(Run.id)
        if run_id is not None:
            get_run(s, run_id)
            query = query.where(Run.id == run_id)
        counts = dict(
            s.execute(select(Iteration.run_id, func.count()).group_by(Iteration.run_id)).all()
        )
        return [run_item(r, counts.get(r.id, 0)) for r in s.scalars(query).all()]


def runs_by_status(database: Database) -> dict[str, int]:
    """How many runs the database holds in each status."""
    with database.session() as s:
        return dict(s.execute(select(Run.status, func.count()).group_by(Run.status)).all())
