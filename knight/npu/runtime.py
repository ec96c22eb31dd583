"""Running a kernel: trace it on each physical core, execute the numerics, then time it.

`simulate(kernel, inputs, outputs)` is the one entry point. The kernel is a Python function
taking HBM tensors by keyword (inputs first, then the outputs it must write). It is traced once
per core with `program_id` bound; both traces must issue the same instruction sequence (the
hardware runs one program on both cores). Numerics then run in merged program order, with
`sendrecv` joining the two cores, and the timing model schedules the same program.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from knight.npu import numerics, tracer
from knight.npu.errors import KernelException, NpuError, SourceLoc
from knight.npu.machine import MachineSpec, load_machine
from knight.npu.nisa import _Exchange, exchange
from knight.npu.program import Program
from knight.npu.tensor import HBM, Tensor, View
from knight.npu.tracer import SharedState, Tracer

_NPU_DIR = os.path.dirname(os.path.abspath(__file__))
_SUPPORTED = tuple(np.dtype(d) for d in (numerics.BF16, np.float16, np.float32, np.int32))


@dataclass
class SimResult:
    """What one simulation produced: outputs, the input tensors as left, program and timing."""

    outputs: dict[str, np.ndarray]
    inputs_after: dict[str, np.ndarray]
    program: Program
    schedule: object | None  # knight.npu.timing.Schedule
    profile: object | None  # knight.npu.profile.Profile
    machine: MachineSpec

    @property
    def latency_ns(self) -> float:
        return self.schedule.makespan_ps / 1000.0 if self.schedule is not None else float("nan")


def simulate(
    kernel: Callable[..., None],
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, tuple[tuple[int, ...], object]],
    *,
    machine: str | MachineSpec = "trn2",
    grid: int = 2,
    timing: bool = True,
) -> SimResult:
    """Trace, execute and time `kernel` on a logical core of `grid` physical cores."""
    numerics.check_ftz()
    m = load_machine(machine) if isinstance(machine, str) else machine
    if grid not in (1, 2):
        raise ValueError("grid must be 1 or 2 (LNC=2 pairs two physical cores)")
    shared = SharedState()
    hbm = _hbm_tensors(inputs, outputs, shared)
    program = _trace(kernel, hbm, m, grid, shared)
    _execute(program)
    sched = prof = None
    if timing:
        from knight.npu.profile import make_profile
        from knight.npu.timing import schedule

        sched = schedule(program, m)
        prof = make_profile(program, sched, m)
    outs = {k: hbm[k].data for k in outputs}
    ins = {k: hbm[k].data for k in inputs}
    return SimResult(outs, ins, program, sched, prof, m)


def _hbm_tensors(inputs, outputs, shared: SharedState) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for name, arr in inputs.items():
        # Row-major, and shared with the caller until the kernel writes it (copy-on-write):
        # copying ~200 MB of MoE weights per run would dominate the simulation.
        a = np.asarray(arr)
        if a.dtype not in _SUPPORTED:
            raise TypeError(f"input {name!r} has dtype {a.dtype}; the NPU holds {', '.join(map(str, _SUPPORTED))}")
        shared_ok = a.flags.c_contiguous
        a = a if shared_ok else np.array(a, copy=True, order="C")
        out[name] = Tensor(shared.new_id(name), name, HBM, tuple(a.shape), a.dtype, a, None, copy_on_write=shared_ok)
    for name, (shape, dtype) in outputs.items():
        dt = np.dtype(dtype)
        shape = tuple(shape)
        out[name] = Tensor(
            shared.new_id(name), name, HBM, shape, dt, numerics.nan_fill(shape, dt), np.zeros(shape, dtype=bool)
        )
    return out


def _trace(kernel, hbm: dict[str, Tensor], m: MachineSpec, grid: int, shared: SharedState) -> Program:
    tracers = []
    for core in range(grid):
        tr = Tracer(m, core, grid, shared)
        tracer.set_active(tr)
        try:
            kernel(**{name: View(t) for name, t in hbm.items()})
        except NpuError as e:
            e.core = core
            if e.loc is None:
                e.loc = _kernel_frame(e)
            e.instr_index = len(tr.instrs)
            raise
        except MemoryError:
            raise  # the evaluator reports memory_limit; it is not the kernel's logic failing
        except RecursionError as e:
            raise KernelException("recursion too deep while tracing the kernel", _kernel_frame(e), core=core) from None
        except Exception as e:  # the kernel's own Python failed: report it at its line
            raise KernelException(f"{type(e).__name__}: {e}", _kernel_frame(e), core=core) from None
        finally:
            tracer.set_active(None)
        tracers.append(tr)
    _check_same_program(tracers)
    return Program(
        cores=[tr.instrs for tr in tracers],
        tensors=dict(shared.names),
        sbuf_peak_bytes=[tr.sbuf_used for tr in tracers],
        psum_banks_used=[tr.psum_banks_used for tr in tracers],
    )


def _kernel_frame(exc: BaseException) -> SourceLoc | None:
    """The innermost traceback frame that is kernel code (not the simulator, not the stdlib)."""
    loc = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        path = os.path.abspath(frame.f_code.co_filename)
        if os.path.dirname(path) != _NPU_DIR and "site-packages" not in path and "/lib/python" not in path:
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
        raise KernelException(str(e), instr.loc, instr_index=instr.index, engine=instr.engine) from None
