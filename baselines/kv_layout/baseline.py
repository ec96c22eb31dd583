"""Baseline K-cache layout conversion: k[S, 128] fp32 -> k_t[128, S] bf16 (transpose + cast).

Freshly projected keys arrive token-major in fp32; attention kernels want the cache transposed
(head dims on partitions, tokens along the free axis) and in bf16. A plain NKI-style kernel: per
block of 128 tokens, one load, a TensorE transpose into PSUM (exact), a read-out that rounds to
bf16 into the on-chip result, and one store of the whole result at the end.

Rounding chain (the contract):
  k_t[d, s] = bf16(k[s, d])            (one round-to-nearest-even from fp32)
"""

from knight.npu import nisa, nl

D = 128  # head dimension
P = 128  # tokens per block

# Tuning knobs (name -> allowed values). Every value keeps the output bits unchanged.
LOAD_ENGINE = "sync"  # engine that triggers the loads and the store
READOUT_ENGINE = "vector"  # engine that copies PSUM to SBUF as bf16
TUNABLES = {
    "LOAD_ENGINE": ["sync", "scalar", "gpsimd"],
    "READOUT_ENGINE": ["vector", "scalar", "gpsimd"],
}


def kv_layout(k, k_t):
    S = k.shape[0]
    blk = nl.ndarray((P, D), dtype=nl.float32, name="k_block")
    ps = nl.ndarray((D, P), dtype=nl.float32, buffer=nl.psum, name="ps_block_t")
    res = nl.ndarray((D, S), dtype=nl.bfloat16, name="k_t")
    for s0 in range(0, S, P):
        nisa.dma_copy(dst=blk, src=k[s0 : s0 + P, :], engine=nisa.engine[LOAD_ENGINE])
        nisa.nc_transpose(ps, blk)
        nisa.tensor_copy(res[:, s0 : s0 + P], ps, engine=nisa.engine[READOUT_ENGINE])
    nisa.dma_copy(dst=k_t, src=res, engine=nisa.engine[LOAD_ENGINE])
