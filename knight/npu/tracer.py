"""The tracer: records the instructions a kernel issues on one core, with their source lines.

A `Tracer` is active while a kernel is traced (`runtime.trace`, the kernel's Python, data-free)
and while its call log is replayed (`runtime.run`, on the real inputs). Every `nl`/`nisa` call
asks `active()` for it, allocates through it, and appends an `Instr`. The tracer enforces
capacity limits at allocation time and refuses any instruction that writes a kernel input, so
either error points at the kernel line that caused it.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from knight.npu import numerics
from knight.npu.errors import (
    IllegalAccess,
    KernelException,
    NpuError,
    ResourceOverflow,
    ShapeError,
    SourceLoc,
)
from knight.npu.machine import MachineSpec
from knight.npu.program import Instr
from knight.npu.tensor import HBM, PSUM, SBUF, Tensor

_NPU_DIR = os.path.dirname(os.path.abspath(__file__))


_inside_npu: dict[str, bool] = {}  # filename -> is it part of the simulator (memoised: hot path)


def in_simulator(filename: str) -> bool:
    """Whether a frame's file is simulator code (`knight/npu`), as opposed to the kernel's."""
    hit = _inside_npu.get(filename)
    if hit is None:
        hit = _inside_npu[filename] = os.path.dirname(os.path.abspath(filename)) == _NPU_DIR
    return hit


def caller_loc() -> SourceLoc:
    """The first stack frame outside `knight/npu`: the kernel statement being traced (while a
    call log is replayed, the line recorded for the call being replayed)."""
    if _active is not None and _active.replay_loc is not None:
        return _active.replay_loc
    f = sys._getframe(1)
    while f is not None and in_simulator(f.f_code.co_filename):
        f = f.f_back
    if f is None:
        return SourceLoc("<unknown>", 0)
    return SourceLoc(f.f_code.co_filename, f.f_lineno)


@dataclass
class SharedState:
    """State shared by the per-core tracers of one simulation: tensor ids, shared HBM, and which
    tensors are the kernel's (read-only) inputs."""

    next_id: int = 0
    names: dict[int, str] = field(default_factory=dict)
    hbm_scratch: list[Tensor] = field(default_factory=list)
    inputs: set[int] = field(default_factory=set)
    tensors: list[Tensor] = field(default_factory=list)  # every allocation, to reset between runs

    def new_id(self, name: str) -> int:
        self.next_id += 1
        self.names[self.next_id] = name
        return self.next_id


class Tracer:
    """Records one core's instruction stream and owns its on-chip allocations."""

    def __init__(self, machine: MachineSpec, core: int, grid: int, shared: SharedState) -> None:
        self.machine = machine
        self.core = core
        self.grid = grid
        self.shared = shared
        self.instrs: list[Instr] = []
        self.sbuf_used = 0
        self.psum_banks_used = 0
        self.hbm_allocs = 0
        self.regs: dict[int, int] = {}  # register values, filled while numerics run
        self.replay_loc: SourceLoc | None = None  # set by the call-log replayer for each call
        self.outside_api: Callable[[], bool] | None = None  # set while recording a call log

    def emit(self, instr: Instr) -> Instr:
        """Append an instruction; writing a kernel input is refused here, for every instruction."""
        if self.outside_api is not None and self.outside_api():
            raise KernelException(
                "instructions must be issued by calling nl/nisa functions", instr.loc
            )
        for region in instr.writes:
            if region.tensor in self.shared.inputs:
                raise IllegalAccess(
                    f"{instr.op} writes the kernel input {self.shared.names[region.tensor]!r}; inputs are "
                    "read-only (copy what you need into SBUF or an HBM scratch tensor)",
                    instr.loc,
                )
        instr.index = len(self.instrs)
        self.instrs.append(instr)
        return instr

    def allocate(
        self, shape: tuple[int, ...], dtype: np.dtype, buffer: str, name: str | None
    ) -> Tensor:
        """Allocate a tensor, checking capacity; fresh memory is NaN-filled and marked unwritten."""
        loc = caller_loc()
        shape = _check_shape(shape, loc)
        m = self.machine
        nbytes = math.prod(shape[1:]) * dtype.itemsize if len(shape) > 1 else dtype.itemsize
        base = 0
        label = name or f"{buffer}@{os.path.basename(loc.file)}:{loc.line}"
        if buffer == HBM:
            return self._allocate_hbm(shape, dtype, label, loc)
        if shape[0] > m.partitions:
            raise ResourceOverflow(
                f"{shape[0]} partitions requested; the {buffer.upper()} has {m.partitions}", loc
            )
        if buffer == SBUF:
            if self.sbuf_used + nbytes > m.sbuf_partition_bytes:
                raise ResourceOverflow(
                    f"SBUF capacity exceeded: {self.sbuf_used} B per partition already allocated, "
                    f"{nbytes} B more requested, {m.sbuf_partition_bytes} B available "
                    "(allocate buffers once, outside loops, and reuse them)",
                    loc,
                )
            base = self.sbuf_used
            self.sbuf_used += nbytes
        elif buffer == PSUM:
            banks = -(-nbytes // m.psum_bank_bytes)
            if self.psum_banks_used + banks > m.psum_banks:
                raise ResourceOverflow(
                    f"PSUM capacity exceeded: {self.psum_banks_used} of {m.psum_banks} banks in use, "
                    f"{banks} more requested ({nbytes} B per partition)",
                    loc,
                )
            base = self.psum_banks_used * m.psum_bank_bytes
            self.psum_banks_used += banks
        else:
            raise ShapeError(f"unknown buffer {buffer!r}", loc)
        tid = self.shared.new_id(label)
        t = Tensor(
            tid,
            label,
            buffer,
            shape,
            dtype,
            numerics.nan_fill(shape, dtype),
            np.zeros(shape, dtype=bool),
            core=self.core,
            base=base,
            loc=loc,
        )
        if buffer == PSUM:
            t.matmul_written = np.zeros(shape, dtype=bool)
            t.group_open = np.zeros(shape, dtype=bool)
        self.shared.tensors.append(t)
        return t

    def _allocate_hbm(self, shape, dtype, label, loc) -> Tensor:
        # Shared HBM scratch: the k-th allocation on every core is the same tensor.
        k = self.hbm_allocs
        self.hbm_allocs += 1
        if k < len(self.shared.hbm_scratch):
            t = self.shared.hbm_scratch[k]
            if t.shape != shape or t.dtype != dtype:
                raise KernelException(
                    "cores allocated different shared HBM tensors (divergent control flow)", loc
                )
            return t
        tid = self.shared.new_id(label)
        t = Tensor(
            tid,
            label,
            HBM,
            shape,
            dtype,
            numerics.nan_fill(shape, dtype),
            np.zeros(shape, dtype=bool),
            loc=loc,
        )
        self.shared.hbm_scratch.append(t)
        self.shared.tensors.append(t)
        return t

    def new_register(self) -> int:
        return self.shared.new_id(f"register{self.core}")


def _check_shape(shape, loc: SourceLoc) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, NpuError):
        raise ShapeError(f"shape must be a tuple of Python integers, got {shape!r}", loc) from None
    if not shape or any(s <= 0 for s in shape):
        raise ShapeError(f"shape must have positive sizes, got {shape}", loc)
    return shape


_active: Tracer | None = None


def active() -> Tracer:
    """The tracer of the core being traced; kernel-language calls outside `simulate` are errors."""
    if _active is None:
        raise KernelException(
            "kernel-language calls are only valid inside a kernel run by knight.npu.simulate"
        )
    return _active


def set_active(tracer: Tracer | None) -> None:
    global _active
    _active = tracer
