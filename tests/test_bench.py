"""`knight bench`: a proposer over the suite, the JSON it prints, the runs it stores."""

from __future__ import annotations

import json
import math

import pytest
from cli_runner import knight, knight_here

from knight.bench.suite import ProblemResult, floor_figures, geomean, summarise
from knight.evaluation import EvalReport, WorkloadReport
from knight.store import open_store


def test_bench_json_shape_and_stored_runs(tmp_path):
    db = tmp_path / "bench.db"
    res = knight(
        "bench", "--budget", "2", "--problems", "rmsnorm", "--db", str(db), "--json", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.strip().splitlines()) == 1  # one JSON document, progress on stderr
    assert "[1/1] rmsnorm" in res.stderr
    report = json.loads(res.stdout)
    assert (report["proposer"], report["strategy"], report["budget"]) == ("offline", "bandit", 2)
    assert report["failed"] == []
    [row] = report["problems"]
    assert row["problem"] == "rmsnorm" and row["status"] == "finished"
    assert row["iterations"] == 2 and row["error"] is None
    assert row["speedup"] == pytest.approx(row["baseline_score_ns"] / row["best_score_ns"])
    assert row["speedup"] >= 1.0
    assert 0 < row["baseline_floor_fraction"] <= row["floor_fraction"] <= 1
    assert row["floor_fraction"] == pytest.approx(row["floor_ns"] / row["best_score_ns"])
    assert report["geomean_speedup"] == pytest.approx(row["speedup"])
    assert report["geomean_floor_fraction"] == pytest.approx(row["floor_fraction"])
    with open_store(str(db), "read") as store:
        [run] = store.list_runs()
        assert (run.id, run.problem_id, run.proposer, run.budget) == (
            row["run_id"],
            "rmsnorm",
            "offline",
            2,
        )
        assert run.config["bench"] is True and run.config["strategy"] == "bandit"
        assert len(store.history(run.id)) == 2
        assert run.best_score_ns == pytest.approx(row["best_score_ns"])


def test_bench_usage_errors(tmp_path):
    db = tmp_path / "bench.db"
    res = knight_here("bench", "--problems", "no_such_problem", "--db", str(db), cwd=tmp_path)
    assert res.returncode == 1 and "no_such_problem" in res.stderr
    assert "Traceback" not in res.stderr
    res = knight_here(
        "bench", "--strategy", "grid", "--problems", "rmsnorm", "--db", str(db), cwd=tmp_path
    )
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith("error:")
    res = knight_here("bench", "--budget", "0", "--db", str(db), cwd=tmp_path)
    assert res.returncode == 2
    assert not db.exists()  # nothing was started


def workload(name: str, weight: float, latency: float, floor: float, heldout=False):
    return WorkloadReport(
        name=name, weight=weight, latency_ns=latency, floor_ns=floor, heldout=heldout, correct=True
    )


def test_floor_figures_weight_workloads_like_the_score():
    report = EvalReport(
        candidate_hash="x",
        problem="p",
        harness="h",
        machine="trn2",
        status="ok",
        workloads=[
            workload("a", 3.0, 1000.0, 100.0),
            workload("b", 1.0, 400.0, 200.0),
            workload("held", 0.0, 10.0, 9.0, heldout=True),  # never part of the score
        ],
    )
    floor, fraction = floor_figures(report)
    assert floor == pytest.approx(math.exp((3 * math.log(100) + math.log(200)) / 4))
    score = math.exp((3 * math.log(1000) + math.log(400)) / 4)
    assert fraction == pytest.approx(floor / score)
    report.workloads[1].floor_ns = None
    assert floor_figures(report) == (None, None)


def test_summary_geomeans_skip_problems_without_results():
    rows = [
        ProblemResult(problem="a", status="finished", speedup=2.0, floor_fraction=0.1),
        ProblemResult(problem="b", status="finished", speedup=8.0, floor_fraction=0.4),
        ProblemResult(problem="c", status="error", error="baseline fails"),
    ]
    report = summarise(rows, proposer="offline", budget=1, seed=0, db="x.db")
    assert report.geomean_speedup == pytest.approx(4.0)
    assert report.geomean_floor_fraction == pytest.approx(0.2)
    assert report.failed == ["c"]
    assert geomean([]) is None
