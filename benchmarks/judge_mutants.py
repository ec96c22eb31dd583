"""Kill rate of the judge: every mutant in tests/judge_mutants/ must be rejected.

Each mutant (a subtly reordered variant of a problem's baseline: K-tile order, a sum moved to
TensorE, a rounding point moved, ...) is applied to the current baseline and evaluated on the
problem's order-revealing (adversarial), visible and held-out workloads until one rejects it.
Human lines go to stderr; the last stdout line is JSON: the kill rate per problem, the
survivors, and per mutant the workload that killed it and its simulated latency relative to the
baseline on the problem's first visible workload (a mutant is meant to be faster or equal).

    python benchmarks/judge_mutants.py [PROBLEM ...] [--workers N] [--seeds N]

With --seeds N each mutant is also evaluated on N fresh seeds of its problem's order family
(`order_kill_share`): the families reveal the reordering, not one lucky seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from knight.evaluation import LocalEvaluator, MemoryCache
from knight.evaluation.mutation import (
    judge_mutant,
    latency_ratio,
    load_mutants,
    order_kill_fraction,
)
from knight.problems import load_problem

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "tests" / "judge_mutants"
PROBLEMS = tuple(
    sorted(d.name for d in MUTANTS.iterdir() if d.is_dir())
)  # every problem with mutants


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problems", nargs="*", default=list(PROBLEMS))
    parser.add_argument("--workers", type=int, default=2, help="worker processes (0: in-process)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=0,
        help="also report each mutant's kill share over this many fresh seeds of the order family",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    kill_rate: dict[str, float] = {}
    survivors: dict[str, list[str]] = {}
    mutants: dict[str, dict] = {}
    isolate = args.workers > 0
    with LocalEvaluator(isolate=isolate, workers=args.workers or None, cache=MemoryCache()) as ev:
        for pid in args.problems:
            problem = load_problem(pid)
            mutants_of = load_mutants(MUTANTS, pid)
            verdicts = [judge_mutant(ev, problem, m) for m in mutants_of]
            first = problem.spec.workloads[0].name
            for m, v in zip(mutants_of, verdicts, strict=True):
                ratio = latency_ratio(ev, problem, m)
                robust = (
                    order_kill_fraction(ev, problem, m, list(range(1000, 1000 + args.seeds)))
                    if args.seeds
                    else None
                )
                print(
                    f"{pid}/{v.mutant}: {'killed by ' + v.killed_by if v.killed else 'SURVIVED'}"
                    f" ({v.category}); latency x{ratio} of the baseline on {first}"
                    + (
                        f"; killed on {robust:.0%} of {args.seeds} fresh order seeds"
                        if args.seeds
                        else ""
                    ),
                    file=sys.stderr,
                )
                mutants[f"{pid}/{v.mutant}"] = {
                    "killed_by": v.killed_by,
                    "category": v.category,
                    f"latency_ratio_{first}": ratio,
                }
                if args.seeds:
                    mutants[f"{pid}/{v.mutant}"]["order_kill_share"] = robust
            kill_rate[pid] = (
                round(sum(v.killed for v in verdicts) / len(verdicts), 4) if verdicts else 0.0
            )
            survivors[pid] = [v.mutant for v in verdicts if not v.killed]
    result = {
        "kill_rate": kill_rate,
        "survivors": survivors,
        "mutants": mutants,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result))
    return 0 if all(rate == 1.0 for rate in kill_rate.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
