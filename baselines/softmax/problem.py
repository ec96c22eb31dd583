"""Inputs and float64 reference for `softmax` (trusted problem code, never shown to kernels)."""

from __future__ import annotations

import numpy as np

from knight.problems.families import BF16, binade_spread, large_first

C = 2048


def make_inputs(params: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Attention scores: Gaussian rows with per-row temperature 0.5..8 (peaked and flat rows).
    With `family = "order"`: rows whose exps span ~25 binades, the largest first, so the
    contract's sequential sum absorbs small exps that a tiled or tree sum keeps."""
    R = int(params["R"])
    if params.get("family") == "order":
        x = large_first(-np.abs(binade_spread(rng, (R, C), -4, 4)))
        x[:, 0] = 0.0  # one exp of exactly 1 first; the rest span exp(-32)..exp(-0.008)
        return {"x": x.astype(BF16)}
    x = rng.standard_normal((R, C)) * np.exp2(rng.uniform(-1.0, 3.0, size=(R, 1)))
    return {"x": x.astype(np.float32).astype(BF16)}


def reference(inputs: dict[str, np.ndarray], params: dict) -> dict[str, np.ndarray]:
    x = inputs["x"].astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return {"out": e / e.sum(axis=1, keepdims=True)}


def floor_bytes(inputs: dict[str, np.ndarray], params: dict) -> int:
    """x in and out back, bf16: every byte crosses HBM once."""
    return 2 * inputs["x"].size * 2


def floor_work(inputs: dict[str, np.ndarray], params: dict) -> dict[str, float]:
    """Every score passes ScalarE's exp once (only ScalarE evaluates transcendentals)."""
    return {"scalar_elements": inputs["x"].size}
