"""Baseline decode GEMV: out[T, 1024] = x[T, 2048] @ w[2048, 1024], bf16 in and out.

A plain NKI-style kernel on one core, as the first projection kernel an engineer writes for
decode. The activations arrive transposed (hidden row k = 16p + kt on partition p, K-tile kt),
element by element; the weights arrive one K-tile at a time (rows 16p + kt: one contiguous 2 KiB
row per partition) on one DMA queue into a single buffer. Each tile's two matmuls (the tokens
stationary, 512 weight columns moving) accumulate into two PSUM banks; the result is read out
to bf16 and stored.

Rounding chain (the contract):
  p_kt = fp32(sum over p of x[t, 16p + kt] * w[16p + kt, n])   (128 exact products, one rounding)
  acc = p_0;  acc = fp32(acc + p_kt) for kt = 1 .. 15             (PSUM accumulation, kt order)
  out = bf16(acc)
"""

from knight.npu import nisa, nl

K = 2048  # hidden size
N = 1024  # output features
P = 128  # partitions
KT = K // P  # K-tiles
NB = 512  # output columns per PSUM bank

# Tuning knobs (name -> allowed values). Every value keeps the output bits unchanged.
WEIGHT_ENGINE = "sync"  # engine that triggers the weight DMAs
WEIGHT_BUFFERS = 1  # weight-tile buffers rotated across K-tiles
TUNABLES = {
    "WEIGHT_ENGINE": ["sync", "scalar", "gpsimd"],
    "WEIGHT_BUFFERS": [1, 2, 4],
}


def gemv(x, w, out):
    T = x.shape[0]

    # Tokens as matmul columns: xT[p, kt, t] = x[t, 16p + kt].
    xT = nl.ndarray((P, KT, T), dtype=nl.bfloat16, name="x_T")
    nisa.dma_copy(dst=xT, src=x.reshape(T, P, KT).permute(1, 2, 0))

    w_tiles = w.reshape(P, KT, N)
    bufs = [nl.ndarray((P, N), dtype=nl.bfloat16, name=f"w{b}") for b in range(WEIGHT_BUFFERS)]
    ps = [
        nl.ndarray((T, NB), dtype=nl.float32, buffer=nl.psum, name=f"ps{j}") for j in range(N // NB)
    ]
    for kt in range(KT):
        buf = bufs[kt % WEIGHT_BUFFERS]
        nisa.dma_copy(dst=buf, src=w_tiles[:, kt, :], engine=nisa.engine[WEIGHT_ENGINE])
        for j in range(N // NB):
            nisa.nc_matmul(ps[j], xT[:, kt, :], buf[:, j * NB : (j + 1) * NB], accumulate=kt > 0)
    res = nl.ndarray((T, N), dtype=nl.bfloat16, name="out")
    for j in range(N // NB):
        nisa.tensor_copy(res[:, j * NB : (j + 1) * NB], ps[j])
    nisa.dma_copy(dst=out, src=res)
