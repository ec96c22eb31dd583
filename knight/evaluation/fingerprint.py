"""The harness fingerprint: exactly what judged a candidate (code, machine, problem, libraries)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import ml_dtypes
import numpy as np

import knight
from knight.npu.machine import MachineSpec
from knight.problems import Problem

_JUDGE_PACKAGES = ("npu", "evaluation", "problems")


@lru_cache(maxsize=1)
def judge_code_hash() -> str:
    """Digest of the simulator, evaluator and problem-loader source files."""
    root = Path(knight.__file__).parent
    h = hashlib.sha256()
    for pkg in _JUDGE_PACKAGES:
        for path in sorted((root / pkg).rglob("*")):
            if path.suffix in (".py", ".toml") and path.is_file():
                h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def versions() -> dict[str, str]:
    return {
        "knight": knight.__version__,
        "numpy": np.__version__,
        "ml_dtypes": ml_dtypes.__version__,
    }


def harness_fingerprint(problem: Problem, machine: MachineSpec) -> str:
    """One short id for (Knight version, judge code, library versions, machine preset, problem)."""
    parts = [
        *versions().values(),
        judge_code_hash(),
        machine.name,
        machine.hash,
        problem.id,
        problem.hash,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
