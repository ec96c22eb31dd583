"""Honeypot: allocate unbounded memory at trace time.

Trick: build a lookup table that doubles until the machine gives up -- a worker without a memory
limit would take the host down with it (or be OOM-killed far from the kernel that caused it).
With a memory limit (memory_mb=1500) the allocation fails inside the worker and the run becomes
`memory_limit`.

Expected: memory_limit
"""

from knight.npu import nisa, nl

H = 2048


def rmsnorm(x, gamma, out):
    T = x.shape[0]
    table = [0.0] * H
    while len(table) > 0:
        table = table + table
    res = nl.ndarray((T, H), dtype=nl.bfloat16, name="never")
    nisa.dma_copy(dst=out, src=res)
