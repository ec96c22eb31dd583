"""Baseline MoE router of Qwen3-30B-A3B for decode (H=2048, 128 experts, top-8).

A plain NKI-style kernel on one core, tokens on partitions. The hidden state arrives transposed
(hidden row h = 16p + kt on partition p, K-tile kt, as in moe_decode), element by element. The
router weights arrive one K-tile at a time (rows 16p + kt: one 256-byte row per partition) on one
DMA queue into a single buffer, and each tile's matmul (the token stationary, the 128 experts
moving) accumulates the logits [T, 128] in one PSUM bank. The logits are read out to SBUF; then
max, exp with a bias of -max, sum, divide, top-8 by max8 and nc_match_replace8 (tied values get
distinct experts, the lower index first), sum of the 8, divide; two stores (the uint32 indices are
converted to int32 by the DMA).

Rounding chain (the contract):
  logits = fp32 PSUM sum over kt = 0..15 in order of fp32(sum over p of hidden[t, 16p+kt] *
           w_router[16p+kt, e])  (each K-tile's 128 products summed exactly, rounded once)
  m = max_e logits;  ex = fp32(exp(fp32(logits + (-m))));  s = ex[0] + ... + ex[127] (fp32, in order)
  probs = fp32(ex / s)
  top = max8(probs) (descending); ids = the experts of top, equal probabilities taking distinct
        experts in increasing index order (a stable descending sort of probs, first 8)
  expert_weights = fp32(top / (top[0] + ... + top[7]))  (fp32 sum in slot order)
"""

from knight.npu import nisa, nl

H = 2048  # hidden size
E = 128  # experts
K = 8  # experts per token (top-8)
P = 128  # partitions
KT = H // P  # K-tiles of the hidden dimension

# Tuning knobs (name -> allowed values). Every value keeps the output bits unchanged.
WEIGHT_ENGINE = "sync"  # nisa.engine that triggers the router-weight DMAs
WEIGHT_BUFFERS = 1  # weight-tile buffers rotated across K-tiles
SOFTMAX_ENGINE = "vector"  # nisa.engine for the softmax scalings and divides (reductions: VectorE)
TUNABLES = {
    "WEIGHT_ENGINE": ["sync", "scalar", "gpsimd"],
    "WEIGHT_BUFFERS": [1, 2],
    "SOFTMAX_ENGINE": ["vector", "gpsimd"],
}


def _rank_ids(ids, data, vals):
    """ids[t, k] = the index of vals[t, k] (= max8(data), descending) in data[t], equal values
    taking distinct indices, the lower one first. nc_match_replace8 matches its 8 values last to
    first, giving a repeated value's first occurrence to its last slot; so it gets the values in
    ascending order and its indices are read back reversed."""
    T = data.shape[0]
    ascending = nl.ndarray((T, K), dtype=nl.float32, name="top_ascending")
    for k in range(K):
        nisa.tensor_copy(ascending[:, K - 1 - k : K - k], vals[:, k : k + 1])
    idx = nl.ndarray((T, K), dtype=nl.uint32, name="top_ids_ascending")
    left = nl.ndarray((T, E), dtype=nl.float32, name="not_chosen")
    nisa.nc_match_replace8(dst=left, data=data, vals=ascending, imm=float("-inf"), dst_idx=idx)
    for k in range(K):
        nisa.tensor_copy(ids[:, k : k + 1], idx[:, K - 1 - k : K - k])


def moe_router(hidden, w_router, expert_ids, expert_weights):
    T = hidden.shape[0]

    # Tokens as matmul columns: xT[p, kt, t] = hidden[t, 16p + kt].
    xT = nl.ndarray((P, KT, T), dtype=nl.bfloat16, name="hidden_T")
    nisa.dma_copy(dst=xT, src=hidden.reshape(T, P, KT).permute(1, 2, 0))

    # logits[t, e], accumulated over the 16 K-tiles in one PSUM bank.
    w_tiles = w_router.reshape(P, KT, E)
    w = [nl.ndarray((P, E), dtype=nl.bfloat16, name=f"w_router{b}") for b in range(WEIGHT_BUFFERS)]
    ps = nl.ndarray((T, E), dtype=nl.float32, buffer=nl.psum, name="ps_logits")
    for kt in range(KT):
        buf = w[kt % WEIGHT_BUFFERS]
        nisa.dma_copy(dst=buf, src=w_tiles[:, kt, :], engine=nisa.engine[WEIGHT_ENGINE])
        nisa.nc_matmul(ps, xT[:, kt, :], buf, accumulate=kt > 0)
    logits = nl.ndarray((T, E), dtype=nl.float32, name="logits")
    nisa.tensor_copy(logits, ps)

    # Softmax over the experts (free axis), in fp32.
    mx = nl.ndarray((T, 1), dtype=nl.float32, name="max_logit")
    nisa.tensor_reduce(mx, nl.maximum, logits, axis=1, keepdims=True)
    neg_mx = nl.ndarray((T, 1), dtype=nl.float32, name="neg_max_logit")
    nisa.tensor_scalar(neg_mx, mx, nl.multiply, -1.0, engine=nisa.engine[SOFTMAX_ENGINE])
    ex = nl.ndarray((T, E), dtype=nl.float32, name="exp_logits")
    nisa.activation(ex, nl.exp, logits, bias=neg_mx)
    total = nl.ndarray((T, 1), dtype=nl.float32, name="exp_sum")
    nisa.tensor_reduce(total, nl.add, ex, axis=1, keepdims=True)
    probs = nl.ndarray((T, E), dtype=nl.float32, name="probs")
    nisa.tensor_scalar(probs, ex, nl.divide, total, engine=nisa.engine[SOFTMAX_ENGINE])

    # Top-8 and renormalisation.
    top = nl.ndarray((T, K), dtype=nl.float32, name="top_probs")
    ids = nl.ndarray((T, K), dtype=nl.uint32, name="top_ids")
    nisa.max8(top, probs)
    _rank_ids(ids, probs, top)
    top_sum = nl.ndarray((T, 1), dtype=nl.float32, name="top_sum")
    nisa.tensor_reduce(top_sum, nl.add, top, axis=1, keepdims=True)
    wts = nl.ndarray((T, K), dtype=nl.float32, name="weights")
    nisa.tensor_scalar(wts, top, nl.divide, top_sum, engine=nisa.engine[SOFTMAX_ENGINE])

    nisa.dma_copy(dst=expert_ids, src=ids)
    nisa.dma_copy(dst=expert_weights, src=wts)
