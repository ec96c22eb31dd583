"""The offline proposer's two strategies side by side: the knob bandit and Optuna's TPE.

For each seed, runs `knight bench --proposer offline --strategy S` for S in (bandit, tpe) at the
same budget on the same problems (every bundled one by default), each against its own fresh
database, so neither strategy learns from the other's runs. Progress goes to stderr; the last
stdout line is one JSON object: per strategy the geometric mean speed-up and floor fraction over
all (problem, seed) runs, per-problem mean speed-ups, how often each strategy won a (problem,
seed) pair, and which strategy wins overall (`winner`, by geometric-mean speed-up).

    python benchmarks/offline_strategies.py [--budget 20] [--seeds 0,1] [--problems a,b]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import bench  # noqa: E402  (the sibling benchmark script)

STRATEGIES = ("bandit", "tpe")


def geomean(values: list[float]) -> float | None:
    """Geometric mean of positive values (None for none)."""
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--problems", default=None, help="comma-separated ids (default: all)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    # (strategy, problem, seed) -> (speed-up, floor fraction)
    runs: dict[tuple[str, str, int], tuple[float | None, float | None]] = {}
    walls: dict[str, float] = dict.fromkeys(STRATEGIES, 0.0)
    with tempfile.TemporaryDirectory(prefix="knight-strategies-") as tmp:
        for seed in seeds:
            for strategy in STRATEGIES:
                sys.stderr.write(f"== {strategy}, seed {seed}\n")
                db = Path(tmp) / f"{strategy}-{seed}.db"
                report = bench(args.budget, seed, strategy, args.problems, db)
                walls[strategy] += report["wall_s"]
                for p in report["problems"]:
                    runs[(strategy, p["problem"], seed)] = (p["speedup"], p["floor_fraction"])
    problems = sorted({problem for _, problem, _ in runs})
    result: dict = {"benchmark": "offline_strategies", "budget": args.budget, "seeds": seeds}
    for strategy in STRATEGIES:
        mine = {k[1:]: v for k, v in runs.items() if k[0] == strategy}
        result[strategy] = {
            "geomean_speedup": geomean([s for s, _ in mine.values() if s]),
            "geomean_floor_fraction": geomean([f for _, f in mine.values() if f]),
            "speedup": {
                p: geomean([s for (q, _), (s, _) in mine.items() if q == p and s]) for p in problems
            },
            "wall_s": round(walls[strategy], 1),
        }
    wins = dict.fromkeys(STRATEGIES, 0)
    ties = 0
    for problem in problems:
        for seed in seeds:
            a, b = (runs.get((s, problem, seed), (None, None))[0] or 0.0 for s in STRATEGIES)
            if abs(a - b) <= 1e-9 * max(a, b, 1.0):
                ties += 1
            else:
                wins[STRATEGIES[0] if a > b else STRATEGIES[1]] += 1
    result["wins"] = {**wins, "ties": ties}
    scores = {s: result[s]["geomean_speedup"] or 0.0 for s in STRATEGIES}
    result["winner"] = max(STRATEGIES, key=lambda s: scores[s])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
