"""Problems' floors kept on disk: listing the problems must not regenerate every input set.

A problem's floor can depend on its inputs (moe_decode's on which experts the router picked), so
computing it means generating a workload's inputs — for moe_decode, ~300 MB of weights per
workload. The result is a pure function of the harness fingerprint (problem folder, machine
preset, judge code, library versions), so it is stored once per fingerprint and reused; a missing
or damaged entry is recomputed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from knight.evaluation.cache import default_cache_dir
from knight.evaluation.fingerprint import harness_fingerprint
from knight.npu.machine import MachineSpec
from knight.npu.roofline import Floor
from knight.problems import Problem
from knight.problems.spec import Workload


def default_floor_dir() -> Path:
    """Beside the run cache: `<cache>/floors`."""
    return default_cache_dir() / "floors"


def heaviest_floor(
    problem: Problem, machine: MachineSpec, root: Path | None = None
) -> tuple[Workload, Floor]:
    """`problem.heaviest_floor(machine)`, computed at most once per harness fingerprint."""
    path = (root or default_floor_dir()) / f"{harness_fingerprint(problem, machine)}.json"
    stored = _read(path, problem)
    if stored is not None:
        return stored
    workload, floor = problem.heaviest_floor(machine)
    _write(path, workload, floor)
    return workload, floor


def _read(path: Path, problem: Problem) -> tuple[Workload, Floor] | None:
    try:
        entry = json.loads(path.read_text())
        workload = problem.workload(entry["workload"])
        by_resource = {str(k): float(v) for k, v in entry["by_resource"].items()}
        floor = Floor(ns=float(entry["ns"]), bound=str(entry["bound"]), by_resource=by_resource)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if floor.bound not in by_resource or by_resource[floor.bound] != floor.ns:
        return None  # not what `physical_floor` writes: recompute rather than trust it
    return workload, floor


def _write(path: Path, workload: Workload, floor: Floor) -> None:
    entry = {
        "workload": workload.name,
        "ns": floor.ns,
        "bound": floor.bound,
        "by_resource": floor.by_resource,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    except OSError:
        return  # a read-only cache only costs time
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f)
        os.replace(tmp, path)  # racing writers store the same floor; a reader sees one, whole
    except OSError:
        Path(tmp).unlink(missing_ok=True)
