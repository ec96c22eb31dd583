"""Fuzzing the judge: whatever a (mutated) kernel does, `evaluate` returns a typed EvalReport.

Mutations of the rmsnorm baseline -- delete, duplicate or swap lines, change numeric constants,
change slice bounds -- make kernels that fail at every stage (syntax, static, trace, numerics,
integrity) or still pass. The evaluator must never raise, never hang, and a failure always has
a category of the closed taxonomy with its stage and hint. None of these mutations can loop
forever (the baseline has no `while`; ranges are bounded by the constants drawn here).
"""

from __future__ import annotations

import re
import signal
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from knight.evaluation import HINTS, Category, EvalReport, stage_of
from knight.problems import load_problem

PROBLEM = load_problem("rmsnorm")
BASELINE = PROBLEM.baseline_source()
LINES = BASELINE.splitlines()
CODE = (
    next(i for i, line in enumerate(LINES) if i > 0 and line.endswith('"""')) + 1
)  # below the docstring
NUMBER = re.compile(r"(?<![\w.])(\d+\.\d*(?:e-?\d+)?|\d+e-?\d+|\d+)(?![\w.])")
SLICE = re.compile(r"\[(\s*):")
CONSTANTS = [
    "0",
    "1",
    "-1",
    "2",
    "3",
    "7",
    "31",
    "64",
    "127",
    "128",
    "129",
    "256",
    "511",
    "1000",
    "2047",
    "2049",
    "4096",
    "0.5",
    "1e-30",
    "1e30",
    "1e400",
    "-0.0",
]
BOUNDS = ["0", "1", "2", "3", "4", "16", "-1", "64", "128", "200"]
# Mutants compute on garbage (rsqrt of negatives, inf * 0): NumPy's warnings about that are noise.
# Shares the session's in-process judge (and so its baseline runs) with the other "judge" modules.
pytestmark = [
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.xdist_group("judge"),
]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def wall_clock_limit(seconds: int):
    """In-process evaluations have no worker timeout: fail loudly instead of hanging the suite."""

    def expire(*_):
        raise AssertionError(f"evaluate() did not return within {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def evaluator(shared_judge):
    return shared_judge


@st.composite
def mutated_sources(draw) -> str:
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "constant", "slice"]))
        i = draw(st.integers(CODE, len(lines) - 1))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(CODE, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            pattern = NUMBER if op == "constant" else SLICE
            spots = [
                (n, m) for n, line in enumerate(lines[CODE:], CODE) for m in pattern.finditer(line)
            ]
            if not spots:
                continue
            n, m = draw(st.sampled_from(spots))
            if op == "constant":
                new = draw(st.sampled_from(CONSTANTS))
            else:  # `[:` becomes `[lo:hi` (possibly empty, reversed or out of bounds)
                new = "[" + draw(st.sampled_from(BOUNDS)) + ":" + draw(st.sampled_from(BOUNDS))
            lines[n] = lines[n][: m.start()] + new + lines[n][m.end() :]
    return "\n".join(lines) + "\n"


def _check(report: EvalReport) -> None:
    assert isinstance(report, EvalReport)
    assert report.status in ("ok", "failed")
    if report.status == "ok":
        assert report.failure is None and report.score_ns and report.score_ns > 0
        assert all(w.correct for w in report.workloads)
        return
    f = report.failure
    assert f is not None and isinstance(f.category, Category)
    assert f.stage == stage_of(f.category) and f.hint == HINTS[f.category]
    assert stage_of(f.category) not in ("proposal", "patch", "performance"), (
        "the evaluator judges kernels only"
    )
    if f.stage in ("static", "trace", "run"):
        assert report.score_ns is None


@SETTINGS
@given(source=mutated_sources())
def test_mutated_baseline_always_gets_a_typed_verdict(evaluator, source):
    with wall_clock_limit(60):
        report = evaluator.evaluate(source, PROBLEM)
    _check(report)


@SETTINGS
@given(cut=st.integers(0, len(BASELINE)), junk=st.text(max_size=20))
def test_truncated_or_garbled_source_gets_a_typed_verdict(evaluator, cut, junk):
    with wall_clock_limit(60):
        report = evaluator.evaluate(BASELINE[:cut] + junk, PROBLEM)
    _check(report)


def test_the_mutations_reach_every_kind_of_verdict(evaluator):
    """A few hand-picked mutants: the fuzzer's operators do reach syntax, static, trace and
    correctness failures (and a harmless swap stays ok)."""
    at = {line: i for i, line in enumerate(LINES)}
    sq = at['    sq = nl.ndarray((T, H), dtype=nl.float32, name="x_squared")']

    def swapped(i: int, j: int) -> str:
        lines = list(LINES)
        lines[i], lines[j] = lines[j], lines[i]
        return "\n".join(lines) + "\n"

    def moved(i: int, to: int) -> str:
        lines = list(LINES)
        lines.insert(to, lines.pop(i))
        return "\n".join(lines) + "\n"

    cases = {
        "syntax_error": BASELINE.replace(
            "def rmsnorm(x, gamma, out):", "def rmsnorm(x, gamma, out)"
        ),
        "forbidden_construct": BASELINE.replace("H = 2048  # hidden size", "H = len([0] * 2048)"),
        "resource_overflow": BASELINE.replace("H = 2048  # hidden size", "H = 2048 * 1000"),
        "illegal_access": BASELINE.replace(
            "nisa.dma_copy(dst=xt, src=x, ", "nisa.dma_copy(dst=xt, src=x[2:3], "
        ),
        "uninitialized_read": moved(sq + 1, sq + 3),  # the row sum before the squares exist
        "mismatch_rounding": BASELINE.replace("EPS = 1e-6", "EPS = 1e-5"),
        "ok": swapped(
            at['LOAD_ENGINE = "sync"  # engine that triggers the DMAs (loads and stores)'],
            at['SCALE_ENGINE = "vector"  # engine that multiplies x by rstd'],
        ),
    }
    seen = {}
    for want, source in cases.items():
        assert source != BASELINE
        report = evaluator.evaluate(source, PROBLEM)
        _check(report)
        seen[want] = report.failure.category.value if report.failure else "ok"
    assert seen["syntax_error"] == "syntax_error"
    assert seen["forbidden_construct"] == "forbidden_construct"
    assert seen["resource_overflow"] == "resource_overflow"
    assert seen["illegal_access"] in ("illegal_access", "shape_error")
    assert seen["uninitialized_read"] == "uninitialized_read"
    assert seen["mismatch_rounding"] == "mismatch_rounding"
    assert seen["ok"] == "ok"
