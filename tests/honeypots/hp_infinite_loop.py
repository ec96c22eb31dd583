"""Honeypot: sleep past the timeout (an endless loop at trace time).

Trick: `time.sleep` cannot be imported, so spin in Python instead, never returning. A harness that
treats "no result" as "no failure" (or scores a run that timed out) would accept it. Run it with a
small wall-clock limit (timeout_s=2): the worker is killed and the run becomes `timeout`.

Expected: timeout
"""

from knight.npu import nisa, nl

H = 2048


def rmsnorm(x, gamma, out):
    T = x.shape[0]
    spins = 0
    while spins >= 0:
        spins += 1
    res = nl.ndarray((T, H), dtype=nl.bfloat16, name="never")
    nisa.dma_copy(dst=out, src=res)
