"""The one failure model: a closed taxonomy every layer shares, including the simulator's errors."""

from __future__ import annotations

import inspect

import pytest

import knight.evaluation.categories as evaluation_categories
import knight.npu.errors as npu_errors
from knight.evaluation import Failure as EvaluationFailure
from knight.failure import FIXABLE, HINTS, STAGES, Category, Failure, Stage, stage_of


def test_every_category_has_exactly_one_stage() -> None:
    listed = [category for categories in STAGES.values() for category in categories]
    assert sorted(listed) == sorted(Category) and len(listed) == len(set(listed))
    assert set(STAGES) == set(Stage)


def test_every_category_a_kernel_or_patch_can_cause_names_a_skill() -> None:
    without = {c for c in Category if c not in HINTS}
    assert without == set(STAGES[Stage.proposal])  # proposer trouble is not the kernel's


def test_the_simulators_error_classes_are_the_trace_stage() -> None:
    """knight/npu imports nothing else from Knight, so its error classes state the trace-stage
    categories and the taxonomy is built from them: one list, no copy to keep in sync."""
    classes = [
        cls
        for _, cls in inspect.getmembers(npu_errors, inspect.isclass)
        if issubclass(cls, npu_errors.NpuError)
    ]
    assert len(classes) >= 7
    assert {cls.category for cls in classes} == set(STAGES[Stage.trace])
    for cls in classes:
        assert stage_of(cls.category) is Stage.trace, cls.__name__
    assert Category.race in STAGES[Stage.trace]  # cross-core HBM races are found while tracing
    assert Category.syntax_error not in STAGES[Stage.trace]  # the loader's subclass is static


def test_the_evaluation_layer_reexports_the_same_objects() -> None:
    assert evaluation_categories.Category is Category and evaluation_categories.HINTS is HINTS
    assert EvaluationFailure is Failure


def test_a_failure_derives_its_stage_and_hint_and_round_trips() -> None:
    failure = Failure(category="resource_overflow", message="SBUF full", file="kernel.py", line=9)
    assert failure.stage is Stage.trace and failure.hint == "sbuf-psum-budget"
    assert failure.one_line() == "resource_overflow at kernel.py:9: SBUF full"
    assert Failure.model_validate(failure.model_dump(mode="json")) == failure
    assert failure.fixable and not Failure(category="no_gain", message="").fixable
    assert "Hint: read skill sbuf-psum-budget" in failure.for_proposer()


def test_unknown_categories_are_refused() -> None:
    with pytest.raises(ValueError):
        Failure(category="mystery", message="?")
    assert Category.duplicate_candidate not in FIXABLE and Category.patch_no_match in FIXABLE
