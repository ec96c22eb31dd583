"""Per-instruction costs of compute instructions: (occupancy, latency) in integer picoseconds.

Occupancy is how long the instruction holds its in-order engine; latency is when its result is
visible to dependants (NPU.md 5.3). DMA, `sendrecv` and `barrier` are timed by the scheduler
(`knight.npu.timing`), not here. Costs depend only on a few metadata fields, so they are
memoised per machine on a signature tuple (NPU.md 9: "memoised costs per instruction signature").
"""

from __future__ import annotations

from knight.npu.machine import MachineSpec
from knight.npu.program import (
    PERF_COPY_STRIDED,
    PERF_COPY_UNIT,
    PERF_NONE,
    PERF_SCALAR_HALF,
    PERF_TT,
    Instr,
)

SCHEDULER_OPS = frozenset({"dma_copy", "sendrecv", "barrier"})
TENSOR_OPS = frozenset({"matmul", "transpose"})

# Machine hash -> {signature: (occupancy_ps, latency_ps)}. Keyed by the preset's content, not the
# object, so the many equal MachineSpec objects that runs load share one table and nothing per
# run stays alive (issue 10: pooled workers grew ~50 MB per evaluation). Bounded: a table is
# dropped when it grows past MAX_SIGNATURES, and only the most recent MAX_MACHINES are kept.
MAX_MACHINES = 4
MAX_SIGNATURES = 50_000
_CACHES: dict[str, dict[tuple, tuple[int, int]]] = {}


def signature(instr: Instr) -> tuple:
    """The metadata that determines an instruction's cost (the memoisation key)."""
    return (
        instr.op,
        instr.engine,
        instr.elems,
        instr.n_inputs,
        instr.perf,
        instr.strided,
        instr.psum_access,
        instr.dynamic,
        instr.moving,
        instr.stationary,
        instr.fp32_matmul,
    )


def instruction_cost(instr: Instr, m: MachineSpec) -> tuple[int, int]:
    """(occupancy_ps, latency_ps) of a non-DMA instruction on machine `m`, memoised."""
    cache = _CACHES.get(m.hash)
    if cache is None or len(cache) > MAX_SIGNATURES:
        cache = _table(m.hash)
    key = signature(instr)
    cost = cache.get(key)
    if cost is None:
        cost = cache[key] = _cost(instr, m)
    return cost


def _table(key: str) -> dict[tuple, tuple[int, int]]:
    """A fresh cost table for machine `key`, evicting the oldest machines past MAX_MACHINES."""
    _CACHES.pop(key, None)
    while len(_CACHES) >= MAX_MACHINES:
        del _CACHES[next(iter(_CACHES))]
    table: dict[tuple, tuple[int, int]] = {}
    _CACHES[key] = table
    return table


def cached_machines() -> int:
    """How many machines have a cost table (for tests of the memo's bound)."""
    return len(_CACHES)


def _cost(instr: Instr, m: MachineSpec) -> tuple[int, int]:
    if instr.op in SCHEDULER_OPS:
        raise ValueError(f"{instr.op} is timed by the scheduler, not by instruction_cost")
    if instr.engine == "tensor" and instr.op in TENSOR_OPS:
        return tensor_cost(instr.moving, instr.stationary, instr.fp32_matmul, m)
    elems = 1 if instr.op == "register_load" else instr.elems  # a one-element read (NPU.md 4)
    return compute_cost(
        instr.engine, elems, instr.n_inputs, instr.perf, instr.strided, instr.dynamic, m
    )


def perf_factor(engine: str, perf: str, m: MachineSpec) -> float:
    """Performance-mode speed-up (NPU.md 4): VectorE's modes (ARCH2), ScalarE's 16-bit copy mode (ARCH3)."""
    if perf == PERF_SCALAR_HALF and engine == "scalar":
        return float(m.scalar_perf_half_factor)
    if engine != "vector" or perf == PERF_NONE:
        return 1.0
    factors = {
        PERF_COPY_UNIT: m.vector_perf_copy_factor,
        PERF_COPY_STRIDED: m.vector_perf_strided_factor,
        PERF_TT: m.vector_perf_tt_factor,
    }
    return float(factors.get(perf, 1))


def compute_cost(
    engine: str,
    elems: int,
    n_inputs: int,
    perf: str,
    strided: bool,
    dynamic: bool,
    m: MachineSpec,
) -> tuple[int, int]:
    """Vector/Scalar/GpSimd/Sync instruction: t_fixed + max(MIN_II, work), + t_wb (NPU.md 5.4)."""
    # work = N x inputs / perf factor: one element per partition per cycle per input (NPU.md 4).
    work = max(1, elems) * max(1, n_inputs) / perf_factor(engine, perf, m)
    if strided:
        work *= 2  # an innermost stride above 16 B halves SBUF/PSUM bandwidth (NPU.md 4, ARCH1)
    if dynamic:
        work = max(
            m.dynamic_copy_min_cycles, work
        )  # copy with a dynamic offset: max(600, N) (NPU.md 4)
    # Static overhead plus at least MIN_II cycles; the write-back is seen only by dependants (5.4).
    occupancy = m.t_fixed_cycles + max(m.min_ii_cycles, work)
    latency = occupancy + m.t_wb_cycles
    return m.cycles_to_ps(engine, occupancy), m.cycles_to_ps(engine, latency)


def tensor_cost(moving: int, stationary: int, fp32: bool, m: MachineSpec) -> tuple[int, int]:
    """TensorE matmul or transpose: the MultiplyMoving interval, + systolic fill (NPU.md 3, 5.4)."""
    factor = m.matmul_fp32_factor if fp32 else 1  # fp32 inputs run the array at 1/4 rate (NPU.md 3)
    # MultiplyMoving issues every max(N, 64) cycles (ISA table, NPU.md 3).
    multiply = max(m.matmul_min_moving_cycles, moving) * factor
    # LoadStationary (~32 cycles for 128 columns) overlaps the current MultiplyMoving and is
    # hidden unless it is longer (NPU.md 3, 5.4).
    load = m.load_stationary_cycles * max(1, stationary) / m.matmul_max_stationary * factor
    occupancy = max(multiply, load)
    # A consumer waits for the array to drain: t_fill ~ R + C cycles (NPU.md 5.4, SCALE-Sim).
    latency = occupancy + m.t_fill_cycles
    return m.cycles_to_ps("tensor", occupancy), m.cycles_to_ps("tensor", latency)
