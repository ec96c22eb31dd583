"""Cost of isolation: the evaluator with worker processes vs the same pipeline in-process.

Judges the moe_decode baseline on every visible workload with 3 seeds each (the problem's spec
is copied with `seeds = [0, 1, 2]`; workers look workloads up by name and take the seed from the
request, so the copy needs no folder of its own) twice, each time with an empty MemoryCache:

- `LocalEvaluator(isolate=True)`: static checks, a pool of fresh worker processes (scrubbed
  environment, memory limit, timeouts, private answer channel), the determinism re-run in a
  brand-new process; the pool's start-up is included in the time.
- `LocalEvaluator(isolate=False)`: the same runs through `run_one` in this process.

The acceptance bar is isolated <= 3 x in-process. With several cores the pool also runs
workloads in parallel, so the ratio can be below 1. Progress goes to stderr; the last stdout
line is one JSON object with `isolated_s`, `inprocess_s` and `overhead_ratio`.

    python benchmarks/eval_speed.py [--problem moe_decode] [--seeds 3] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from knight.evaluation import LocalEvaluator, MemoryCache
from knight.problems import Problem, load_problem


def with_seeds(problem: Problem, n: int) -> Problem:
    """The same problem with seeds 0..n-1 on every visible workload (held-out ones untouched)."""
    copy = load_problem(str(problem.root))
    seeds = list(range(n))
    copy.spec = problem.spec.model_copy(
        update={
            "workloads": [w.model_copy(update={"seeds": seeds}) for w in problem.spec.workloads],
            "adversarial": [w.model_copy(update={"seeds": seeds}) for w in problem.spec.adversarial],
        }
    )
    return copy


def judge(problem: Problem, *, isolate: bool, workers: int | None) -> tuple[float, object]:
    source = problem.baseline_source()
    start = time.perf_counter()
    with LocalEvaluator(isolate=isolate, cache=MemoryCache(), workers=workers) as ev:
        report = ev.evaluate(source, problem)
    return time.perf_counter() - start, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="moe_decode")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU cores)")
    args = parser.parse_args()

    problem = with_seeds(load_problem(args.problem), args.seeds)
    runs = sum(len(w.seeds) for w in problem.all_workloads())
    workers = args.workers or os.cpu_count() or 1
    print(f"{problem.id}: {runs} runs ({len(problem.all_workloads())} workloads x {args.seeds} seeds) "
          f"+ 1 determinism re-run, {workers} workers", file=sys.stderr)

    inprocess_s, rep_in = judge(problem, isolate=False, workers=None)
    print(f"  in-process: {inprocess_s:.1f} s, status {rep_in.status}, {rep_in.simulated_runs} runs simulated",
          file=sys.stderr)
    isolated_s, rep_iso = judge(problem, isolate=True, workers=args.workers)
    print(f"  isolated:   {isolated_s:.1f} s, status {rep_iso.status}, {rep_iso.simulated_runs} runs simulated",
          file=sys.stderr)
    if not (rep_in.ok and rep_iso.ok):
        raise SystemExit(f"the baseline should be ok: {rep_in.failure} / {rep_iso.failure}")
    if rep_in.score_ns != rep_iso.score_ns:
        raise SystemExit(f"isolated and in-process scores differ: {rep_iso.score_ns} vs {rep_in.score_ns}")

    ratio = isolated_s / inprocess_s
    print(f"  overhead ratio {ratio:.2f} (bar: <= 3)", file=sys.stderr)
    print(json.dumps({
        "problem": problem.id, "runs": runs, "seeds": args.seeds, "workers": workers,
        "isolated_s": round(isolated_s, 3), "inprocess_s": round(inprocess_s, 3),
        "overhead_ratio": round(ratio, 3), "within_bar": ratio <= 3.0,
    }))


if __name__ == "__main__":
    main()
