"""The physical floor of a workload: the slowest of the resources its work must pass through.

A problem declares the bytes that must cross HBM and, optionally, work that only one engine can
do (TensorE flops, ScalarE transcendental elements, ...). Each resource's floor is that work at
the machine preset's peak rate; the floor is their maximum, and the resource that sets it is the
bound. No kernel, however clever, is faster: a simulated latency below it is a harness bug.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from knight.npu.machine import MachineSpec

# Work a problem may declare (the keys of its `floor_work` function) -> the engine that must do it.
WORK_ENGINES: dict[str, str] = {
    "tensor_flops": "tensor",
    "scalar_elements": "scalar",
    "vector_elements": "vector",
    "gpsimd_elements": "gpsimd",
}
HBM = "hbm"


@dataclass(frozen=True)
class Floor:
    """The floor in ns, the resource that sets it, and every resource's own floor."""

    ns: float
    bound: str
    by_resource: dict[str, float] = field(default_factory=dict)


def engine_peak_per_ns(machine: MachineSpec, engine: str, cores: int) -> float:
    """Peak work rate of one engine kind over `cores` cores: flops/ns for TensorE (a 128x128
    array of 16-bit MACs, one moving column per cycle), elements/ns for the others (one element
    per partition per cycle in the engine's fastest performance mode)."""
    ghz = getattr(machine, f"{engine}_ghz")
    if engine == "tensor":
        macs = machine.matmul_max_contract * machine.matmul_max_stationary
        return 2.0 * macs * ghz * cores
    mode = {
        "vector": max(
            machine.vector_perf_copy_factor,
            machine.vector_perf_strided_factor,
            machine.vector_perf_tt_factor,
        ),
        "scalar": machine.scalar_perf_half_factor,
    }.get(engine, 1)
    return machine.partitions * ghz * max(1, mode) * cores


def physical_floor(
    machine: MachineSpec, nbytes: int, cores: int, work: dict[str, float] | None = None
) -> Floor:
    """The floor of a run that moves `nbytes` over HBM and does `work` (keys of WORK_ENGINES)."""
    by_resource = {HBM: machine.floor_ns(nbytes, cores)}
    for key, amount in (work or {}).items():
        if key not in WORK_ENGINES:
            raise ValueError(f"unknown floor work {key!r}; known: {', '.join(WORK_ENGINES)}")
        engine = WORK_ENGINES[key]
        ns = float(amount) / engine_peak_per_ns(machine, engine, cores)
        by_resource[engine] = max(by_resource.get(engine, 0.0), ns)
    bound = max(by_resource, key=lambda r: by_resource[r])
    return Floor(ns=by_resource[bound], bound=bound, by_resource=by_resource)
