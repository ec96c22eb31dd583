"""Loop overhead per iteration as a run grows: the store and the context must not be quadratic.

Runs the real `Runner` on rmsnorm with a `FakeEvaluator` (no simulation: what is left is the
loop's own work: building the proposer's context, applying the patch, recording the iteration in
a SQLite file) and a proposer that makes a new candidate every iteration (one more comment line
on the baseline, plus a knob move, so knob statistics have work to do). Per-iteration wall time of
the first and the last `--window` iterations is compared: a loop that re-reads and re-parses its
history every iteration slows down linearly with the run's length; this one should not.

The acceptance bar is last-window / first-window <= 1.5. Progress goes to stderr; the last stdout
line is one JSON object.

    python benchmarks/loop_overhead.py [--iterations 400] [--window 50]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from knight.agent.config import RunConfig
from knight.agent.loop import Runner
from knight.evaluation.fake import FakeEvaluator
from knight.failure import Category
from knight.problems import load_problem
from knight.proposal import Edit, Proposal
from knight.proposers import ProposalContext, ProposalResult
from knight.store import IterationSummary, open_store


class GrowingProposer:
    """Iteration n: the champion plus comment line n, and a tile width that cycles."""

    name = "benchmark"

    def propose(self, ctx: ProposalContext) -> ProposalResult:
        width = (256, 1024, 2048)[ctx.iteration % 3]
        edit = Edit(
            file="kernel.py", search="TUNABLES = {", replace=f"# v{ctx.iteration}\nTUNABLES = {{"
        )
        proposal = Proposal(
            hypothesis=f"variant {ctx.iteration}", edits=[edit], knobs={"COLS_PER_TILE": width}
        )
        return ProposalResult(proposal)

    def fix(self, ctx: ProposalContext, failure: object) -> None:
        return None


class Timer:
    """Records when each iteration finished."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def iteration_started(self, number: int, budget: int) -> None:
        pass

    def iteration_finished(self, outcome: IterationSummary, best_speedup: float) -> None:
        self.stamps.append(time.perf_counter())
        if outcome.category in (Category.patch_no_match, Category.malformed_proposal):
            raise SystemExit(f"iteration {outcome.number}: the benchmark's patch did not apply")

    def message(self, text: str) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--window", type=int, default=50)
    args = parser.parse_args()
    if args.iterations <= 2 * args.window:
        raise SystemExit("--iterations must be more than twice --window")
    problem = load_problem("rmsnorm")
    evaluator = FakeEvaluator(baseline_ns=100.0)  # every candidate scores like the baseline
    timer = Timer()
    with tempfile.TemporaryDirectory() as tmp:
        with open_store(str(Path(tmp) / "bench.db"), "write", create=True) as store:
            runner = Runner(store, problem, evaluator, GrowingProposer(), events=timer)
            summary = runner.start(RunConfig(budget=args.iterations))
    # Between consecutive iterations' ends: the baseline's evaluation and the run's start are out.
    stamps = timer.stamps
    steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    first = sum(steps[: args.window]) / args.window
    last = sum(steps[-args.window :]) / args.window
    ratio = last / first
    print(
        f"{summary.iterations} iterations: first {args.window} {1000 * first:.2f} ms each, "
        f"last {args.window} {1000 * last:.2f} ms each (ratio {ratio:.2f}, bar <= 1.5)",
        file=sys.stderr,
    )
    print(
        json.dumps(
            {
                "iterations": summary.iterations,
                "window": args.window,
                "first_ms_per_iteration": round(1000 * first, 3),
                "last_ms_per_iteration": round(1000 * last, 3),
                "ratio": round(ratio, 3),
                "within_bar": ratio <= 1.5,
            }
        )
    )


if __name__ == "__main__":
    main()
