"""Evaluation speed: cost of isolation, one full uncached evaluation, and a worker-memory soak.

Judges the moe_decode baseline on every visible workload with 3 seeds each (the problem's spec
is copied with `seeds = [0, 1, 2]`; workers look workloads up by name and take the seed from the
request, so the copy needs no folder of its own) twice, each time with an empty MemoryCache:

- `LocalEvaluator(isolate=True)`: static checks, a pool of fresh worker processes (scrubbed
  environment, memory limit, timeouts, private answer channel), the determinism re-run in a
  brand-new process; the pool's start-up is included in the time.
- `LocalEvaluator(isolate=False)`: the same traces and runs (`trace_one`, `execute_one`) in this
  process.

The acceptance bar is isolated <= 3 x in-process. With several cores the pool also runs
workloads in parallel, so the ratio can be below 1.

`full_eval_s` is one full evaluation of the moe_decode calibration kernel
(`benchmarks/calibration/moe_optimized.py`) by a fresh isolated evaluator (its worker pool's
start-up included) with an empty run cache, so none of the candidate's own work is cached: it is
traced (every visible shape, data-free) and re-traced under another hash seed, and executed on
every visible workload and seed, and every integrity check runs (target <= 4 s on 2 cores).
What may be cached is the *problem's*, keyed by its version: the generated inputs (per problem
hash, workload and seed) and the baseline's runs (per baseline hash, harness fingerprint, which
covers the problem hash, machine and judge code, workload and seed), as an optimisation run has
them after its first candidate. `full_eval_cold_s` is the same evaluation with those caches
empty too (inputs generated, the baseline traced and executed): the first evaluation of a
problem version on a machine. The benchmark refuses to report unless the measured evaluation
simulated exactly the candidate's runs (`full_eval_runs`) and took the baseline's from the cache.

`--soak N` instead judges N distinct candidates (variants of a baseline) with one pool and prints
the resident memory of its workers after the first 10 evaluations and at the end (`rss_start_mb`,
`rss_end_mb`, `rss_growth`; the bar is growth <= 10 %).

Progress goes to stderr; the last stdout line is one JSON object.

    python benchmarks/eval_speed.py [--problem moe_decode] [--seeds 3] [--workers N]
    python benchmarks/eval_speed.py --soak 200 [--problem rmsnorm]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from knight.evaluation import LocalEvaluator, MemoryCache
from knight.problems import Problem, load_problem


def with_seeds(problem: Problem, n: int) -> Problem:
    """The same problem with seeds 0..n-1 on every visible workload (held-out ones untouched)."""
    copy = load_problem(str(problem.root))
    seeds = list(range(n))
    copy.spec = problem.spec.model_copy(
        update={
            "workloads": [w.model_copy(update={"seeds": seeds}) for w in problem.spec.workloads],
            "adversarial": [
                w.model_copy(update={"seeds": seeds}) for w in problem.spec.adversarial
            ],
        }
    )
    return copy


def judge(problem: Problem, *, isolate: bool, workers: int | None) -> tuple[float, object]:
    source = problem.baseline_source()
    start = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as refs,  # both modes simulate the baseline too
        LocalEvaluator(
            isolate=isolate, cache=MemoryCache(), workers=workers, reference_cache=Path(refs)
        ) as ev,
    ):
        report = ev.evaluate(source, problem)
    return time.perf_counter() - start, report


CALIBRATION = Path(__file__).resolve().parent / "calibration" / "moe_optimized.py"


def full_eval(workers: int | None, caches: Path) -> tuple[float, object]:
    """One evaluation of the calibration kernel by a fresh pool with an empty run cache; the
    problem's caches (inputs, the baseline's runs) live under `caches`."""
    problem = load_problem("moe_decode")
    start = time.perf_counter()
    with LocalEvaluator(
        isolate=True,
        cache=MemoryCache(),
        workers=workers,
        input_cache=caches / "inputs",
        reference_cache=caches / "reference",
    ) as ev:
        report = ev.evaluate(CALIBRATION.read_text(), problem)
    return time.perf_counter() - start, report


def measure_full(workers: int | None) -> dict:
    """full_eval_cold_s (nothing cached), then full_eval_s (only the problem's caches warm)."""
    with tempfile.TemporaryDirectory() as tmp:
        cold_s, cold = full_eval(workers, Path(tmp))
        full_s, full = full_eval(workers, Path(tmp))
    for name, rep in (("cold", cold), ("full", full)):
        if not rep.ok:
            raise SystemExit(
                f"the calibration kernel should be ok ({name}): {rep.failure and rep.failure.one_line()}"
            )
    problem = load_problem("moe_decode")
    runs = sum(len(w.seeds) for w in problem.all_workloads(heldout=False))
    if full.simulated_runs != runs or full.cached_runs != runs:
        raise SystemExit(
            f"the measured evaluation should simulate the candidate's {runs} runs and take the "
            f"baseline's {runs} from the cache; it simulated {full.simulated_runs} and took "
            f"{full.cached_runs}"
        )
    print(
        f"  full evaluation of the calibration kernel: {full_s:.1f} s ({full.simulated_runs} "
        f"candidate runs simulated, the baseline's from the cache), {cold_s:.1f} s with every "
        f"cache empty ({cold.simulated_runs} runs)",
        file=sys.stderr,
    )
    return {
        "full_eval_s": round(full_s, 3),
        "full_eval_cold_s": round(cold_s, 3),
        "full_eval_runs": full.simulated_runs,
        "full_eval_within_target": full_s <= 4.0,
    }


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants (a sandboxed worker sits under bwrap)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += (
                next(
                    int(line.split()[1])
                    for line in status.splitlines()
                    if line.startswith("VmRSS:")
                )
                / 1024
            )
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def soak(problem: Problem, n: int, workers: int | None) -> dict:
    """Judge `n` distinct variants of the baseline with one pool; report worker memory."""
    base = problem.baseline_source()
    samples: list[float] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalEvaluator(
            isolate=True,
            cache=MemoryCache(),
            workers=workers,
            input_cache=Path(tmp),
            reference_cache=Path(tmp) / "reference",
            max_seeds=1,
        ) as ev,
    ):
        assert ev.pool is not None
        for i in range(n):
            report = ev.evaluate(base + f"\n# soak variant {i}\n", problem, profile=False)
            if not report.ok:
                raise SystemExit(
                    f"variant {i} failed: {report.failure and report.failure.one_line()}"
                )
            if i + 1 == min(10, n) or i + 1 == n:
                rss = sum(tree_rss_mb(w.proc.pid) for w in ev.pool._all if w.alive)
                samples.append(rss)
                print(f"  after {i + 1} evaluations: workers hold {rss:.0f} MB", file=sys.stderr)
    growth = samples[-1] / samples[0] - 1 if samples[0] else 0.0
    return {
        "problem": problem.id,
        "soak_evaluations": n,
        "rss_start_mb": round(samples[0], 1),
        "rss_end_mb": round(samples[-1], 1),
        "rss_growth": round(growth, 3),
        "within_bar": growth <= 0.10,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default=None, help="default: moe_decode (rmsnorm with --soak)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: CPU cores)"
    )
    parser.add_argument(
        "--soak", type=int, default=0, metavar="N", help="judge N candidates and report worker RSS"
    )
    parser.add_argument("--skip-full", action="store_true", help="do not measure full_eval_s")
    parser.add_argument("--full-only", action="store_true", help="measure only full_eval_s")
    args = parser.parse_args()
    if args.soak:
        print(json.dumps(soak(load_problem(args.problem or "rmsnorm"), args.soak, args.workers)))
        return
    args.problem = args.problem or "moe_decode"
    if args.full_only:
        print(json.dumps(measure_full(args.workers)))
        return

    problem = with_seeds(load_problem(args.problem), args.seeds)
    runs = sum(len(w.seeds) for w in problem.all_workloads())
    workers = args.workers or os.cpu_count() or 1
    print(
        f"{problem.id}: {runs} runs ({len(problem.all_workloads())} workloads x {args.seeds} seeds) "
        f"+ 1 determinism re-run, {workers} workers",
        file=sys.stderr,
    )

    inprocess_s, rep_in = judge(problem, isolate=False, workers=None)
    print(
        f"  in-process: {inprocess_s:.1f} s, status {rep_in.status}, {rep_in.simulated_runs} runs simulated",
        file=sys.stderr,
    )
    isolated_s, rep_iso = judge(problem, isolate=True, workers=args.workers)
    print(
        f"  isolated:   {isolated_s:.1f} s, status {rep_iso.status}, {rep_iso.simulated_runs} runs simulated",
        file=sys.stderr,
    )
    if not (rep_in.ok and rep_iso.ok):
        raise SystemExit(f"the baseline should be ok: {rep_in.failure} / {rep_iso.failure}")
    if rep_in.score_ns != rep_iso.score_ns:
        raise SystemExit(
            f"isolated and in-process scores differ: {rep_iso.score_ns} vs {rep_in.score_ns}"
        )

    ratio = isolated_s / inprocess_s
    print(f"  overhead ratio {ratio:.2f} (bar: <= 3)", file=sys.stderr)
    out = {
        "problem": problem.id,
        "runs": runs,
        "seeds": args.seeds,
        "workers": workers,
        "isolated_s": round(isolated_s, 3),
        "inprocess_s": round(inprocess_s, 3),
        "overhead_ratio": round(ratio, 3),
        "within_bar": ratio <= 3.0,
    }
    if not args.skip_full:
        out.update(measure_full(args.workers))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
