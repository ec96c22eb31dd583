"""Problems' floors kept on disk: listing the problems must not regenerate every input set.

A problem's floor can depend on its inputs (moe_decode's on which experts the router picked), so
computing it means generating a workload's inputs — for moe_decode, ~300 MB of weights per
workload. The result is a pure function of the harness fingerprint (problem folder, machine
preset, judge code, library versions), so it is stored once per fingerprint and reused; a missing
or damaged entry is recomputed.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from knight.evaluation.cache import default_cache_dir, write_cache_file
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
        workload = problem.workload(entry.pop("workload"))
        floor = Floor(**entry)
        figures = [floor.ns, *floor.by_resource.values()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if (
        not all(isinstance(f, float) for f in figures)
        or floor.by_resource.get(floor.bound) != floor.ns
    ):
        return None  # not what `physical_floor` writes: recompute rather than trust it
    return workload, floor


def _write(path: Path, workload: Workload, floor: Floor) -> None:
    write_cache_file(path, json.dumps({"workload": workload.name, **asdict(floor)}))
