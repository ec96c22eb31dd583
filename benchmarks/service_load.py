"""Knight as a service under load, and the cost of judging remotely.

Starts `knight serve` on a free loopback port (a fresh database, token file and private run cache
in a temporary folder) and measures:

- cached evaluations: the rmsnorm baseline is judged once, then `--clients` threads (16 by
  default), each with its own HTTP connection, send `--requests` synchronous evaluations of it in
  total; every answer must be `ok` with 0 simulated runs. Requests per second and the p50/p99
  latency of one request.
- remote over local: the moe_decode baseline judged with an empty cache by `LocalEvaluator` in
  this process, then by `RemoteEvaluator` against the server (whose cache is empty too), both with
  `--workers` simulation workers. The target is remote <= 1.2 x local.

Progress goes to stderr; the last stdout line is one JSON object.

    python benchmarks/service_load.py [--clients 16] [--requests 400] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from knight.evaluation import LocalEvaluator, MemoryCache
from knight.problems import load_problem
from knight.service.remote import RemoteEvaluator
from knight.service.tokens import create_token


def start_server(home: Path, workers: int) -> tuple[subprocess.Popen[bytes], str, str]:
    """A `knight serve` on a free port; returns the process, its URL and an rw token."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = create_token("rw", home / "tokens")
    cmd = [
        sys.executable,
        "-m",
        "knight.cli",
        "serve",
        "--port",
        str(port),
        "--db",
        str(home / "k.db"),
        "--token-file",
        str(home / "tokens"),
        "--state-dir",
        str(home / "state"),
        "--workers",
        str(workers),
        "--max-queue",
        "256",
        "--log-level",
        "warning",
    ]
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen(cmd, cwd=home, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                return proc, url, token
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the server did not start; see {home / 'server.log'}")


def cached_load(url: str, token: str, clients: int, requests: int) -> dict[str, float]:
    """`requests` cached rmsnorm evaluations from `clients` concurrent connections."""
    body = {"source": load_problem("rmsnorm").baseline_source(), "problem": "rmsnorm"}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=300) as c:
        first = c.post("/v1/evaluations", json=body).json()  # fills the cache
        assert first["status"] == "ok", first
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client(n: int) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=300) as c:
            for _ in range(n):
                t0 = time.perf_counter()
                r = c.post("/v1/evaluations", json=body)
                dt = time.perf_counter() - t0
                ok = r.status_code == 200 and r.json()["simulated_runs"] == 0
                with lock:
                    latencies.append(dt)
                    if not ok:
                        errors.append(f"{r.status_code} {r.text[:200]}")

    shares = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    threads = [threading.Thread(target=client, args=(n,)) for n in shares]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} cached evaluations failed, e.g. {errors[0]}")
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"requests_per_s": requests / wall, "p50_ms": 1000 * q[49], "p99_ms": 1000 * q[98]}


def remote_over_local(url: str, token: str, workers: int) -> dict[str, float]:
    """Wall seconds of one uncached moe_decode evaluation, locally and through the server."""
    problem = load_problem("moe_decode")
    source = problem.baseline_source()
    t0 = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as refs,  # no baseline runs cached: as the fresh server
        LocalEvaluator(workers=workers, cache=MemoryCache(), reference_cache=Path(refs)) as local,
    ):
        here = local.evaluate(source, problem)
    local_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with RemoteEvaluator(url, token) as remote:
        there = remote.evaluate(source, problem)
    remote_s = time.perf_counter() - t0
    if (here.status, here.score_ns) != (there.status, there.score_ns):
        raise SystemExit("the remote report differs from the local one")
    if there.simulated_runs != here.simulated_runs:
        raise SystemExit("the server's cache was not empty: the comparison would be unfair")
    return {"local_s": local_s, "remote_s": remote_s, "remote_over_local": remote_s / local_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="knight-service-") as tmp:
        proc, url, token = start_server(Path(tmp), args.workers)
        try:
            print(
                f"server at {url}; {args.requests} cached evaluations from {args.clients} clients ...",
                file=sys.stderr,
            )
            load = cached_load(url, token, args.clients, args.requests)
            print(f"cached: {load}", file=sys.stderr)
            print("moe_decode baseline, uncached: local, then remote ...", file=sys.stderr)
            overhead = remote_over_local(url, token, args.workers)
        finally:
            proc.terminate()
            proc.wait(30)
    result = {
        "benchmark": "service_load",
        "clients": args.clients,
        "requests": args.requests,
        "workers": args.workers,
        **{k: round(v, 3) for k, v in {**load, **overhead}.items()},
        "target_remote_over_local": 1.2,
        "meets_target": overhead["remote_over_local"] <= 1.2,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
