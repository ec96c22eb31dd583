"""Acceptance tests for knight.npu.numerics: the numerics contract of NPU.md section 6."""

from __future__ import annotations

import ast
import hashlib
import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from knight.npu import numerics as nm
from knight.npu.numerics import BF16, FP16, FP32, INT32

REPO_ROOT = Path(__file__).resolve().parents[1]
NUMERICS_SRC = REPO_ROOT / "knight" / "npu" / "numerics.py"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def f32_from_bits(u: np.ndarray) -> np.ndarray:
    return np.asarray(u, dtype=np.uint32).view(np.float32)


def ref_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Independent fp32 -> bf16 round-to-nearest-even on the bit pattern.

    Adding 0x7FFF + lsb and truncating rounds to nearest with ties to even; the carry into
    the exponent handles mantissa overflow, and past the largest finite value it produces
    exactly the infinity pattern. NaNs become the canonical quiet NaN 0x7FC0.
    """
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    lsb = (u >> 16) & 1
    out = ((u + 0x7FFF + lsb) >> 16).astype(np.uint16)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    out[nan] = 0x7FC0
    return out


def fraction_to_f32(q: Fraction) -> np.float32:
    """Correctly round an exact rational to float32 (ties to even), independently of numpy casts."""
    d = np.float32(float(q))  # within one float32 ulp of q; now pick the nearest neighbour
    cands = [np.nextafter(d, np.float32(-np.inf)), d, np.nextafter(d, np.float32(np.inf))]
    best = min(
        cands,
        key=lambda c: (
            abs(Fraction(float(c)) - q),
            int(np.array(c, np.float32).view(np.uint32)) & 1,  # tie: even mantissa wins
        ),
    )
    return np.float32(best)


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def run_py(code: str, env_extra: dict[str, str]) -> str:
    env = dict(os.environ)
    env.update(env_extra)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


# --------------------------------------------------------------------------------------------
# 1. fp32 -> bf16 rounding
# --------------------------------------------------------------------------------------------


def check_bf16_against_ref(x: np.ndarray) -> None:
    x = np.asarray(x, dtype=np.float32)
    got = nm.bits(nm.round_to(x, BF16))
    want = ref_bf16_bits(x)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (
        f"{bad.size} mismatches, first input bits {x.view(np.uint32)[bad[:5]]}: "
        f"got {got[bad[:5]]}, want {want[bad[:5]]}"
    )


ALL_BF16 = np.arange(65536, dtype=np.uint32)
FINITE_BF16 = ALL_BF16[(ALL_BF16 & 0x7F80) != 0x7F80]


def test_bf16_roundtrip_every_pattern() -> None:
    widened = f32_from_bits(ALL_BF16 << 16)
    out = nm.round_to(widened, BF16)
    assert out.dtype == np.dtype(BF16)
    raw = out.view(np.uint16).astype(np.uint32)
    is_nan = (ALL_BF16 & 0x7FFF) > 0x7F80
    assert np.array_equal(raw[~is_nan], ALL_BF16[~is_nan])  # includes +-0, +-inf, subnormals
    assert np.all(np.isnan(out[is_nan].astype(np.float32)))
    check_bf16_against_ref(widened)


def test_bf16_midpoints_ties_to_even() -> None:
    # Halfway between pattern p and p+1 (same sign); p = 0x7F7F / 0xFF7F gives the midpoint
    # between the largest finite value and infinity, which must overflow to infinity.
    mid = f32_from_bits((FINITE_BF16 << 16) + 0x8000)
    got = nm.round_to(mid, BF16).view(np.uint16).astype(np.uint32)
    want = FINITE_BF16 + (FINITE_BF16 & 1)
    assert np.array_equal(got, want)
    check_bf16_against_ref(mid)
    assert nm.round_to(f32_from_bits(np.array([0x7F7F8000])), BF16).view(np.uint16)[0] == 0x7F80
    assert nm.round_to(f32_from_bits(np.array([0xFF7F8000])), BF16).view(np.uint16)[0] == 0xFF80


def test_bf16_neighbours_of_midpoints_and_random() -> None:
    mid_bits = (FINITE_BF16 << 16) + 0x8000
    below = f32_from_bits(mid_bits - 1)
    above = f32_from_bits(mid_bits + 1)
    check_bf16_against_ref(below)
    check_bf16_against_ref(above)
    # Just below a midpoint rounds down, just above rounds up, whatever the parity.
    assert np.array_equal(nm.round_to(below, BF16).view(np.uint16), FINITE_BF16)
    assert np.array_equal(nm.round_to(above, BF16).view(np.uint16), FINITE_BF16 + 1)
    rng = np.random.default_rng(1)
    check_bf16_against_ref(f32_from_bits(rng.integers(0, 2**32, 100_000, dtype=np.uint64)))


def test_bf16_specials_overflow_subnormals_zero() -> None:
    def rt(v: np.ndarray) -> np.ndarray:
        return nm.round_to(np.asarray(v, np.float32), BF16).view(np.uint16)

    assert list(rt([np.inf, -np.inf])) == [0x7F80, 0xFF80]
    nan_out = nm.round_to(np.array([np.nan, -np.nan], np.float32), BF16)
    assert np.all(np.isnan(nan_out.astype(np.float32)))
    assert list(rt([0.0, -0.0])) == [0x0000, 0x8000]  # sign of zero preserved
    # Overflow: FP32 max is past the bf16 midpoint to infinity; just below it is not.
    fmax = np.finfo(np.float32).max
    assert list(rt([fmax, -fmax])) == [0x7F80, 0xFF80]
    below_mid = f32_from_bits(np.array([0x7F7F7FFF, 0x7F7F0001]))
    assert list(rt(below_mid)) == [0x7F7F, 0x7F7F]
    # fp32 subnormals: the smallest ones round to zero; ties between bf16 subnormals to even.
    sub = f32_from_bits(np.array([0x00000001, 0x00008000, 0x00018000, 0x007FFFFF, 0x80008001]))
    assert list(rt(sub)) == [0x0000, 0x0000, 0x0002, 0x0080, 0x8001]
    rng = np.random.default_rng(2)
    subs = rng.integers(1, 0x00800000, 20_000, dtype=np.uint32)
    subs = np.concatenate([subs, subs | 0x80000000])
    check_bf16_against_ref(f32_from_bits(subs))


def test_round_to_other_dtypes() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3e9, -3e9, np.inf, -np.inf, np.nan], np.float32)
    assert nm.round_to(x, INT32).tolist() == [
        0,
        2,
        2,
        0,
        -2,
        -2,
        2**31 - 1,
        -(2**31),
        2**31 - 1,
        -(2**31),
        0,
    ]
    assert nm.round_to(x, INT32).dtype == np.int32
    # fp32 "rounding" is a copy that keeps every bit, NaN payload included.
    odd_nan = f32_from_bits(np.array([0x7FA00001, 0x3F800001]))
    out = nm.round_to(odd_nan, FP32)
    assert out is not odd_nan
    assert np.array_equal(out.view(np.uint32), odd_nan.view(np.uint32))
    # fp16: RNE; 1 + 2**-11 is a tie between 1 and 1 + 2**-10 -> even (1.0); 65520 -> inf.
    h = nm.round_to(np.array([1 + 2**-11, 1 + 3 * 2**-11, 65520.0, 65519.0], np.float32), FP16)
    assert h.tolist() == [1.0, 1 + 2**-9, np.inf, 65504.0]
    with pytest.raises(TypeError):
        nm.round_to(np.array([1.0], np.float32), np.float64)
    with pytest.raises(TypeError):
        nm.round_to(np.array([1.0], BF16), FP32)  # non-float32 input is refused


def test_to_fp32_exact_widening_and_int32_rounding() -> None:
    with np.errstate(invalid="ignore"):  # NaN patterns: the cast warns but is defined
        b = f32_from_bits(ALL_BF16 << 16).astype(BF16)
    assert np.array_equal(nm.bits(nm.to_fp32(b)), nm.bits(f32_from_bits(ALL_BF16 << 16)))
    h = np.arange(65536, dtype=np.uint16).view(np.float16)
    finite = np.isfinite(h)
    assert np.array_equal(nm.to_fp32(h)[finite].astype(np.float64), h[finite].astype(np.float64))
    i = np.array([2**24, 2**24 + 1, 2**24 + 3, -(2**31), 2**31 - 1], np.int32)
    assert nm.to_fp32(i).tolist() == [2**24, 2**24, 2**24 + 4, -(2**31), 2**31]
    with pytest.raises(TypeError):
        nm.to_fp32(np.array([1.0]))


def test_bits_normalises_nans() -> None:
    b = np.array([0x7FC1, 0xFFC0, 0x7F81, 0x3F80], np.uint16).view(BF16)
    assert nm.bits(b).tolist() == [0x7FC0, 0x7FC0, 0x7FC0, 0x3F80]
    h = np.array([0x7E01, 0xFE00, 0x7C01, 0x7C00], np.uint16).view(np.float16)
    assert nm.bits(h).tolist() == [0x7E00, 0x7E00, 0x7E00, 0x7C00]
    f = f32_from_bits(np.array([0x7FC00001, 0xFFC00000, 0x7F800001, 0x7F800000]))
    assert nm.bits(f).tolist() == [0x7FC00000, 0x7FC00000, 0x7FC00000, 0x7F800000]
    i = np.array([-1, 5], np.int32)
    assert nm.bits(i).dtype == np.uint32 and nm.bits(i).tolist() == [0xFFFFFFFF, 5]
    assert nm.bits(b).dtype == np.uint16
    assert f.view(np.uint32)[0] == 0x7FC00001  # the input is not modified


# --------------------------------------------------------------------------------------------
# 2. float64 is refused; the explicit float64 -> float32 -> bf16 path
# --------------------------------------------------------------------------------------------


def test_float64_refused_and_double_rounding_documented() -> None:
    v = 1 + 2**-8 + 2**-30
    with pytest.raises(TypeError):
        nm.round_to(np.array([v]), BF16)
    f32 = nm.f64_to_fp32(np.array([v]))
    # 2**-30 is below half a float32 ulp at 1 (2**-24), so the float32 step drops it exactly.
    assert f32.dtype == np.float32 and f32[0] == np.float32(1 + 2**-8)
    # 1 + 2**-8 is the midpoint between bf16 1.0 and 1.0078125: ties to even gives 1.0.
    explicit = nm.round_to(f32, BF16)
    assert explicit.view(np.uint16)[0] == 0x3F80  # 1.0: the documented semantics
    # Rounded once, v is just above that midpoint, so the correct bf16 value is 1.0078125.
    cands = [Fraction(1), Fraction(1) + Fraction(1, 128)]
    correct = min(cands, key=lambda c: abs(c - Fraction(v)))
    assert correct == Fraction(129, 128)  # 1.0078125
    # ml_dtypes' direct float64 cast goes through float32 too (NPU.md 6.2 rule 2), so it is
    # also double-rounded to 1.0 rather than the correctly rounded 1.0078125. If this starts
    # failing, ml_dtypes changed its float64 path: our semantics (above) do not change, but
    # NPU.md rule 2 must be updated.
    direct = np.array([v]).astype(ml_dtypes.bfloat16)
    assert float(direct[0]) == 1.0 != float(correct)
    with pytest.raises(TypeError):
        nm.f64_to_fp32(np.array([1.0], np.float32))


# --------------------------------------------------------------------------------------------
# 3. matmul
# --------------------------------------------------------------------------------------------


def random_bf16(rng: np.random.Generator, shape: tuple[int, ...], spread: int = 8) -> np.ndarray:
    mant = rng.standard_normal(shape)
    scale = np.ldexp(1.0, rng.integers(-spread, spread + 1, shape))
    return nm.round_to(nm.f64_to_fp32(mant * scale), BF16)


def exact_matmul_ref(s: np.ndarray, m: np.ndarray) -> np.ndarray:
    k, mm = s.shape
    n = m.shape[1]
    sf = [[Fraction(float(s[i, j])) for j in range(mm)] for i in range(k)]
    mf = [[Fraction(float(m[i, j])) for j in range(n)] for i in range(k)]
    out = np.empty((mm, n), np.float32)
    for a in range(mm):
        for b in range(n):
            out[a, b] = fraction_to_f32(sum(sf[i][a] * mf[i][b] for i in range(k)))
    return out


def test_matmul_matches_exact_reference() -> None:
    rng = np.random.default_rng(3)
    s = random_bf16(rng, (128, 8))
    m = random_bf16(rng, (128, 4))
    got = nm.matmul(s, m)
    assert got.dtype == np.float32 and got.shape == (8, 4)
    assert np.array_equal(nm.bits(got), nm.bits(exact_matmul_ref(s, m)))
    # fp16 inputs are exact the same way.
    sh = s.astype(np.float32).astype(np.float16)
    mh = m.astype(np.float32).astype(np.float16)
    assert np.array_equal(nm.bits(nm.matmul(sh, mh)), nm.bits(exact_matmul_ref(sh, mh)))


def test_matmul_fp32_is_fixed_order_float64() -> None:
    rng = np.random.default_rng(4)
    s = rng.standard_normal((64, 3)).astype(np.float32)
    m = (rng.standard_normal((64, 5)) * 1e4).astype(np.float32)
    want = np.empty((3, 5), np.float32)
    for a in range(3):
        for b in range(5):
            acc = float(s[0, a]) * float(m[0, b])
            for k in range(1, 64):
                acc += float(s[k, a]) * float(m[k, b])  # Python floats: IEEE double, in order
            want[a, b] = np.float32(acc)
    assert np.array_equal(nm.bits(nm.matmul(s, m)), nm.bits(want))


def test_matmul_swap_is_transpose_and_layout_free() -> None:
    rng = np.random.default_rng(5)
    a = random_bf16(rng, (128, 16))
    b = random_bf16(rng, (128, 32))
    ab = nm.matmul(a, b)
    assert np.array_equal(nm.bits(ab.T), nm.bits(nm.matmul(b, a)))
    assert np.array_equal(
        nm.bits(nm.matmul(np.asfortranarray(a), np.asfortranarray(b))), nm.bits(ab)
    )
    big_a = nm.nan_fill((256, 48), BF16)
    big_a[::2, ::3] = a
    big_b = nm.nan_fill((128, 64), BF16)
    big_b[:, 1::2] = b
    sliced = nm.matmul(big_a[::2, ::3], big_b[:, 1::2])
    assert np.array_equal(nm.bits(sliced), nm.bits(ab))


def test_matmul_signed_zero_and_specials() -> None:
    s = np.array([[-0.0], [-0.0]], np.float32).astype(BF16)
    m = np.array([[1.0], [1.0]], np.float32).astype(BF16)
    assert nm.bits(nm.matmul(s, m)).tolist() == [[0x80000000]]  # -0 + -0 = -0
    s2 = np.array([[np.inf], [1.0]], np.float32).astype(BF16)
    m2 = np.array([[0.0], [1.0]], np.float32).astype(BF16)
    assert np.isnan(nm.matmul(s2, m2)[0, 0])  # inf * 0
    big = np.full((128, 1), 2.0**127, np.float32).astype(BF16)
    assert nm.matmul(big, big)[0, 0] == np.inf  # exact in float64, overflows on the fp32 round


MATMUL_SNIPPET = """
import hashlib, numpy as np
from knight.npu import numerics as nm
rng = np.random.default_rng(11)
s = nm.round_to((rng.standard_normal((128, 128)) * 3).astype(np.float32), nm.BF16)
m = nm.round_to((rng.standard_normal((128, 512)) * 3).astype(np.float32), nm.BF16)
f = rng.standard_normal((128, 64)).astype(np.float32)
out = np.concatenate([nm.matmul(s, m).ravel(), nm.matmul(f, f).ravel()])
print(hashlib.sha256(out.tobytes()).hexdigest())
"""


def test_matmul_independent_of_blas_threads() -> None:
    local: dict[str, object] = {}
    exec(MATMUL_SNIPPET.replace("print(", "result = ("), local)
    hashes = {local["result"]}
    for threads in ("1", "2"):
        env = {k: threads for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        hashes.add(run_py(MATMUL_SNIPPET, env))
    assert len(hashes) == 1, hashes


# --------------------------------------------------------------------------------------------
# 4. PSUM accumulation order is part of the result
# --------------------------------------------------------------------------------------------


def tiled_matmul(s: np.ndarray, m: np.ndarray, bounds: list[int]) -> np.ndarray:
    psum = nm.matmul(s[bounds[0] : bounds[1]], m[bounds[0] : bounds[1]])  # overwriting write
    for lo, hi in zip(bounds[1:-1], bounds[2:], strict=True):
        psum = nm.accumulate(psum, nm.matmul(s[lo:hi], m[lo:hi]))
    return psum


def test_k_tiling_changes_bits_same_tiling_does_not() -> None:
    # One 2**24 (float32 ulp 2 above it) plus ones at k = 1, 64, 128, 192, summed over K = 256.
    s = np.ones((256, 1), np.float32).astype(BF16)
    mv = np.zeros((256, 1), np.float32)
    mv[0] = 2.0**24
    mv[[1, 64, 128, 192]] = 1.0
    m = mv.astype(BF16)
    # 2 x 128: partials 2**24 + 2 (exact) and 2 -> 2**24 + 4 (the true sum).
    two = tiled_matmul(s, m, [0, 128, 256])
    # 4 x 64: 2**24 + 1 ties to 2**24, and each later +1 ties back to 2**24.
    four = tiled_matmul(s, m, [0, 64, 128, 192, 256])
    assert two[0, 0] == 2.0**24 + 4
    assert four[0, 0] == 2.0**24
    assert not np.array_equal(nm.bits(two), nm.bits(four))
    assert np.array_equal(nm.bits(two), nm.bits(tiled_matmul(s, m, [0, 128, 256])))
    assert np.array_equal(nm.bits(four), nm.bits(tiled_matmul(s, m, [0, 64, 128, 192, 256])))
    # Order of tiles matters too: tile 0 (2**24 + 1, rounded to 2**24) first, then three tied
    # ones, versus the three ones first.
    bounds = [0, 64, 128, 192, 256]
    parts = [nm.matmul(s[lo:hi], m[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    fwd = parts[0]
    for p in parts[1:]:
        fwd = nm.accumulate(fwd, p)
    rev = nm.accumulate(nm.accumulate(parts[3], parts[2]), parts[1])  # 1 + 1 + 1 = 3 exactly
    rev = nm.accumulate(rev, parts[0])  # 3 + 2**24 -> 2**24 + 4 (tie to even)
    assert fwd[0, 0] == 2.0**24 and rev[0, 0] == 2.0**24 + 4


def test_accumulate_is_fp32_add() -> None:
    a = np.array([1.0, 2.0**24, np.inf], np.float32)
    b = np.array([2.0**-24, 1.0, -np.inf], np.float32)
    out = nm.accumulate(a, b)
    assert out.dtype == np.float32
    assert out[0] == 1.0 and out[1] == 2.0**24 and np.isnan(out[2])
    with pytest.raises(TypeError):
        nm.accumulate(a.astype(np.float64), b)
    with pytest.raises(ValueError):
        nm.accumulate(a, b[:2])


# --------------------------------------------------------------------------------------------
# 5. Transcendentals: accuracy, special values, CPU-feature independence
# --------------------------------------------------------------------------------------------


def _oracle(name: str, x: float) -> float:
    try:
        if name == "exp":
            return math.exp(x)
        if name == "log":
            return math.log(x)
        if name == "sigmoid":
            return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
        if name == "silu":
            return x / (1.0 + math.exp(-x)) if x >= 0 else x * math.exp(x) / (1.0 + math.exp(x))
        if name == "tanh":
            return math.tanh(x)
        if name == "gelu":
            u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
            t = 2.0 * u
            return x / (1.0 + math.exp(-t)) if t >= 0 else x * math.exp(t) / (1.0 + math.exp(t))
    except OverflowError:
        return math.inf
    raise AssertionError(name)


def _inputs(name: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if name == "log":
        pos = rng.integers(1, 0x7F800000, 3000, dtype=np.uint32)  # all finite positive binades
        near1 = 1.0 + np.arange(-300, 301) * 2.0**-24
        return np.concatenate(
            [f32_from_bits(pos), near1.astype(np.float32), [2.0**-149, 1.0]]
        ).astype(np.float32)
    if name == "exp":
        wide = rng.uniform(-104.0, 88.8, 3000)
        edges = [0.0, 1e-30, -1e-30, 88.72283, 88.7228394, -87.33654, -103.27893, -103.97208, -88.0]
        return np.concatenate([wide, rng.uniform(-1, 1, 1000), edges]).astype(np.float32)
    wide = rng.uniform(-110.0, 110.0, 2000)
    mid = rng.uniform(-10.0, 10.0, 2000)
    tiny = np.ldexp(rng.uniform(-1, 1, 500), rng.integers(-140, -5, 500))
    edges = [0.0, -0.0, 2.0**-149, -(2.0**-149), 1.0, -1.0, 9.0, -9.0, 17.0, -17.0, 88.0, -88.0]
    return np.concatenate([wide, mid, tiny, edges]).astype(np.float32)


@pytest.mark.parametrize("name", ["exp", "log", "sigmoid", "silu", "tanh", "gelu"])
def test_transcendental_within_one_ulp(name: str) -> None:
    x = _inputs(name)
    got = nm.ACTIVATIONS[name](x)
    assert got.dtype == np.float32 and got.shape == x.shape
    oracle = np.array([_oracle(name, float(v)) for v in x])
    with np.errstate(over="ignore"):
        rounded = oracle.astype(np.float32)
    finite = np.isfinite(rounded)
    # Where the true value rounds past FP32 max both must be the same infinity.
    assert np.array_equal(got[~finite], rounded[~finite])
    ulp = np.spacing(np.abs(rounded[finite])).astype(np.float64)
    err = np.abs(got[finite].astype(np.float64) - oracle[finite])
    worst = int(np.argmax(err / ulp))
    assert np.all(err <= ulp), (
        f"{name}({x[finite][worst]!r}) off by {err[worst] / ulp[worst]:.3f} ulp"
    )
    # In practice it is correctly rounded almost everywhere (misses only near ties).
    assert np.mean(got == rounded) > 0.999


def test_transcendental_special_values() -> None:
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
    e = nm.exp(x)
    assert np.isnan(e[0]) and e[1] == np.inf and e[2] == 0 and e[3] == 1 and e[4] == 1
    assert nm.exp(np.array([89.0, -104.0, -103.0], np.float32)).tolist() == [np.inf, 0.0, 2.0**-149]
    lg = nm.log(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, 1.0, 2.0**-149], np.float32))
    assert np.isnan(lg[0]) and lg[1] == np.inf and np.isnan(lg[2])
    assert lg[3] == -np.inf and lg[4] == -np.inf and np.isnan(lg[5]) and lg[6] == 0
    assert lg[7] == np.float32(-149 * math.log(2))
    sg = nm.sigmoid(x)
    assert np.isnan(sg[0]) and sg[1] == 1 and sg[2] == 0 and sg[3] == 0.5
    sl = nm.silu(x)
    assert (
        np.isnan(sl[0])
        and sl[1] == np.inf
        and nm.bits(sl[2:]).tolist() == [0x80000000, 0, 0x80000000]
    )
    th = nm.tanh(x)
    assert np.isnan(th[0]) and th[1] == 1 and th[2] == -1
    assert nm.bits(th[3:]).tolist() == [0, 0x80000000]
    ge = nm.gelu(x)
    assert (
        np.isnan(ge[0])
        and ge[1] == np.inf
        and nm.bits(ge[2:]).tolist() == [0x80000000, 0, 0x80000000]
    )


def test_simple_activations() -> None:
    x = np.array([4.0, 2.0, -0.0, 0.0, -3.0, np.inf, np.nan, 2.0**-149, 3.0], np.float32)
    assert (
        nm.bits(nm.relu(x)).tolist()
        == nm.bits(np.array([4, 2, 0, 0, 0, np.inf, np.nan, 2.0**-149, 3], np.float32)).tolist()
    )
    assert nm.square(x)[[0, 4, 7]].tolist() == [16.0, 9.0, 0.0]
    sq = nm.sqrt(x)
    assert sq[0] == 2 and nm.bits(sq[2:3]).tolist() == [0x80000000] and np.isnan(sq[4])
    rs = nm.rsqrt(x)
    assert rs[0] == 0.5 and rs[2] == -np.inf and rs[3] == np.inf and rs[5] == 0 and np.isnan(rs[4])
    rc = nm.reciprocal(x)
    assert rc[1] == 0.5 and rc[2] == -np.inf and rc[7] == np.inf and rc[8] == np.float32(1 / 3)
    odd_nan = f32_from_bits(np.array([0x7FA00001]))
    assert nm.identity(odd_nan).view(np.uint32)[0] == 0x7FA00001
    # Correctly rounded basics agree with float32 IEEE arithmetic on random data.
    rng = np.random.default_rng(8)
    r = f32_from_bits(rng.integers(0, 0x7F800000, 20_000, dtype=np.uint32))
    with np.errstate(all="ignore"):
        assert np.array_equal(nm.bits(nm.square(r)), nm.bits(r * r))
        assert np.array_equal(nm.bits(nm.sqrt(r)), nm.bits(np.sqrt(r)))
        assert np.array_equal(nm.bits(nm.reciprocal(r)), nm.bits(np.float32(1) / r))
    rs_err = np.abs(nm.rsqrt(r).astype(np.float64) - 1 / np.sqrt(r.astype(np.float64)))
    assert np.all(rs_err <= np.spacing(nm.rsqrt(r)).astype(np.float64))


def test_activation_table_and_dtype_checks() -> None:
    expected = {
        "identity",
        "copy",
        "exp",
        "log",
        "sigmoid",
        "silu",
        "tanh",
        "gelu",
        "relu",
        "square",
        "sqrt",
        "rsqrt",
        "reciprocal",
    }
    assert set(nm.ACTIVATIONS) == expected
    x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 3, 4)
    for name, fn in nm.ACTIVATIONS.items():
        out = fn(x)
        assert out.dtype == np.float32 and out.shape == x.shape, name
        assert out is not x, name
        with pytest.raises(TypeError):
            fn(x.astype(np.float64))
        with pytest.raises(TypeError):
            fn(x.astype(BF16))


def test_no_nondeterministic_numpy_calls_in_source() -> None:
    forbidden = {
        "exp",
        "exp2",
        "expm1",
        "log",
        "log2",
        "log10",
        "log1p",
        "tanh",
        "sinh",
        "cosh",
        "power",
        "float_power",
        "dot",
        "matmul",
        "einsum",
        "inner",
        "tensordot",
        "vdot",
    }
    tree = ast.parse(NUMERICS_SRC.read_text())
    bad = [
        f"np.{node.attr} (line {node.lineno})"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in {"np", "numpy"}
        and node.attr in forbidden
    ]
    assert not bad, bad


CPU_SNIPPET = """
import hashlib, json, numpy as np
import numpy._core._multiarray_umath as mu
from knight.npu import numerics as nm
rng = np.random.default_rng(12)
x = np.concatenate([
    rng.uniform(-120, 120, 4000), rng.uniform(-4, 4, 4000),
    [0.0, -0.0, np.inf, -np.inf, np.nan, 2.0**-149, 88.72283, -103.5],
]).astype(np.float32)
h = hashlib.sha256()
for name in sorted(nm.ACTIVATIONS):
    h.update(nm.ACTIVATIONS[name](x).tobytes())
h.update(nm.ACTIVATIONS["log"](np.abs(x)).tobytes())
feats = sorted(k for k, v in mu.__cpu_features__.items() if v)
print(json.dumps({"hash": h.hexdigest(), "features": feats}))
"""


def test_transcendentals_independent_of_cpu_dispatch() -> None:
    import json

    import numpy._core._multiarray_umath as mu

    present = [f for f in mu.__cpu_dispatch__ if mu.__cpu_features__.get(f)]
    if not present:
        pytest.skip("NumPy has no dispatchable CPU features on this machine to disable")
    local: dict[str, object] = {}
    exec(CPU_SNIPPET.replace("print(", "result = ("), local)
    here = json.loads(str(local["result"]))
    there = json.loads(run_py(CPU_SNIPPET, {"NPY_DISABLE_CPU_FEATURES": " ".join(present)}))
    # The subprocess really ran with those features off (otherwise the test proves nothing).
    assert not set(present) & set(there["features"]), there["features"]
    assert here["hash"] == there["hash"]


# --------------------------------------------------------------------------------------------
# 6. Flush-to-zero and fresh memory
# --------------------------------------------------------------------------------------------


def test_check_ftz_passes() -> None:
    assert nm.check_ftz() is None


@pytest.mark.parametrize("dtype", [BF16, FP16, FP32])
def test_nan_fill_floats(dtype: object) -> None:
    a = nm.nan_fill((3, 5), dtype)
    assert a.shape == (3, 5) and a.dtype == np.dtype(dtype)
    assert np.all(np.isnan(a.astype(np.float32)))
    b = nm.nan_fill((3, 5), dtype)
    assert not np.shares_memory(a, b)


def test_nan_fill_int32_poison_and_bad_dtype() -> None:
    a = nm.nan_fill(4, INT32)
    assert a.dtype == np.int32 and a.tolist() == [-(2**31)] * 4
    with pytest.raises(TypeError):
        nm.nan_fill(4, np.float64)


def test_matmul_blas_fast_path_equals_the_ordered_loop(monkeypatch):
    """The BLAS shortcut is taken only when it is provably exact: same bits as the loop."""
    rng = np.random.default_rng(7)
    cases = [
        (rng.standard_normal((128, 96)), rng.standard_normal((128, 4))),
        (
            rng.standard_normal((128, 128)) * 2.0 ** rng.integers(-20, 20, (128, 128)),
            rng.standard_normal((128, 1)),
        ),
        (rng.standard_normal((64, 8)) * 1e30, rng.standard_normal((64, 3)) * 1e-30),
    ]
    for s, m in cases:
        s16, m16 = s.astype(np.float32).astype(nm.BF16), m.astype(np.float32).astype(nm.BF16)
        fast = nm.matmul(s16, m16)
        with monkeypatch.context() as mp:
            mp.setattr(nm, "_exact_blas", lambda *a: None)
            slow = nm.matmul(s16, m16)
        assert np.array_equal(fast.view(np.uint32), slow.view(np.uint32))


def test_matmul_fast_path_refuses_sums_that_may_round():
    # 2**40 + 1 * 2**-40: the small product is far below the large one's ulp -> no shortcut.
    s = np.array([[2.0**40], [2.0**-40]], dtype=np.float32).astype(nm.BF16)
    m = np.array([[1.0], [1.0]], dtype=np.float32).astype(nm.BF16)
    assert nm._exact_blas(s.astype(np.float64), m.astype(np.float64), 8, 8) is None
