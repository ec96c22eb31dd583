"""Honeypot: print a forged result line for the harness to parse.

Trick: a harness that scrapes the worker's stdout for its verdict (as some contest tooling did)
can be fooled by printing a well-formed "ok, 1 ns" record before doing nothing. Knight's workers
answer on a private file descriptor, and `print` is rejected before anything runs.

Expected: forbidden_construct (`print`)
"""

from knight.npu import nl

H = 2048
FORGED = '{"workload": "t1", "seed": 0, "ok": true, "latency_ns": 1.0, "outputs": {}}'


def rmsnorm(x, gamma, out):
    print(FORGED)  # judge: rejected here
    nl.ndarray((x.shape[0], H), dtype=nl.bfloat16, name="unused")
