"""Inputs and float64 reference for `add_rmsnorm` (trusted problem code, never shown to kernels)."""

from __future__ import annotations

import numpy as np

from knight.problems.families import BF16, binade_spread, large_first

H = 2048
EPS = 1e-6


def make_inputs(params: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A decode residual stream (per-token scales 2^-2..2^4, four outlier channels x16) plus an
    attention output a quarter its size; gamma ~ 1 +- 0.25. With `family = "order"`: residual
    rows over ~20 binades, largest first, and x over the same binades at 1/8 the size, so h's
    squares span ~40 binades and the contract's sequential sum absorbs small ones that any other
    grouping keeps; x + residual is not exact in bf16, so normalising the fp32 sum shows."""
    T = int(params["T"])
    if params.get("family") == "order":
        residual = large_first(binade_spread(rng, (T, H), -14, 6))
        x = binade_spread(rng, (T, H), -17, 3)
    else:
        scale = np.exp2(rng.uniform(-2.0, 4.0, size=(T, 1)))
        residual = rng.standard_normal((T, H)) * scale
        residual[:, rng.choice(H, size=4, replace=False)] *= 16.0
        x = rng.standard_normal((T, H)) * scale / 4.0
    gamma = 1.0 + 0.25 * rng.standard_normal(H)
    return {
        "x": x.astype(np.float32).astype(BF16),
        "residual": residual.astype(np.float32).astype(BF16),
        "gamma": gamma.astype(np.float32).astype(BF16),
    }


def reference(inputs: dict[str, np.ndarray], params: dict) -> dict[str, np.ndarray]:
    h = inputs["x"].astype(np.float64) + inputs["residual"].astype(np.float64)
    rstd = 1.0 / np.sqrt(np.mean(h * h, axis=1, keepdims=True) + EPS)
    return {"h": h, "out": h * rstd * inputs["gamma"].astype(np.float64)}


def floor_bytes(inputs: dict[str, np.ndarray], params: dict) -> int:
    """x and the residual in, h and out back, gamma in (bf16)."""
    return 4 * inputs["x"].size * 2 + H * 2
