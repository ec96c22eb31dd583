"""Baseline rotary position embedding of one decode step's queries (8 heads of 128, bf16).

A plain NKI-style kernel: tokens on partitions (T <= 128), the 8 heads x 128 dims on the free
axis. x, cos and sin (fp32, one angle per token and pair) arrive by DMA; per head, VectorE forms
the four products and the two sums of the rotation in fp32, the sums rounded to bf16 into the
result; one store. Rotation as Hugging Face's rotate_half: dims d and d + 64 form a pair.

Rounding chain (the contract), for pair d of head h, x1 = x[h, d], x2 = x[h, d + 64]:
  out[h, d]      = bf16(fp32(fp32(x1 * cos[d]) - fp32(x2 * sin[d])))
  out[h, d + 64] = bf16(fp32(fp32(x2 * cos[d]) + fp32(x1 * sin[d])))
"""

from knight.npu import nisa, nl

HEADS = 8
D = 128  # head dimension
HALF = D // 2

# Tuning knobs (name -> allowed values). Every value keeps the output bits unchanged.
LOAD_ENGINE = "sync"  # engine that triggers the loads and the store
PRODUCT_ENGINE = "vector"  # engine that forms the products
TUNABLES = {
    "LOAD_ENGINE": ["sync", "scalar", "gpsimd"],
    "PRODUCT_ENGINE": ["vector", "gpsimd"],
}


def rope(x, cos, sin, out):
    T = x.shape[0]
    eng = nisa.engine[LOAD_ENGINE]
    mul = nisa.engine[PRODUCT_ENGINE]
    xt = nl.ndarray((T, HEADS * D), dtype=nl.bfloat16, name="x")
    nisa.dma_copy(dst=xt, src=x, engine=eng)
    ct = nl.ndarray((T, HALF), dtype=nl.float32, name="cos")
    nisa.dma_copy(dst=ct, src=cos, engine=eng)
    st = nl.ndarray((T, HALF), dtype=nl.float32, name="sin")
    nisa.dma_copy(dst=st, src=sin, engine=eng)

    res = nl.ndarray((T, HEADS * D), dtype=nl.bfloat16, name="rotated")
    a = nl.ndarray((T, HALF), dtype=nl.float32, name="x1_cos")
    b = nl.ndarray((T, HALF), dtype=nl.float32, name="x2_sin")
    c = nl.ndarray((T, HALF), dtype=nl.float32, name="x2_cos")
    d = nl.ndarray((T, HALF), dtype=nl.float32, name="x1_sin")
    for h in range(HEADS):
        x1 = xt[:, h * D : h * D + HALF]
        x2 = xt[:, h * D + HALF : (h + 1) * D]
        nisa.tensor_tensor(a, x1, ct, nl.multiply, engine=mul)
        nisa.tensor_tensor(b, x2, st, nl.multiply, engine=mul)
        nisa.tensor_tensor(res[:, h * D : h * D + HALF], a, b, nl.subtract)
        nisa.tensor_tensor(c, x2, ct, nl.multiply, engine=mul)
        nisa.tensor_tensor(d, x1, st, nl.multiply, engine=mul)
        nisa.tensor_tensor(res[:, h * D + HALF : (h + 1) * D], c, d, nl.add)
    nisa.dma_copy(dst=out, src=res, engine=eng)
