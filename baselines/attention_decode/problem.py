"""Inputs and float64 reference for `attention_decode` (trusted problem code, never shown to kernels)."""

from __future__ import annotations

import numpy as np

from knight.problems.families import BF16, binade_spread

HEADS = 8
D = 128


def make_inputs(params: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """q, k, v ~ N(0, 1) (per-head query scales 2^-1..2^1.5, so some heads are peaked). With
    `family = "order"`: values over ~8 binades, q positive; key 0 and key S-1 are equal and
    positive, so they score highest in every head (probability 1 against ~1e-3 for the rest),
    and v[S-1] = -v[0] with v[0] ~2^12 times the rest: their products cancel exactly after the PV
    accumulation and the output is as small as the absorbed terms, so another chunk order, sum
    or rounding point shows."""
    S = int(params["S"])
    if params.get("family") == "order":
        q = np.abs(binade_spread(rng, (HEADS, D), -4, 0))
        k_t = binade_spread(rng, (D, S), -4, 0)
        v = binade_spread(rng, (S, D), -6, 2)
        k_t[:, 0] = 2 * np.abs(k_t[:, 0])
        k_t[:, -1] = k_t[:, 0]
        v[0] *= np.float32(2.0**12)
        v[-1] = -v[0]
        return {"q": q.astype(BF16), "k_t": k_t.astype(BF16), "v": v.astype(BF16)}
    q = rng.standard_normal((HEADS, D)) * np.exp2(rng.uniform(-1.0, 1.5, size=(HEADS, 1)))
    k_t = rng.standard_normal((D, S))
    v = rng.standard_normal((S, D))
    return {
        "q": q.astype(np.float32).astype(BF16),
        "k_t": k_t.astype(np.float32).astype(BF16),
        "v": v.astype(np.float32).astype(BF16),
    }


def reference(inputs: dict[str, np.ndarray], params: dict) -> dict[str, np.ndarray]:
    q, k_t, v = (inputs[n].astype(np.float64) for n in ("q", "k_t", "v"))
    sc = q @ k_t / np.sqrt(D)
    e = np.exp(sc - sc.max(axis=1, keepdims=True))
    return {"out": (e / e.sum(axis=1, keepdims=True)) @ v}


def floor_bytes(inputs: dict[str, np.ndarray], params: dict) -> int:
    """q, the K and V caches in, out back (bf16): the caches dominate."""
    return inputs["q"].nbytes + inputs["k_t"].nbytes + inputs["v"].nbytes + HEADS * D * 2


def floor_work(inputs: dict[str, np.ndarray], params: dict) -> dict[str, float]:
    """QK^T and PV on TensorE; one exp per score on ScalarE."""
    S = inputs["k_t"].shape[1]
    return {"tensor_flops": 2.0 * 2 * HEADS * D * S, "scalar_elements": HEADS * S}
