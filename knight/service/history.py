"""Runs and iterations as the API returns them: the same JSON as `knight runs/history/show --json`,
read through the store's run-history API (`knight.store.RunStore`)."""

from __future__ import annotations

from typing import Any

from knight.errors import UsageError
from knight.failure import Category, IterationStatus
from knight.store import RunInfo, RunStore


def run_item(info: RunInfo, iterations: int) -> dict[str, Any]:
    """A run as `knight runs --json` lists it, plus how many iterations it has recorded."""
    return {
        **info.model_dump(mode="json"),
        "run_id": info.id,
        "speedup": info.speedup,
        "iterations": iterations,
    }


def runs(store: RunStore, run_id: int | None = None) -> list[dict[str, Any]]:
    """Every run (or just `run_id`; NotFoundError if unknown), oldest first."""
    infos = [store.run(run_id)] if run_id is not None else store.list_runs()
    return [run_item(i, store.progress(i.id).iterations) for i in infos]


def run_history(
    store: RunStore,
    run_id: int,
    *,
    status: str | None = None,
    category: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """A run's iterations, oldest first, exactly as `knight history --json` prints them."""
    if status is not None and status not in IterationStatus.__members__:
        raise UsageError(f"status must be one of {', '.join(IterationStatus.__members__)}")
    if category is not None and category not in Category.__members__:
        raise UsageError(f"unknown category {category!r}")
    rows = store.history(
        run_id, status=IterationStatus(status) if status else None, category=category, limit=limit
    )
    return {"run_id": run_id, "iterations": [r.model_dump(mode="json") for r in rows]}


def iterations_after(store: RunStore, run_id: int, after: int) -> tuple[list[dict[str, Any]], str]:
    """Iterations numbered above `after` and the run's status (what the event stream sends next)."""
    status = store.run(run_id).status.value  # before the rows: a run seen stopped has them all
    rows = [r.model_dump(mode="json") for r in store.history(run_id) if r.number > after]
    return rows, status


def iteration(store: RunStore, run_id: int, number: int) -> dict[str, Any]:
    """One iteration in full, as `knight show --json` prints it."""
    from knight.cli_views import iteration_json

    return iteration_json(store.iteration(run_id, number))


def runs_by_status(store: RunStore) -> dict[str, int]:
    """How many runs the database holds in each status."""
    counts: dict[str, int] = {}
    for info in store.list_runs():
        counts[info.status.value] = counts.get(info.status.value, 0) + 1
    return counts
