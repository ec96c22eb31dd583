"""Inputs and float64 reference for `logsumexp` (trusted problem code, never shown to kernels)."""

from __future__ import annotations

import numpy as np

from knight.problems.families import BF16, binade_spread, large_first

V = 8192


def make_inputs(params: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Language-model logits: Gaussian with per-token spread 1..4 and a few strong candidates
    (+8..16). With `family = "order"`: rows whose exps span ~25 binades, the largest first, so
    the contract's sequential sum absorbs small exps that a tiled or tree sum keeps."""
    T = int(params["T"])
    if params.get("family") == "order":
        x = large_first(-np.abs(binade_spread(rng, (T, V), -4, 4)))
        x[:, 0] = 0.0
        return {"logits": x.astype(BF16)}
    x = rng.standard_normal((T, V)) * rng.uniform(1.0, 4.0, size=(T, 1))
    for t in range(T):
        x[t, rng.choice(V, size=4, replace=False)] += rng.uniform(8.0, 16.0, size=4)
    return {"logits": x.astype(np.float32).astype(BF16)}


def reference(inputs: dict[str, np.ndarray], params: dict) -> dict[str, np.ndarray]:
    x = inputs["logits"].astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return {"out": m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))}


def floor_bytes(inputs: dict[str, np.ndarray], params: dict) -> int:
    """The logits in (bf16), one fp32 per token back."""
    T = inputs["logits"].shape[0]
    return T * V * 2 + T * 4


def floor_work(inputs: dict[str, np.ndarray], params: dict) -> dict[str, float]:
    """Every logit passes ScalarE's exp once."""
    return {"scalar_elements": inputs["logits"].size}
