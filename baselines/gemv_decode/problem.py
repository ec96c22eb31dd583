"""Inputs and float64 reference for `gemv_decode` (trusted problem code, never shown to kernels)."""

from __future__ import annotations

import numpy as np

from knight.problems.families import BF16, binade_spread

K = 2048
N = 1024


def make_inputs(params: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Decode activations ~ N(0, 1) with per-token scales 2^-2..2^2, weights ~ N(0, 1/K).
    With `family = "order"`: operands over ~8 binades, and hidden row 0 (K-tile 0) carries
    products up to ~2^13 that row 2047 (the last K-tile) cancels exactly, so the outputs are as
    small as the absorbed terms and show any other K order or grouping."""
    T = int(params["T"])
    if params.get("family") == "order":
        x = binade_spread(rng, (T, K), -6, 2)
        w = binade_spread(rng, (K, N), -6, 2)
        x[:, 0] *= np.float32(2.0**8)
        x[:, -1] = -x[:, 0]
        w[-1] = w[0]
        return {"x": x.astype(BF16), "w": w.astype(BF16)}
    x = rng.standard_normal((T, K)) * np.exp2(rng.uniform(-2.0, 2.0, size=(T, 1)))
    w = rng.standard_normal((K, N)) / np.sqrt(K)
    return {"x": x.astype(np.float32).astype(BF16), "w": w.astype(np.float32).astype(BF16)}


def reference(inputs: dict[str, np.ndarray], params: dict) -> dict[str, np.ndarray]:
    return {"out": inputs["x"].astype(np.float64) @ inputs["w"].astype(np.float64)}


def floor_bytes(inputs: dict[str, np.ndarray], params: dict) -> int:
    """x and the weights in, out back (bf16): the 4 MiB of weights dominate."""
    T = inputs["x"].shape[0]
    return (T * K + K * N + T * N) * 2


def floor_work(inputs: dict[str, np.ndarray], params: dict) -> dict[str, float]:
    """2 T K N flops on TensorE (never binding at decode sizes)."""
    T = inputs["x"].shape[0]
    return {"tensor_flops": 2.0 * T * K * N}
