"""Inputs and float64 reference for `rmsnorm` (trusted problem code, never shown to kernels)."""

from __future__ import annotations

import ml_dtypes
import numpy as np

H = 2048  # Qwen3-30B-A3B hidden size
EPS = 1e-6  # Qwen3-30B-A3B rms_norm_eps
BF16 = ml_dtypes.bfloat16


def make_inputs(params: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Decode activations: Gaussian rows with per-token scales spanning 2^-4..2^4 and a few
    outlier channels (the "massive activations" of LLM hidden states), and a gamma near 1.
    With `family = "order"`: the order-revealing rows described below."""
    T = int(params["T"])
    if params.get("family", "decode") == "order":
        return _order_inputs(T, rng)
    x = rng.standard_normal((T, H), dtype=np.float32)
    x *= np.exp2(rng.uniform(-4.0, 4.0, size=(T, 1))).astype(np.float32)
    outliers = rng.choice(H, size=4, replace=False)
    x[:, outliers] *= np.float32(24.0)
    gamma = (1.0 + 0.25 * rng.standard_normal(H, dtype=np.float32)).astype(np.float32)
    return {"x": x.astype(BF16), "gamma": gamma.astype(BF16)}


# --- the order-revealing family ------------------------------------------------------------
# Bit-exactness is only a real check when a change of summation order or rounding point shows
# in the output. Gaussian bf16 rows rarely do: sums of similar squares reorder harmlessly, and a
# 1-ulp change of rstd flips a bf16 output with probability ~2^-16 per element. Each token of
# this family therefore has
#   - squares spanning ~30 binades, with large values first, so the contract's sequential chain
#     absorbs small squares that any other grouping (tiles, halves, TensorE) keeps;
#   - every third token quiet (mean square near eps), so how eps enters rstd shows;
#   - PROBES trailing columns whose squares the chain absorbs and whose x * rstd (gamma = 1
#     there) lies next to a bf16 rounding tie: rstd one fp32 ulp up (even tokens) or down
#     (odd tokens) flips a probe.
PROBES = 16
_TAIL = H - PROBES


def _contract_rstd(s: np.ndarray) -> np.ndarray:
    """rstd = fp32(rsqrt(fp32(fp32(s * 2^-11) + fp32(eps)))), elementwise on fp32 sums."""
    v = (s.astype(np.float32) * np.float32(1.0 / H)).astype(np.float32) + np.float32(EPS)
    return (1.0 / np.sqrt(v.astype(np.float32).astype(np.float64))).astype(np.float32)


def _bf16_out(x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """bf16(fp32(x * r)): the normalised value as the contract rounds it (gamma = 1)."""
    return (x.astype(np.float32) * r.astype(np.float32)).astype(np.float32).astype(BF16)


def _sequential_sum(sq: np.ndarray) -> np.float32:
    return np.add.accumulate(sq.astype(np.float32), dtype=np.float32)[-1]


def _order_token(rng: np.random.Generator, quiet: bool, upward: bool) -> np.ndarray | None:
    """One token of the order-revealing family (see above), as bf16; `upward`: its probes flip
    when rstd grows by one ulp (else when it shrinks). None when no candidate rstd has such a
    probe (the caller draws again)."""
    mant = rng.integers(128, 256, size=_TAIL) / 128.0
    expo = rng.integers(-12, 3, size=_TAIL)
    x = mant * np.exp2(expo) * rng.choice([-1.0, 1.0], size=_TAIL)
    big = rng.choice(64, size=4, replace=False)
    x[big] = rng.choice([-1.0, 1.0], size=4) * rng.integers(128, 256, size=4) / 128.0 * 64.0
    if quiet:  # mean square ~ eps: rstd then depends on how eps is added
        ms = float(np.mean(x * x))
        x *= 2.0 ** np.round(np.log2(np.sqrt(EPS / ms)))
    x = x.astype(BF16)
    # The last bulk element picks rstd: try many values of it, keep the first that gives a
    # probe flipping for a 1-ulp change of rstd in the token's direction (~3 of 640 do).
    prefix = np.add.accumulate(x[:-1].astype(np.float32) ** 2, dtype=np.float32)[-1]
    scale = float(np.abs(x[-1].astype(np.float32))) or 2.0**-10
    cand = (np.arange(128, 256) / 128.0 * scale * np.exp2(np.arange(-2, 3))[:, None]).ravel()
    cand = cand.astype(BF16).astype(np.float32)
    s = (prefix + (cand.astype(np.float64) ** 2).astype(np.float32)).astype(np.float32)
    r = _contract_rstd(s)
    probe_mant = (np.arange(128, 256) / 128.0).astype(np.float32)  # exact in bf16
    base = _bf16_out(probe_mant[None, :], r[:, None])
    up = base != _bf16_out(probe_mant[None, :], np.nextafter(r, np.float32(np.inf))[:, None])
    down = base != _bf16_out(probe_mant[None, :], np.nextafter(r, np.float32(0))[:, None])
    flips = up if upward else down
    good = np.flatnonzero(flips.any(axis=1))
    if good.size == 0:
        return None
    c = good[0]
    low = (probe_mant * r[c]).astype(np.float32).view(np.uint32) & np.uint32(0xFFFF)
    tie_distance = np.abs(low.astype(np.int64) - 0x8000)  # fp32 ulps from a bf16 rounding tie
    order = np.lexsort((tie_distance, ~flips[c]))  # the flipping probes first, then the nearest
    chosen = order[:PROBES]
    x[-1] = cand[c]
    # Probes: the chosen mantissas, scaled down by a power of two (which keeps x * rstd's
    # position between bf16 values) until the sequential chain absorbs their squares.
    k = int(np.floor(np.log2(float(s[c])))) // 2 - 16
    probes = probe_mant[chosen] * np.float32(2.0**k) * rng.choice([-1.0, 1.0], size=PROBES)
    row = np.concatenate([x.astype(np.float32), probes.astype(np.float32)]).astype(BF16)
    sq = row.astype(np.float32) ** 2
    if _sequential_sum(sq) != s[c]:  # pragma: no cover - the scaling above guarantees it
        raise RuntimeError("probe squares must be absorbed by the contract's chain")
    return row


def _order_inputs(T: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    rows = []
    for t in range(T):
        for _ in range(100):
            row = _order_token(rng, quiet=t % 3 == 2, upward=t % 2 == 0)
            if row is not None:
                rows.append(row)
                break
        else:  # pragma: no cover - each draw fails with probability well below 1%
            raise RuntimeError("could not draw an order-revealing token")
    gamma = (1.0 + 0.25 * rng.standard_normal(H)).astype(np.float32)
    gamma[_TAIL:] = 1.0
    return {"x": np.stack(rows), "gamma": gamma.astype(BF16)}


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
