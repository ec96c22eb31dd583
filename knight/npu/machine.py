"""Machine presets: every modelling constant of a chip, loaded from a data file with its source.

A preset is a TOML file in `knight/npu/presets/`. Each constant is a table
`name = { value = ..., basis = "published" | "fitted" | "model", note = "source or calibration note" }`,
so the provenance of every number travels with it: "published" is stated by a public source,
"fitted" is fitted to a published figure (the note names it), "model" is our own choice. `MachineSpec.hash` is stable across
processes and platforms and is part of every evaluation's harness fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field, fields
from functools import cached_property
from importlib import resources

PRESET_NAMES = ("trn2", "trn3")
BASES = ("published", "fitted", "model")  # where a constant's value comes from


@dataclass(frozen=True)
class MachineSpec:
    """All constants the simulator uses for one chip (times in ns or engine cycles, sizes in bytes)."""

    name: str
    description: str
    # --- capacities and shapes
    partitions: int
    sbuf_partition_bytes: int
    psum_banks: int
    psum_bank_bytes: int
    matmul_max_contract: int
    matmul_max_stationary: int
    matmul_max_moving: int
    vector_transpose_max: int
    # --- clocks (GHz = cycles per ns)
    tensor_ghz: float
    vector_ghz: float
    scalar_ghz: float
    gpsimd_ghz: float
    sync_ghz: float
    # --- compute instruction costs (engine cycles)
    t_fixed_cycles: int
    min_ii_cycles: int
    t_wb_cycles: int
    t_fill_cycles: int
    load_stationary_cycles: int
    matmul_min_moving_cycles: int
    matmul_fp32_factor: int
    dynamic_copy_min_cycles: int
    vector_perf_copy_factor: int
    vector_perf_strided_factor: int
    vector_perf_tt_factor: int
    scalar_perf_half_factor: int
    stride_penalty_bytes: int
    # --- DMA
    dma_engines: int
    dma_queues: int
    dma_partitions_per_engine: int
    dma_bw_engine_bytes_per_ns: float
    dma_desc_knee_bytes: float
    dma_desc_knee_sharpness: float
    dma_first_byte_ns: float
    dma_first_byte_swdge_ns: float
    dma_completion_ns: float
    dma_queue_pipelined: bool
    dma_t_issue_hwdge_ns: float
    dma_t_swdge_ns: float
    dma_t_swdge_per_desc_ns: float
    hbm_bw_pair_bytes_per_ns: float
    hbm_efficiency: float
    # --- cross-core
    sendrecv_max_partition_bytes: int
    # --- TensorE warm-up throttling (dI/dt limit)
    tensor_throttle: bool
    tensor_throttle_floor: float
    tensor_throttle_ramp_ns: float
    tensor_throttle_window_ns: float
    notes: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @cached_property
    def hash(self) -> str:
        """A stable digest of every constant's value (notes excluded)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "notes"}
        blob = json.dumps(values, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def cycles_to_ps(self, engine: str, cycles: float) -> int:
        """Convert engine cycles to integer picoseconds at that engine's clock."""
        ghz = getattr(self, f"{engine}_ghz")
        return int(round(cycles * 1000.0 / ghz))

    def peak_hbm_bytes_per_ns(self, cores: int) -> float:
        """The fastest any kernel can stream HBM on `cores` physical cores of one pair."""
        engines = cores * self.dma_engines * self.dma_bw_engine_bytes_per_ns
        return min(engines, self.hbm_bw_pair_bytes_per_ns * self.hbm_efficiency)

    def floor_ns(self, nbytes: int, cores: int) -> float:
        """The HBM floor: bytes that must move / the peak rate (NPU.md 7); `roofline.physical_floor`
        combines it with the engine floors."""
        return nbytes / self.peak_hbm_bytes_per_ns(cores)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class UnknownMachine(ValueError):
    """The named preset does not exist."""


def load_machine(name: str = "trn2") -> MachineSpec:
    """Load a machine preset by name (`trn2`, `trn3`) or from a path to a TOML file."""
    if name.endswith(".toml"):
        with open(name, "rb") as fh:
            raw = tomllib.load(fh)
    else:
        if name not in PRESET_NAMES:
            raise UnknownMachine(
                f"unknown machine preset {name!r}; choose one of {', '.join(PRESET_NAMES)}"
            )
        text = resources.files("knight.npu").joinpath(f"presets/{name}.toml").read_text()
        raw = tomllib.loads(text)
    return _spec_from_toml(raw)


def _spec_from_toml(raw: dict) -> MachineSpec:
    values: dict = {"name": raw["name"], "description": raw.get("description", "")}
    notes: dict[str, str] = {}
    for table in raw.values():
        if not isinstance(table, dict):
            continue
        for key, entry in table.items():
            values[key] = entry["value"]
            if entry.get("basis", "model") not in BASES:
                raise ValueError(
                    f"preset {raw.get('name')}: {key} has basis {entry.get('basis')!r}, not one of {BASES}"
                )
            notes[key] = f"[{entry.get('basis', 'model')}] {entry.get('note', '')}".strip()
    known = {f.name for f in fields(MachineSpec)} - {"notes"}
    missing = known - values.keys()
    extra = values.keys() - known
    if missing or extra:
        raise ValueError(
            f"preset {raw.get('name')}: missing {sorted(missing)}, unknown {sorted(extra)}"
        )
    return MachineSpec(**values, notes=notes)
