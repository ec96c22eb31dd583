"""Simulated latencies of every bundled kernel are pinned: a scheduler or lowering change that is
meant to be a pure speed-up must leave every start and finish time bit-identical.

Pinned: each baseline on each of its visible and adversarial workloads, and the calibration
kernels (benchmarks/calibration/*.py) on the moe_decode workloads, on the problem's preset
(moe_decode's T=1 also on trn3). Timing reads no value (`knight.npu.runtime.Executable.timing`), so each
case is traced and scheduled without running numerics. Regenerate after an intended model
change with `python tests/test_latency_pins.py --write` and explain the diff in the commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from knight.npu.runtime import Executable, trace
from knight.problems import list_problems, load_kernel, load_problem

ROOT = Path(__file__).resolve().parents[1]
PINS = ROOT / "tests" / "data" / "latency_pins.json"
CALIBRATION = sorted((ROOT / "benchmarks" / "calibration").glob("*.py"))
MOE_MACHINES = ("trn2", "trn3")
# The MoE workloads past T=1 take most of the time (10k instructions each to trace): they are
# pinned on trn2 and checked only with KNIGHT_PINS=all (run it after any scheduler change).
ALL = os.environ.get("KNIGHT_PINS") == "all"


def _cases() -> list[tuple[str, str, Path | None, str, bool]]:
    """(problem, workload, kernel file or None for the baseline, machine, extended) per pin."""
    out = []
    for problem in list_problems():
        moe = problem.id == "moe_decode"
        for w in problem.all_workloads():
            extended = moe and w.name != "t1"
            machines = MOE_MACHINES if moe and not extended else (problem.spec.machine,)
            kernels = [None, *CALIBRATION] if moe else [None]
            out.extend((problem.id, w.name, k, m, extended) for m in machines for k in kernels)
    return out


def _param(case: tuple) -> object:
    *key, extended = case
    skip = pytest.mark.skipif(extended and not ALL, reason="extended pin: set KNIGHT_PINS=all")
    name = _key(*key).replace("calibration/", "").replace(".py", "")
    return pytest.param(tuple(key), id=name, marks=[skip])


def _key(problem: str, workload: str, path: Path | None, machine: str) -> str:
    kernel = "baseline" if path is None else f"calibration/{path.name}"
    return f"{problem}/{workload}/{kernel}/{machine}"


def measure(problem_id: str, workload: str, path: Path | None, machine: str) -> dict:
    """The makespan and a digest of every instruction's start, finish and occupancy (ps)."""
    problem = load_problem(problem_id)
    source = problem.baseline_source() if path is None else path.read_text()
    kernel = load_kernel(source, "kernel.py", problem.spec.entry)
    w = problem.workload(workload)
    ins, outs = problem.input_specs(w), problem.output_specs(w)
    grid = problem.spec.grid
    log = trace(kernel, ins, outs, machine=machine, grid=grid)
    sched, _ = Executable(log, ins, outs, machine=machine, grid=grid).timing()
    h = hashlib.sha256()
    for series in (sched.start_ps, sched.finish_ps, sched.occupancy_ps):
        h.update(json.dumps(series).encode())
    return {
        "makespan_ps": sched.makespan_ps,
        "n_instructions": len(sched),
        "times_sha256": h.hexdigest()[:16],
    }


def _recorded() -> dict:
    return json.loads(PINS.read_text())


@pytest.mark.parametrize("case", [_param(c) for c in _cases()])
def test_latency_is_bit_identical_to_the_recorded_one(case):
    want = _recorded().get(_key(*case))
    assert want is not None, f"{_key(*case)} has no pin: run python {__file__} --write"
    assert measure(*case) == want


def test_every_pin_is_still_a_case():
    assert set(_recorded()) == {_key(*c[:4]) for c in _cases()}


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_latency_pins.py --write")
    pins = {_key(*c[:4]): measure(*c[:4]) for c in _cases()}
    PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(pins)} pins to {PINS}")
