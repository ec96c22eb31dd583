"""`knight report`: write the self-contained HTML report of one or more runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from knight import cli_options as options
from knight.errors import UsageError


def report_cmd(
    db: Annotated[
        str, typer.Option("--db", help="SQLite path or SQLAlchemy URL of the experience store.")
    ] = "knight.db",
    run: Annotated[
        list[int] | None,
        typer.Option("--run", help="Run id to include (repeat for several; default: every run)."),
    ] = None,
    out_file: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path(
        "report.html"
    ),
    timelines: Annotated[
        bool,
        typer.Option(
            "--timelines/--no-timelines",
            help="Profile baseline and champion now (in isolated workers) to draw their timelines; without, show the stored profiles only.",
        ),
    ] = True,
    workers: options.WorkersOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")
    ] = False,
) -> None:
    """Write one self-contained HTML report (plots, lineage, every iteration, baseline vs champion)."""
    if out_file.exists() and out_file.is_dir():
        raise UsageError(f"--out {out_file} is a directory; give a file name such as report.html")
    if not out_file.parent.is_dir():
        raise UsageError(f"--out {out_file}: no directory {out_file.parent}")
    # Imported here: `knight --help` stays fast.
    from knight.report.build import build_report
    from knight.report.collect import run_ids
    from knight.report.measure import LocalProfilers
    from knight.store import open_store

    store = open_store(db, "read")  # never writes; an old schema gets the upgrade hint
    evaluators = LocalProfilers(workers) if timelines else None
    try:
        wanted = run_ids(store, run)  # unknown runs fail here, before any profiling
        if evaluators is not None and wanted and not as_json:
            sys.stderr.write("profiling baseline and champion of each run for the timelines ...\n")
        result = build_report(store, wanted, profiler_for=evaluators)
    finally:
        if evaluators is not None:
            evaluators.close()
        store.close()
    out_file.write_text(result.html, encoding="utf-8")
    summary = {
        "out": str(out_file),
        "bytes": len(result.html.encode("utf-8")),
        "db": db,
        "runs": [
            {
                "run_id": r.id,
                "problem": r.problem,
                "iterations": len(r.iterations),
                "baseline_score_ns": r.baseline_score_ns,
                "best_score_ns": r.best_score_ns,
                "speedup": r.speedup,
            }
            for r in result.runs
        ],
        "timelines": timelines,
    }
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    if not result.runs:
        sys.stderr.write("the database has no runs yet: the report is empty\n")
    sys.stdout.write(
        f"wrote {out_file} ({summary['bytes'] / 1024:.0f} KiB, {len(result.runs)} run(s)); "
        f"open it in a browser: nothing in it needs the network\n"
    )
