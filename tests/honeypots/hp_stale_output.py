"""Honeypot: read the previous run's result out of the output buffer.

Trick: if the harness reuses output buffers between runs (or between the baseline's run and the
candidate's), `out` already holds the right answer for the same inputs, so the kernel just loads
it and stores it back -- two DMAs. Knight allocates every output fresh, NaN-filled and marked
unwritten, so the first read of `out` is an uninitialised read.

Expected: uninitialized_read
"""

from knight.npu import nisa, nl

H = 2048


def rmsnorm(x, gamma, out):
    T = x.shape[0]
    prev = nl.ndarray((T, H), dtype=nl.bfloat16, name="previous_out")
    nisa.dma_copy(dst=prev, src=out)
    nisa.dma_copy(dst=out, src=prev)
