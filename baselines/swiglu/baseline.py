"""Baseline SwiGLU activation of an MLP: out = silu(gate) * up, I = 2048, bf16 in and out.

A plain NKI-style kernel: tokens on partitions (128 per tile), the 2048 intermediate values of a
token on the free axis. Per tile: load gate and up, ScalarE silu into bf16 (as Hugging Face's
`act_fn` returns the activation's dtype), VectorE multiply into bf16, store.

Rounding chain (the contract):
  a = bf16(fp32(silu(fp32(gate))))        (silu correctly rounded from float64 to fp32)
  out = bf16(fp32(a * up))
"""

from knight.npu import nisa, nl

INTER = 2048  # intermediate size
P = 128  # partitions

# Tuning knobs (name -> allowed values). Every value keeps the output bits unchanged.
LOAD_ENGINE = "sync"  # engine that triggers the loads and stores
MULTIPLY_ENGINE = "vector"  # engine that multiplies by up
TUNABLES = {
    "LOAD_ENGINE": ["sync", "scalar", "gpsimd"],
    "MULTIPLY_ENGINE": ["vector", "gpsimd"],
}


def swiglu(gate, up, out):
    T = gate.shape[0]
    gs = nl.ndarray((P, INTER), dtype=nl.bfloat16, name="gate")
    us = nl.ndarray((P, INTER), dtype=nl.bfloat16, name="up")
    acts = nl.ndarray((P, INTER), dtype=nl.bfloat16, name="silu_gate")
    ress = nl.ndarray((P, INTER), dtype=nl.bfloat16, name="result")
    for t0 in range(0, T, P):
        rows = min(P, T - t0)
        g, u, act, res = gs[:rows], us[:rows], acts[:rows], ress[:rows]
        nisa.dma_copy(dst=g, src=gate[t0 : t0 + rows, :], engine=nisa.engine[LOAD_ENGINE])
        nisa.dma_copy(dst=u, src=up[t0 : t0 + rows, :], engine=nisa.engine[LOAD_ENGINE])
        nisa.activation(act, nl.silu, g)
        nisa.tensor_tensor(res, act, u, nl.multiply, engine=nisa.engine[MULTIPLY_ENGINE])
        nisa.dma_copy(dst=out[t0 : t0 + rows, :], src=res, engine=nisa.engine[LOAD_ENGINE])
