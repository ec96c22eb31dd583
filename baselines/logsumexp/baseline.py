"""Baseline log-sum-exp over a vocabulary shard (V = 8192 logits per token, bf16 in, fp32 out).

The reduction at the heart of a cross-entropy loss or of sampling's normaliser. A plain NKI-style
kernel: tokens on partitions (T <= 128), the token's 8192 logits on the free axis. One load,
VectorE max, the negated max as ScalarE's bias, exp into fp32, a VectorE sum, ScalarE log, a
VectorE add of the max, one store.

Rounding chain (the contract):
  m = max_v x[t, v]                                  (exact)
  e = fp32(exp(fp32(x + (-m))))
  s = e[0] + e[1] + ... + e[8191]                    (fp32, one rounding per add, index order)
  out = fp32(fp32(log(s)) + m)
"""

from knight.npu import nisa, nl

V = 8192  # vocabulary shard

# Tuning knobs (name -> allowed values). Every value keeps the output bits unchanged.
LOAD_ENGINE = "sync"  # engine that triggers the load and the store
NEGATE_ENGINE = "vector"  # engine that negates the max
TUNABLES = {
    "LOAD_ENGINE": ["sync", "scalar", "gpsimd"],
    "NEGATE_ENGINE": ["vector", "gpsimd", "scalar"],
}


def logsumexp(logits, out):
    T = logits.shape[0]
    x = nl.ndarray((T, V), dtype=nl.bfloat16, name="logits")
    nisa.dma_copy(dst=x, src=logits, engine=nisa.engine[LOAD_ENGINE])
    mx = nl.ndarray((T, 1), dtype=nl.float32, name="max")
    nisa.tensor_reduce(mx, nl.maximum, x, axis=1, keepdims=True)
    neg = nl.ndarray((T, 1), dtype=nl.float32, name="neg_max")
    nisa.tensor_scalar(neg, mx, nl.multiply, -1.0, engine=nisa.engine[NEGATE_ENGINE])
    ex = nl.ndarray((T, V), dtype=nl.float32, name="exp")
    nisa.activation(ex, nl.exp, x, bias=neg)
    total = nl.ndarray((T, 1), dtype=nl.float32, name="exp_sum")
    nisa.tensor_reduce(total, nl.add, ex, axis=1, keepdims=True)
    lg = nl.ndarray((T, 1), dtype=nl.float32, name="log_sum")
    nisa.activation(lg, nl.log, total)
    res = nl.ndarray((T, 1), dtype=nl.float32, name="lse")
    nisa.tensor_tensor(res, lg, mx, nl.add)
    nisa.dma_copy(dst=out, src=res, engine=nisa.engine[LOAD_ENGINE])
