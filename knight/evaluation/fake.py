"""`FakeEvaluator`: scripted `EvalReport`s, so the agent loop can be tested in milliseconds.

It implements the `Evaluator` protocol without simulating anything: the first rule whose marker
occurs in the candidate source decides the outcome (a score, or a failure), and any source
without a matching rule scores like the baseline. Never use it to judge a real kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from knight.evaluation.report import EvalReport
from knight.failure import Category, Failure
from knight.problems import Problem
from knight.source import source_hash

FAKE_HARNESS = "fake-harness"


@dataclass(frozen=True)
class FakeOutcome:
    """What the fake reports for sources containing a marker."""

    score_ns: float | None = None  # None with `failure` set
    failure: Category | None = None
    heldout_failure: bool = False  # passes the visible workloads, fails a held-out one


@dataclass
class FakeEvaluator:
    """An `Evaluator` whose verdicts are looked up from `rules` (marker substring -> outcome)."""

    baseline_ns: float
    rules: dict[str, FakeOutcome] = field(default_factory=dict)
    on_evaluate: Callable[[str, bool], None] | None = None  # a test's hook (advance a clock...)
    calls: list[tuple[str, bool]] = field(default_factory=list)  # (source hash, heldout)

    def evaluate(self, source: str, problem: Problem, *, heldout: bool = False) -> EvalReport:
        """The scripted verdict on `source` (held-out workloads included with `heldout`)."""
        digest = source_hash(source)
        self.calls.append((digest, heldout))
        if self.on_evaluate is not None:
            self.on_evaluate(source, heldout)
        outcome = next(
            (rule for marker, rule in self.rules.items() if marker in source),
            FakeOutcome(score_ns=self.baseline_ns),
        )
        failure = None
        if outcome.failure is not None:
            failure = Failure(category=outcome.failure, message=f"scripted {outcome.failure.value}")
        elif heldout and outcome.heldout_failure:
            failure = Failure(
                category=Category.mismatch_values,
                message="scripted held-out mismatch",
                workload="heldout",
            )
        return EvalReport(
            candidate_hash=digest,
            problem=problem.id,
            harness=FAKE_HARNESS,
            machine=problem.spec.machine,
            status="failed" if failure else "ok",
            score_ns=None if failure else outcome.score_ns,
            baseline_score_ns=self.baseline_ns,
            failure=failure,
        )

    def close(self) -> None:
        """Nothing to release."""
