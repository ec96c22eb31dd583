"""The judge is tested by mutation: every mutant in tests/judge_mutants/<problem>/ -- a subtly
reordered variant of the baseline an optimizer might write -- applies to the current baseline,
is a valid kernel, and is rejected for its bits by the problem's workloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from knight.evaluation import check_source
from knight.evaluation.mutation import Edit, Mutant, MutantError, judge_mutant, load_mutants
from knight.problems import load_problem

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "tests" / "judge_mutants"
# Every problem with a mutant folder; the three original problems carry at least ten mutants,
# the suite's newer problems at least three.
PROBLEMS = tuple(sorted(d.name for d in MUTANTS.iterdir() if d.is_dir()))
MIN_MUTANTS = {"rmsnorm": 10, "moe_router": 10, "moe_decode": 10}
SLOW = {"moe_decode", "gemm_prefill"}  # problems whose mutants take more than seconds to judge
# Shares the session's in-process judge (and so its baseline runs) with the other "judge" modules.
pytestmark = pytest.mark.xdist_group("judge")
# A mutant is a plausible kernel: it must be rejected because its output bits differ.
BIT_VERDICTS = {"mismatch_rounding", "mismatch_values", "mismatch_partial"}


def _cases() -> list:
    cases = []
    for pid in PROBLEMS:
        marks = [pytest.mark.slow] if pid in SLOW else []
        cases += [
            pytest.param(pid, m.name, id=f"{pid}/{m.name}", marks=marks)
            for m in load_mutants(MUTANTS, pid)
        ]
    return cases


@pytest.fixture(scope="module")
def evaluator(shared_judge):
    return shared_judge


@pytest.mark.parametrize("problem_id", PROBLEMS)
def test_every_problem_has_documented_mutants_that_apply(problem_id):
    problem = load_problem(problem_id)
    mutants = load_mutants(MUTANTS, problem_id)
    assert len(mutants) >= MIN_MUTANTS.get(problem_id, 3)
    baseline = problem.baseline_source()
    sources = {baseline}
    for m in mutants:
        assert len(m.summary) > 20 and len(m.why) > 80, (
            f"{m.name}: say what changed and why it is wrong"
        )
        source = m.apply(baseline)
        assert check_source(source) == [], f"{m.name}: a mutant must pass the static check"
        sources.add(source)
    assert len(sources) == len(mutants) + 1, "every mutant changes the baseline, and differently"


def test_an_edit_that_no_longer_applies_is_a_clear_error():
    m = Mutant(
        name="gone",
        problem="rmsnorm",
        summary="s",
        why="w",
        edits=[Edit(old="no such line", new="x")],
    )
    with pytest.raises(MutantError, match="rmsnorm/gone: edit 1 expects its text 1 time"):
        m.apply(load_problem("rmsnorm").baseline_source())


@pytest.mark.parametrize(("problem_id", "name"), _cases())
def test_mutant_is_rejected(evaluator, problem_id, name):
    problem = load_problem(problem_id)
    mutant = next(m for m in load_mutants(MUTANTS, problem_id) if m.name == name)
    verdict = judge_mutant(evaluator, problem, mutant)
    assert verdict.killed, f"{problem_id}/{name} survived every workload: strengthen the inputs"
    assert verdict.category in BIT_VERDICTS, (
        f"{problem_id}/{name}: rejected as {verdict.category}, not for its bits"
    )
