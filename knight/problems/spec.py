"""The problem format: a kernel's contract, its workloads, and how it is judged.

A problem is a folder `baselines/<id>/` holding `problem.toml` (this schema), `problem.py`
(trusted input generator and float64 reference), the baseline kernel and a README.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from knight.npu.dtypes import DTYPES, HBM_NAMES
from knight.npu.machine import MachineSpec
from knight.npu.roofline import Floor, physical_floor


class TensorSpec(BaseModel):
    """Shape (integers or parameter names such as "T") and dtype of one kernel argument."""

    model_config = ConfigDict(extra="forbid")
    shape: list[int | str]
    dtype: Literal[HBM_NAMES]  # type: ignore[valid-type] - the names of the one dtype table

    def resolve(self, params: dict[str, Any]) -> tuple[int, ...]:
        try:
            return tuple(int(params[s]) if isinstance(s, str) else s for s in self.shape)
        except KeyError as e:
            raise ValueError(
                f"shape {self.shape} names parameter {e} that the workload does not set"
            ) from None

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]


class Workload(BaseModel):
    """One judged situation: parameters for the input generator, its weight in the score, seeds."""

    model_config = ConfigDict(extra="forbid")
    name: str
    weight: float = Field(default=1.0, ge=0)
    params: dict[str, Any] = {}
    seeds: list[int] = [0]
    description: str = ""


class Tolerance(BaseModel):
    """How close the baseline must be to the float64 reference (it is checked, not trusted)."""

    model_config = ConfigDict(extra="forbid")
    rtol: float = 0.02
    atol: float = 0.02


class ProblemSpec(BaseModel):
    """The contents of `problem.toml`."""

    model_config = ConfigDict(extra="forbid")
    id: str
    title: str
    description: str = ""
    entry: str  # kernel function name
    baseline: str = "baseline.py"  # file holding the starting kernel
    kernel_file: str = "kernel.py"  # the name edits use for the candidate's kernel file
    grid: int = 2
    machine: str = "trn2"
    correctness: Literal["bit_exact"] = "bit_exact"  # tolerance-based judging is not implemented
    reference_tolerance: Tolerance = Tolerance()
    floor_bytes: str = ""  # name of a problem.py function giving the bytes that must move
    # name of a problem.py function giving work only one engine can do ({"tensor_flops": ...},
    # keys of knight.npu.roofline.WORK_ENGINES); empty: the floor is the bytes floor alone
    floor_work: str = ""
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    workloads: list[Workload]
    heldout: list[Workload] = []
    adversarial: list[Workload] = []

    @model_validator(mode="after")
    def _names_unique(self) -> ProblemSpec:
        names = [w.name for w in self.workloads + self.heldout + self.adversarial]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"workload names must be unique: {sorted(dup)}")
        if not self.workloads:
            raise ValueError("a problem needs at least one visible workload")
        if set(self.inputs) & set(self.outputs):
            raise ValueError("input and output names overlap")
        return self


class Problem:
    """A loaded problem: its spec, its folder, and its trusted generator and reference."""

    def __init__(self, root: Path, spec: ProblemSpec, module: ModuleType) -> None:
        self.root = root
        self.spec = spec
        self._module = module
        self.hash = _folder_hash(root)

    id = property(lambda self: self.spec.id)

    @property
    def baseline_path(self) -> Path:
        return self.root / self.spec.baseline

    def baseline_source(self) -> str:
        return self.baseline_path.read_text()

    def all_workloads(self, heldout: bool = False) -> list[Workload]:
        """Visible and adversarial workloads (and held-out ones only when asked for)."""
        return self.spec.workloads + self.spec.adversarial + (self.spec.heldout if heldout else [])

    def workload(self, name: str) -> Workload:
        for w in self.spec.workloads + self.spec.adversarial + self.spec.heldout:
            if w.name == name:
                return w
        raise KeyError(name)

    def make_inputs(self, workload: Workload, seed: int) -> dict[str, np.ndarray]:
        """Inputs for one workload and seed: reproducible on any machine (PCG64 from the seed)."""
        rng = np.random.Generator(
            np.random.PCG64([seed, _stable_int(self.spec.id), _stable_int(workload.name)])
        )
        arrays = self._module.make_inputs(dict(workload.params), rng)
        for name, ts in self.spec.inputs.items():
            a = arrays[name]
            want = ts.resolve(workload.params)
            if a.shape != want or a.dtype != ts.np_dtype:
                raise ValueError(
                    f"{self.id}: generator made {name} {a.shape} {a.dtype}, spec says {want} {ts.dtype}"
                )
        return {name: arrays[name] for name in self.spec.inputs}

    def input_specs(self, workload: Workload) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Shape and dtype of every input for `workload`: all a tracer may know about them."""
        return {n: (ts.resolve(workload.params), ts.np_dtype) for n, ts in self.spec.inputs.items()}

    def output_specs(self, workload: Workload) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        return {
            n: (ts.resolve(workload.params), ts.np_dtype) for n, ts in self.spec.outputs.items()
        }

    def reference(self, inputs: dict[str, np.ndarray], workload: Workload) -> dict[str, np.ndarray]:
        """The float64 reference outputs (used to check the baseline itself)."""
        return self._module.reference(inputs, dict(workload.params))

    def floor_bytes(self, inputs: dict[str, np.ndarray], workload: Workload) -> int:
        """Bytes any correct kernel must move from HBM for these inputs (the physical floor)."""
        if self.spec.floor_bytes:
            return int(getattr(self._module, self.spec.floor_bytes)(inputs, dict(workload.params)))
        return int(sum(a.nbytes for a in inputs.values()))

    def floor_work(self, inputs: dict[str, np.ndarray], workload: Workload) -> dict[str, float]:
        """Work that must pass through one engine (TensorE flops, ScalarE elements, ...)."""
        if not self.spec.floor_work:
            return {}
        work = getattr(self._module, self.spec.floor_work)(inputs, dict(workload.params))
        return {str(k): float(v) for k, v in work.items()}

    def floor(
        self, inputs: dict[str, np.ndarray], workload: Workload, machine: MachineSpec
    ) -> Floor:
        """The physical floor of one run: the slowest of HBM and the engines its work needs."""
        return physical_floor(
            machine,
            self.floor_bytes(inputs, workload),
            self.spec.grid,
            self.floor_work(inputs, workload),
        )

    def heaviest_floor(self, machine: MachineSpec) -> tuple[Workload, Floor]:
        """The largest floor over the scored visible workloads (first seed), and its workload."""
        scored = [w for w in self.spec.workloads if w.weight > 0] or self.spec.workloads
        floors = [(w, self.floor(self.make_inputs(w, w.seeds[0]), w, machine)) for w in scored]
        return max(floors, key=lambda wf: wf[1].ns)


def load_problem_dir(root: Path) -> Problem:
    """Parse `problem.toml` and import `problem.py` from a problem folder."""
    with open(root / "problem.toml", "rb") as fh:
        spec = ProblemSpec.model_validate(tomllib.load(fh))
    mod_path = root / "problem.py"
    mod_spec = importlib.util.spec_from_file_location(f"knight_problem_{spec.id}", mod_path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return Problem(root, spec, module)


def weighted_geomean(latencies: dict[str, float], weights: dict[str, float]) -> float:
    """Score: the weighted geometric mean of per-workload latencies (lower is better)."""
    total = sum(weights[n] for n in latencies)
    if total <= 0:
        raise ValueError("workload weights sum to zero")
    return math.exp(sum(weights[n] * math.log(latencies[n]) for n in latencies) / total)


def _folder_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
