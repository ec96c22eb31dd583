"""The evaluation workers: tracers run kernel code without data, executors run data without code.

`python -m knight.evaluation.worker --role trace|execute --memory-mb N` reads JSON requests on
stdin and answers each with one JSON line. Before anything runs it moves the answer channel to
a private file descriptor and points stdout at stderr, so nothing a kernel prints can pose as an
answer. The two roles never share a process:

- **trace**: compiles the candidate and runs its Python against data-less tensors (shapes and
  dtypes only); it is never told a workload name, a seed or a problem folder, and answers with
  the kernel's call log (`TraceResult`).
- **execute**: replays a call log on the inputs of one workload and seed (generated once and
  memory-mapped from the input cache), executes and times it (`RunResult`); it never compiles
  or calls kernel code.

`trace_one` / `execute_one` are also called in-process by the non-isolated evaluator.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import resource
import shutil
import sys
import time
from collections import OrderedDict
from pathlib import Path

from pydantic import BaseModel

from knight.evaluation.categories import Category
from knight.evaluation.report import Failure, RunResult
from knight.evaluation.wire import MAX_MESSAGE_CHARS, clean, clean_text
from knight.npu import numerics
from knight.npu.calllog import CallLog
from knight.npu.dtypes import DTYPES, name_of
from knight.npu.errors import NpuError
from knight.npu.machine import MachineSpec, load_machine
from knight.npu.runtime import Executable, trace
from knight.problems.kernel import load_kernel

ROLES = ("trace", "execute")
_EXECUTABLES_KEPT = 4  # replayed programs an executor keeps (one per shape in flight)
_executables: OrderedDict[str, Executable] = OrderedDict()


class TensorDecl(BaseModel):
    """Shape and dtype of one kernel argument: all a tracer learns about the data."""

    shape: list[int]
    dtype: str


class TraceRequest(BaseModel):
    """What a tracer gets: the source and the shapes. No workload, seed or problem folder."""

    source: str
    filename: str = "kernel.py"
    entry: str
    inputs: dict[str, TensorDecl]
    outputs: dict[str, TensorDecl]
    machine: str
    grid: int


class TraceResult(BaseModel):
    """A tracer's answer: the call log (JSON text), or why tracing failed."""

    ok: bool
    call_log: str | None = None
    failure: Failure | None = None
    wall_s: float = 0.0


class ExecuteRequest(BaseModel):
    """What an executor gets: a call log and the workload and seed whose inputs it replays on."""

    call_log: str
    problem_dir: str
    workload: str
    seed: int
    machine: str
    profile: bool = False
    trace: bool = False
    input_cache: str | None = None  # folder of memory-mapped inputs shared by executors
    input_cache_limit: int | None = None  # its bound in bytes (workers do not see the env)


# ----------------------------------------------------------------------------- tracing


def trace_one(req: TraceRequest) -> TraceResult:
    """Trace `req.source` on data-less tensors; every failure becomes a typed result."""
    start = time.perf_counter()
    try:
        kernel = load_kernel(req.source, req.filename, req.entry)
        log = trace(
            kernel,
            {n: (tuple(d.shape), DTYPES[d.dtype]) for n, d in req.inputs.items()},
            {n: (tuple(d.shape), DTYPES[d.dtype]) for n, d in req.outputs.items()},
            machine=req.machine,
            grid=req.grid,
        )
        result = TraceResult(ok=True, call_log=log.to_json())
    except Exception as e:  # noqa: BLE001 - whatever the kernel raised becomes a verdict
        result = TraceResult(ok=False, failure=failure_from_exception(e))
    result.wall_s = time.perf_counter() - start
    return result


# ----------------------------------------------------------------------------- executing


def execute_one(req: ExecuteRequest) -> RunResult:
    """Replay a call log on one workload and seed; every failure becomes a typed result."""
    start = time.perf_counter()
    try:
        result = _execute(req)
    except Exception as e:  # noqa: BLE001 - a simulator bug must surface as a typed failure
        f = failure_from_exception(e)
        f.workload, f.seed = req.workload, req.seed
        result = RunResult(workload=req.workload, seed=req.seed, ok=False, failure=f)
    result.wall_s = time.perf_counter() - start
    return result


def _execute(req: ExecuteRequest) -> RunResult:
    from knight.evaluation.inputs import cached_inputs, load_problem_cached

    problem = load_problem_cached(req.problem_dir)
    workload = problem.workload(req.workload)
    cache = Path(req.input_cache) if req.input_cache else None
    inputs = cached_inputs(problem, workload, req.seed, cache, req.input_cache_limit)
    machine = load_machine(req.machine)
    outputs = problem.output_specs(workload)
    exe = _executable(
        req.call_log, problem.input_specs(workload), outputs, machine, problem.spec.grid
    )
    sim = exe.execute(inputs)
    floor = problem.floor(inputs, workload, machine)
    profile = sim.profile.to_dict() if (req.profile and sim.profile is not None) else {}
    trace_json = None
    if req.trace:  # `knight profile --trace` only: not imported by every worker
        from knight.npu.perfetto import chrome_trace

        trace_json = chrome_trace(sim.program, sim.schedule)
    return RunResult(
        workload=req.workload,
        seed=req.seed,
        ok=True,
        latency_ns=sim.latency_ns,
        outputs={n: numerics.bits(a).tobytes().hex() for n, a in sim.outputs.items()},
        output_dtypes={n: name_of(a.dtype) for n, a in sim.outputs.items()},
        output_shapes={n: list(a.shape) for n, a in sim.outputs.items()},
        inputs_mutated=[],  # inputs are mapped read-only and the tracer refuses writes to them
        floor_ns=floor.ns,
        floor_bound=floor.bound,
        profile=profile,
        trace=trace_json,
    )


def _executable(
    call_log: str, inputs: dict, outputs: dict, machine: MachineSpec, grid: int
) -> Executable:
    """The replayed program for a call log and shapes: replayed once, executed for every seed."""
    key = hashlib.sha256(
        "|".join(
            [
                call_log,
                machine.name,
                str(grid),
                repr(sorted(inputs.items())),
                repr(sorted(outputs.items())),
            ]
        ).encode()
    ).hexdigest()
    exe = _executables.get(key)
    if exe is None:
        exe = Executable(CallLog.from_json(call_log), inputs, outputs, machine=machine, grid=grid)
        _executables[key] = exe
        while len(_executables) > _EXECUTABLES_KEPT:
            _executables.popitem(last=False)
    _executables.move_to_end(key)
    return exe


# ----------------------------------------------------------------------------- failures


def failure_from_exception(e: BaseException) -> Failure:
    """The typed failure for anything a trace or a replay raised (messages bounded and escaped)."""
    if isinstance(e, NpuError):
        return Failure(
            category=Category(e.category),
            message=clean_text(e.message, MAX_MESSAGE_CHARS),
            file=clean_text(e.loc.file, 512) if e.loc else None,
            line=e.loc.line if e.loc else None,
            instr_index=e.instr_index,
            engine=clean_text(e.engine, 64) if e.engine else None,
            core=e.core,
        )
    if isinstance(e, MemoryError):
        return Failure(
            category=Category.memory_limit, message="the kernel exhausted the worker's memory limit"
        )
    if isinstance(e, RecursionError):
        return Failure(category=Category.kernel_exception, message="recursion too deep")
    # A simulator bug must surface as a typed failure, not a hang.
    text = clean_text(
        f"internal simulator error: {type(e).__name__}: {_safe_str(e)}", MAX_MESSAGE_CHARS
    )
    return Failure(category=Category.worker_crash, message=text)


def _safe_str(e: BaseException) -> str:
    try:
        return str(e)[: MAX_MESSAGE_CHARS * 2]
    except Exception:  # noqa: BLE001 - an exception whose str() fails still gets reported
        return "<unprintable>"


def _answer(result: BaseModel) -> str:
    """One JSON line, every string made encodable (a kernel may name a tensor with anything)."""
    return json.dumps(clean(result.model_dump(mode="python")), ensure_ascii=False, allow_nan=True)


# ----------------------------------------------------------------------------- main


def _limit_resources(memory_mb: int) -> None:
    """Hard limits the kernel cannot raise (the sandbox drops the capability to do so)."""
    limits = [
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_FSIZE, 256 << 20),
        (resource.RLIMIT_NOFILE, 256),
    ]
    if memory_mb:
        limits.append((resource.RLIMIT_AS, memory_mb << 20))
    for what, value in limits:
        try:
            resource.setrlimit(what, (value, value))
        except (ValueError, OSError):
            pass  # a lower limit is already in force


def main() -> None:
    parser = argparse.ArgumentParser(description="Knight evaluation worker (speaks JSON lines)")
    parser.add_argument("--role", choices=ROLES, required=True)
    parser.add_argument("--memory-mb", type=int, default=0)
    parser.add_argument("--remove-at-exit", default=None, help="this worker's own scratch folder")
    args = parser.parse_args()
    answers = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _limit_resources(args.memory_mb)
    gc.freeze()  # the imports' objects are never garbage: keep them out of every collection
    for line in sys.stdin:
        if not line.strip():
            continue
        # Tracing and replaying allocate many small objects and few cycles; collecting in the
        # middle of a request costs more than it frees, so collect between requests instead.
        gc.disable()
        try:
            if args.role == "trace":
                answer: BaseModel = trace_one(TraceRequest.model_validate_json(line))
            else:
                answer = execute_one(ExecuteRequest.model_validate_json(line))
            answers.write(_answer(answer) + "\n")
        finally:
            gc.enable()
            gc.collect()
    if args.remove_at_exit:  # the parent closed the channel, or died without cleaning up
        shutil.rmtree(args.remove_at_exit, ignore_errors=True)


if __name__ == "__main__":
    main()
