"""Inputs and float64 reference for `moe_decode` (trusted problem code, never shown to kernels)."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from knight.npu import numerics

H, I, E, K = 2048, 192, 128, 8  # noqa: E741 - the model's own names
BF16 = ml_dtypes.bfloat16


def _weight_bits_table() -> np.ndarray:
    """bf16 bits for every uint16 draw r: sign and mantissa from r, exponent 120 + bits 7-8 of r."""
    r = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    exponent = ((r >> np.uint16(7)) & np.uint16(3)) + np.uint16(120)
    return (r & np.uint16(0x807F)) | (exponent << np.uint16(7))


# One gather through a 64 Ki table replaces five full-size elementwise passes (and their
# temporaries) over the ~100 M draws of w_gate_up: the same bits, several times faster.
_WEIGHT_BITS = _weight_bits_table()


def _bf16_weights(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random bf16 values of magnitude 2^-7..2^-3 with random signs, built from bits (fast)."""
    r = rng.integers(0, 1 << 16, size=int(np.prod(shape)), dtype=np.uint16)
    return _WEIGHT_BITS[r].view(BF16).reshape(shape)


def _route(rng: np.random.Generator, T: int, regime: str) -> tuple[np.ndarray, np.ndarray]:
    """Top-8 expert ids (descending weight) and renormalised fp32 weights for T tokens."""
    scale = 4.0 if regime == "skewed" else 1.0
    logits = rng.standard_normal((T, E)) * scale
    if regime == "same":
        logits[:] = logits[0]
    elif regime == "edge":
        logits[:, 0] += 50.0
        logits[:, E - 1] += 49.0
    elif regime == "repeated":
        logits[1::2] = logits[0::2][: T // 2]
    ids = np.argsort(-logits, axis=1, kind="stable")[:, :K]
    top = np.take_along_axis(logits, ids, axis=1)
    p = np.exp(top - top.max(axis=1, keepdims=True))
    weights = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    return ids.astype(np.int32), weights


def make_inputs(params: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Gaussian activations, top-8 routing in the workload's regime, weights of 2^-7..2^-3.
    With `family = "order"`: the cancellations described below are planted."""
    T = int(params["T"])
    ids, weights = _route(rng, T, params.get("routing", "random"))
    hidden = rng.standard_normal((T, H), dtype=np.float32).astype(BF16)
    inputs = {
        "hidden": hidden,
        "expert_ids": ids,
        "expert_weights": weights,
        "w_gate_up": _bf16_weights(rng, (E, H, 2, I)),
        "w_down": _bf16_weights(rng, (E, I, H)),
    }
    if params.get("family", "routing") == "order":
        _plant_cancellations(inputs, rng)
    return inputs


# --- the order-revealing family ------------------------------------------------------------
# A sum whose terms are of similar size reorders harmlessly in fp32, and a last-bit change of an
# fp32 partial flips a bf16 result with probability ~2^-16. This family plants exact
# cancellations that only the contract's order performs exactly:
#   - gate/up: K-tile pairs (0, 1), (7, 8), (14, 15) carry huge equal activations (2^20, 2^16,
#     2^12) against negated weight rows, so each pair's partials cancel exactly when added one
#     after the other in PSUM; any other order (reversed, interleaved chains, split tiles) adds a
#     huge partial to the small remainder and rounds it away;
#   - down projection: in each core's half of the intermediate, columns j and j + 88 (j < 8)
#     are equal (copied gate/up columns) against negated w_down rows scaled by 2^16, so the
#     96-term product sum cancels exactly only when summed as one K-tile (a split anywhere
#     between rows 8 and 88 separates the pairs);
#   - probes: in each core's half, columns 16..39 have one nonzero gate and one nonzero up
#     weight (the same in every expert), chosen so that silu(gate) * up lies next to a bf16
#     rounding tie: silu(gate) one fp32 ulp up (even probes) or down (odd probes) flips the
#     bf16 intermediate, so a moved rounding point in the gate/up path shows.
GATE_UP_PAIRS = ((0, 1, 20), (7, 8, 16), (14, 15, 12))  # K-tiles a, b = a's negation, log2 size
DOWN_PAIRS, DOWN_SCALE, DOWN_PARTNER = 8, 16, 88
PROBES, PROBE_COLUMN, PROBE_TILE = 24, 16, 3  # per core; first column; K-tile of their rows


def _negated(a: np.ndarray) -> np.ndarray:
    return (a.view(np.uint16) ^ np.uint16(0x8000)).view(BF16)


def _plant_cancellations(inputs: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    hidden, wgu, wdn = inputs["hidden"], inputs["w_gate_up"], inputs["w_down"]
    T = hidden.shape[0]
    tiles = wgu.reshape(E, 128, H // 128, 2, I)  # [e, p, kt, gate/up, i]: a view
    for a, b, size in GATE_UP_PAIRS:  # hidden row 16p + kt lives in K-tile kt
        big = (
            rng.integers(128, 256, size=(T, 128))
            / 128.0
            * 2.0**size
            * rng.choice([-1.0, 1.0], size=(T, 128))
        )
        hidden[:, a::16] = big.astype(BF16)
        hidden[:, b::16] = hidden[:, a::16]
        tiles[:, :, b] = _negated(tiles[:, :, a])
    for c in range(2):
        lo = slice(96 * c, 96 * c + DOWN_PAIRS)
        hi = slice(96 * c + DOWN_PARTNER, 96 * c + DOWN_PARTNER + DOWN_PAIRS)
        wgu[:, :, :, hi] = wgu[:, :, :, lo]
        up = (wdn[:, lo, :].view(np.uint16) + np.uint16(DOWN_SCALE << 7)).view(BF16)
        wdn[:, lo, :] = up
        wdn[:, hi, :] = _negated(up)
    _plant_probes(inputs, rng)


def _plant_probes(inputs: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    hidden, wgu = inputs["hidden"], inputs["w_gate_up"]
    cand = (np.arange(128, 256)[None, :] / 128.0 * np.exp2(np.arange(-1, 1))[:, None]).ravel()
    cand = np.concatenate([cand, -cand]).astype(np.float32)  # exact in bf16
    for c in range(2):
        wgu[:, :, :, 96 * c + PROBE_COLUMN : 96 * c + PROBE_COLUMN + PROBES] = 0
        for j in range(PROBES):
            n = c * PROBES + j
            rg, ru = 16 * (2 * n) + PROBE_TILE, 16 * (2 * n + 1) + PROBE_TILE
            for _ in range(20):  # draw the two activations (the same in every token) until a
                # pair of weights puts the product next to a tie
                hg, hu = (float(v) for v in rng.choice(cand[:256], size=2))
                weights = _probe_weights(hg, hu, cand, upward=j % 2 == 0)
                if weights is not None:
                    break
            else:  # pragma: no cover - ~8 of the 260k weight pairs flip, per draw
                raise RuntimeError("no probe weights found")
            hidden[:, rg], hidden[:, ru] = hg, hu
            col = 96 * c + PROBE_COLUMN + j
            wgu[:, rg, 0, col], wgu[:, ru, 1, col] = weights


def _probe_weights(
    hg: float, hu: float, cand: np.ndarray, upward: bool
) -> tuple[float, float] | None:
    """Gate and up weights w_g, w_u such that bf16(silu(hg * w_g) * (hu * w_u)) flips when the
    fp32 silu moves one ulp (up or down): the first such pair in candidate order, or None."""
    g = (np.float32(hg) * cand).astype(np.float32)  # exact: bf16 x bf16
    u = (np.float32(hu) * cand).astype(np.float32)
    act = numerics.silu(g)
    moved = np.nextafter(act, np.float32(np.inf if upward else -np.inf))
    base = (act[:, None] * u[None, :]).astype(np.float32).astype(BF16)
    other = (moved[:, None] * u[None, :]).astype(np.float32).astype(BF16)
    hits = np.argwhere(base.view(np.uint16) != other.view(np.uint16))
    if hits.size == 0:
        return None
    i, k = hits[0]
    return float(cand[i]), float(cand[k])


def reference(inputs: dict[str, np.ndarray], params: dict) -> dict[str, np.ndarray]:
    x = inputs["hidden"].astype(np.float64)
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        for k in range(K):
            e = int(inputs["expert_ids"][t, k])
            w = inputs["w_gate_up"][e].astype(np.float64)
            gate, up = x[t] @ w[:, 0, :], x[t] @ w[:, 1, :]
            h = gate / (1.0 + np.exp(-gate)) * up
            out[t] += float(inputs["expert_weights"][t, k]) * (
                h @ inputs["w_down"][e].astype(np.float64)
            )
    return {"out": out}


def floor_bytes(inputs: dict[str, np.ndarray], params: dict) -> int:
    """Weights of every distinct routed expert, plus activations in and out: what must move."""
    distinct = len(np.unique(inputs["expert_ids"]))
    per_expert = (H * 2 * I + I * H) * 2
    T = inputs["hidden"].shape[0]
    return distinct * per_expert + 2 * T * H * 2 + T * K * 8


def describe_mismatch(
    name: str, diff: np.ndarray, inputs: dict[str, np.ndarray], params: dict
) -> dict:
    """Map differing output elements to tokens, their routed experts, and the baseline core that
    writes those columns (core c writes hidden columns [1024c, 1024c + 1024))."""
    tokens = np.flatnonzero(diff.any(axis=1))
    cols = np.flatnonzero(diff.any(axis=0))
    experts = sorted({int(e) for t in tokens for e in inputs["expert_ids"][t]})
    return {
        "tokens": tokens.tolist()[:16],
        "experts": experts[:32],
        "cores": sorted({int(c) // 1024 for c in cols}),
    }
