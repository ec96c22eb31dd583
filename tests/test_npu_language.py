"""Semantics the kernel language promises (docs/kernel-language.md, NPU.md section 6).

Each test builds a small kernel, runs it with `simulate`, and checks the output bits against a
reference computed independently of `knight.npu` where possible (float64 and bit tricks).
"""

from __future__ import annotations

import re
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from knight.npu import nisa, nl, numerics
from knight.npu.errors import IllegalAccess
from knight.npu.runtime import SimResult, simulate

BF16 = ml_dtypes.bfloat16
F32 = np.float32
REPO = Path(__file__).resolve().parents[1]


def sim(kernel, inputs, outputs, **kw) -> SimResult:
    kw.setdefault("timing", False)
    return simulate(kernel, inputs, outputs, **kw)


def u32(a) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint32)


def u16(a) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint16)


def f32(x) -> np.float32:
    return np.float32(x)


def ref_bf16_bits(x: np.ndarray) -> np.ndarray:
    """fp32 -> bf16 round-to-nearest-even on the bit pattern (NaN -> 0x7FC0), independently of
    ml_dtypes: add 0x7FFF plus the lowest kept bit, then truncate."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    lsb = (u >> 16) & 1
    out = ((u + 0x7FFF + lsb) >> 16).astype(np.uint16)
    out[(u & 0x7FFFFFFF) > 0x7F800000] = 0x7FC0
    return out


def bf16_values(rng: np.random.Generator, shape, lo_exp: int = -8, hi_exp: int = 2) -> np.ndarray:
    """Random bf16 values with magnitudes in [2**lo_exp, 2**hi_exp) and random signs: sums of up
    to 128 of their pairwise products are exact in float64."""
    mag = np.exp2(rng.uniform(lo_exp, hi_exp, size=shape))
    sign = rng.choice([-1.0, 1.0], size=shape)
    v = (mag * sign).astype(F32).astype(BF16)
    return np.where(np.abs(v.astype(F32)) < 2.0**lo_exp, BF16(2.0**lo_exp), v).astype(BF16)


def random_f32_bits(rng: np.random.Generator, shape, *, finite: bool = False) -> np.ndarray:
    bits = rng.integers(0, 1 << 32, size=shape, dtype=np.uint64).astype(np.uint32)
    x = bits.view(F32)
    if finite:
        x = np.where(np.isfinite(x), x, F32(1.5))
    return x


# ============================================================================ memory


def test_fresh_memory_is_nan():
    seen = []

    def kernel(a, out, ids_out):
        tiles = [
            nl.ndarray((128, 4), dtype=nl.float32),
            nl.ndarray((128, 4), dtype=nl.bfloat16),
            nl.ndarray((128, 4), dtype=nl.float16),
            nl.ndarray((128, 4), dtype=nl.float32, buffer=nl.psum),
            nl.ndarray((128, 4), dtype=nl.float32, buffer=nl.hbm),
        ]
        seen.extend(tiles)
        seen.append(nl.ndarray((128, 4), dtype=nl.int32))
        t = nl.ndarray((128, 4), dtype=nl.float32)
        nisa.dma_copy(t, a)
        nisa.dma_copy(out[:, 0:2], t[:, 0:2])  # half of the output only

    res = sim(
        kernel,
        {"a": np.ones((128, 4), F32)},
        {"out": ((128, 4), F32), "ids_out": ((8, 8), np.int32)},
    )
    assert len(seen) == 12  # traced once per core
    for view in seen:
        data = view._tensor.data  # test-side peek at storage (kernels cannot do this)
        if data.dtype == np.int32:
            assert (data == np.iinfo(np.int32).min).all()  # int32 has no NaN: INT32_MIN poison
        else:
            assert np.isnan(data.astype(F32)).all(), view
    out = res.outputs["out"]
    assert (out[:, 0:2] == 1).all()
    assert np.isnan(out[:, 2:]).all()  # never written: still NaN
    assert (res.outputs["ids_out"] == np.iinfo(np.int32).min).all()


def test_dma_round_trip_preserves_bits():
    rng = np.random.default_rng(1)
    f = random_f32_bits(rng, (128, 64))  # NaN payloads, infinities, subnormals, -0 included
    f[0, :4] = np.array([0x7FC00001, 0xFFFFFFFF, 0x80000000, 0x00000001], np.uint32).view(F32)
    b = rng.integers(0, 1 << 16, size=(128, 64), dtype=np.uint64).astype(np.uint16).view(BF16)
    i = rng.integers(-(2**31), 2**31, size=(128, 64), dtype=np.int64).astype(np.int32)
    h = rng.integers(0, 1 << 16, size=(128, 64), dtype=np.uint64).astype(np.uint16).view(np.float16)

    def kernel(f, b, i, h, of, ob, oi, oh):
        for src, dst, dt in (
            (f, of, nl.float32),
            (b, ob, nl.bfloat16),
            (i, oi, nl.int32),
            (h, oh, nl.float16),
        ):
            t = nl.ndarray((128, 64), dtype=dt)
            u = nl.ndarray((128, 64), dtype=dt)
            nisa.dma_copy(t, src)
            nisa.tensor_copy(u, t)  # same-dtype copies move bits too
            nisa.dma_copy(dst, u)

    outs = {
        "of": ((128, 64), F32),
        "ob": ((128, 64), BF16),
        "oi": ((128, 64), np.int32),
        "oh": ((128, 64), np.float16),
    }
    res = sim(kernel, {"f": f, "b": b, "i": i, "h": h}, outs)
    assert (u32(res.outputs["of"]) == u32(f)).all()
    assert (u16(res.outputs["ob"]) == u16(b)).all()
    assert (res.outputs["oi"] == i).all()
    assert (u16(res.outputs["oh"]) == u16(h)).all()


def test_dma_cast_bf16_to_fp32_is_exact_and_fp32_to_bf16_rounds_to_nearest_even():
    every_bf16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(BF16).reshape(128, 512)
    rng = np.random.default_rng(2)
    f = random_f32_bits(rng, (128, 512))
    f[0, :6] = [1 + 2.0**-8, 1 + 3 * 2.0**-8, -(1 + 2.0**-8), 0.0, np.inf, 1 + 2.0**-8 + 2.0**-20]
    f[0, 3] = np.uint32(0x7F7F8000).view(F32)  # half-way between bf16 max (odd) and inf: inf

    def kernel(b, f, wide, narrow):
        t = nl.ndarray((128, 512), dtype=nl.float32)
        nisa.dma_copy(t, b)  # bf16 -> fp32
        nisa.dma_copy(wide, t)
        u = nl.ndarray((128, 512), dtype=nl.bfloat16)
        nisa.dma_copy(u, f)  # fp32 -> bf16
        nisa.dma_copy(narrow, u)

    res = sim(
        kernel, {"b": every_bf16, "f": f}, {"wide": ((128, 512), F32), "narrow": ((128, 512), BF16)}
    )
    wide = res.outputs["wide"]
    expect = u16(every_bf16).astype(np.uint32) << 16
    nan = np.isnan(every_bf16.astype(F32))
    assert (u32(wide)[~nan] == expect[~nan]).all()
    assert np.isnan(wide[nan]).all()
    narrow = u16(res.outputs["narrow"])
    ref = ref_bf16_bits(f)
    nan = np.isnan(f)
    assert (narrow[~nan] == ref[~nan]).all()
    assert np.isnan(res.outputs["narrow"][nan].astype(F32)).all()
    assert list(narrow[0, :6]) == [0x3F80, 0x3F82, 0xBF80, 0x7F80, 0x7F80, 0x3F81]


# ============================================================================ TensorE


def _matmul_kernel(w, x, y):
    k, m = w.shape
    n = x.shape[1]
    wt = nl.ndarray((k, m), dtype=w.dtype)
    xt = nl.ndarray((k, n), dtype=x.dtype)
    nisa.dma_copy(wt, w)
    nisa.dma_copy(xt, x)
    ps = nl.ndarray((m, n), dtype=nl.float32, buffer=nl.psum)
    nisa.nc_matmul(ps, wt, xt)
    r = nl.ndarray((m, n), dtype=nl.float32)
    nisa.tensor_copy(r, ps)
    nisa.dma_copy(y, r)


@pytest.mark.parametrize(
    ("k", "m", "n"), [(128, 128, 512), (128, 128, 1), (1, 128, 7), (77, 33, 130)]
)
def test_matmul_is_exact_then_rounded_once_to_fp32(k, m, n):
    rng = np.random.default_rng(k * 1000 + n)
    w = bf16_values(rng, (k, m))
    x = bf16_values(rng, (k, n))
    res = sim(_matmul_kernel, {"w": w, "x": x}, {"y": ((m, n), F32)})
    # Every partial sum of these products is exact in float64, so BLAS order does not matter.
    ref = (w.astype(np.float64).T @ x.astype(np.float64)).astype(F32)
    assert (u32(res.outputs["y"]) == u32(ref)).all()
    assert (u32(res.outputs["y"]) == u32(numerics.matmul(w, x))).all()


def test_matmul_rounds_the_exact_sum_not_a_running_fp32_sum():
    # 1 + 2**-24 + 2**-24: exact sum 1 + 2**-23 is an fp32; a running fp32 sum would give 1.
    w = np.ones((3, 1), BF16)
    x = np.array([[1.0], [2.0**-24], [2.0**-24]], dtype=F32).astype(BF16)
    res = sim(_matmul_kernel, {"w": w, "x": x}, {"y": ((1, 1), F32)})
    assert res.outputs["y"][0, 0] == f32(1 + 2.0**-23)


def test_matmul_orientation_swap_gives_the_same_bits_transposed():
    rng = np.random.default_rng(3)
    w = bf16_values(rng, (128, 96), -20, 8)  # wide exponent range: rounding happens
    x = bf16_values(rng, (128, 5), -20, 8)
    a = sim(_matmul_kernel, {"w": w, "x": x}, {"y": ((96, 5), F32)}).outputs["y"]
    b = sim(_matmul_kernel, {"w": x, "x": w}, {"y": ((5, 96), F32)}).outputs["y"]
    assert (u32(a) == u32(b.T)).all()


def test_fp32_matmul_uses_the_fixed_order_of_numerics():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((128, 16)).astype(F32)
    x = rng.standard_normal((128, 8)).astype(F32)
    res = sim(_matmul_kernel, {"w": w, "x": x}, {"y": ((16, 8), F32)})
    assert (u32(res.outputs["y"]) == u32(numerics.matmul(w, x))).all()
    ref64 = w.astype(np.float64).T @ x.astype(np.float64)
    assert np.allclose(res.outputs["y"], ref64, rtol=1e-5, atol=1e-5)


def _accumulate_kernel(w, x, y):
    groups, k, m = w.shape
    n = x.shape[2]
    ps = nl.ndarray((m, n), dtype=nl.float32, buffer=nl.psum)
    for g in range(groups):
        wt = nl.ndarray((k, m), dtype=w.dtype)
        xt = nl.ndarray((k, n), dtype=x.dtype)
        nisa.dma_copy(wt, w[g])
        nisa.dma_copy(xt, x[g])
        nisa.nc_matmul(ps, wt, xt, accumulate=g > 0)
    r = nl.ndarray((m, n), dtype=nl.float32)
    nisa.tensor_copy(r, ps)
    nisa.dma_copy(y, r)


def test_accumulate_adds_in_fp32_in_instruction_order():
    # Designed: 1, then 2**-24 twice. In-order fp32 adds tie back to 1 each time; any other order
    # (or a wider accumulator) gives 1 + 2**-23.
    w = np.ones((3, 1, 1), BF16)
    x = np.array([1.0, 2.0**-24, 2.0**-24], F32).astype(BF16).reshape(3, 1, 1)
    res = sim(_accumulate_kernel, {"w": w, "x": x}, {"y": ((1, 1), F32)})
    assert res.outputs["y"][0, 0] == f32(1.0)
    # Reversed instruction order changes the bits.
    res = sim(
        _accumulate_kernel, {"w": w, "x": np.ascontiguousarray(x[::-1])}, {"y": ((1, 1), F32)}
    )
    assert res.outputs["y"][0, 0] == f32(1 + 2.0**-23)

    # Random: each matmul rounds its exact sum to fp32, then adds into PSUM with one fp32 rounding.
    rng = np.random.default_rng(5)
    w = bf16_values(rng, (6, 128, 64), -20, 8)
    x = bf16_values(rng, (6, 128, 3), -20, 8)
    res = sim(_accumulate_kernel, {"w": w, "x": x}, {"y": ((64, 3), F32)})
    acc = None
    for g in range(6):
        part = (w[g].astype(np.float64).T @ x[g].astype(np.float64)).astype(F32)
        acc = part if acc is None else (acc + part).astype(F32)
    assert (u32(res.outputs["y"]) == u32(acc)).all()


def test_accumulate_none_overwrites_first_then_adds():
    def kernel(x, y):
        one = nl.ndarray((128, 1), dtype=nl.float32)
        xt = nl.ndarray((128, 4), dtype=nl.float32)
        nisa.memset(one, 1.0)
        nisa.dma_copy(xt, x)
        ps = nl.ndarray((1, 4), dtype=nl.float32, buffer=nl.psum)
        nisa.nc_matmul(ps, one, xt, accumulate=None)
        nisa.nc_matmul(ps, one, xt, accumulate=None)
        r = nl.ndarray((1, 4), dtype=nl.float32)
        nisa.tensor_copy(r, ps)
        nisa.dma_copy(y, r)

    res = sim(kernel, {"x": np.ones((128, 4), F32)}, {"y": ((1, 4), F32)})
    assert (res.outputs["y"] == 256.0).all()


def test_psum_to_sbuf_copy_to_bf16_rounds_to_nearest_even():
    rng = np.random.default_rng(6)
    f = random_f32_bits(rng, (128, 256), finite=True)
    ties = np.array([1 + 2.0**-8, 1 + 3 * 2.0**-8, 2 + 2.0**-7, -(1 + 2.0**-8), 0.0, 0.0], F32)
    ties[4] = np.uint32(0x7F7F8000).view(F32)  # tie between bf16 max (odd mantissa) and inf
    ties[5] = np.uint32(0x7F7F7FFF).view(F32)  # just below the tie: bf16 max
    f[1, : len(ties)] = ties

    def kernel(f, y):
        s = nl.ndarray((128, 256), dtype=nl.float32)
        nisa.dma_copy(s, f)
        ps = nl.ndarray((128, 256), dtype=nl.float32, buffer=nl.psum)
        nisa.tensor_copy(ps, s)  # fp32 -> fp32: bits
        b = nl.ndarray((128, 256), dtype=nl.bfloat16)
        nisa.tensor_copy(b, ps)  # PSUM fp32 -> SBUF bf16: one RNE rounding
        nisa.dma_copy(y, b)

    res = sim(kernel, {"f": f}, {"y": ((128, 256), BF16)})
    got = u16(res.outputs["y"])
    assert (got == ref_bf16_bits(f)).all()
    assert list(got[1, : len(ties)]) == [0x3F80, 0x3F82, 0x4000, 0xBF80, 0x7F80, 0x7F7F]


def test_matmul_result_read_out_to_bf16_rounds_once():
    # PSUM holds 1 + 2**-8 exactly (fp32); the bf16 read-out ties to even: 1.0.
    def kernel(w, x, y):
        wt = nl.ndarray((2, 1), dtype=nl.bfloat16)
        xt = nl.ndarray((2, 1), dtype=nl.bfloat16)
        nisa.dma_copy(wt, w)
        nisa.dma_copy(xt, x)
        ps = nl.ndarray((1, 1), dtype=nl.float32, buffer=nl.psum)
        nisa.nc_matmul(ps, wt, xt)
        b = nl.ndarray((1, 1), dtype=nl.bfloat16)
        nisa.tensor_copy(b, ps)
        nisa.dma_copy(y, b)

    w = np.ones((2, 1), BF16)
    x = np.array([[1.0], [2.0**-8]], F32).astype(BF16)
    res = sim(kernel, {"w": w, "x": x}, {"y": ((1, 1), BF16)})
    assert u16(res.outputs["y"])[0, 0] == 0x3F80


def test_transpose_copies_bits():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 1 << 16, size=(128, 96), dtype=np.uint64).astype(np.uint16)
    x = np.where((x & 0x7F80) == 0x7F80, np.uint16(0x3F80), x).view(BF16)  # no NaN/inf patterns

    def kernel(x, yt, yv):
        s = nl.ndarray((128, 96), dtype=nl.bfloat16)
        nisa.dma_copy(s, x)
        ps = nl.ndarray((96, 128), dtype=nl.bfloat16, buffer=nl.psum)
        nisa.nc_transpose(ps, s)  # TensorE: SBUF -> PSUM
        t = nl.ndarray((96, 128), dtype=nl.bfloat16)
        nisa.tensor_copy(t, ps)
        nisa.dma_copy(yt, t)
        v = nl.ndarray((32, 32), dtype=nl.float32)
        nisa.nc_transpose(
            v, s[0:32, 0:32], engine=nisa.engine.vector
        )  # VectorE 32x32, widened exactly
        nisa.dma_copy(yv, v)

    res = sim(kernel, {"x": x}, {"yt": ((96, 128), BF16), "yv": ((32, 32), F32)})
    assert (u16(res.outputs["yt"]) == u16(x).T).all()
    assert (u32(res.outputs["yv"]) == (u16(x)[0:32, 0:32].T.astype(np.uint32) << 16)).all()


# ============================================================================ ScalarE / VectorE


def test_activation_silu_matches_numerics_silu():
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((128, 64)) * 4).astype(F32).astype(BF16)
    bias = rng.standard_normal((128, 1)).astype(F32)

    def kernel(x, bias, y, yb, ys):
        xt = nl.ndarray((128, 64), dtype=nl.bfloat16)
        bt = nl.ndarray((128, 1), dtype=nl.float32)
        nisa.dma_copy(xt, x)
        nisa.dma_copy(bt, bias)
        r = nl.ndarray((128, 64), dtype=nl.float32)
        nisa.activation(r, nl.silu, xt)
        nisa.dma_copy(y, r)
        rb = nl.ndarray((128, 64), dtype=nl.bfloat16)
        nisa.activation(rb, nl.silu, xt)  # same result, rounded to bf16 on write
        nisa.dma_copy(yb, rb)
        rs = nl.ndarray((128, 64), dtype=nl.float32)
        nisa.activation(rs, nl.silu, xt, bias=bt, scale=0.75)  # silu(x * 0.75 + bias)
        nisa.dma_copy(ys, rs)

    outs = {"y": ((128, 64), F32), "yb": ((128, 64), BF16), "ys": ((128, 64), F32)}
    res = sim(kernel, {"x": x, "bias": bias}, outs)
    x32 = x.astype(F32)
    ref = numerics.silu(x32)
    assert (u32(res.outputs["y"]) == u32(ref)).all()
    assert (u16(res.outputs["yb"]) == ref_bf16_bits(ref)).all()
    pre = ((x32 * f32(0.75)).astype(F32) + bias).astype(F32)
    assert (u32(res.outputs["ys"]) == u32(numerics.silu(pre))).all()
    # And numerics.silu itself is within one fp32 ulp of float64 x * sigmoid(x).
    x64 = x32.astype(np.float64)
    exact = x64 / (1.0 + np.exp(-x64))
    ulp = np.spacing(np.abs(exact).astype(F32)).astype(np.float64)
    assert (np.abs(res.outputs["y"].astype(np.float64) - exact) <= ulp).all()


def test_tensor_scalar_tile_operand_broadcasts_per_partition():
    rng = np.random.default_rng(9)
    data = rng.standard_normal((128, 8)).astype(F32)
    col = rng.standard_normal((128, 1)).astype(F32)

    def kernel(data, col, y, z):
        d = nl.ndarray((128, 8), dtype=nl.float32)
        c = nl.ndarray((128, 1), dtype=nl.float32)
        nisa.dma_copy(d, data)
        nisa.dma_copy(c, col)
        r = nl.ndarray((128, 8), dtype=nl.float32)
        nisa.tensor_scalar(r, d, nl.multiply, c, op1=nl.add, operand1=1.5)
        nisa.dma_copy(y, r)
        s = nl.ndarray((128, 8), dtype=nl.bfloat16)
        nisa.tensor_scalar(s, d, nl.subtract, c)  # data - operand (not reversed)
        nisa.dma_copy(z, s)

    res = sim(kernel, {"data": data, "col": col}, {"y": ((128, 8), F32), "z": ((128, 8), BF16)})
    ref = ((data * col).astype(F32) + f32(1.5)).astype(F32)  # fp32 ops, one rounding each
    assert (u32(res.outputs["y"]) == u32(ref)).all()
    assert (u16(res.outputs["z"]) == ref_bf16_bits((data - col).astype(F32))).all()


def test_tensor_tensor_computes_in_fp32_and_rounds_on_write():
    rng = np.random.default_rng(10)
    a = bf16_values(rng, (128, 32))
    b = bf16_values(rng, (128, 32))

    def kernel(a, b, y):
        x1 = nl.ndarray((128, 32), dtype=nl.bfloat16)
        x2 = nl.ndarray((128, 32), dtype=nl.bfloat16)
        nisa.dma_copy(x1, a)
        nisa.dma_copy(x2, b)
        r = nl.ndarray((128, 32), dtype=nl.bfloat16)
        nisa.tensor_tensor(r, x1, x2, nl.multiply)
        nisa.dma_copy(y, r)

    res = sim(kernel, {"a": a, "b": b}, {"y": ((128, 32), BF16)})
    prod = (a.astype(F32) * b.astype(F32)).astype(F32)
    assert (u16(res.outputs["y"]) == ref_bf16_bits(prod)).all()


def _reduce_kernel(x, y, m):
    p, n = x.shape
    t = nl.ndarray((p, n), dtype=nl.float32)
    nisa.dma_copy(t, x)
    s = nl.ndarray((p, 1), dtype=nl.float32)
    nisa.tensor_reduce(s, nl.add, t, axis=1, keepdims=True)
    nisa.dma_copy(y, s)
    mx = nl.ndarray((p,), dtype=nl.float32)
    nisa.tensor_reduce(mx, nl.maximum, t, axis=-1)
    nisa.dma_copy(m, mx)


def test_tensor_reduce_add_is_sequential_fp32():
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((128, 300)) * np.exp2(rng.integers(-12, 12, size=(128, 300)))).astype(
        F32
    )
    x[0, :] = 2.0**-24
    x[0, 0] = 1.0  # in order: 1 + 2**-24 ties back to 1 every time
    x[1, :] = 2.0**-24
    x[1, -1] = 1.0  # the small terms first: they add up before meeting the 1
    res = sim(_reduce_kernel, {"x": x}, {"y": ((128, 1), F32), "m": ((128,), F32)})
    seq = np.empty(128, F32)
    for p in range(128):
        acc = x[p, 0]
        for v in x[p, 1:]:
            acc = f32(acc + v)
        seq[p] = acc
    assert (u32(res.outputs["y"][:, 0]) == u32(seq)).all()
    assert res.outputs["y"][0, 0] == 1.0
    assert res.outputs["y"][1, 0] == f32(1 + 299 * 2.0**-24)
    assert (res.outputs["m"] == x.max(axis=1)).all()


def test_max8_and_find_index8_give_values_descending_and_first_occurrences():
    """NKI: max8 returns the 8 largest values in descending order; nc_find_index8 returns the
    index of the first occurrence of each value, so tied values share the lower index."""
    rng = np.random.default_rng(12)
    x = rng.integers(0, 6, size=(128, 20)).astype(F32)  # many ties
    x[0] = [3, 5, 5, 1, 5, 2, 0, 7, 7, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]

    def kernel(x, vals, idx):
        t = nl.ndarray((128, 20), dtype=nl.float32)
        nisa.dma_copy(t, x)
        v = nl.ndarray((128, 8), dtype=nl.float32)
        i = nl.ndarray((128, 8), dtype=nl.uint32)
        nisa.max8(v, t)
        nisa.nc_find_index8(i, t, v)  # first occurrence of each value (NKI)
        nisa.dma_copy(vals, v)
        nisa.dma_copy(idx, i)

    res = sim(kernel, {"x": x}, {"vals": ((128, 8), F32), "idx": ((128, 8), np.int32)})
    assert list(res.outputs["vals"][0]) == [7, 7, 5, 5, 5, 4, 3, 2]
    assert list(res.outputs["idx"][0]) == [7, 7, 1, 1, 1, 9, 0, 5]
    for p in range(128):
        top = sorted(x[p], reverse=True)[:8]
        assert list(res.outputs["vals"][p]) == top
        assert list(res.outputs["idx"][p]) == [list(x[p]).index(v) for v in top]


def test_find_index8_marks_absent_values():
    def kernel(x, idx):
        t = nl.ndarray((128, 16), dtype=nl.float32)
        nisa.dma_copy(t, x)
        v = nl.ndarray((128, 8), dtype=nl.float32)
        nisa.memset(v, -1.0)  # not in the data
        i = nl.ndarray((128, 8), dtype=nl.uint32)
        nisa.nc_find_index8(i, t, v)
        nisa.dma_copy(idx, i)

    x = np.arange(128 * 16, dtype=F32).reshape(128, 16)
    res = sim(kernel, {"x": x}, {"idx": ((128, 8), np.int32)})
    assert (res.outputs["idx"].view(np.uint32) == 0xFFFFFFFF).all()


def _match_replace(x: np.ndarray, vals: np.ndarray, imm: float):
    def kernel(x, v, out, idx):
        t = nl.ndarray(x.shape, dtype=nl.float32)
        nisa.dma_copy(t, x)
        vt = nl.ndarray(v.shape, dtype=nl.float32)
        nisa.dma_copy(vt, v)
        r = nl.ndarray(x.shape, dtype=nl.float32)
        i = nl.ndarray(v.shape, dtype=nl.uint32)
        nisa.nc_match_replace8(dst=r, data=t, vals=vt, imm=imm, dst_idx=i)
        nisa.dma_copy(out, r)
        nisa.dma_copy(idx, i)

    outs = {"out": (x.shape, F32), "idx": (vals.shape, np.int32)}
    res = sim(kernel, {"x": x, "v": vals}, outs)
    return res.outputs["out"], res.outputs["idx"].view(np.uint32)


def test_match_replace8_pairs_repeated_values_with_positions_last_slot_first():
    """NKI (v2.32 page, its example): values are matched vals[7] .. vals[0], each replacing the
    first occurrence left, so repeats take distinct positions, the earliest in the last slot."""
    x = np.zeros((2, 11), dtype=F32)
    x[0] = [1, 2, 3, 4, 8, 8, 8, 8, 8, 8, 8]
    x[1] = [5, 9, 5, 0, 9, 1, 2, 3, 4, 6, 7]
    vals = np.array([[3, 8, 8, 8, 8, 8, 8, 8], [9, 9, 7, 6, 5, 5, 4, 3]], dtype=F32)
    out, idx = _match_replace(x, vals, -1.0)
    assert list(idx[0]) == [2, 10, 9, 8, 7, 6, 5, 4]
    assert list(out[0]) == [1, 2, -1, 4, -1, -1, -1, -1, -1, -1, -1]
    assert list(idx[1]) == [4, 1, 10, 9, 2, 0, 8, 7]
    assert list(out[1]) == [-1, -1, -1, 0, -1, 1, 2, -1, -1, -1, -1]


def test_match_replace8_on_ascending_max8_values_ranks_ties_lower_index_first():
    """The top-k idiom of the moe_router baseline: max8's values fed in ascending order give,
    read back reversed, each tied value a distinct index, the lower one first."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 6, size=(128, 20)).astype(F32)  # many ties
    top = -np.sort(-x, axis=1, kind="stable")[:, :8]
    _, idx = _match_replace(x, np.ascontiguousarray(top[:, ::-1]), float("-inf"))
    ranked = np.argsort(-x, axis=1, kind="stable")[:, :8]
    assert (idx[:, ::-1] == ranked).all()


def test_match_replace8_marks_absent_values_and_replaces_nothing():
    x = np.arange(128 * 16, dtype=F32).reshape(128, 16)
    out, idx = _match_replace(x, np.full((128, 8), -1.0, dtype=F32), 0.0)
    assert (idx == 0xFFFFFFFF).all()
    assert (out == x).all()


def test_memset_rounds_to_the_tile_dtype():
    def kernel(y, z):
        b = nl.ndarray((128, 4), dtype=nl.bfloat16)
        nisa.memset(b, 1 + 2.0**-8 + 2.0**-12)
        nisa.dma_copy(y, b)
        i = nl.zeros((128, 4), dtype=nl.int32)
        nisa.dma_copy(z, i)

    res = sim(kernel, {}, {"y": ((128, 4), BF16), "z": ((128, 4), np.int32)})
    assert (u16(res.outputs["y"]) == 0x3F81).all()
    assert (res.outputs["z"] == 0).all()


# ============================================================================ registers and views


def test_register_load_selects_the_expert_in_hbm():
    rng = np.random.default_rng(13)
    w = rng.standard_normal((8, 128, 4)).astype(F32)
    ids = np.array([[5, 2]], np.int32)

    def kernel(ids, w, out, nxt, scat):
        c = nl.program_id(0)
        t = nl.ndarray((1, 2), dtype=nl.int32)
        nisa.dma_copy(t, ids)
        e = nisa.register_alloc()
        nisa.register_load(e, t[0:1, c : c + 1])  # core c reads ids[0, c]
        x = nl.ndarray((128, 4), dtype=nl.float32)
        nisa.dma_copy(x, w[e])
        nisa.dma_copy(out[c], x)
        y = nl.ndarray((128, 4), dtype=nl.float32)
        nisa.dma_copy(y, w[e + 1])  # scale and offset are allowed: 1 * e + 1
        nisa.dma_copy(nxt[c], y)
        nisa.dma_copy(scat[e], x)  # a register can index the destination too

    outs = {"out": ((2, 128, 4), F32), "nxt": ((2, 128, 4), F32), "scat": ((8, 128, 4), F32)}
    res = sim(kernel, {"ids": ids, "w": w}, outs)
    assert (res.outputs["out"][0] == w[5]).all() and (res.outputs["out"][1] == w[2]).all()
    assert (res.outputs["nxt"][0] == w[6]).all() and (res.outputs["nxt"][1] == w[3]).all()
    scat = res.outputs["scat"]
    assert (scat[5] == w[5]).all() and (scat[2] == w[2]).all()
    assert np.isnan(np.delete(scat, [2, 5], axis=0)).all()
    # The same trace with other ids selects other experts: the value is not baked in.
    res = sim(kernel, {"ids": np.array([[0, 6]], np.int32), "w": w}, outs)
    assert (res.outputs["out"][0] == w[0]).all() and (res.outputs["out"][1] == w[6]).all()


def test_views_index_reshape_permute_broadcast():
    a = np.arange(2 * 128 * 4, dtype=F32).reshape(2, 128, 4)
    row = np.arange(8, dtype=F32).reshape(1, 8)
    shapes = {}

    def kernel(a, row, y, z, b):
        t = nl.ndarray((128, 4), dtype=nl.float32)
        shapes["hbm int"] = a[1].shape  # HBM: an integer index drops the axis
        shapes["chip int"] = t[3].shape  # on chip: the partition axis stays
        shapes["chip free int"] = t[:, 2].shape
        shapes["ds"] = t[:, nl.ds(1, 2)].shape
        shapes["reshape"] = a.reshape(2, 128, 2, 2).shape
        shapes["permute"] = a.permute(1, 0, 2).shape
        shapes["ellipsis"] = a[..., 0].shape
        nisa.dma_copy(t, a[1])
        nisa.dma_copy(y, t)
        u = nl.ndarray((128, 2, 4), dtype=nl.float32)
        nisa.dma_copy(u, a.permute(1, 0, 2))  # gather both halves onto one partition range
        nisa.dma_copy(z, u.reshape(128, 8))
        v = nl.ndarray((128, 8), dtype=nl.float32)
        nisa.dma_copy(v, row.broadcast_to(128, 8))  # the same row on every partition
        nisa.dma_copy(b, v)

    outs = {"y": ((128, 4), F32), "z": ((128, 8), F32), "b": ((128, 8), F32)}
    res = sim(kernel, {"a": a, "row": row}, outs)
    assert shapes == {
        "hbm int": (128, 4),
        "chip int": (1, 4),
        "chip free int": (128,),
        "ds": (128, 2),
        "reshape": (2, 128, 2, 2),
        "permute": (128, 2, 4),
        "ellipsis": (2, 128),
    }
    assert (res.outputs["y"] == a[1]).all()
    assert (res.outputs["z"] == a.transpose(1, 0, 2).reshape(128, 8)).all()
    assert (res.outputs["b"] == np.broadcast_to(row, (128, 8))).all()


@pytest.mark.parametrize("layout", ["fortran", "transposed"])
def test_inputs_are_row_major_whatever_the_callers_layout(layout):
    a = np.arange(128 * 4, dtype=F32).reshape(128, 4)
    given = np.asfortranarray(a) if layout == "fortran" else np.ascontiguousarray(a.T).T

    def kernel(a, y):
        t = nl.ndarray((128, 4), dtype=nl.float32)
        nisa.dma_copy(t, a.reshape(4, 128, 1).reshape(128, 4))
        nisa.dma_copy(y, t)

    res = sim(kernel, {"a": given}, {"y": ((128, 4), F32)})
    assert (res.outputs["y"] == a).all()


# ============================================================================ two cores


def test_sendrecv_swaps_data_between_the_cores():
    rng = np.random.default_rng(14)
    a = rng.standard_normal((2, 128, 4)).astype(F32)

    def kernel(a, y):
        c = nl.program_id(0)
        mine = nl.ndarray((128, 4), dtype=nl.float32)
        theirs = nl.ndarray((128, 4), dtype=nl.float32)
        nisa.dma_copy(mine, a[c])
        nisa.sendrecv(mine, theirs, 1 - c, 1 - c, 0, dma_engine=nisa.dma_engine.gpsimd_dma)
        nisa.dma_copy(y[c], theirs)

    res = sim(kernel, {"a": a}, {"y": ((2, 128, 4), F32)})
    assert (u32(res.outputs["y"][0]) == u32(a[1])).all()
    assert (u32(res.outputs["y"][1]) == u32(a[0])).all()


def test_shared_hbm_scratch_and_core_barrier():
    a = np.arange(2 * 128 * 4, dtype=F32).reshape(2, 128, 4)

    def kernel(a, y):
        c = nl.program_id(0)
        scratch = nl.ndarray(
            (2, 128, 4), dtype=nl.float32, buffer=nl.shared_hbm
        )  # one tensor for both cores
        t = nl.ndarray((128, 4), dtype=nl.float32)
        nisa.dma_copy(t, a[c])
        nisa.dma_copy(scratch[c], t)
        nisa.core_barrier(scratch, (0, 1))
        u = nl.ndarray((128, 4), dtype=nl.float32)
        nisa.dma_copy(u, scratch[1 - c])
        nisa.dma_copy(y[c], u)

    res = sim(kernel, {"a": a}, {"y": ((2, 128, 4), F32)})
    assert (res.outputs["y"][0] == a[1]).all() and (res.outputs["y"][1] == a[0]).all()


def _ids_kernel(y):
    c = nl.program_id(0)
    n = nl.num_programs(0)
    assert isinstance(c, int) and isinstance(n, int)  # plain Python ints at trace time
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(t, 10.0 * c + n)
    nisa.dma_copy(y[c], t)


def test_program_id_and_num_programs():
    res = sim(_ids_kernel, {}, {"y": ((2, 128, 4), F32)}, grid=2)
    assert (res.outputs["y"][0] == 2.0).all() and (res.outputs["y"][1] == 12.0).all()
    res = sim(_ids_kernel, {}, {"y": ((1, 128, 4), F32)}, grid=1)
    assert (res.outputs["y"][0] == 1.0).all()
    assert len(res.program.cores) == 1


# ============================================================================ integrity


def test_writing_an_input_is_illegal_access_at_its_line():
    a = np.arange(128 * 4, dtype=F32).reshape(128, 4)
    before = a.copy()

    def kernel(a, y):
        t = nl.ndarray((128, 4), dtype=nl.float32)
        nisa.dma_copy(t, a)
        nisa.dma_copy(y, t)
        z = nl.zeros((128, 4), dtype=nl.float32)
        nisa.dma_copy(a[0:64], z[0:64])  # the kernel writes (part of) its HBM input

    with pytest.raises(IllegalAccess, match="writes the kernel input 'a'") as exc:
        sim(kernel, {"a": a}, {"y": ((128, 4), F32)})
    assert exc.value.loc.line == kernel.__code__.co_firstlineno + 5
    assert (a == before).all()  # the caller's array is untouched


def _det_kernel(w, x, y):
    c = nl.program_id(0)
    wt = nl.ndarray((128, 64), dtype=nl.bfloat16)
    xt = nl.ndarray((128, 2), dtype=nl.bfloat16)
    nisa.dma_copy(wt, w[:, nl.ds(64 * c, 64)])
    nisa.dma_copy(xt, x)
    ps = nl.ndarray((64, 2), dtype=nl.float32, buffer=nl.psum)
    nisa.nc_matmul(ps, wt, xt)
    g = nl.ndarray((64, 2), dtype=nl.float32)
    nisa.activation(g, nl.silu, ps)
    mine = nl.ndarray((64, 2), dtype=nl.bfloat16)
    nisa.tensor_copy(mine, g)
    theirs = nl.ndarray((64, 2), dtype=nl.bfloat16)
    nisa.sendrecv(mine, theirs, 1 - c, 1 - c, 0, dma_engine=nisa.dma_engine.gpsimd_dma)
    s = nl.ndarray((64, 2), dtype=nl.bfloat16)
    nisa.tensor_tensor(s, mine, theirs, nl.add)
    nisa.dma_copy(y[c], s)


def _det_inputs():
    rng = np.random.default_rng(15)
    return {"w": bf16_values(rng, (128, 128)), "x": bf16_values(rng, (128, 2))}


def test_two_simulations_give_identical_output_bits():
    a = sim(_det_kernel, _det_inputs(), {"y": ((2, 64, 2), BF16)})
    b = sim(_det_kernel, _det_inputs(), {"y": ((2, 64, 2), BF16)})
    assert (u16(a.outputs["y"]) == u16(b.outputs["y"])).all()
    assert not np.isnan(a.outputs["y"].astype(F32)).any()


def test_two_simulations_give_identical_latency():
    pytest.importorskip("knight.npu.timing")
    pytest.importorskip("knight.npu.profile")
    a = sim(_det_kernel, _det_inputs(), {"y": ((2, 64, 2), BF16)}, timing=True)
    b = sim(_det_kernel, _det_inputs(), {"y": ((2, 64, 2), BF16)}, timing=True)
    assert a.latency_ns == b.latency_ns
    assert a.latency_ns > 0
    assert a.schedule.start_ps == b.schedule.start_ps
    assert a.schedule.finish_ps == b.schedule.finish_ps
    assert (u16(a.outputs["y"]) == u16(b.outputs["y"])).all()


def test_timing_false_leaves_latency_undefined():
    res = sim(_det_kernel, _det_inputs(), {"y": ((2, 64, 2), BF16)})
    assert res.schedule is None and np.isnan(res.latency_ns)


def test_device_values_are_opaque_but_shapes_are_free():
    seen = {}

    def kernel(a, y):
        t = nl.ndarray((128, 4), dtype=nl.bfloat16, name="tile")
        seen["shape"], seen["dtype"], seen["ndim"], seen["len"] = t.shape, t.dtype, t.ndim, len(t)
        seen["buffer"], seen["hbm"] = t.buffer, a.buffer
        seen["repr"] = repr(t)
        nisa.dma_copy(t, a)
        nisa.dma_copy(y, t)

    sim(kernel, {"a": np.zeros((128, 4), BF16)}, {"y": ((128, 4), BF16)})
    assert seen["shape"] == (128, 4) and seen["dtype"] == nl.bfloat16 and seen["ndim"] == 2
    assert seen["len"] == 128 and seen["buffer"] == "sbuf" and seen["hbm"] == "hbm"
    assert "tile" in seen["repr"]


# ============================================================================ the documented example


def _doc_example_source() -> str:
    text = (REPO / "docs" / "kernel-language.md").read_text()
    m = re.search(r"<!-- example: gemv -->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/kernel-language.md lost its GEMV example"
    return m.group(1)


def test_the_documented_gemv_example_runs_and_matches_its_reference():
    namespace: dict = {}
    exec(compile(_doc_example_source(), "kernel-language.md:gemv", "exec"), namespace)  # noqa: S102
    gemv, H, N = namespace["gemv"], namespace["H"], namespace["N"]
    rng = np.random.default_rng(16)
    x = bf16_values(rng, (H,))
    w = bf16_values(rng, (H, N))
    res = sim(gemv, {"x": x, "w": w}, {"y": ((N,), BF16)})
    # Reference in the example's order: hidden row h = 8p + kt sits on partition p, K-tile kt;
    # each K-tile's exact sum rounds to fp32, the tiles add in fp32 in order, then one bf16 rounding.
    kt_n = H // 128
    xr = x.astype(np.float64).reshape(128, kt_n)
    wr = w.astype(np.float64).reshape(128, kt_n, N)
    acc = None
    for kt in range(kt_n):
        part = (xr[:, kt] @ wr[:, kt, :]).astype(F32)
        acc = part if acc is None else (acc + part).astype(F32)
    assert (u16(res.outputs["y"]) == ref_bf16_bits(acc)).all()
    ref64 = x.astype(np.float64) @ w.astype(np.float64)
    assert np.allclose(res.outputs["y"].astype(np.float64), ref64, rtol=2e-2, atol=1e-2)


def test_the_documented_gemv_example_passes_the_static_check():
    static_check = pytest.importorskip("knight.evaluation.static_check")
    assert static_check.check_source(_doc_example_source(), "gemv.py") == []
