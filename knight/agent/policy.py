"""The acceptance policy: when a correct candidate becomes the new champion."""

from __future__ import annotations

from dataclasses import dataclass

from knight.evaluation import EvalReport


@dataclass(frozen=True)
class Verdict:
    """What happens to a candidate: accepted, or rejected/failed with a category."""

    status: str  # accepted / rejected / failed
    category: str | None
    message: str


def judge(report: EvalReport, champion_score_ns: float, min_gain: float) -> Verdict:
    """Failed evaluations fail; correct ones are accepted only with a gain of at least `min_gain`.

    Held-out workloads are checked afterwards, only for candidates this accepts (they cost time).
    """
    if not report.ok:
        f = report.failure
        return Verdict("failed", f.category.value if f else "kernel_exception", f.one_line() if f else "failed")
    assert report.score_ns is not None
    gain = champion_score_ns / report.score_ns
    if gain < 1.0:
        return Verdict("rejected", "regression", f"{report.score_ns / 1000:.2f} us is {1 / gain:.3f}x slower than the champion")
    if gain < min_gain:
        return Verdict("rejected", "no_gain", f"speed-up {gain:.3f}x is below the {min_gain:.3f}x acceptance threshold")
    return Verdict("accepted", None, f"speed-up {gain:.3f}x over the champion")
