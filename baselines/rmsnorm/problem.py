"""Inputs and float64 reference for `rmsnorm` (trusted problem code, never shown to kernels)."""

from __future__ import annotations

import ml_dtypes
import numpy as np

H = 2048  # Qwen3-30B-A3B hidden size
EPS = 1e-6  # Qwen3-30B-A3B rms_norm_eps
BF16 = ml_dtypes.bfloat16


def make_inputs(params: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Decode activations: Gaussian rows with per-token scales spanning 2^-4..2^4 and a few
    outlier channels (the "massive activations" of LLM hidden states), and a gamma near 1."""
    T = int(params["T"])
    x = rng.standard_normal((T, H), dtype=np.float32)
    x *= np.exp2(rng.uniform(-4.0, 4.0, size=(T, 1))).astype(np.float32)
    outliers = rng.choice(H, size=4, replace=False)
    x[:, outliers] *= np.float32(24.0)
    gamma = (1.0 + 0.25 * rng.standard_normal(H, dtype=np.float32)).astype(np.float32)
    return {"x": x.astype(BF16), "gamma": gamma.astype(BF16)}


def reference(inputs: dict[str, np.ndarray], params: dict) -> dict[str, np.ndarray]:
    x = inputs["x"].astype(np.float64)
    gamma = inputs["gamma"].astype(np.float64)
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=1, keepdims=True) + EPS)
    return {"out": x * rstd * gamma}


def floor_bytes(inputs: dict[str, np.ndarray], params: dict) -> int:
    """x in, gamma in, out back: every byte must cross HBM once."""
    T = inputs["x"].shape[0]
    return 2 * T * H * 2 + H * 2


def describe_mismatch(
    name: str, diff: np.ndarray, inputs: dict[str, np.ndarray], params: dict
) -> dict:
    """Map differing output elements to tokens and to 512-column tiles of the hidden axis."""
    tokens = np.flatnonzero(diff.any(axis=1))
    cols = np.flatnonzero(diff.any(axis=0))
    return {"tokens": tokens.tolist()[:16], "column_tiles": sorted({int(c) // 512 for c in cols})}
