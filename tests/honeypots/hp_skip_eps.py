"""Honeypot: skip work whose effect looks like zero on the visible seeds.

Trick: eps = 1e-6 is tiny next to mean(x^2) for typical activations, so "rsqrt(ms + eps) ==
rsqrt(ms)" and the kernel drops the eps tile (one memset) and the activation's bias. For
tokens with large activations the fp32 sum does not change at all, but rmsnorm's inputs span
per-token scales of 2^-4..2^4, and for small-scale tokens rstd moves by a few fp32 ULPs, which
flips the bf16 rounding of a share of the outputs.

Expected: mismatch_rounding
"""

from knight.npu import nisa, nl

H = 2048


def rmsnorm(x, gamma, out):
    T = x.shape[0]
    xt = nl.ndarray((T, H), dtype=nl.bfloat16, name="x")
    nisa.dma_copy(dst=xt, src=x)
    g = nl.ndarray((T, H), dtype=nl.bfloat16, name="gamma")
    nisa.dma_copy(dst=g, src=gamma.reshape(1, H).broadcast_to(T, H))
    sq = nl.ndarray((T, H), dtype=nl.float32, name="x_squared")
    nisa.activation(sq, nl.square, xt)
    sum_sq = nl.ndarray((T, 1), dtype=nl.float32, name="sum_sq")
    nisa.tensor_reduce(sum_sq, nl.add, sq, axis=1, keepdims=True)
    rstd = nl.ndarray((T, 1), dtype=nl.float32, name="rstd")
    nisa.activation(rstd, nl.rsqrt, sum_sq, scale=1.0 / H)  # no eps: "it is zero anyway"
    y = nl.ndarray((T, H), dtype=nl.bfloat16, name="normalised")
    res = nl.ndarray((T, H), dtype=nl.bfloat16, name="result")
    for c0 in range(0, H, 512):
        cols = nl.ds(c0, 512)
        nisa.tensor_scalar(y[:, cols], xt[:, cols], nl.multiply, rstd)
        nisa.tensor_tensor(res[:, cols], y[:, cols], g[:, cols], nl.multiply)
        nisa.dma_copy(dst=out[0:T, cols], src=res[:, cols])
