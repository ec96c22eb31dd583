"""Trustworthy evaluation: static checks, isolated workers, bit-exact comparison, integrity.

The names below are imported on first use (PEP 562), so a worker process
(`python -m knight.evaluation.worker`) loads only the modules its role needs, not the evaluator.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from knight.evaluation.cache import FileCache, MemoryCache, RunCache
    from knight.evaluation.categories import HINTS, STAGES, Category, stage_of
    from knight.evaluation.evaluator import Evaluator, LocalEvaluator
    from knight.evaluation.report import EvalReport, Failure, RunResult, WorkloadReport
    from knight.evaluation.static_check import check_source

_WHERE = {
    "FileCache": "cache",
    "MemoryCache": "cache",
    "RunCache": "cache",
    "HINTS": "categories",
    "STAGES": "categories",
    "Category": "categories",
    "stage_of": "categories",
    "Evaluator": "evaluator",
    "LocalEvaluator": "evaluator",
    "EvalReport": "report",
    "Failure": "report",
    "RunResult": "report",
    "WorkloadReport": "report",
    "check_source": "static_check",
}

__all__ = [
    "Category",
    "EvalReport",
    "Evaluator",
    "Failure",
    "FileCache",
    "HINTS",
    "LocalEvaluator",
    "MemoryCache",
    "RunCache",
    "RunResult",
    "STAGES",
    "WorkloadReport",
    "check_source",
    "stage_of",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"knight.evaluation.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value
