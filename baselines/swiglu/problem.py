"""Inputs and float64 reference for `swiglu` (trusted problem code, never shown to kernels)."""

from __future__ import annotations

import numpy as np

from knight.problems.families import BF16, all_bf16, binade_spread

INTER = 2048


def make_inputs(params: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Gate and up projections ~ N(0, 1) with per-token scales 2^-2..2^2. With
    `family = "order"`: the gates sweep every bf16 value with 2^-30 <= |g| <= 200 (shuffled,
    repeated to fill), so a silu computed any other way differs wherever it differs at all; up
    spreads over ~16 binades."""
    T = int(params["T"])
    if params.get("family") == "order":
        gate = rng.permutation(np.resize(all_bf16(2.0**-30, 200.0), T * INTER)).reshape(T, INTER)
        up = binade_spread(rng, (T, INTER), -8, 8)
        return {"gate": gate.astype(BF16), "up": up.astype(BF16)}
    scale = np.exp2(rng.uniform(-2.0, 2.0, size=(T, 1)))
    gate = rng.standard_normal((T, INTER)) * scale
    up = rng.standard_normal((T, INTER)) * scale
    return {"gate": gate.astype(np.float32).astype(BF16), "up": up.astype(np.float32).astype(BF16)}


def reference(inputs: dict[str, np.ndarray], params: dict) -> dict[str, np.ndarray]:
    g = inputs["gate"].astype(np.float64)
    return {"out": g / (1.0 + np.exp(-g)) * inputs["up"].astype(np.float64)}


def floor_bytes(inputs: dict[str, np.ndarray], params: dict) -> int:
    """gate and up in, out back (bf16)."""
    return 3 * inputs["gate"].size * 2


def floor_work(inputs: dict[str, np.ndarray], params: dict) -> dict[str, float]:
    """Every gate value passes ScalarE's silu once."""
    return {"scalar_elements": inputs["gate"].size}
