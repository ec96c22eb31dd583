"""Mutants of a baseline kernel: small, plausible edits that change its rounding or ordering.

The judge is tested by mutation (DESIGN.md, Correctness contract): each mutant is what an
optimizer might write -- a K-tiled reduction, a sum moved to TensorE, a rounding point moved --
and every one must be rejected by the problem's workloads. A mutant is stored as data
(`<name>.toml`: a summary, why it is wrong, search/replace edits), so it is re-applied to the
current baseline and follows API changes of the kernel language.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from knight.errors import KnightError
from knight.problems.spec import Problem, Workload, load_problem_dir

if TYPE_CHECKING:
    from knight.evaluation.evaluator import LocalEvaluator


class MutantError(KnightError):
    """A mutant no longer applies to the baseline (an edit's text is missing or ambiguous)."""


class Edit(BaseModel):
    """Replace `old` (which must occur exactly `count` times) by `new`."""

    model_config = ConfigDict(extra="forbid")
    old: str = Field(min_length=1)
    new: str
    count: int = Field(default=1, ge=1)


class Mutant(BaseModel):
    """One reordered variant of a baseline: what changed, why it is wrong, and the edits."""

    model_config = ConfigDict(extra="forbid")
    name: str
    problem: str
    summary: str
    why: str
    edits: list[Edit] = Field(min_length=1)

    def apply(self, source: str) -> str:
        """The baseline `source` with every edit applied in order."""
        for i, edit in enumerate(self.edits):
            found = source.count(edit.old)
            if found != edit.count:
                raise MutantError(
                    f"mutant {self.problem}/{self.name}: edit {i + 1} expects its text "
                    f"{edit.count} time(s) in the baseline, found {found}: {edit.old.strip()[:60]!r}"
                )
            source = source.replace(edit.old, edit.new)
        return source


def load_mutant(path: Path) -> Mutant:
    """Parse one `<name>.toml` mutant file (its folder names the problem)."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    return Mutant.model_validate({"name": path.stem, "problem": path.parent.name, **data})


def load_mutants(root: Path, problem: str) -> list[Mutant]:
    """Every mutant of `problem` under `root` (`root/<problem>/*.toml`), sorted by name."""
    return [load_mutant(p) for p in sorted((root / problem).glob("*.toml"))]


@dataclass(frozen=True)
class MutantVerdict:
    """How the judge treated one mutant: the first workload that rejected it (None: it survived)."""

    mutant: str
    killed_by: str | None
    category: str | None
    latency_ratio: float | None  # mutant / baseline latency on the workload that rejected it

    @property
    def killed(self) -> bool:
        return self.killed_by is not None


def judge_mutant(evaluator: LocalEvaluator, problem: Problem, mutant: Mutant) -> MutantVerdict:
    """Evaluate `mutant` workload by workload -- the order-revealing (adversarial) ones first,
    then the visible and held-out ones -- stopping at the first rejection. A rejection on any of
    them is a rejection by one evaluation with held-out workloads; this order is cheaper."""
    source = mutant.apply(problem.baseline_source())
    ratio = None
    spec = problem.spec
    for workload in spec.adversarial + spec.workloads + spec.heldout:
        one = _only_workload(problem, workload)
        report = evaluator.evaluate(source, one, profile=False)
        w = report.workloads[0] if report.workloads else None
        if ratio is None and w is not None and w.latency_ns and w.baseline_latency_ns:
            ratio = round(w.latency_ns / w.baseline_latency_ns, 4)
        if report.failure is not None:
            return MutantVerdict(mutant.name, workload.name, report.failure.category.value, ratio)
    return MutantVerdict(mutant.name, None, None, ratio)


def latency_ratio(evaluator: LocalEvaluator, problem: Problem, mutant: Mutant) -> float | None:
    """Mutant / baseline simulated latency on the problem's first visible workload (the case an
    optimizer tunes for), whatever the verdict; None if the mutant does not run."""
    one = _only_workload(problem, problem.spec.workloads[0])
    report = evaluator.evaluate(mutant.apply(problem.baseline_source()), one, profile=False)
    w = report.workloads[0] if report.workloads else None
    if w is None or not w.latency_ns or not w.baseline_latency_ns:
        return None
    return round(w.latency_ns / w.baseline_latency_ns, 4)


def order_kill_fraction(
    evaluator: LocalEvaluator, problem: Problem, mutant: Mutant, seeds: list[int]
) -> float:
    """Share of `seeds` of the problem's first order-revealing (adversarial) workload on which
    the mutant is rejected: how robustly the family reveals it, beyond the judged seeds."""
    workload = problem.spec.adversarial[0]
    source = mutant.apply(problem.baseline_source())
    killed = 0
    for seed in seeds:
        one = _only_workload(problem, workload.model_copy(update={"seeds": [seed]}))
        killed += evaluator.evaluate(source, one, profile=False).failure is not None
    return round(killed / len(seeds), 4)


def _only_workload(problem: Problem, workload: Workload) -> Problem:
    """A copy of `problem` whose only (visible) workload is `workload`."""
    copy = load_problem_dir(problem.root)
    one = workload.model_copy(update={"weight": 1.0})
    copy.spec = problem.spec.model_copy(
        update={"workloads": [one], "adversarial": [], "heldout": []}
    )
    return copy
