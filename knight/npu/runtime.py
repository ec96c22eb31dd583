"""Running a kernel: trace it without data, replay the trace on the inputs, execute, then time it.

The pipeline has two halves that never share a process in the evaluator:

- `trace(kernel, inputs, outputs)` runs the kernel's Python once per physical core with
  `program_id` bound, against HBM tensors that have shapes and dtypes but no values (all zeros,
  never the inputs). It returns a `CallLog`: the public `nl`/`nisa` calls the kernel made.
- `run(log, inputs, outputs)` replays that log through the same public functions on tensors that
  hold the inputs (re-checking every rule, recomputing every cost), checks that both cores issue
  the same instruction sequence, executes the numerics in merged program order (`sendrecv` joins
  the cores) and schedules the program on the timing model.

`simulate` does both in one process: tests and benchmarks that trust the kernel use it.
"""

from __future__ import annotations

import gc
import os
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from knight.npu import numerics, tracer
from knight.npu.calllog import CallLog, recording, replay
from knight.npu.dtypes import HBM_DTYPES
from knight.npu.errors import KernelException, NpuError, SourceLoc
from knight.npu.machine import MachineSpec, load_machine
from knight.npu.nisa import _Exchange, exchange
from knight.npu.program import Program
from knight.npu.tensor import HBM, Tensor, View
from knight.npu.tracer import SharedState, Tracer

TensorDecls = Mapping[str, tuple[tuple[int, ...], object]]  # name -> (shape, dtype)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic collector off while the simulator works (as in the evaluation workers).

    A simulation allocates hundreds of thousands of small objects and keeps many alive (the call
    log, the program, the schedule): each full collection walks them all again, ~15 % of a MoE
    simulation. The simulator leaves no cyclic garbage (tests/test_trace_pipeline.py checks it),
    so reference counting frees what it drops; a kernel's own cycles wait for the next collection.
    """
    if not gc.isenabled():  # nested, or the caller already collects on its own schedule
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass
class SimResult:
    """What one simulation produced: outputs, the input tensors as left, program and timing."""

    outputs: dict[str, np.ndarray]
    inputs_after: dict[str, np.ndarray]
    program: Program
    schedule: object | None  # knight.npu.timing.Schedule
    profile: object | None  # knight.npu.profile.Profile
    machine: MachineSpec
    call_log: CallLog | None = None

    @property
    def latency_ns(self) -> float:
        return self.schedule.makespan_ps / 1000.0 if self.schedule is not None else float("nan")


def simulate(
    kernel: Callable[..., None],
    inputs: Mapping[str, np.ndarray],
    outputs: TensorDecls,
    *,
    machine: str | MachineSpec = "trn2",
    grid: int = 2,
    timing: bool = True,
) -> SimResult:
    """Trace `kernel` without its data, then replay, execute and time it on `inputs`."""
    decls = {name: (tuple(np.shape(a)), np.asarray(a).dtype) for name, a in inputs.items()}
    log = trace(kernel, decls, outputs, machine=machine, grid=grid)
    return run(log, inputs, outputs, machine=machine, grid=grid, timing=timing)


@collector_paused()
def trace(
    kernel: Callable[..., None],
    inputs: TensorDecls,
    outputs: TensorDecls,
    *,
    machine: str | MachineSpec = "trn2",
    grid: int = 2,
) -> CallLog:
    """Run the kernel's Python on data-less tensors and record its kernel-language calls."""
    m = _machine(machine, grid)
    shared = SharedState()
    hbm = _hbm_tensors(inputs, outputs, shared, data=None)
    with recording(grid) as rec:
        for core in range(grid):
            tr = Tracer(m, core, grid, shared)
            tr.outside_api = lambda: rec.depth == 0
            rec.core = core
            tracer.set_active(tr)
            try:
                kernel(**{name: View(t) for name, t in hbm.items()})
            except NpuError as e:
                e.core = core
                if e.loc is None:
                    e.loc = _kernel_frame(e)
                if e.instr_index is None:
                    e.instr_index = len(tr.instrs)
                raise
            except MemoryError:
                raise  # the evaluator reports memory_limit; it is not the kernel's logic failing
            except RecursionError as e:
                raise KernelException(
                    "recursion too deep while tracing the kernel", _kernel_frame(e), core=core
                ) from None
            except Exception as e:  # the kernel's own Python failed: report it at its line
                raise KernelException(
                    f"{type(e).__name__}: {e}", _kernel_frame(e), core=core
                ) from None
            finally:
                tracer.set_active(None)
        return CallLog(rec.cores, rec.views)


def run(
    log: CallLog,
    inputs: Mapping[str, np.ndarray],
    outputs: TensorDecls,
    *,
    machine: str | MachineSpec = "trn2",
    grid: int = 2,
    timing: bool = True,
) -> SimResult:
    """Replay `log` (every rule re-checked), execute its numerics on `inputs` and time it."""
    decls = {n: (tuple(np.shape(a)), np.asarray(a).dtype) for n, a in inputs.items()}
    return Executable(log, decls, outputs, machine=machine, grid=grid).execute(
        inputs, timing=timing
    )


class Executable:
    """A call log replayed into a program bound to its own tensors, executable on any inputs of
    the declared shapes. Replaying needs no input values (nothing reads them before numerics
    run) and timing reads none, so one replay and one schedule serve every seed of a shape."""

    @collector_paused()
    def __init__(
        self,
        log: CallLog,
        inputs: TensorDecls,
        outputs: TensorDecls,
        *,
        machine: str | MachineSpec,
        grid: int,
    ) -> None:
        self.machine = _machine(machine, grid)
        self.log = log
        self.inputs = {n: (tuple(shape), np.dtype(dt)) for n, (shape, dt) in inputs.items()}
        self.outputs = dict(outputs)
        self.shared = SharedState()
        self.hbm = _hbm_tensors(self.inputs, outputs, self.shared, data=None)
        m = self.machine
        self.tracers = replay(
            log,
            {t.id: t for t in self.hbm.values()},
            grid,
            lambda core: Tracer(m, core, grid, self.shared),
        )
        _check_same_program(self.tracers)
        self.program = Program(
            cores=[tr.instrs for tr in self.tracers],
            tensors=dict(self.shared.names),
            sbuf_peak_bytes=[tr.sbuf_used for tr in self.tracers],
            psum_banks_used=[tr.psum_banks_used for tr in self.tracers],
        )
        self._timed: tuple[object, object] | None = None
        self._dirty = False

    @collector_paused()
    def execute(self, inputs: Mapping[str, np.ndarray], *, timing: bool = True) -> SimResult:
        """Run the numerics on `inputs` (read-only, never copied) and attach the timing."""
        numerics.check_ftz()
        if self._dirty:
            self._reset()
        for name, (shape, dt) in self.inputs.items():
            a = np.asarray(inputs[name])
            if a.shape != shape or a.dtype != dt:
                raise TypeError(
                    f"input {name!r} is {a.shape} {a.dtype}; this program was traced for {shape} {dt}"
                )
            a = a if a.flags.c_contiguous else np.ascontiguousarray(a)
            if a.flags.writeable:
                a = a.view()
                a.flags.writeable = False
            self.hbm[name].data = a
        self._dirty = True
        _execute(self.program)
        sched = prof = None
        if timing:
            sched, prof = self.timing()
        outs = {k: self.hbm[k].data.copy() for k in self.outputs}
        ins = {k: self.hbm[k].data for k in self.inputs}
        return SimResult(outs, ins, self.program, sched, prof, self.machine, self.log)

    def timing(self) -> tuple[object, object]:
        """The schedule and profile of the program (computed once: they depend on no value)."""
        if self._timed is None:
            from knight.npu.profile import make_profile
            from knight.npu.timing import schedule

            sched = schedule(self.program, self.machine)
            self._timed = (sched, make_profile(self.program, sched, self.machine))
        return self._timed

    def _reset(self) -> None:
        """Every allocation and output back to fresh (poisoned, unwritten) memory; no registers."""
        for t in [*self.shared.tensors, *(self.hbm[k] for k in self.outputs)]:
            t.data[...] = numerics.nan_fill(t.shape, t.dtype)
            for mask in (t.written, t.matmul_written, t.group_open):
                if mask is not None:
                    mask[...] = False
        for tr in self.tracers:
            tr.regs.clear()


def _machine(machine: str | MachineSpec, grid: int) -> MachineSpec:
    if grid not in (1, 2):
        raise ValueError("grid must be 1 or 2 (LNC=2 pairs two physical cores)")
    return load_machine(machine) if isinstance(machine, str) else machine


def _hbm_tensors(
    inputs: TensorDecls,
    outputs: TensorDecls,
    shared: SharedState,
    data: Mapping[str, np.ndarray] | None,
) -> dict[str, Tensor]:
    """The kernel's HBM arguments. With `data=None` (tracing) inputs hold zeros: geometry for
    views and costs, and nothing else (large zero arrays are untouched pages, no real memory)."""
    out: dict[str, Tensor] = {}
    for name, (shape, dtype) in inputs.items():
        dt = np.dtype(dtype)
        if dt not in HBM_DTYPES:
            raise TypeError(
                f"input {name!r} has dtype {dt}; the NPU holds {', '.join(map(str, HBM_DTYPES))}"
            )
        if data is None:
            a = np.zeros(tuple(shape), dtype=dt)
        else:
            # Inputs are read-only (the tracer refuses writes), so the caller's array is used as is.
            a = np.asarray(data[name])
            a = a if a.flags.c_contiguous else np.array(a, copy=True, order="C")
        a.flags.writeable = False
        out[name] = Tensor(shared.new_id(name), name, HBM, tuple(a.shape), a.dtype, a, None)
        shared.inputs.add(out[name].id)
    for name, (shape, dtype) in outputs.items():
        dt = np.dtype(dtype)
        shape = tuple(shape)
        out[name] = Tensor(
            shared.new_id(name),
            name,
            HBM,
            shape,
            dt,
            numerics.nan_fill(shape, dt),
            np.zeros(shape, dtype=bool),
        )
    return out


def _kernel_frame(exc: BaseException) -> SourceLoc | None:
    """The innermost traceback frame that is kernel code (not the simulator, not the stdlib)."""
    loc = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        path = os.path.abspath(frame.f_code.co_filename)
        library = "site-packages" in path or "/lib/python" in path
        if not tracer.in_simulator(path) and not library:
            loc = SourceLoc(frame.f_code.co_filename, line)
    return loc


def _check_same_program(tracers: list[Tracer]) -> None:
    if len(tracers) < 2:
        return
    a, b = tracers[0].instrs, tracers[1].instrs
    for i in range(min(len(a), len(b))):
        if a[i].op != b[i].op or a[i].engine != b[i].engine:
            raise KernelException(
                f"the two cores diverge at instruction {i}: core 0 issues {a[i].op} on {a[i].engine} "
                f"({a[i].loc}), core 1 issues {b[i].op} on {b[i].engine} ({b[i].loc}); control flow "
                "must be identical on both cores",
                _branch_point(a[i].loc, b[i].loc),
                instr_index=i,
            )
    if len(a) != len(b):
        short, n = (1, len(b)) if len(b) < len(a) else (0, len(a))
        extra = (a if short == 1 else b)[n]
        raise KernelException(
            f"the two cores diverge: core {short} stops after {n} instructions while the other goes on "
            f"({extra.op} at {extra.loc}); control flow must be identical on both cores",
            extra.loc,
            instr_index=n,
        )


def _branch_point(a: SourceLoc, b: SourceLoc) -> SourceLoc:
    """Where two diverging streams part: the earlier of their two statements (an `if` body
    issues its extra instruction before the statement that follows the branch)."""
    if a.file == b.file:
        return a if a.line <= b.line else b
    return a


def _execute(program: Program) -> None:
    """Run every instruction's numerics in merged program order (core 0 then core 1 per index)."""
    cores = program.cores
    n = max(len(c) for c in cores)
    for i in range(n):
        first = cores[0][i]
        if first.op == "sendrecv" and len(cores) == 2:
            _guard(first, exchange, first.run, cores[1][i].run)
            continue
        for stream in cores:
            instr = stream[i]
            if instr.run is not None and not isinstance(instr.run, _Exchange):
                _guard(instr, instr.run)


def _guard(instr, fn, *args) -> None:
    try:
        fn(*args)
    except NpuError as e:
        e.loc = e.loc or instr.loc
        e.instr_index = instr.index
        e.engine = instr.engine
        e.core = instr.core
        raise
    except FloatingPointError as e:  # pragma: no cover - numpy errstate is not raising by default
        raise KernelException(
            str(e), instr.loc, instr_index=instr.index, engine=instr.engine
        ) from None
