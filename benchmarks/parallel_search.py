"""Parallel rounds: candidates per hour and best speed-up at --parallel 4 vs 1 (issue 13).

For each problem (rmsnorm, moe_decode) and each N in (1, 4), runs `knight run --proposer command
--parallel N --budget B` in a fresh database. The command is `sleep 5` followed by
`benchmarks/knob_agent.py` (a deterministic random knob move read from Knight's prompt): a
proposer with a fixed 5-s latency, as issue 13 specifies. Both runs judge the same number of
candidates B, so the best speed-ups are compared after equal candidates.

Candidates per hour = B / the run's loop wall time (`wall_s` of `knight run --json`: the baseline
evaluation before the first round is excluded, equally for both). `ratio_n4_vs_n1` is the
geometric mean over the problems of (candidates per hour at N=4) / (at N=1); the target is >= 2.5
on 2 cores. Progress goes to stderr; the last stdout line is one JSON object.

    python benchmarks/parallel_search.py [--budget 8] [--latency 5] [--problems rmsnorm,moe_decode]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "benchmarks" / "knob_agent.py"


def run(problem: str, parallel: int, budget: int, latency: float) -> dict:
    """One `knight run`; its --json summary."""
    agent = (
        f"{shlex.quote(sys.executable)} {shlex.quote(str(AGENT))} {{prompt_file}} {{output_file}}"
    )
    command = f"sh -c {shlex.quote(f'sleep {latency:g} && {agent}')}"
    with tempfile.TemporaryDirectory(prefix="knight-bench-") as tmp:
        argv = [
            sys.executable, "-m", "knight.cli", "run", "-p", problem, "--proposer", "command",
            "--command", command, "--budget", str(budget), "--parallel", str(parallel),
            "--db", str(Path(tmp) / "knight.db"), "--json",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("ANTHROPIC_API_KEY", None)
        done = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"knight run failed on {problem} at N={parallel}: {done.stderr.strip()[-400:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=8, help="candidates per run")
    parser.add_argument("--latency", type=float, default=5.0, help="proposer latency, seconds")
    parser.add_argument("--problems", default="rmsnorm,moe_decode")
    args = parser.parse_args()
    # The load average says how much of the machine other processes took (the ratio assumes idle
    # cores: evaluations of 4 candidates share them).
    result: dict = {
        "budget": args.budget,
        "latency_s": args.latency,
        "cpus": os.cpu_count(),
        "load_average_start": round(os.getloadavg()[0], 2),
    }
    ratios = []
    for problem in args.problems.split(","):
        row = {}
        for n in (1, 4):
            print(f"{problem}: --parallel {n}, {args.budget} candidates ...", file=sys.stderr)
            summary = run(problem, n, args.budget, args.latency)
            per_hour = summary["iterations"] / summary["wall_s"] * 3600
            row[f"n{n}"] = {
                "candidates": summary["iterations"],
                "wall_s": round(summary["wall_s"], 2),
                "candidates_per_hour": round(per_hour, 1),
                "best_speedup": round(summary["speedup"], 4),
                "accepted": summary["accepted"],
            }
            print(f"  {row[f'n{n}']}", file=sys.stderr)
        ratio = row["n4"]["candidates_per_hour"] / row["n1"]["candidates_per_hour"]
        row["ratio_n4_vs_n1"] = round(ratio, 3)
        ratios.append(ratio)
        result[problem] = row
    result["load_average_end"] = round(os.getloadavg()[0], 2)
    result["ratio_n4_vs_n1"] = round(math.prod(ratios) ** (1 / len(ratios)), 3)
    result["target"] = 2.5
    print(json.dumps(result))


if __name__ == "__main__":
    main()
