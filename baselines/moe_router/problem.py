"""Inputs and float64 reference for `moe_router` (trusted problem code, never shown to kernels)."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from knight.npu import numerics

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
    "same" (every token identical, so all tokens route to the same 8 experts).
    With `family = "order"`: the order-revealing inputs described below."""
    T = int(params["T"])
    if params.get("family", "routing") == "order":
        return _order_inputs(T, rng)
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


# --- the order-revealing family ------------------------------------------------------------
# Random routing rarely shows a changed order: logits of similar magnitude, and a generator
# that keeps ranks far apart. With `family = "order"`:
#   - hidden values span ~10 binades and router columns are scaled by 2^-2..2^2, so K-tile
#     partial sums cancel and differ in magnitude (the PSUM order shows), and exp values span
#     many binades within the softmax sum (the order of that sum shows);
#   - token 0 carries ties made on purpose: its best expert's column is copied to two higher
#     indices (exact ties), and its second expert a gets a twin b > a, a copy of a's column
#     with one weight nudged so that b's logit is larger by an ulp while the fp32
#     probabilities are equal (l - max rounds both to the same value). The contract ranks
#     probabilities with ties to the lower index, so ranking logits puts b before a.


def _contract(hidden: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """The baseline's rounding chain (baseline.py docstring), stage by stage, in NumPy."""
    logits = None
    for kt in range(H // 128):  # K-tile kt holds hidden rows 16p + kt
        part = numerics.matmul(hidden[:, kt::16].T, w[kt::16, :])
        logits = part if logits is None else numerics.accumulate(logits, part)
    return _softmax_chain(logits)


def _softmax_chain(logits: np.ndarray) -> dict[str, np.ndarray]:
    m = logits.max(axis=-1, keepdims=True)
    ex = numerics.exp((logits + (-m)).astype(np.float32))
    s = np.cumsum(ex, axis=-1, dtype=np.float32)[..., -1:]
    probs = (ex / s).astype(np.float32)
    ids = np.argsort(-probs, axis=-1, kind="stable")[..., :K]
    return {"logits": logits, "ex": ex, "probs": probs, "ids": ids}


def _nudged_columns(hidden0: np.ndarray, col: np.ndarray) -> np.ndarray:
    """Candidate copies of `col`, each with one weight moved by one bf16 ulp where the product
    with token 0's hidden value is smallest (logit changes of a few ulps): [n, H]."""
    rows = np.argsort(np.abs(hidden0.astype(np.float64) * col.astype(np.float64)), kind="stable")[
        :512
    ]
    bits = col.view(np.uint16)
    out = np.repeat(col[None, :], 2 * rows.size, axis=0)
    for j, step in enumerate((1, -1)):
        moved = (bits[rows].astype(np.int32) + step).astype(np.uint16).view(BF16)
        out[np.arange(rows.size) + j * rows.size, rows] = moved
    return out


def _token0_logits(hidden0: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Token 0's logits for candidate columns [n, H] -> [n] (the contract's K-tiling)."""
    return _contract(hidden0[None, :], cols.T)["logits"][0]


def _plant_tie(hidden: np.ndarray, w: np.ndarray, a: int, b: int) -> bool:
    """Overwrite column b with a nudged copy of column a such that token 0 has L_b > L_a and
    equal probabilities, both within its top 8. False if no nudge does."""
    cand = _nudged_columns(hidden[0], w[:, a])
    lb = _token0_logits(hidden[0], cand)
    base = _contract(hidden[:1], w)["logits"][0]
    rows = np.repeat(base[None, :], lb.size, axis=0)
    rows[:, b] = lb
    chain = _softmax_chain(rows)
    tie = (chain["probs"][:, a] == chain["probs"][:, b]) & (lb > base[a])
    top = (chain["ids"] == a).any(axis=1) & (chain["ids"] == b).any(axis=1)
    hits = np.flatnonzero(tie & top)
    if hits.size == 0:
        return False
    w[:, b] = cand[hits[0]]
    return True


def _order_inputs(T: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    for _ in range(20):
        mant = rng.integers(128, 256, size=(T, H)) / 128.0
        sign = rng.choice([-1.0, 1.0], size=(T, H))
        hidden = (mant * np.exp2(rng.integers(-8, 3, size=(T, H))) * sign).astype(BF16)
        scale = np.exp2(rng.integers(-2, 3, size=E))
        w = (rng.standard_normal((H, E)) * 0.0125 * scale).astype(np.float32).astype(BF16)
        if _plant_ties(hidden, w):
            return {"hidden": hidden, "w_router": w}
    raise RuntimeError("could not plant the ties of the order-revealing family")  # pragma: no cover


def _plant_ties(hidden: np.ndarray, w: np.ndarray) -> bool:
    """Token 0: its best expert's column scaled up by a power of two (exactly) and copied twice
    above it in index (exact ties), then a twin above its second expert whose logit is larger
    by an ulp with an equal probability (see above). Checks the planted ranks."""
    chain = _contract(hidden[:1], w)
    ids, lo = chain["ids"][0], chain["logits"][0]
    top, a = int(ids[0]), int(ids[1])
    if lo[a] <= 0:
        return False
    factor = 2.0 ** np.ceil(
        np.log2(6 * lo[a] / lo[top])
    )  # the max >= 6x: l - max absorbs an ulp of l
    w[:, top] = (w[:, top].astype(np.float32) * np.float32(factor)).astype(BF16)
    spare = [e for e in range(E) if e not in ids and e > max(top, a)]
    if len(spare) < 3:
        return False
    w[:, spare[1]] = w[:, top]
    w[:, spare[2]] = w[:, top]
    b = spare[0]
    if not _plant_tie(hidden, w, a, b):
        return False
    chain = _contract(hidden[:1], w)
    lo, p, ids = (chain[k][0] for k in ("logits", "probs", "ids"))
    return {top, a, b, spare[1], spare[2]} <= set(ids.tolist()) and p[a] == p[b] and lo[b] > lo[a]


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
