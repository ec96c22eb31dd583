"""The traced program: one list of instructions per core, as recorded by the kernel language.

Tracing a kernel produces `Instr` records. They carry everything the two later passes need:
`run` (a closure that performs the instruction's numerics on the simulator's memory) and the
cost metadata the timing model reads (sizes, buffers, DMA chunk lists, regions read and written).
Timing never looks at numbers and numerics never look at time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from knight.npu.errors import SourceLoc

ENGINES = ("tensor", "vector", "scalar", "gpsimd", "sync")

# Perf-mode classes for VectorE (NPU.md section 4); the factor per class lives in the preset.
PERF_NONE = ""
PERF_COPY_UNIT = (
    "copy_unit"  # tensor_copy / tensor_scalar, SBUF->SBUF, 16-bit, unit inner stride: 4x
)
PERF_COPY_STRIDED = "copy_strided"  # same ops, strided or one side in PSUM: 2x
PERF_TT = "tt_sbuf16"  # tensor_tensor, both inputs 16-bit in SBUF: 2x
PERF_SCALAR_HALF = "scalar_half"  # ScalarE tensor_copy / tensor_scalar on 16-bit data (Trn3: 2x)


@dataclass(frozen=True, slots=True)
class Region:
    """Memory an instruction touches: partitions p0, p0+pstep, ... < p1, and within each the bytes
    [b0, b1), or exactly the intervals `runs` = (starts, ends) when they are not one dense block
    (exact access patterns, `knight.npu.access`).

    For on-chip buffers the byte range is within each partition of the tensor's allocation;
    for HBM tensors p0=0, p1=1 and the byte range is within the tensor.
    `tensor` is a tensor id, unique within one simulation (HBM tensors are shared by both cores).
    """

    tensor: int
    p0: int
    p1: int
    b0: int
    b1: int
    pstep: int = 1
    runs: tuple[tuple[int, ...], tuple[int, ...]] | None = None


@dataclass(frozen=True, slots=True)
class DmaShape:
    """How a transfer is cut into descriptors (NPU.md 2.4 and 5.5)."""

    mode: str  # "hwdge" (SyncE/ScalarE drive the DGE block), "swdge" (descriptors made on
    # GpSimd) or "none" (descriptors precomputed by the runtime: no issue cost on the device)
    queue: int  # queue id, 0..dma_queues-1, the same on every engine the transfer uses; set by
    # (mode, engine) in `nisa.dma_route`, never chosen by the kernel
    p0: int  # first partition of the on-chip side (0 for HBM->HBM)
    partitions: int  # partitions (rows) moved; engine e serves partitions [8e, 8e+8)
    chunks_per_partition: int  # contiguous runs per partition (descriptors)
    chunk_bytes: int  # bytes in each run
    total_bytes: int  # = partitions * chunks_per_partition * chunk_bytes
    hbm_bytes: int  # bytes read from plus written to HBM (0 for SBUF->SBUF)
    engine: str = "sync"  # the trigger engine ("sync", "scalar" or "gpsimd")
    transpose: bool = False  # a DMA transpose (nisa.dma_transpose): runs follow the dst order


@dataclass(slots=True)
class Instr:
    """One instruction on one engine of one core, in program order."""

    op: str  # "dma_copy", "matmul", "transpose", "activation", "tensor_tensor", ...
    engine: str  # one of ENGINES
    core: int
    index: int  # position in its core's stream (both cores' streams have the same ops)
    loc: SourceLoc
    reads: tuple[Region, ...] = ()
    writes: tuple[Region, ...] = ()
    # --- cost metadata (read by the timing model only)
    elems: int = 0  # elements per partition of the largest operand (compute instructions)
    n_inputs: int = 1  # tensor operands read (1 or 2); work = elems * n_inputs / perf factor
    perf: str = PERF_NONE  # VectorE perf-mode class
    strided: bool = False  # an innermost stride above stride_penalty_bytes on any operand
    psum_access: bool = False  # reads or writes PSUM (ScalarE/VectorE PSUM read-outs)
    dynamic: bool = False  # uses a register-dependent offset (copy with dynamic offset)
    moving: int = 0  # matmul: moving free size N
    stationary: int = 0  # matmul: stationary free size M
    contract: int = 0  # matmul: contraction size K (partitions)
    fp32_matmul: bool = False  # matmul inputs are fp32 (4x slower)
    accumulate: bool = False  # matmul adds into PSUM (pipelined behind the previous matmul)
    dma: DmaShape | None = None  # dma_copy only
    xfer_bytes: int = 0  # sendrecv: bytes per core
    # --- numerics (read by the runtime only)
    run: Callable[[], None] | None = field(default=None, repr=False)


@dataclass(slots=True)
class Program:
    """A traced kernel: one instruction stream per core plus the tensors it allocated."""

    cores: list[list[Instr]]
    tensors: dict[int, str]  # tensor id -> human name, for profiles and errors
    sbuf_peak_bytes: list[int]  # per core, bytes per partition allocated in SBUF
    psum_banks_used: list[int]  # per core

    @property
    def n_instructions(self) -> int:
        return sum(len(c) for c in self.cores)
