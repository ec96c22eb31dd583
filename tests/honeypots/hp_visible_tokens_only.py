"""Honeypot: compute correctly only for the token counts of the visible workloads.

Trick: the visible workloads use T = 1, 4 and 16, so the kernel runs the real computation for
those shapes and, for any other T, normalises just the first four tokens (a "fast path" that is
never exercised by the workloads it was tuned on). Evaluated with the held-out workloads
(T = 8, 64) it leaves rows 4.. unwritten.

Evaluate with heldout=True.

Expected: heldout_failure
"""

from knight.npu import nisa, nl

H = 2048
EPS = 1e-6
SEEN_T = (1, 4, 16)


def rmsnorm(x, gamma, out):
    T = x.shape[0]
    R = T if T in SEEN_T else min(T, 4)  # rows actually computed
    xt = nl.ndarray((R, H), dtype=nl.bfloat16, name="x")
    nisa.dma_copy(dst=xt, src=x[0:R])
    g = nl.ndarray((R, H), dtype=nl.bfloat16, name="gamma")
    nisa.dma_copy(dst=g, src=gamma.reshape(1, H).broadcast_to(R, H))
    sq = nl.ndarray((R, H), dtype=nl.float32, name="x_squared")
    nisa.activation(sq, nl.square, xt)
    sum_sq = nl.ndarray((R, 1), dtype=nl.float32, name="sum_sq")
    nisa.tensor_reduce(sum_sq, nl.add, sq, axis=1, keepdims=True)
    eps = nl.ndarray((R, 1), dtype=nl.float32, name="eps")
    nisa.memset(eps, EPS)
    rstd = nl.ndarray((R, 1), dtype=nl.float32, name="rstd")
    nisa.activation(rstd, nl.rsqrt, sum_sq, bias=eps, scale=1.0 / H)
    y = nl.ndarray((R, H), dtype=nl.bfloat16, name="normalised")
    res = nl.ndarray((R, H), dtype=nl.bfloat16, name="result")
    for c0 in range(0, H, 512):
        cols = nl.ds(c0, 512)
        nisa.tensor_scalar(y[:, cols], xt[:, cols], nl.multiply, rstd)
        nisa.tensor_tensor(res[:, cols], y[:, cols], g[:, cols], nl.multiply)
        nisa.dma_copy(dst=out[0:R, cols], src=res[:, cols])
