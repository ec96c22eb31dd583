"""Inputs and float64 reference for `layernorm` (trusted problem code, never shown to kernels)."""

from __future__ import annotations

import numpy as np

from knight.problems.families import BF16, binade_spread, large_first

H = 1024
EPS = 1e-5


def make_inputs(params: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Activations with a per-token offset (+-2^0..2^3) and scale (2^-2..2^2), gamma ~ 1 +-
    0.2, beta ~ 0 +- 0.1. With `family = "order"`: rows over ~20 binades, largest first, so the
    sequential sums absorb small terms that any other grouping keeps, and a one-pass variance
    (E[x^2] - mean^2) rounds differently."""
    T = int(params["T"])
    if params.get("family") == "order":
        x = large_first(binade_spread(rng, (T, H), -14, 6))
    else:
        offset = rng.choice([-1.0, 1.0], size=(T, 1)) * np.exp2(rng.uniform(0.0, 3.0, size=(T, 1)))
        x = offset + rng.standard_normal((T, H)) * np.exp2(rng.uniform(-2.0, 2.0, size=(T, 1)))
    gamma = 1.0 + 0.2 * rng.standard_normal(H)
    beta = 0.1 * rng.standard_normal(H)
    return {
        "x": x.astype(np.float32).astype(BF16),
        "gamma": gamma.astype(np.float32).astype(BF16),
        "beta": beta.astype(np.float32).astype(BF16),
    }


def reference(inputs: dict[str, np.ndarray], params: dict) -> dict[str, np.ndarray]:
    x = inputs["x"].astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    y = (x - mean) / np.sqrt(var + EPS)
    return {"out": y * inputs["gamma"].astype(np.float64) + inputs["beta"].astype(np.float64)}


def floor_bytes(inputs: dict[str, np.ndarray], params: dict) -> int:
    """x in, out back, gamma and beta in (bf16)."""
    return 2 * inputs["x"].nbytes + inputs["gamma"].nbytes + inputs["beta"].nbytes
