"""Inputs and float64 reference for `moe_router` (trusted problem code, never shown to kernels)."""

from __future__ import annotations

import ml_dtypes
import numpy as np

H, E, K = 2048, 128, 8  # Qwen3-30B-A3B: hidden size, experts, experts per token
BF16 = ml_dtypes.bfloat16
W_STD = {"random": 0.05, "peaked": 0.15, "same": 0.05}  # logit std ~ W_STD * sqrt(H): 2.3 or 6.8
GEN_MARGIN = 1e-3  # generated tokens keep their top-9 logits at least this far apart
TIE_TOL = 1e-4  # closer float64 logits than this make a rank ambiguous (fp32 error is ~1e-5)


def _logits64(hidden: np.ndarray, w: np.ndarray) -> np.ndarray:
    """hidden @ w in float64, summed in a fixed order (no BLAS, so the same bits on any CPU)."""
    x = hidden.astype(np.float64)
    w64 = w.astype(np.float64)
    acc = np.zeros((x.shape[0], w64.shape[1]))
    for h in range(x.shape[1]):
        acc += np.multiply.outer(x[:, h], w64[h])
    return acc


def _top9_gaps(logits: np.ndarray) -> np.ndarray:
    """Gaps between consecutive logits among each token's 9 largest: [T, 8]."""
    top = -np.sort(-logits, axis=1)[:, : K + 1]
    return top[:, :-1] - top[:, 1:]


def ambiguous_ids(inputs: dict[str, np.ndarray], tol: float = TIE_TOL) -> np.ndarray:
    """[T, 8] bool: the float64 rank at this slot is within `tol` (in logits) of a neighbour,
    i.e. the slot's id may legitimately differ between fp32 kernels and the float64 reference."""
    gaps = _top9_gaps(_logits64(inputs["hidden"], inputs["w_router"]))
    close = gaps < tol  # close[:, k]: slots k and k+1 (k+1 = 8 is the first expert left out)
    amb = close.copy()
    amb[:, 1:] |= close[:, :-1]
    return amb


def make_inputs(params: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """An RMS-normalised hidden state (unit-variance Gaussian rows) and a Gaussian router.
    A token whose top-9 logits come closer than GEN_MARGIN is redrawn, so ranks are never
    near-tied. Regimes: "random"; "peaked" (3x larger router weights: sharper softmax);
    "same" (every token identical, so all tokens route to the same 8 experts)."""
    T = int(params["T"])
    regime = params.get("routing", "random")
    w = (rng.standard_normal((H, E), dtype=np.float32) * np.float32(W_STD[regime])).astype(BF16)
    rows = 1 if regime == "same" else T
    hidden = rng.standard_normal((rows, H), dtype=np.float32).astype(BF16)
    tight = _top9_gaps(_logits64(hidden, w)).min(axis=1) < GEN_MARGIN
    for t in np.flatnonzero(tight):
        for _ in range(50):
            hidden[t] = rng.standard_normal(H, dtype=np.float32).astype(BF16)
            if _top9_gaps(_logits64(hidden[t : t + 1], w)).min() >= GEN_MARGIN:
                break
        else:  # pragma: no cover - each draw fails with probability ~3%
            raise RuntimeError("could not draw a token without near-tied routing")
    if regime == "same":
        hidden = np.repeat(hidden, T, axis=0)
    return {"hidden": hidden, "w_router": w}


def reference(inputs: dict[str, np.ndarray], params: dict) -> dict[str, np.ndarray]:
    logits = _logits64(inputs["hidden"], inputs["w_router"])
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    ids = np.argsort(-p, axis=1, kind="stable")[:, :K]
    top = np.take_along_axis(p, ids, axis=1)
    return {
        "expert_ids": ids.astype(np.int32),
        "expert_weights": top / top.sum(axis=1, keepdims=True),
    }


def floor_bytes(inputs: dict[str, np.ndarray], params: dict) -> int:
    """Activations and router weights in, ids and weights out."""
    T = inputs["hidden"].shape[0]
    return T * H * 2 + H * E * 2 + T * K * (4 + 4)


def describe_mismatch(
    name: str, diff: np.ndarray, inputs: dict[str, np.ndarray], params: dict
) -> dict:
    """Map differing outputs to tokens and top-k slots (rank 0 = the largest probability); a
    difference only in late slots points at tie breaking or the order of the ranking."""
    tokens = np.flatnonzero(diff.any(axis=1))
    slots = np.flatnonzero(diff.any(axis=0))
    return {"tokens": tokens.tolist()[:16], "slots": slots.tolist()}
