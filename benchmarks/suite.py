"""The suite benchmark: `knight bench` with the offline proposer at budget 20 on every problem.

Runs `knight bench --proposer offline --budget 20 --json` (every bundled problem, so problems
added to baselines/ are included with no change here) against a fresh database in a temporary
folder, so the figures do not depend on what an earlier run taught the proposer. Progress goes
to stderr; the last stdout line is one JSON object with per-problem speed-ups and floor fractions
and their geometric means (`geomean_speedup`, `geomean_floor_fraction`).

    python benchmarks/suite.py [--budget 20] [--strategy bandit|tpe] [--seed 0] [--problems a,b]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def bench(budget: int, seed: int, strategy: str | None, problems: str | None, db: Path) -> dict:
    """One `knight bench --json` run on `db`: its JSON document (progress passed to stderr)."""
    cmd = [sys.executable, "-m", "knight.cli", "bench", "--proposer", "offline"]
    cmd += ["--budget", str(budget), "--seed", str(seed), "--db", str(db), "--json"]
    if strategy:
        cmd += ["--strategy", strategy]
    if problems:
        cmd += ["--problems", problems]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if not done.stdout.strip():
        raise SystemExit(f"knight bench failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(report: dict) -> dict:
    """The benchmark line: per-problem figures and the geometric means."""
    return {
        "benchmark": "suite",
        "proposer": report["proposer"],
        "strategy": report["strategy"],
        "budget": report["budget"],
        "seed": report["seed"],
        "problems": len(report["problems"]),
        "speedup": {p["problem"]: p["speedup"] for p in report["problems"]},
        "floor_fraction": {p["problem"]: p["floor_fraction"] for p in report["problems"]},
        "floor_bound": {p["problem"]: p["floor_bound"] for p in report["problems"]},
        "geomean_speedup": report["geomean_speedup"],
        "geomean_floor_fraction": report["geomean_floor_fraction"],
        "failed": report["failed"],
        "wall_s": round(report["wall_s"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategy", choices=("bandit", "tpe"), default=None)
    parser.add_argument("--problems", default=None, help="comma-separated ids (default: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="knight-suite-") as tmp:
        report = bench(args.budget, args.seed, args.strategy, args.problems, Path(tmp) / "suite.db")
    print(json.dumps(summary(report)))


if __name__ == "__main__":
    main()
