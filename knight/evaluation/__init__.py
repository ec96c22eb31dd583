"""Trustworthy evaluation: static checks, isolated workers, bit-exact comparison, integrity."""

from knight.evaluation.cache import FileCache, MemoryCache, RunCache
from knight.evaluation.categories import HINTS, STAGES, Category, stage_of
from knight.evaluation.evaluator import Evaluator, LocalEvaluator
from knight.evaluation.report import EvalReport, Failure, RunResult, WorkloadReport
from knight.evaluation.static_check import check_source

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
