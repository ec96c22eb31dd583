"""Inputs and float64 reference for `gemm_prefill` (trusted problem code, never shown to kernels)."""

from __future__ import annotations

import numpy as np

from knight.problems.families import BF16, binade_spread

K = 1024
N = 1024


def make_inputs(params: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Activations ~ N(0, 1) and weights ~ N(0, 1/K) (a projection of prefill tokens).
    With `family = "order"`: operands over ~8 binades whose first K row holds products up to ~2^13
    that the last K row cancels exactly, so the result is small and carries the roundings of
    the K-order accumulation: another K-tiling or order changes the bf16 outputs."""
    M = int(params["M"])
    if params.get("family") == "order":
        a_t = binade_spread(rng, (K, M), -6, 2)
        b = binade_spread(rng, (K, N), -6, 2)
        a_t[0] *= np.float32(2.0**8)
        a_t[-1] = -a_t[0]
        b[-1] = b[0]
        return {"a_t": a_t.astype(BF16), "b": b.astype(BF16)}
    a_t = rng.standard_normal((K, M), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32) / np.float32(np.sqrt(K))
    return {"a_t": a_t.astype(BF16), "b": b.astype(BF16)}


def reference(inputs: dict[str, np.ndarray], params: dict) -> dict[str, np.ndarray]:
    return {"out": inputs["a_t"].astype(np.float64).T @ inputs["b"].astype(np.float64)}


def floor_bytes(inputs: dict[str, np.ndarray], params: dict) -> int:
    """a and b in once, out back once (bf16)."""
    M = inputs["a_t"].shape[1]
    return (K * M + K * N + M * N) * 2


def floor_work(inputs: dict[str, np.ndarray], params: dict) -> dict[str, float]:
    """2 M N K flops on TensorE."""
    M = inputs["a_t"].shape[1]
    return {"tensor_flops": 2.0 * M * N * K}
