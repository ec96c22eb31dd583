"""Input families that make rounding-order changes visible, shared by the problems' generators.

Bit-exact judging only catches a reordered sum or a moved rounding when the inputs make those
changes show in the output. Values spread over many binades, with the large ones first, let a
sequential fp32 chain absorb small terms that any other grouping keeps; a large term cancelled
late leaves the result the size of the absorbed terms, so the difference reaches bf16 outputs.
"""

from __future__ import annotations

import numpy as np

from knight.npu.dtypes import BF16  # noqa: F401 - the problems' generators import it from here


def binade_spread(rng: np.random.Generator, shape: tuple[int, ...], lo: int, hi: int) -> np.ndarray:
    """bf16-exact float32 values: random sign, 8-bit mantissa, exponent uniform in [lo, hi]."""
    mant = rng.integers(128, 256, size=shape) / 128.0
    expo = rng.integers(lo, hi + 1, size=shape)
    sign = rng.choice([-1.0, 1.0], size=shape)
    return (sign * mant * np.exp2(expo)).astype(np.float32)


def large_first(a: np.ndarray) -> np.ndarray:
    """Each row (last axis) sorted by decreasing magnitude: a sequential sum then absorbs."""
    order = np.argsort(-np.abs(a), axis=-1, kind="stable")
    return np.take_along_axis(a, order, axis=-1)


def all_bf16(lo: float, hi: float) -> np.ndarray:
    """Every finite bf16 value with lo <= |v| <= hi, both signs, as float32."""
    pos = np.arange(0x0000, 0x7F80, dtype=np.uint32) << 16
    v = pos.view(np.float32)
    v = v[(v >= lo) & (v <= hi)]
    return np.concatenate([v, -v])
