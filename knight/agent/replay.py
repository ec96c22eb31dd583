"""Replay: rebuild a kernel of a run from the baseline and prove every step of its lineage again.

The lineage of a kernel is the chain of accepted iterations from the baseline to it, each the
parent of the next (a linear run's accepted iterations; one branch of a beam search's tree).
Starting from the baseline source, each step's recorded edits are re-applied in order; every
intermediate hash must equal the recorded one, and every candidate is evaluated
afresh (no cache). Under the recorded harness the scores must match exactly; under another
(a new simulator version, another machine preset) old and new figures are shown side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from knight.errors import KnightError
from knight.evaluation import Evaluator
from knight.patch import PatchError, apply_edits
from knight.problems import Problem
from knight.source import canonical_source, source_hash
from knight.store import RunStore


@dataclass
class ReplayStep:
    """One accepted iteration, re-applied and re-judged."""

    iteration: int
    hypothesis: str
    recorded_hash: str
    replayed_hash: str | None
    hash_match: bool
    recorded_score_ns: float | None
    replayed_score_ns: float | None
    score_match: bool
    ok: bool
    harness_recorded: str | None
    harness_now: str | None
    message: str = ""


@dataclass
class ReplayResult:
    run_id: int
    problem: str
    machine: str
    steps: list[ReplayStep] = field(default_factory=list)
    same_harness: bool = True
    final_source: str = ""
    final_hash: str = ""

    @property
    def all_match(self) -> bool:
        return all(
            s.ok and s.hash_match and (s.score_match or not self.same_harness) for s in self.steps
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "problem": self.problem,
            "machine": self.machine,
            "same_harness": self.same_harness,
            "all_match": self.all_match,
            "final_hash": self.final_hash,
            "steps": [s.__dict__ for s in self.steps],
        }


def replay(
    store: RunStore,
    problem: Problem,
    evaluator: Evaluator,
    run_id: int,
    to: int | None = None,
    machine: str | None = None,
    iteration: int | None = None,
) -> ReplayResult:
    """Re-apply and re-evaluate the lineage of accepted iteration `iteration`'s kernel (default:
    the best kernel accepted up to iteration `to`, or the run's champion)."""
    run = store.run(run_id)
    if run.problem_id != problem.id:
        raise KnightError(f"run {run_id} optimised {run.problem_id}, not {problem.id}")
    if iteration is None and to is not None:
        upto = [it for it in store.accepted_chain(run_id) if it.number <= to and it.score_ns]
        best = min(upto, key=lambda it: (it.score_ns, it.number), default=None)
        chain = store.lineage(run_id, best.number) if best is not None else []
    else:
        chain = store.lineage(run_id, iteration)
    baseline_hash = run.baseline_hash
    result = ReplayResult(run_id, problem.id, machine or run.machine)
    source = canonical_source(problem.baseline_source())
    if source_hash(source) != baseline_hash:
        raise KnightError(
            f"the baseline of {problem.id} changed since run {run_id} (hash {source_hash(source)[:12]} "
            f"vs recorded {baseline_hash[:12]}); replay needs the original baseline"
        )
    kernel = problem.spec.kernel_file
    for it in chain:
        number, parent, recorded, harness = it.number, it.parent_hash, it.candidate_hash, it.harness
        assert recorded is not None, "an accepted iteration always has a candidate"
        step = ReplayStep(
            number,
            it.hypothesis,
            recorded,
            None,
            False,
            it.score_ns,
            None,
            False,
            False,
            harness,
            None,
        )
        result.steps.append(step)
        if source_hash(source) != parent:
            step.message = f"the chain is broken: iteration {number}'s parent {parent[:12]} is not the replayed kernel"
            break
        try:
            applied = apply_edits({kernel: source}, it.edits, [kernel])
        except PatchError as e:
            step.message = f"the recorded edits no longer apply: {e.message}"
            break
        source = canonical_source(applied.files[kernel])
        step.replayed_hash = source_hash(source)
        step.hash_match = step.replayed_hash == recorded
        report = evaluator.evaluate(source, problem)
        step.ok = report.ok
        step.harness_now = report.harness
        step.replayed_score_ns = report.score_ns
        step.score_match = report.score_ns == it.score_ns
        if harness != report.harness:
            result.same_harness = False
        if not report.ok:
            step.message = report.failure.one_line() if report.failure else "evaluation failed"
            break
    result.final_source, result.final_hash = source, source_hash(source)
    return result
