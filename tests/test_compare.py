"""Mismatch verdicts: "partial" means a strict part of the output, and the problem's own regions
(its `describe_mismatch` keys) reach the one-line message."""

from __future__ import annotations

import numpy as np
import pytest

from knight.evaluation import Category
from knight.evaluation.compare import attribute_mismatch
from knight.evaluation.report import RunResult
from knight.npu import numerics
from knight.problems import load_problem


def _run(outputs: dict[str, np.ndarray], workload: str = "t1", seed: int = 0) -> RunResult:
    return RunResult(
        workload=workload,
        seed=seed,
        ok=True,
        outputs={k: numerics.bits(v).tobytes().hex() for k, v in outputs.items()},
        output_dtypes={k: str(v.dtype) for k, v in outputs.items()},
        output_shapes={k: list(v.shape) for k, v in outputs.items()},
    )


def _bf16(a: np.ndarray) -> np.ndarray:
    return a.astype(numerics.BF16)


def _base_row(T: int = 1, H: int = 2048) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((T, H)).astype(np.float32) + 3.0


def test_a_fully_wrong_single_token_output_is_not_partial():
    base = _base_row()
    failure = attribute_mismatch(_run({"out": _bf16(-base)}), _run({"out": _bf16(base)}))
    assert failure.category == Category.mismatch_values, failure.one_line()
    assert "confined" not in failure.message
    assert failure.details["columns_share"] == 1.0 and failure.details["rows_share"] == 1.0


def test_a_wrong_column_range_of_one_token_is_partial():
    base = _base_row()
    cand = base.copy()
    cand[:, 1024:1536] *= -1.0
    failure = attribute_mismatch(_run({"out": _bf16(cand)}), _run({"out": _bf16(base)}))
    assert failure.category == Category.mismatch_partial, failure.one_line()
    assert failure.details["column_ranges"] == [[1024, 1536]]
    assert "columns 1024:1536" in failure.message


def test_a_wrong_row_is_partial_and_scattered_columns_are_not():
    base = _base_row(T=4)
    one_row = base.copy()
    one_row[2] *= -1.0
    failure = attribute_mismatch(_run({"out": _bf16(one_row)}), _run({"out": _bf16(base)}))
    assert failure.category == Category.mismatch_partial
    assert "rows [2]" in failure.message
    scattered = base.copy()
    scattered[:, ::2] *= -1.0  # every other column of every row: wrong everywhere, not confined
    failure = attribute_mismatch(_run({"out": _bf16(scattered)}), _run({"out": _bf16(base)}))
    assert failure.category == Category.mismatch_values, failure.one_line()


def test_a_fully_unwritten_output_is_not_partial():
    base = _base_row()
    nan = np.full_like(base, np.nan)
    failure = attribute_mismatch(_run({"out": _bf16(nan)}), _run({"out": _bf16(base)}))
    assert failure.category == Category.mismatch_values
    assert "never written" in failure.message
    half = base.copy()
    half[:, :1024] = np.nan
    failure = attribute_mismatch(_run({"out": _bf16(half)}), _run({"out": _bf16(base)}))
    assert failure.category == Category.mismatch_partial


@pytest.mark.parametrize("problem_id", ["rmsnorm", "moe_router", "moe_decode"])
def test_every_region_key_of_the_problem_reaches_the_message(problem_id):
    problem = load_problem(problem_id)
    hook = problem._module.describe_mismatch
    workload = problem.spec.workloads[0]
    inputs = problem.make_inputs(workload, 0)
    name, (shape, dtype) = next(iter(problem.output_specs(workload).items()))
    rng = np.random.default_rng(1)
    base = (rng.standard_normal(shape) + 3.0).astype(np.float32)
    cand = base.copy()
    cand.reshape(shape[0], -1)[-1, -1] *= -1.0  # one wrong element, in the last row and column
    as_dtype = (lambda a: a.astype(dtype)) if dtype != np.float32 else (lambda a: a)
    base_run, cand_run = _run({name: as_dtype(base)}), _run({name: as_dtype(cand)})
    failure = attribute_mismatch(
        cand_run, base_run, lambda n, diff: hook(n, diff, inputs, dict(workload.params))
    )
    keys = failure.details["region_keys"]
    assert keys, f"{problem_id}: describe_mismatch gave no regions"
    for key in keys:
        assert f"{key} " in failure.message, (key, failure.one_line())
