"""Inputs and float64 reference for `kv_layout` (trusted problem code, never shown to kernels)."""

from __future__ import annotations

import numpy as np

D = 128


def make_inputs(params: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Keys ~ N(0, 1) with per-dim scales 2^-3..2^5 (a few outlier dims, as in real K caches).
    With `family = "order"`: fp32 values over 2^-14..2^15 (inside fp16's normal range, so a
    detour through fp16 is not caught by an overflow but by its bits) whose low 16 bits lie
    exactly on a bf16 rounding tie or one ulp either side, so any rounding other than one RNE
    from fp32 (through fp16, by truncation, twice) shows."""
    S = int(params["S"])
    if params.get("family") == "order":
        k = rng.standard_normal((S, D)) * np.exp2(rng.integers(-13, 14, size=(S, D)))
        bits = k.astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
        low = rng.choice(np.array([0x7FFF, 0x8000, 0x8001], dtype=np.uint32), size=(S, D))
        return {"k": (bits | low).view(np.float32)}
    k = rng.standard_normal((S, D)) * np.exp2(rng.uniform(-3.0, 5.0, size=(1, D)))
    return {"k": k.astype(np.float32)}


def reference(inputs: dict[str, np.ndarray], params: dict) -> dict[str, np.ndarray]:
    return {"k_t": inputs["k"].astype(np.float64).T}


def floor_bytes(inputs: dict[str, np.ndarray], params: dict) -> int:
    """k in (fp32), k_t back (bf16)."""
    return inputs["k"].size * (4 + 2)
