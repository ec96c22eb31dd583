"""Regenerate knight.db.example from real runs, at the current schema.

    python scripts/make_example_db.py [--out knight.db.example] [--budget 10] [--workers 2]

What it runs, through the real `knight` command line, on moe_decode (the default problem):
  run 1  the offline proposer (knob tuning, no model, no network) for --budget iterations;
  run 2  the scripted proposer with scripts/example_structural.jsonl, against today's baseline:
         whole contiguous gate/up rows in one transfer per expert (a pair of knobs), a reordered
         expert sum the judge rejects (bits change), the down projection's 16 tiles in one PSUM
         bank with one read-out (structural), then double-buffered weights (a knob); so the chain
         mixes knob moves and a structural patch, and one failure is attributed.
Every figure in the file comes from the simulator and the evaluator; nothing is edited by hand.
To keep the file small, the evaluator's run cache (the `evaluations` table, the output bits of
every simulated run) keeps one row per candidate, the one holding the profile that the
report and `knight show` read as a parent's profile; the iterations keep their full reports,
and a later `--resume` on a copy simulates the dropped runs again if it needs them.
The database is written next to --out and moved into place only when both runs succeeded; its
write-ahead log is folded in, so the one file is complete. Takes a few minutes on two cores.
The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRUCTURAL_SCRIPT = ROOT / "scripts" / "example_structural.jsonl"
PROBLEM = "moe_decode"
SCRIPT_STEPS = 4  # proposal lines of STRUCTURAL_SCRIPT


def knight(*args: str) -> dict:
    """Run one `knight ... --json` command, echo its progress, return its JSON answer."""
    command = [sys.executable, "-m", "knight.cli", *args, "--json"]
    print("$ knight " + " ".join(args), file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"knight {args[0]} failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# Per candidate and harness, the first cached run with a profile: the one the store reads as a
# parent's profile (knight.store.runs._stored_profile); every other row only memoises output bits.
KEEP_PROFILE_ROWS = """
DELETE FROM evaluations WHERE id NOT IN (
    SELECT min(id) FROM evaluations
    WHERE json_extract(report, '$.profile') IS NOT NULL AND json_extract(report, '$.profile') != '{}'
    GROUP BY candidate_hash, harness
)"""


def prune_run_cache(path: Path) -> int:
    """Keep one cached run per candidate, the one holding its profile; the number dropped."""
    connection = sqlite3.connect(path)
    try:
        with connection:
            dropped = connection.execute(KEEP_PROFILE_ROWS).rowcount
    finally:
        connection.close()
    return dropped


def finish_sqlite_file(path: Path) -> None:
    """Fold the write-ahead log into the file and compact it: one self-contained file."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("PRAGMA journal_mode=DELETE")
        connection.execute("VACUUM")
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "knight.db.example")
    parser.add_argument("--budget", type=int, default=10, help="iterations of the offline run")
    parser.add_argument("--workers", type=int, default=2, help="evaluation worker processes")
    args = parser.parse_args()
    if args.budget < 1:
        parser.error("--budget must be at least 1")
    start = time.perf_counter()
    work = args.out.with_name(args.out.name + ".new")
    for stale in (work, work.with_name(work.name + "-wal"), work.with_name(work.name + "-shm")):
        stale.unlink(missing_ok=True)
    db = str(work)
    common = ["--db", db, "--workers", str(args.workers)]
    offline = knight(
        "run", *common, "--problem", PROBLEM, "--proposer", "offline", "--budget", str(args.budget),
        "--seed", "0",
    )  # fmt: skip
    scripted = knight(
        "run", *common, "--problem", PROBLEM, "--proposer", "scripted",
        "--script", str(STRUCTURAL_SCRIPT.relative_to(ROOT)), "--budget", str(SCRIPT_STEPS),
    )  # fmt: skip
    dropped = prune_run_cache(work)
    finish_sqlite_file(work)
    work.replace(args.out)
    summary = {
        "out": str(args.out),
        "bytes": args.out.stat().st_size,
        "runs": [
            {key: answer[key] for key in ("run_id", "iterations", "accepted", "speedup")}
            | {"proposer": proposer}
            for answer, proposer in ((offline, "offline"), (scripted, "scripted"))
        ],
        "cache_rows_dropped": dropped,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
