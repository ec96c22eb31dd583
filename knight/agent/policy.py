"""The acceptance policy: when a correct candidate becomes the new champion."""

from __future__ import annotations

from dataclasses import dataclass

from knight.evaluation import EvalReport
from knight.failure import Category, Failure, IterationStatus


@dataclass(frozen=True)
class Verdict:
    """What happens to a candidate: accepted, or rejected/failed with the `Failure` that says why."""

    status: IterationStatus
    failure: Failure | None = None


def judge(report: EvalReport, champion_score_ns: float, min_gain: float) -> Verdict:
    """Failed evaluations fail; correct ones are accepted only with a gain of at least `min_gain`.

    Held-out workloads are checked afterwards, only for candidates this accepts (they cost time).
    """
    if not report.ok:
        failure = report.failure or Failure(
            category=Category.kernel_exception, message="the evaluation failed without a reason"
        )
        return Verdict(IterationStatus.failed, failure)
    assert report.score_ns is not None
    gain = champion_score_ns / report.score_ns
    if gain < 1.0:
        message = f"{report.score_ns / 1000:.2f} us is {1 / gain:.3f}x slower than the champion"
        return Verdict(
            IterationStatus.rejected, Failure(category=Category.regression, message=message)
        )
    if gain < min_gain:
        message = f"speed-up {gain:.3f}x is below the {min_gain:.3f}x acceptance threshold"
        return Verdict(
            IterationStatus.rejected, Failure(category=Category.no_gain, message=message)
        )
    return Verdict(IterationStatus.accepted)
