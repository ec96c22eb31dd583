"""Bit-exact numerics of the simulated NPU (NPU.md section 6, "Numerics contract").

Everything here is deterministic on any CPU: only correctly rounded IEEE operations
(+ - * /, sqrt), exact operations (ldexp, floor, comparisons, bit manipulation) and casts
whose rounding is specified (round to nearest even) are used.  NumPy's transcendental
ufuncs (np.exp, np.log, np.tanh, ...) and BLAS (np.dot, np.matmul, einsum) are never
called, because their last bits depend on SIMD dispatch, thread count and CPU
(numpy #23523, #21209, #25100).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from knight.npu.dtypes import BF16, DTYPES, FLOAT_DTYPES, FP16, FP32, INT32, TABLE, UINT32

__all__ = [
    "ACTIVATIONS",
    "BF16",
    "FP16",
    "FP32",
    "INT32",
    "accumulate",
    "bits",
    "check_ftz",
    "exp",
    "f64_to_fp32",
    "gelu",
    "identity",
    "log",
    "matmul",
    "nan_fill",
    "reciprocal",
    "relu",
    "round_to",
    "rsqrt",
    "sigmoid",
    "silu",
    "sqrt",
    "square",
    "tanh",
    "to_fp32",
]

_FP32 = np.dtype(FP32)
_INT32 = np.dtype(INT32)
_UINT32 = np.dtype(UINT32)
_F64 = np.dtype(np.float64)
_SUPPORTED = tuple(DTYPES.values())

# Canonical quiet-NaN bit patterns used by bits(); they are also what np.nan casts to.
_CANON_NAN = {d.dtype: d.canonical_nan for d in TABLE if d.is_float}
# (unsigned view dtype, exponent mask); a value is NaN iff (bits & ~sign) > exponent mask.
_VIEW = {d.dtype: (d.bits.type, d.exponent_mask) for d in TABLE}
_SIGN_CLEAR = {np.dtype(np.uint16): 0x7FFF, np.dtype(np.uint32): 0x7FFFFFFF}

_INT32_MIN = int(np.iinfo(np.int32).min)
_INT32_MAX = int(np.iinfo(np.int32).max)
_UINT32_MAX = int(np.iinfo(np.uint32).max)


def _dtype_of(dtype: Any) -> np.dtype:
    """Normalise a dtype-like to one of the four NPU dtypes, or raise TypeError."""
    dt = np.dtype(dtype)
    if dt not in _SUPPORTED:
        raise TypeError(
            f"unsupported NPU dtype {dt}; expected bfloat16, float16, float32, int32 or uint32"
        )
    return dt


def _require_fp32(a: Any, what: str) -> np.ndarray:
    """Return `a` as an ndarray, refusing anything that is not float32 (no silent promotion)."""
    arr = np.asarray(a)
    if arr.dtype != _FP32:
        raise TypeError(f"{what} needs float32 input, got {arr.dtype}; convert with to_fp32 first")
    return arr


# --------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------


def to_fp32(a: Any) -> np.ndarray:
    """Widen a bf16/fp16/fp32/int32 array to a new float32 array.

    Float widening is exact; int32 goes through the float32 cast, which rounds to nearest
    even once |x| > 2**24.
    """
    arr = np.asarray(a)
    _dtype_of(arr.dtype)  # refuse float64 and friends: they would hide a rounding step
    return arr.astype(_FP32)  # astype always copies, so callers may mutate the result


def f64_to_fp32(a: Any) -> np.ndarray:
    """Round a float64 array to float32 (RNE): the explicit first step of float64 -> bf16."""
    arr = np.asarray(a)
    if arr.dtype != _F64:
        raise TypeError(f"f64_to_fp32 needs float64 input, got {arr.dtype}")
    with np.errstate(over="ignore"):  # values beyond float32 range become +-inf, as IEEE says
        return arr.astype(_FP32)


def round_to(a_fp32: np.ndarray, dtype: Any) -> np.ndarray:
    """Cast float32 values to `dtype` as the hardware does on write (round to nearest even).

    bf16: ml_dtypes cast (RNE, NaN -> quiet NaN, overflow -> inf); fp16: IEEE RNE cast;
    fp32: copy; int32: round half to even, saturate to the int32 range, NaN -> 0.
    Float64 input is refused: ml_dtypes casts float64 -> bf16 through float32, rounding twice
    (NPU.md 6.2 rule 2); call f64_to_fp32 first so the double rounding is explicit.
    """
    arr = np.asarray(a_fp32)
    if arr.dtype == _F64:
        raise TypeError(
            "round_to refuses float64: float64 -> bf16 rounds twice inside ml_dtypes; "
            "use round_to(f64_to_fp32(a), dtype) to make the float32 step explicit"
        )
    arr = _require_fp32(arr, "round_to")
    dt = _dtype_of(dtype)
    if dt == _FP32:
        return arr.copy()
    if dt == _INT32:
        # np.rint is correctly rounded (half to even) and exact; saturate in float64 where
        # both int32 limits are representable, since float32 cannot hold 2**31 - 1.
        r = np.rint(arr).astype(_F64)
        nan = np.isnan(r)
        r = np.clip(np.where(nan, 0.0, r), _INT32_MIN, _INT32_MAX)
        return r.astype(_INT32)
    if dt == _UINT32:
        r = np.rint(arr).astype(_F64)
        r = np.clip(np.where(np.isnan(r), 0.0, r), 0, _UINT32_MAX)
        return r.astype(_UINT32)
    # Overflow to inf and NaN -> quiet NaN are the defined results, not errors.
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(dt)


def bits(a: np.ndarray) -> np.ndarray:
    """Unsigned-integer view (uint16 bf16/fp16, uint32 fp32/int32) with NaNs made canonical.

    Every NaN, whatever its sign and payload, becomes 0x7FC0 / 0x7E00 / 0x7FC00000, so two
    outputs can be compared bit for bit with ==.
    """
    arr = np.asarray(a)
    dt = _dtype_of(arr.dtype)
    view_dtype, exp_mask = _VIEW[dt]
    u = np.ascontiguousarray(arr).view(view_dtype).copy()
    if exp_mask is not None:
        nan = (u & _SIGN_CLEAR[np.dtype(view_dtype)]) > exp_mask
        u[nan] = _CANON_NAN[dt]
    return u


def nan_fill(shape: int | tuple[int, ...], dtype: Any) -> np.ndarray:
    """Fresh memory as the simulator hands it out: NaN for float dtypes, INT32_MIN for int32.

    int32 has no NaN, so the poison value is np.iinfo(np.int32).min (0x80000000), the value
    least likely to arise from real data and conspicuous in a dump.
    """
    dt = _dtype_of(dtype)
    if dt == _INT32:
        return np.full(shape, _INT32_MIN, dtype=dt)
    if dt == _UINT32:
        return np.full(shape, _UINT32_MAX, dtype=dt)  # no NaN either: all ones
    return np.full(shape, np.nan, dtype=dt)  # canonical quiet NaN in every float dtype


def check_ftz() -> None:
    """Raise RuntimeError unless float32 subnormals survive arithmetic (NPU.md 6.2 rule 7)."""
    tiny = np.float32(2.0**-149)
    scalar_ok = tiny * np.float32(1) != 0
    # Array ops take the SIMD loops, which obey the same MXCSR FTZ/DAZ bits but a different
    # code path, so check both.
    arr_ok = bool(np.all(np.array([2.0**-126], dtype=_FP32) / np.float32(2) != 0))
    if not (scalar_ok and arr_ok):
        raise RuntimeError(
            "float32 subnormals are flushed to zero in this process (FTZ/DAZ is on, typically "
            "because a library built with -ffast-math was loaded); the NPU simulator cannot "
            "guarantee bit-exact results. Find and remove that library (NPU.md 6.2 rule 7)."
        )


# --------------------------------------------------------------------------------------------
# Tensor Engine and PSUM
# --------------------------------------------------------------------------------------------

_MATMUL_INPUTS = FLOAT_DTYPES


def matmul(stationary: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """One nc_matmul: stationary[K, M].T @ moving[K, N] -> float32 [M, N].

    Products are formed exactly in float64 and summed in float64 in fixed order k = 0..K-1,
    then rounded once to float32.  For bf16/fp16 inputs with K <= 128 the float64 sum is
    exact unless magnitudes span ~30+ binades, so the result is the correctly rounded dot
    product.  For fp32 inputs the products are still exact but the sum is not: the result
    is defined by this fixed order, not by exactness.
    """
    s = np.asarray(stationary)
    m = np.asarray(moving)
    if s.dtype not in _MATMUL_INPUTS or m.dtype not in _MATMUL_INPUTS:
        raise TypeError(f"matmul inputs must be bf16, fp16 or fp32, got {s.dtype} and {m.dtype}")
    if s.ndim != 2 or m.ndim != 2:
        raise ValueError(f"matmul needs 2-D operands, got shapes {s.shape} and {m.shape}")
    if s.shape[0] != m.shape[0]:
        raise ValueError(f"contraction (partition) sizes differ: {s.shape[0]} vs {m.shape[0]}")
    k_size = s.shape[0]
    if k_size == 0:
        raise ValueError("matmul needs K >= 1")
    # Widening to float64 is exact; contiguous copies make the memory layout irrelevant.
    s64 = np.ascontiguousarray(s, dtype=_F64)
    m64 = np.ascontiguousarray(m, dtype=_F64)
    fast = _exact_blas(s64, m64, _SIGNIFICANT_BITS[s.dtype], _SIGNIFICANT_BITS[m.dtype])
    if fast is not None:
        return fast
    with np.errstate(all="ignore"):  # inf * 0 -> NaN and fp32 overflow -> inf are defined
        # Start from the first product rather than +0 so an all-(-0) sum stays -0 (IEEE).
        # Elementwise multiply/add are correctly rounded in every SIMD path; a sequential sum
        # over k fixes the summation order, which BLAS and np.add.reduce (pairwise) do not.
        return _ordered_sum(s64, m64).astype(_FP32, order="C")


# Up to this many products (2 MiB of float64) are formed in one multiply before the ordered sum.
_PRODUCTS_AT_ONCE = 1 << 18


def _ordered_sum(s64: np.ndarray, m64: np.ndarray) -> np.ndarray:
    """sum_k s64[k, i] * m64[k, j] in float64, k = 0, 1, ... in order, starting from k = 0's
    product. Small operands: every product in one multiply, then one in-place add per k over a
    contiguous [N, M] row (the same operations, far fewer Python steps); large ones: an outer
    product per k, so memory stays bounded."""
    k_size, m, n = s64.shape[0], s64.shape[1], m64.shape[1]
    if k_size * m * n <= _PRODUCTS_AT_ONCE:
        products = s64[:, None, :] * m64[:, :, None]  # [K, N, M]: s * m, as the loop below
        acc = products[0].copy()
        for k in range(1, k_size):
            np.add(acc, products[k], out=acc)
        return acc.T
    acc = np.multiply.outer(s64[0], m64[0])
    for k in range(1, k_size):
        acc += np.multiply.outer(s64[k], m64[k])
    return acc


_SIGNIFICANT_BITS = {d.dtype: d.mantissa_bits + 1 for d in TABLE if d.is_float}


def _exact_blas(s64: np.ndarray, m64: np.ndarray, bits_s: int, bits_m: int) -> np.ndarray | None:
    """s64.T @ m64 through BLAS when every partial sum is provably exact, else None.

    Every product is a multiple of q = (smallest ulp in s) * (smallest ulp in m); if the sum
    of |products| stays below 2**53 * q, every partial sum in ANY order is an exact float64,
    so BLAS's order and threads cannot matter and the result equals the ordered loop's.
    Zero results fall back to the loop (the sign of an all -0 sum depends on the start value).
    """
    abs_s, abs_m = np.abs(s64), np.abs(m64)
    # max() propagates NaN, so one finite max means every element is finite.
    max_s, max_m = float(abs_s.max()), float(abs_m.max())
    if not (math.isfinite(max_s) and math.isfinite(max_m)):
        return None
    # frexp's exponent grows with |x|, so the smallest nonzero magnitude has the smallest one.
    min_s, min_m = _min_nonzero(abs_s), _min_nonzero(abs_m)
    if min_s == math.inf or min_m == math.inf:
        return None
    q_exp = math.frexp(min_s)[1] - bits_s + math.frexp(min_m)[1] - bits_m
    limit = math.ldexp(1.0, 53 + q_exp)
    # K * max|s| * max|m| bounds every row's sum of |products|: when it passes, the exact
    # bound below would too, so the cheap test only skips work, never changes the answer.
    if s64.shape[0] * max_s * max_m * (1 + 1e-9) >= limit:
        bound = float((abs_s.T @ abs_m).max()) * (1 + 1e-9)
        if bound >= limit:
            return None
    out = s64.T @ m64
    if not out.all():
        return None
    with np.errstate(over="ignore"):  # an exact sum beyond fp32 range rounds to inf
        return out.astype(_FP32)


def _min_nonzero(a: np.ndarray) -> float:
    """The smallest nonzero element of a non-negative array (inf if none)."""
    low = float(a.min())
    if low != 0:  # the usual case: one plain reduction instead of a masked one
        return low
    return float(a.min(where=a != 0, initial=np.inf))


def accumulate(psum_fp32: np.ndarray, partial_fp32: np.ndarray) -> np.ndarray:
    """PSUM accumulation: psum + partial, one float32 rounding (NPU.md 6.2 rules 4-5)."""
    p = _require_fp32(psum_fp32, "accumulate")
    q = _require_fp32(partial_fp32, "accumulate")
    if p.shape != q.shape:
        raise ValueError(f"accumulate shapes differ: {p.shape} vs {q.shape}")
    with np.errstate(all="ignore"):  # overflow to inf and inf - inf = NaN are defined
        return np.add(p, q, dtype=_FP32)


# --------------------------------------------------------------------------------------------
# Transcendentals: float64 range reduction + fixed polynomial, rounded once to float32
# --------------------------------------------------------------------------------------------

# Cody-Waite split of ln 2 (fdlibm): _LN2_HI has its low 32 bits zero, so n * _LN2_HI is
# exact for the |n| <= 289 we use and x - n * _LN2_HI loses nothing.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_LN2 = 0.6931471805599453  # float64 nearest ln 2, for e * ln 2 in log
_INV_LN2 = 1.4426950408889634
# Beyond |x| = 200 every float32 result has saturated (exp(-200) << 2**-149 and
# exp(200) >> FP32 max), and clamping keeps ldexp away from float64 overflow.
_EXP_CLAMP = 200.0
# 1/k! for the Taylor polynomial of exp on |r| <= ln2/2: the k=14 term is < 4e-18 there.
# Python int / int true division is correctly rounded, so the constants are exact-ish and fixed.
_EXP_COEF = tuple(1 / math.factorial(k) for k in range(14))
# 1/(2j+1) for atanh-series log; |s| <= 0.1716 so s**26/27 < 1e-21.
_LOG_COEF = tuple(1 / (2 * j + 1) for j in range(13))
_SQRT2 = 1.4142135623730951
_SQRT_2_OVER_PI = 0.7978845608028654  # float64 nearest sqrt(2/pi)
_GELU_CUBIC = 0.044715


def _horner(coefs: tuple[float, ...], x: np.ndarray) -> np.ndarray:
    """Evaluate sum(coefs[k] * x**k) by Horner's rule, in fixed order."""
    p = np.full_like(x, coefs[-1])
    for c in reversed(coefs[:-1]):
        p = p * x + c  # separate ufuncs: NumPy never fuses these into an FMA
    return p


def _exp64(x: np.ndarray) -> np.ndarray:
    """exp on float64 arrays (no NaNs; any finite or infinite value), about 1e-16 relative."""
    x = np.clip(x, -_EXP_CLAMP, _EXP_CLAMP)
    n = np.floor(x * _INV_LN2 + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO  # |r| <= ~0.347
    # n is within [-289, 289], so 2**n * p stays a normal float64 and ldexp is exact.
    return np.ldexp(_horner(_EXP_COEF, r), n.astype(np.int32))


def _expm1_pos64(y: np.ndarray) -> np.ndarray:
    """exp(y) - 1 for float64 y >= 0, without cancellation for small y."""
    small = y < 0.34657359027997264  # ln2/2: below it use the series without its constant term
    series = y * _horner(_EXP_COEF[1:], y)  # y + y^2/2! + ... , all terms positive
    # Above ln2/2, exp(y) >= 1.41 so subtracting 1 loses under 2 bits of float64.
    return np.where(small, series, _exp64(np.where(small, 0.0, y)) - 1.0)


def _sigmoid64(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in float64 (no NaNs): no cancellation for either sign of x."""
    return 1.0 / (1.0 + _exp64(-x))


def _finish(result64: np.ndarray, x32: np.ndarray) -> np.ndarray:
    """Round once to float32 and put the input NaNs back (their payloads are not kept)."""
    with np.errstate(over="ignore", under="ignore"):
        out = result64.astype(_FP32)
    out[np.isnan(x32)] = np.nan
    return out


def _prep(x: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Check float32 input and return (x32, x64 with NaNs replaced by 0 for safe reduction)."""
    x32 = _require_fp32(x, what)
    x64 = x32.astype(_F64)
    x64[np.isnan(x64)] = 0.0  # floor(NaN) cannot become an int exponent; NaN restored later
    return x32, x64


def exp(x: np.ndarray) -> np.ndarray:
    """e**x, float32 -> float32, within 1 ulp; overflow -> inf, underflow -> 0 or subnormal."""
    x32, x64 = _prep(x, "exp")
    with np.errstate(all="ignore"):
        return _finish(_exp64(x64), x32)


def log(x: np.ndarray) -> np.ndarray:
    """Natural log, float32 -> float32, within 1 ulp; log(0) = -inf, log(x<0) = NaN."""
    x32, x64 = _prep(x, "log")
    with np.errstate(all="ignore"):
        pos = np.where((x64 > 0) & (x64 < np.inf), x64, 1.0)
        # Split pos = m * 2**e with the exact integer exponent from the float64 bits (float32
        # subnormals are normal in float64), m in [1, 2), then fold m into [sqrt(1/2), sqrt(2)).
        u = pos.view(np.uint64)
        e = ((u >> np.uint64(52)) & np.uint64(0x7FF)).astype(np.int64) - 1023
        m = ((u & np.uint64(0x000F_FFFF_FFFF_FFFF)) | np.uint64(0x3FF0_0000_0000_0000)).view(_F64)
        big = m > _SQRT2
        m = np.where(big, m * 0.5, m)  # exact
        e = e + big
        # log(m) = 2 atanh(s), s = (m - 1) / (m + 1); m - 1 is exact (Sterbenz).
        s = (m - 1.0) / (m + 1.0)
        log_m = 2.0 * s * _horner(_LOG_COEF, s * s)
        res = e.astype(_F64) * _LN2 + log_m
        res = np.where(x64 == 0, -np.inf, res)
        res = np.where(x64 < 0, np.nan, res)
        res = np.where(x64 == np.inf, np.inf, res)
        return _finish(res, x32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic 1 / (1 + e**-x), float32 -> float32, within 1 ulp."""
    x32, x64 = _prep(x, "sigmoid")
    with np.errstate(all="ignore"):
        return _finish(_sigmoid64(x64), x32)


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x) with one rounding, float32 -> float32, within 1 ulp; silu(-inf) = -0."""
    x32, x64 = _prep(x, "silu")
    with np.errstate(all="ignore"):
        res = x64 * _sigmoid64(x64)
        res = np.where(x64 == -np.inf, -0.0, res)  # limit of x * e**x, not -inf * 0 = NaN
        return _finish(res, x32)


def tanh(x: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent, float32 -> float32, within 1 ulp; odd, so tanh(-0) = -0."""
    x32, x64 = _prep(x, "tanh")
    with np.errstate(all="ignore"):
        # tanh|x| = E / (E + 2) with E = expm1(2|x|): no cancellation near 0, -> 1 for large |x|.
        big_e = _expm1_pos64(np.minimum(2.0 * np.abs(x64), _EXP_CLAMP))
        res = np.copysign(big_e / (big_e + 2.0), x64)
        return _finish(res, x32)


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3))), one rounding.

    This is PyTorch's gelu(approximate="tanh"), evaluated as x * sigmoid(2u) (the same function)
    so that 1 + tanh(u) does not cancel for negative x.
    """
    x32, x64 = _prep(x, "gelu")
    with np.errstate(all="ignore"):
        u = _SQRT_2_OVER_PI * (x64 + _GELU_CUBIC * (x64 * x64 * x64))
        res = x64 * _sigmoid64(2.0 * u)
        res = np.where(x64 == -np.inf, -0.0, res)  # limit, not -inf * 0 = NaN
        return _finish(res, x32)


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0); relu(-0) = +0 and NaN propagates (so uninitialised reads stay visible)."""
    x32 = _require_fp32(x, "relu")
    return np.where((x32 > 0) | np.isnan(x32), x32, np.float32(0)).astype(_FP32)


def square(x: np.ndarray) -> np.ndarray:
    """x * x, float32 -> float32 (the float64 product is exact, so one rounding)."""
    x32 = _require_fp32(x, "square")
    x64 = x32.astype(_F64)
    with np.errstate(over="ignore", under="ignore"):
        return (x64 * x64).astype(_FP32)


def sqrt(x: np.ndarray) -> np.ndarray:
    """Correctly rounded square root; sqrt(-0) = -0, sqrt(x<0) = NaN."""
    x32 = _require_fp32(x, "sqrt")
    with np.errstate(invalid="ignore"):
        # float64 sqrt then float32 rounding is innocuous double rounding (53 >= 2*24 + 2).
        return np.sqrt(x32.astype(_F64)).astype(_FP32)


def rsqrt(x: np.ndarray) -> np.ndarray:
    """1 / sqrt(x) in float64, rounded once: within 1 ulp; rsqrt(+-0) = +-inf, x<0 -> NaN."""
    x32 = _require_fp32(x, "rsqrt")
    with np.errstate(divide="ignore", invalid="ignore"):
        return (1.0 / np.sqrt(x32.astype(_F64))).astype(_FP32)


def reciprocal(x: np.ndarray) -> np.ndarray:
    """Correctly rounded 1 / x; 1/+-0 = +-inf, overflow (tiny subnormal x) -> +-inf."""
    x32 = _require_fp32(x, "reciprocal")
    with np.errstate(divide="ignore", over="ignore"):
        # float64 division then float32 rounding is innocuous double rounding (53 >= 2*24 + 2).
        return (1.0 / x32.astype(_F64)).astype(_FP32)


def identity(x: np.ndarray) -> np.ndarray:
    """A float32 copy of x, bits unchanged (NaN payloads included)."""
    return _require_fp32(x, "identity").copy()


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": identity,
    "copy": identity,
    "exp": exp,
    "log": log,
    "sigmoid": sigmoid,
    "silu": silu,
    "tanh": tanh,
    "gelu": gelu,
    "relu": relu,
    "square": square,
    "sqrt": sqrt,
    "rsqrt": rsqrt,
    "reciprocal": reciprocal,
}
