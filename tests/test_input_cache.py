"""The shared input cache stays within its size bound, evicting the least recently used sets."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from knight.evaluation import inputs
from knight.problems import load_problem


@pytest.fixture
def t1():
    problem = load_problem("rmsnorm")
    return problem, next(w for w in problem.spec.workloads if w.name == "t1")


@pytest.fixture(autouse=True)
def no_memory(monkeypatch):
    """Every lookup goes to the folder, as a fresh executor's does."""
    monkeypatch.setattr(inputs, "_in_memory", OrderedDict())


def _sets(cache: Path) -> set[int]:
    return {int(m.parent.name) for m in cache.glob("*/*/*/complete")}


def _load(problem, workload, seed: int, cache: Path) -> dict[str, np.ndarray]:
    inputs._in_memory.clear()
    return inputs.cached_inputs(problem, workload, seed, cache)


def test_eviction_removes_the_least_recently_used_sets(t1, tmp_path: Path) -> None:
    problem, w = t1
    for age, seed in enumerate((0, 1, 2)):
        _load(problem, w, seed, tmp_path)
        marker = next(tmp_path.glob(f"*/*/{seed}/complete"))
        os.utime(marker, (1_000_000 + age, 1_000_000 + age))  # 0 oldest, 2 newest
    _load(problem, w, 0, tmp_path)  # using set 0 again makes it the most recent
    one = sum(f.stat().st_size for f in next(tmp_path.glob("*/*/0")).glob("*.bin"))
    deleted = inputs.evict(tmp_path, limit=2 * one)
    assert [int(d.name) for d in deleted] == [1] and _sets(tmp_path) == {0, 2}


def test_a_set_in_use_stays_readable_and_comes_back_identical(t1, tmp_path: Path) -> None:
    problem, w = t1
    mapped = _load(problem, w, 0, tmp_path)
    before = {k: np.array(v) for k, v in mapped.items()}
    inputs.evict(tmp_path, limit=0)
    assert _sets(tmp_path) == set()
    assert all(np.array_equal(mapped[k], before[k]) for k in before)  # still mapped
    again = _load(problem, w, 0, tmp_path)
    assert all(np.array_equal(again[k], before[k]) for k in before) and _sets(tmp_path) == {0}


def test_generating_a_set_enforces_the_bound_but_keeps_the_new_set(
    t1, tmp_path: Path, monkeypatch
) -> None:
    problem, w = t1
    _load(problem, w, 0, tmp_path)
    monkeypatch.setenv("KNIGHT_INPUT_CACHE_GB", "0")
    _load(problem, w, 1, tmp_path)
    assert _sets(tmp_path) == {1}


def test_isolated_executors_keep_the_bound_their_evaluator_was_given(
    tmp_path: Path, monkeypatch
) -> None:
    """Workers run with a scrubbed environment: the bound travels with each request."""
    from knight.evaluation import LocalEvaluator, MemoryCache

    problem = load_problem("rmsnorm")
    problem.spec = problem.spec.model_copy(
        update={"workloads": problem.spec.workloads[:2], "adversarial": []}
    )
    monkeypatch.setenv("KNIGHT_INPUT_CACHE_GB", "0")
    with LocalEvaluator(
        workers=1,
        cache=MemoryCache(),
        max_seeds=1,
        input_cache=tmp_path,
        reference_cache=tmp_path / "ref",
    ) as ev:
        report = ev.evaluate(problem.baseline_source(), problem)
    assert report.ok and report.simulated_runs >= 2
    # each generation evicted the sets before it (two workloads, one set left)
    assert len(list(tmp_path.glob("*/*/*/complete"))) == 1


def test_a_malformed_bound_is_one_clear_error(monkeypatch) -> None:
    from knight.errors import KnightError

    monkeypatch.setenv("KNIGHT_INPUT_CACHE_GB", "8GB")
    with pytest.raises(KnightError, match="KNIGHT_INPUT_CACHE_GB must be a number"):
        inputs.input_cache_limit()
