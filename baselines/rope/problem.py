"""Inputs and float64 reference for `rope` (trusted problem code, never shown to kernels)."""

from __future__ import annotations

import numpy as np

from knight.problems.families import BF16, binade_spread

HEADS = 8
D = 128
HALF = D // 2
THETA = 1_000_000.0  # Qwen3's rope_theta


def _angles(positions: np.ndarray) -> np.ndarray:
    inv_freq = THETA ** (-np.arange(0, D, 2, dtype=np.float64) / D)
    return positions[:, None].astype(np.float64) * inv_freq[None, :]


def make_inputs(params: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Queries ~ N(0, 1) with per-head scales 2^-2..2^3; cos and sin of Qwen3's RoPE angles
    (theta = 1e6) at random positions below 32k. With `family = "order"`: query values over
    ~16 binades and angles uniform on the circle, so x1 cos and x2 sin often nearly cancel and
    any change of the rounding points reaches the bf16 outputs."""
    T = int(params["T"])
    if params.get("family") == "order":
        x = binade_spread(rng, (T, HEADS * D), -8, 8)
        ang = rng.uniform(-np.pi, np.pi, size=(T, HALF))
    else:
        scale = np.repeat(np.exp2(rng.uniform(-2.0, 3.0, size=(1, HEADS))), D, axis=1)
        x = rng.standard_normal((T, HEADS * D)) * scale
        ang = _angles(rng.integers(0, 32768, size=T))
    return {
        "x": x.astype(np.float32).astype(BF16),
        "cos": np.cos(ang).astype(np.float32),
        "sin": np.sin(ang).astype(np.float32),
    }


def reference(inputs: dict[str, np.ndarray], params: dict) -> dict[str, np.ndarray]:
    T = inputs["x"].shape[0]
    x = inputs["x"].astype(np.float64).reshape(T, HEADS, D)
    c = inputs["cos"].astype(np.float64)[:, None, :]
    s = inputs["sin"].astype(np.float64)[:, None, :]
    x1, x2 = x[..., :HALF], x[..., HALF:]
    out = np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    return {"out": out.reshape(T, HEADS * D)}


def floor_bytes(inputs: dict[str, np.ndarray], params: dict) -> int:
    """x in and out back (bf16), cos and sin in (fp32)."""
    return 2 * inputs["x"].nbytes + inputs["cos"].nbytes + inputs["sin"].nbytes
