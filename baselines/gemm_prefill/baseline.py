"""Baseline prefill GEMM: out[M, N] = a[M, K] @ b[K, N], K = N = 1024, bf16 in and out.

The activations arrive transposed (`a_t[K, M]`, NKI's "lhsT" layout), so a K-tile of them is
directly TensorE's stationary operand. A plain NKI-style kernel: for every 128-row block of the
output and every 512-column block, the K-tiles are loaded (both operands, every time, into one
buffer each: nothing is kept between blocks) and accumulated into one PSUM bank in K order; the block is read out to
bf16 and stored.

Rounding chain (the contract):
  p_kt = fp32(sum over k in K-tile kt of a_t[k, m] * b[k, n])    (exact products and sum, one rounding)
  acc = p_0;  acc = fp32(acc + p_kt) for kt = 1 .. K/128 - 1     (PSUM accumulation, K order)
  out = bf16(acc)
"""

from knight.npu import nisa, nl

K = 1024  # contraction (hidden size)
N = 1024  # output columns
P = 128  # partitions: K-tile and output-row block
NB = 512  # output columns per PSUM bank

# Tuning knobs (name -> allowed values). Every value keeps the output bits unchanged.
LOAD_ENGINE = "sync"  # engine that triggers the operand loads
READOUT_ENGINE = "vector"  # engine that copies PSUM to SBUF as bf16
TUNABLES = {
    "LOAD_ENGINE": ["sync", "scalar", "gpsimd"],
    "READOUT_ENGINE": ["vector", "scalar", "gpsimd"],
}


def gemm(a_t, b, out):
    M = a_t.shape[1]
    at = nl.ndarray((P, P), dtype=nl.bfloat16, name="a_tile")
    bt = nl.ndarray((P, NB), dtype=nl.bfloat16, name="b_tile")
    ps = nl.ndarray((P, NB), dtype=nl.float32, buffer=nl.psum, name="ps_out")
    res = nl.ndarray((P, NB), dtype=nl.bfloat16, name="out_block")
    for m0 in range(0, M, P):
        for n0 in range(0, N, NB):
            for kt in range(K // P):
                k0 = kt * P
                nisa.dma_copy(
                    dst=at, src=a_t[k0 : k0 + P, m0 : m0 + P], engine=nisa.engine[LOAD_ENGINE]
                )
                nisa.dma_copy(
                    dst=bt, src=b[k0 : k0 + P, n0 : n0 + NB], engine=nisa.engine[LOAD_ENGINE]
                )
                nisa.nc_matmul(ps, at, bt, accumulate=kt > 0)
            nisa.tensor_copy(res, ps, engine=nisa.engine[READOUT_ENGINE])
            nisa.dma_copy(dst=out[m0 : m0 + P, n0 : n0 + NB], src=res)
