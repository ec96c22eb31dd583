"""The evaluation worker: runs one kernel on one workload and seed, in its own process.

`python -m knight.evaluation.worker --memory-mb N` reads JSON requests on stdin and answers each
with one JSON `RunResult` line. Before any kernel runs it moves the answer channel to a private
file descriptor and points stdout at stderr, so nothing a kernel prints can pose as a result.
`run_one` is also called in-process by the non-isolated evaluator (benchmarks, tests).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from knight.evaluation.categories import Category
from knight.evaluation.report import Failure, RunResult
from knight.npu import numerics
from knight.npu.errors import NpuError
from knight.npu.machine import load_machine
from knight.npu.perfetto import chrome_trace
from knight.npu.runtime import simulate
from knight.problems.kernel import load_kernel
from knight.problems.spec import Problem, load_problem_dir

_problems: dict[str, Problem] = {}
_inputs: OrderedDict[tuple[str, str, int], dict[str, np.ndarray]] = OrderedDict()


def run_one(req: dict[str, Any]) -> RunResult:
    """Simulate `req["source"]` on one workload and seed; every failure becomes a typed result."""
    start = time.perf_counter()
    workload, seed = req["workload"], int(req["seed"])
    try:
        result = _run(req, workload, seed)
    except NpuError as e:
        result = RunResult(workload=workload, seed=seed, ok=False, failure=_failure_from_npu(e, workload, seed))
    except MemoryError:
        result = RunResult(
            workload=workload, seed=seed, ok=False,
            failure=Failure(category=Category.memory_limit, message="the kernel exhausted the worker's memory limit",
                            workload=workload, seed=seed),
        )
    except RecursionError:
        result = RunResult(
            workload=workload, seed=seed, ok=False,
            failure=Failure(category=Category.kernel_exception, message="recursion too deep", workload=workload, seed=seed),
        )
    except Exception as e:  # a simulator bug must surface as a typed failure, not a hang
        result = RunResult(
            workload=workload, seed=seed, ok=False,
            failure=Failure(category=Category.worker_crash, message=f"internal simulator error: {type(e).__name__}: {e}",
                            workload=workload, seed=seed),
        )
    result.wall_s = time.perf_counter() - start
    return result


def _run(req: dict[str, Any], workload_name: str, seed: int) -> RunResult:
    problem = _problem(req["problem_dir"])
    workload = problem.workload(workload_name)
    inputs = _cached_inputs(problem, workload_name, seed)
    kernel = load_kernel(req["source"], req.get("filename", "kernel.py"), problem.spec.entry)
    machine = load_machine(req.get("machine", problem.spec.machine))
    sim = simulate(kernel, inputs, problem.output_specs(workload), machine=machine, grid=problem.spec.grid)
    mutated = [
        n for n, a in inputs.items()
        if sim.inputs_after[n] is not a and not np.array_equal(numerics.bits(a), numerics.bits(sim.inputs_after[n]))
    ]
    floor = machine.floor_ns(problem.floor_bytes(inputs, workload), problem.spec.grid)
    profile = sim.profile.to_dict() if (req.get("profile") and sim.profile is not None) else {}
    trace = chrome_trace(sim.program, sim.schedule) if req.get("trace") else None
    return RunResult(
        workload=workload_name,
        seed=seed,
        ok=True,
        latency_ns=sim.latency_ns,
        outputs={n: numerics.bits(a).tobytes().hex() for n, a in sim.outputs.items()},
        output_dtypes={n: str(a.dtype) for n, a in sim.outputs.items()},
        output_shapes={n: list(a.shape) for n, a in sim.outputs.items()},
        inputs_mutated=mutated,
        floor_ns=floor,
        profile=profile,
        trace=trace,
    )


def _failure_from_npu(e: NpuError, workload: str, seed: int) -> Failure:
    return Failure(
        category=Category(e.category),
        message=e.message,
        file=e.loc.file if e.loc else None,
        line=e.loc.line if e.loc else None,
        instr_index=e.instr_index,
        engine=e.engine,
        core=e.core,
        workload=workload,
        seed=seed,
    )


def _problem(path: str) -> Problem:
    if path not in _problems:
        _problems[path] = load_problem_dir(Path(path))
    return _problems[path]


def _cached_inputs(problem: Problem, workload: str, seed: int) -> dict[str, np.ndarray]:
    """Generating MoE weights costs ~1 s; keep the last few input sets (the kernel gets copies)."""
    key = (problem.hash, workload, seed)
    if key not in _inputs:
        arrays = problem.make_inputs(problem.workload(workload), seed)
        for a in arrays.values():
            a.flags.writeable = False  # shared copy-on-write with every run: no path may change them
        _inputs[key] = arrays
        while len(_inputs) > 3:
            _inputs.popitem(last=False)
    _inputs.move_to_end(key)
    return _inputs[key]


def main() -> None:
    parser = argparse.ArgumentParser(description="Knight evaluation worker (speaks JSON lines)")
    parser.add_argument("--memory-mb", type=int, default=0)
    args = parser.parse_args()
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if args.memory_mb:
        limit = args.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for line in sys.stdin:
        if not line.strip():
            continue
        result = run_one(json.loads(line))
        answers.write(result.model_dump_json() + "\n")


if __name__ == "__main__":
    main()
