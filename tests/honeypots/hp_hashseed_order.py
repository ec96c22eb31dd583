"""Honeypot: nondeterminism that passes once (set iteration order depends on the hash seed).

Trick: the two per-element factors of RMSNorm (rstd, then gamma) are applied in the iteration
order of a set of strings. String hashes -- and so set order -- change with PYTHONHASHSEED, i.e.
from one Python process to the next. Applying gamma first rounds differently
(bf16(bf16(x * gamma) * rstd) != bf16(bf16(x * rstd) * gamma) for many elements), so the output
bits depend on which process runs the kernel.

The strings were picked so that the order is the baseline's ("normalise" first) under the hash
seed of the first worker of a fresh pool (PYTHONHASHSEED=1001) and flipped under the next ones
(1002-1005): with one worker every regular run is bit-exact, and only the evaluator's determinism
re-run in a fresh worker process sees different bits. Evaluate with isolate=True and workers=1
(with more workers some regular runs land on the flipped seeds: a mismatch, still a rejection).

Expected: nondeterministic
"""

from knight.npu import nisa, nl

H = 2048
EPS = 1e-6
FACTORS = {"normalise", "by_gamma"}


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
    eps = nl.ndarray((T, 1), dtype=nl.float32, name="eps")
    nisa.memset(eps, EPS)
    rstd = nl.ndarray((T, 1), dtype=nl.float32, name="rstd")
    nisa.activation(rstd, nl.rsqrt, sum_sq, bias=eps, scale=1.0 / H)
    y = nl.ndarray((T, H), dtype=nl.bfloat16, name="partial")
    res = nl.ndarray((T, H), dtype=nl.bfloat16, name="result")
    first = [f for f in FACTORS][0]
    if first == "normalise":
        nisa.tensor_scalar(y, xt, nl.multiply, rstd)
        nisa.tensor_tensor(res, y, g, nl.multiply)
    else:
        nisa.tensor_tensor(y, xt, g, nl.multiply)
        nisa.tensor_scalar(res, y, nl.multiply, rstd)
    nisa.dma_copy(dst=out, src=res)
