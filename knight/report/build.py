"""Building the static report: read the runs, measure baseline and champion, render one file."""

from __future__ import annotations

from dataclasses import dataclass, field

from knight.errors import KnightError
from knight.problems import load_problem
from knight.report.collect import load_run, run_ids
from knight.report.measure import ProfilerFactory, evaluated_comparison, stored_comparison
from knight.report.model import Comparison, RunView
from knight.report.page import report_document
from knight.store import RunStore


@dataclass
class ReportResult:
    """The rendered document and what went into it."""

    html: str
    runs: list[RunView]
    comparisons: dict[int, Comparison] = field(default_factory=dict)


def build_report(
    store: RunStore,
    runs: list[int] | None = None,
    *,
    profiler_for: ProfilerFactory | None = None,
) -> ReportResult:
    """The report of `runs` (default: every run). With `profiler_for(machine)`, baseline and
    champion are profiled now, timelines included; without, the stored profiles are shown."""
    views = [load_run(store, run_id) for run_id in run_ids(store, runs)]
    comparisons: dict[int, Comparison] = {}
    for view in views:
        if profiler_for is None:
            comparisons[view.id] = stored_comparison(view)
            continue
        try:
            problem = load_problem(view.problem)
        except KnightError as error:  # the problem is not installed here: show what was stored
            comparison = stored_comparison(view)
            comparison.note = f"cannot profile now ({error}); {comparison.note}"
            comparisons[view.id] = comparison
            continue
        comparisons[view.id] = evaluated_comparison(
            store, view, problem, profiler_for(view.machine)
        )
    return ReportResult(
        html=report_document(views, comparisons, store.where),
        runs=views,
        comparisons=comparisons,
    )
