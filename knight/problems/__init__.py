"""Problems: kernel contracts, workloads, input generation, references and scoring."""

from knight.problems.kernel import load_kernel
from knight.problems.registry import (
    DEFAULT_PROBLEM,
    baselines_dirs,
    list_problems,
    load_problem,
    problem_for_kernel,
)
from knight.problems.spec import Problem, ProblemSpec, TensorSpec, Workload, weighted_geomean

__all__ = [
    "DEFAULT_PROBLEM",
    "Problem",
    "ProblemSpec",
    "TensorSpec",
    "Workload",
    "baselines_dirs",
    "list_problems",
    "problem_for_kernel",
    "load_kernel",
    "load_problem",
    "weighted_geomean",
]
