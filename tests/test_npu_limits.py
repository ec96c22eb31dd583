"""Every hardware limit the simulator enforces: a kernel that breaks it gets a typed error
(class and category from the failure taxonomy) pointing at the offending kernel line.

Each violating kernel below is a small function; the offending statement carries the trailing
comment `# <- here`, and the test checks that `err.loc` is exactly that file and line. Errors found
while tracing point at the statement that issued the instruction (or allocated, sliced, ...);
errors found while running the numerics point at the instruction's line too.
"""

from __future__ import annotations

import dataclasses
import inspect
import os

import numpy as np
import pytest

from knight.npu import errors, nisa, nl
from knight.npu.errors import (
    DtypeError,
    HostSync,
    IllegalAccess,
    KernelException,
    NpuError,
    ResourceOverflow,
    ShapeError,
    UninitializedRead,
)
from knight.npu.machine import load_machine
from knight.npu.runtime import simulate

MARK = "# <- here"
THIS_FILE = os.path.abspath(__file__)

A = np.arange(128 * 4, dtype=np.float32).reshape(128, 4)
DEFAULT_INPUTS = {"a": A}
DEFAULT_OUTPUTS = {"out": ((128, 4), np.float32)}
GPSIMD_DMA = nisa.dma_engine.gpsimd_dma  # sendrecv's modelled path


def _peer() -> int:
    """The other physical core: sendrecv's send_to_rank and recv_from_rank."""
    return 1 - nl.program_id(0)


def marked_line(fn, marker: str = MARK) -> int:
    """The absolute line number of the one line of `fn` that ends with `marker`."""
    lines, start = inspect.getsourcelines(fn)
    hits = [start + i for i, text in enumerate(lines) if text.rstrip().endswith(marker)]
    assert len(hits) == 1, f"{fn.__name__} must mark exactly one line with {marker!r}"
    return hits[0]


def expect(kernel, cls, *, inputs=None, outputs=None, marked_in=None, **kw) -> NpuError:
    """Simulate `kernel` and check it fails with `cls` at the line marked `# <- here` (in the
    kernel, or in `marked_in`, a helper the kernel calls); return the error."""
    kw.setdefault("timing", False)
    with pytest.raises(NpuError) as info:
        simulate(
            kernel,
            DEFAULT_INPUTS if inputs is None else inputs,
            DEFAULT_OUTPUTS if outputs is None else outputs,
            **kw,
        )
    err = info.value
    assert type(err) is cls, f"expected {cls.__name__}, got {type(err).__name__}: {err}"
    assert err.category == cls.category
    assert err.category in errors.CATEGORIES
    assert err.loc is not None, f"{err} carries no location"
    assert os.path.abspath(err.loc.file) == THIS_FILE, f"error points at {err.loc}"
    assert err.loc.line == marked_line(marked_in or kernel), (
        f"error points at {err.loc}: {err.message}"
    )
    assert err.to_dict()["line"] == err.loc.line
    assert str(err).startswith(f"{err.loc}: {err.category}: ")
    return err


def run_ok(kernel, *, inputs=None, outputs=None, **kw):
    kw.setdefault("timing", False)
    return simulate(
        kernel,
        DEFAULT_INPUTS if inputs is None else inputs,
        DEFAULT_OUTPUTS if outputs is None else outputs,
        **kw,
    )


# ============================================================================ capacity


def k_sbuf_overflow(a, out):
    big = nl.ndarray((128, 56 * 1024), dtype=nl.float32)  # 224 KiB per partition: all of it
    nisa.memset(big, 0.0)
    small = nl.ndarray((128, 1), dtype=nl.bfloat16)  # <- here
    nisa.memset(small, 0.0)


def k_sbuf_single_too_big(a, out):
    t = nl.ndarray((2, 56 * 1024 + 1), dtype=nl.float32)  # <- here
    nisa.memset(t, 0.0)


def k_sbuf_overflow_in_loop(a, out):
    for _ in range(100):
        t = nl.ndarray((128, 1024), dtype=nl.float32)  # <- here
        nisa.memset(t, 0.0)


def test_sbuf_capacity_overflow_points_at_allocation():
    err = expect(k_sbuf_overflow, ResourceOverflow)
    assert "SBUF" in err.message
    expect(k_sbuf_single_too_big, ResourceOverflow)


def test_sbuf_allocations_are_static_so_allocating_in_a_loop_overflows():
    # 4 KiB per partition per iteration: the 57th allocation no longer fits into 224 KiB.
    err = expect(k_sbuf_overflow_in_loop, ResourceOverflow)
    assert err.instr_index == 56  # 56 memsets were issued before the failing allocation


def k_sbuf_exactly_full(a, out):
    big = nl.ndarray((128, 56 * 1024), dtype=nl.float32)
    nisa.memset(big, 0.0)


def test_sbuf_exactly_full_is_allowed():
    res = run_ok(k_sbuf_exactly_full)
    assert res.program.sbuf_peak_bytes == [224 * 1024, 224 * 1024]


def k_psum_banks_overflow(a, out):
    banks = [nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.psum) for _ in range(8)]
    extra = nl.ndarray((128, 1), dtype=nl.float32, buffer=nl.psum)  # <- here
    nisa.memset(extra, 0.0)
    nisa.memset(banks[0], 0.0)


def k_psum_one_big_tile(a, out):
    t = nl.ndarray((128, 8 * 512 + 1), dtype=nl.float32, buffer=nl.psum)  # <- here
    nisa.memset(t, 0.0)


def k_psum_small_tiles_take_a_bank_each(a, out):
    for _ in range(9):
        t = nl.ndarray((128, 1), dtype=nl.float32, buffer=nl.psum)  # <- here
        nisa.memset(t, 0.0)


def test_psum_bank_overflow():
    err = expect(k_psum_banks_overflow, ResourceOverflow)
    assert "PSUM" in err.message
    expect(k_psum_one_big_tile, ResourceOverflow)
    # Each PSUM allocation takes whole 2 KiB banks, so nine 4-byte tiles do not fit.
    expect(k_psum_small_tiles_take_a_bank_each, ResourceOverflow)


def k_too_many_partitions_sbuf(a, out):
    t = nl.ndarray((129, 4), dtype=nl.float32)  # <- here
    nisa.memset(t, 0.0)


def k_too_many_partitions_psum(a, out):
    t = nl.ndarray((256, 4), dtype=nl.float32, buffer=nl.psum)  # <- here
    nisa.memset(t, 0.0)


def test_too_many_partitions():
    expect(k_too_many_partitions_sbuf, ResourceOverflow)
    expect(k_too_many_partitions_psum, ResourceOverflow)


# ============================================================================ TensorE


def k_matmul_contract_too_big(a, out):
    st = nl.ndarray((256, 4), dtype=nl.bfloat16)
    mv = nl.ndarray((256, 8), dtype=nl.bfloat16)
    ps = nl.ndarray((4, 8), dtype=nl.float32, buffer=nl.psum)
    nisa.memset(st, 1.0)
    nisa.memset(mv, 1.0)
    nisa.nc_matmul(ps, st, mv)  # <- here


def test_matmul_contraction_k_over_128():
    # On trn2 a 256-partition operand cannot even be allocated (see test_too_many_partitions), so
    # use a machine with more partitions to reach the TensorE's own K <= 128 rule.
    wide = dataclasses.replace(load_machine("trn2"), partitions=256)
    err = expect(k_matmul_contract_too_big, ShapeError, machine=wide)
    assert "K=256" in err.message


def k_matmul_stationary_too_wide(a, out):
    st = nl.ndarray((128, 256), dtype=nl.bfloat16)
    mv = nl.ndarray((128, 1), dtype=nl.bfloat16)
    ps = nl.ndarray((128, 1), dtype=nl.float32, buffer=nl.psum)
    nisa.memset(st, 1.0)
    nisa.memset(mv, 1.0)
    nisa.nc_matmul(ps, st, mv)  # <- here


def test_matmul_stationary_m_over_128():
    err = expect(k_matmul_stationary_too_wide, ShapeError)
    assert "M=256" in err.message


def k_matmul_moving_too_wide(a, out):
    st = nl.ndarray((128, 128), dtype=nl.bfloat16)
    mv = nl.ndarray((128, 513), dtype=nl.bfloat16)
    ps = nl.ndarray((128, 513), dtype=nl.float32, buffer=nl.psum)
    nisa.memset(st, 1.0)
    nisa.memset(mv, 1.0)
    nisa.nc_matmul(ps, st, mv)  # <- here


def test_matmul_moving_n_over_512():
    err = expect(k_matmul_moving_too_wide, ShapeError)
    assert "N=513" in err.message


def k_matmul_largest_tile(a, out):
    st = nl.ndarray((128, 128), dtype=nl.bfloat16)
    mv = nl.ndarray((128, 512), dtype=nl.bfloat16)
    ps = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.psum)
    nisa.memset(st, 1.0)
    nisa.memset(mv, 1.0)
    nisa.nc_matmul(ps, st, mv)


def test_matmul_largest_legal_tile_is_allowed():
    run_ok(k_matmul_largest_tile)


def k_matmul_crosses_bank(a, out):
    st = nl.ndarray((128, 128), dtype=nl.bfloat16)
    mv = nl.ndarray((128, 512), dtype=nl.bfloat16)
    ps = nl.ndarray((128, 1024), dtype=nl.float32, buffer=nl.psum)  # two banks
    nisa.memset(st, 1.0)
    nisa.memset(mv, 1.0)
    nisa.nc_matmul(ps[:, 0:512], st, mv)  # bank 0: fine
    nisa.nc_matmul(ps[:, 512:1024], st, mv)  # bank 1: fine
    nisa.nc_matmul(ps[:, 256:768], st, mv)  # <- here


def k_matmul_small_crosses_bank(a, out):
    st = nl.ndarray((128, 128), dtype=nl.bfloat16)
    mv = nl.ndarray((128, 2), dtype=nl.bfloat16)
    ps = nl.ndarray((128, 600), dtype=nl.float32, buffer=nl.psum)
    nisa.memset(st, 1.0)
    nisa.memset(mv, 1.0)
    nisa.nc_matmul(ps[:, 511:513], st, mv)  # <- here


def test_matmul_output_crossing_a_psum_bank():
    err = expect(k_matmul_crosses_bank, ResourceOverflow)
    assert "bank" in err.message
    expect(k_matmul_small_crosses_bank, ResourceOverflow)


def k_matmul_dst_in_sbuf(a, out):
    st = nl.ndarray((128, 128), dtype=nl.bfloat16)
    mv = nl.ndarray((128, 1), dtype=nl.bfloat16)
    dst = nl.ndarray((128, 1), dtype=nl.float32)
    nisa.memset(st, 1.0)
    nisa.memset(mv, 1.0)
    nisa.nc_matmul(dst, st, mv)  # <- here


def k_matmul_stationary_in_psum(a, out):
    st = nl.ndarray((128, 128), dtype=nl.bfloat16, buffer=nl.psum)
    mv = nl.ndarray((128, 1), dtype=nl.bfloat16)
    ps = nl.ndarray((128, 1), dtype=nl.float32, buffer=nl.psum)
    nisa.memset(st, 1.0)
    nisa.memset(mv, 1.0)
    nisa.nc_matmul(ps, st, mv)  # <- here


def k_matmul_moving_in_hbm(a, out):
    st = nl.ndarray((128, 128), dtype=nl.float32)
    ps = nl.ndarray((128, 4), dtype=nl.float32, buffer=nl.psum)
    nisa.memset(st, 1.0)
    nisa.nc_matmul(ps, st, a)  # <- here


def test_matmul_operand_buffers():
    err = expect(k_matmul_dst_in_sbuf, IllegalAccess)
    assert "PSUM" in err.message
    err = expect(k_matmul_stationary_in_psum, IllegalAccess)
    assert "SBUF" in err.message
    expect(k_matmul_moving_in_hbm, IllegalAccess)


def k_tensor_transpose_too_big(a, out):
    src = nl.ndarray((128, 256), dtype=nl.bfloat16)
    dst = nl.ndarray((256, 128), dtype=nl.bfloat16, buffer=nl.psum)
    nisa.memset(src, 1.0)
    nisa.nc_transpose(dst[0:128, :], src[:, 0:128])
    nisa.nc_transpose(dst, src)  # <- here


def test_tensor_engine_transpose_limit():
    wide = dataclasses.replace(load_machine("trn2"), partitions=256)
    expect(k_tensor_transpose_too_big, ShapeError, machine=wide)


def k_vector_transpose_too_big(a, out):
    src = nl.ndarray((64, 64), dtype=nl.float32)
    dst = nl.ndarray((64, 64), dtype=nl.float32)
    nisa.memset(src, 1.0)
    nisa.nc_transpose(dst[0:32, 0:32], src[0:32, 0:32], engine=nisa.engine.vector)  # 32x32: fine
    nisa.nc_transpose(dst, src, engine=nisa.engine.vector)  # <- here


def k_vector_transpose_rectangular(a, out):
    src = nl.ndarray((32, 33), dtype=nl.float32)
    dst = nl.ndarray((33, 32), dtype=nl.float32)
    nisa.memset(src, 1.0)
    nisa.nc_transpose(dst, src, engine=nisa.engine.vector)  # <- here


def test_vector_engine_transpose_beyond_32x32():
    err = expect(k_vector_transpose_too_big, ShapeError)
    assert "32x32" in err.message
    expect(k_vector_transpose_rectangular, ShapeError)


# ============================================================================ operand buffers


def k_dma_from_psum(a, out):
    ps = nl.ndarray((128, 4), dtype=nl.float32, buffer=nl.psum)
    nisa.memset(ps, 0.0)
    nisa.dma_copy(out, ps)  # <- here


def k_dma_into_psum(a, out):
    ps = nl.ndarray((128, 4), dtype=nl.float32, buffer=nl.psum)
    nisa.dma_copy(ps, a)  # <- here


def test_dma_cannot_touch_psum():
    err = expect(k_dma_from_psum, IllegalAccess)
    assert "PSUM" in err.message
    expect(k_dma_into_psum, IllegalAccess)


def k_tensor_tensor_both_psum(a, out):
    p1 = nl.ndarray((128, 4), dtype=nl.float32, buffer=nl.psum)
    p2 = nl.ndarray((128, 4), dtype=nl.float32, buffer=nl.psum)
    dst = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(p1, 1.0)
    nisa.memset(p2, 1.0)
    nisa.tensor_tensor(dst, p1, p2, nl.add)  # <- here


def k_tensor_tensor_one_psum(a, out):
    p1 = nl.ndarray((128, 4), dtype=nl.float32, buffer=nl.psum)
    s = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(p1, 1.0)
    nisa.memset(s, 1.0)
    nisa.tensor_tensor(s, p1, s, nl.add)
    nisa.dma_copy(out, s)


def test_tensor_tensor_cannot_read_both_inputs_from_psum():
    expect(k_tensor_tensor_both_psum, IllegalAccess)
    res = run_ok(k_tensor_tensor_one_psum)
    assert (res.outputs["out"] == 2.0).all()


def k_compute_on_hbm(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.tensor_copy(t, a)  # <- here


def test_compute_instructions_need_on_chip_operands():
    expect(k_compute_on_hbm, IllegalAccess)


# ============================================================================ views and bounds


def k_slice_out_of_bounds(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.dma_copy(t, a[:, 2:6])  # <- here


def k_slice_partition_out_of_bounds(a, out):
    t = nl.ndarray((64, 4), dtype=nl.float32)
    u = t[32:96]  # <- here
    nisa.memset(u, 0.0)


def k_ds_out_of_bounds(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(t[:, nl.ds(3, 2)], 0.0)  # <- here


def test_out_of_bounds_slice():
    # NumPy would silently clip these slices; the simulator refuses them.
    err = expect(k_slice_out_of_bounds, IllegalAccess)
    assert "out of bounds" in err.message
    expect(k_slice_partition_out_of_bounds, IllegalAccess)
    expect(k_ds_out_of_bounds, IllegalAccess)


def k_index_out_of_bounds(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.dma_copy(t[:, 0:1], a[:, 4])  # <- here


def k_index_negative_out_of_bounds(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(t[-129], 0.0)  # <- here


def k_too_many_indices(a, out):
    row = a[0, 0, 0]  # <- here
    del row


def test_out_of_bounds_integer_index():
    err = expect(k_index_out_of_bounds, IllegalAccess)
    assert "index 4" in err.message
    expect(k_index_negative_out_of_bounds, IllegalAccess)
    expect(k_too_many_indices, IllegalAccess)


def k_register_out_of_bounds(ids, w, out):
    idx = nl.ndarray((1, 1), dtype=nl.int32)
    nisa.dma_copy(idx, ids)
    e = nisa.register_alloc()
    nisa.register_load(e, idx)
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.dma_copy(t, w[e])  # <- here
    nisa.dma_copy(out, t)


def k_register_offset_out_of_bounds(ids, w, out):
    idx = nl.ndarray((1, 1), dtype=nl.int32)
    nisa.dma_copy(idx, ids)
    e = nisa.register_alloc()
    nisa.register_load(e, idx)
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.dma_copy(t, w[e + 1])  # <- here
    nisa.dma_copy(out, t)


def test_register_index_out_of_bounds_at_run_time():
    w = np.zeros((4, 128, 4), np.float32)
    # The trace cannot know the register's value; the DMA fails when it runs, at its own line.
    for bad in (4, -1, 1000):
        err = expect(
            k_register_out_of_bounds,
            IllegalAccess,
            inputs={"ids": np.array([[bad]], np.int32), "w": w},
        )
        assert err.engine == "sync"
        assert err.instr_index == 2
    expect(
        k_register_offset_out_of_bounds,
        IllegalAccess,
        inputs={"ids": np.array([[3]], np.int32), "w": w},
    )
    run_ok(k_register_offset_out_of_bounds, inputs={"ids": np.array([[2]], np.int32), "w": w})


def k_register_on_chip_index(ids, w, out):
    idx = nl.ndarray((1, 1), dtype=nl.int32)
    nisa.dma_copy(idx, ids)
    e = nisa.register_alloc()
    nisa.register_load(e, idx)
    t = nl.ndarray((4, 4), dtype=nl.float32)
    row = t[e]  # <- here
    del row


def test_register_index_only_on_hbm():
    expect(
        k_register_on_chip_index,
        IllegalAccess,
        inputs={"ids": np.array([[1]], np.int32), "w": np.zeros((4, 4), np.float32)},
    )


def k_partition_start_48_at_16(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(t[16:64], 0.0)  # <- here


def k_partition_start_8_at_8(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(t[8:16], 0.0)  # <- here


def k_partition_start_96_at_32(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(t[32:128], 0.0)  # <- here


def k_partition_single_row(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(t[5], 0.0)  # <- here


def k_partition_step(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(t[0:128:2], 0.0)  # <- here


def k_partition_dma_start(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.dma_copy(t[16:64], a[16:64])  # <- here


def k_partition_legal_starts(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(t[0:128], 0.0)
    nisa.memset(t[64:128], 1.0)
    nisa.memset(t[0:64], 2.0)
    for p0 in (0, 32, 64, 96):
        nisa.memset(t[p0 : p0 + 32], 3.0)
        nisa.memset(t[p0 : p0 + 1], 4.0)
    nisa.dma_copy(out, t)


def test_partition_range_start_rules():
    # Ranges of 33..64 partitions start at 0 or 64; ranges of <= 32 at 0, 32, 64 or 96;
    # ranges of more than 64 partitions at 0.
    err = expect(k_partition_start_48_at_16, IllegalAccess)
    assert "48 partitions" in err.message
    expect(k_partition_start_8_at_8, IllegalAccess)
    expect(k_partition_start_96_at_32, IllegalAccess)
    expect(k_partition_single_row, IllegalAccess)
    expect(k_partition_step, IllegalAccess)
    expect(k_partition_dma_start, IllegalAccess)
    run_ok(k_partition_legal_starts)


def k_five_free_dims(a, out):
    t = nl.ndarray((128, 2, 2, 2, 2, 2), dtype=nl.float32)
    nisa.memset(t, 0.0)  # <- here


def k_four_free_dims(a, out):
    t = nl.ndarray((128, 2, 2, 2, 2), dtype=nl.float32)
    nisa.memset(t, 0.0)
    nisa.dma_copy(out, t.reshape(128, 16)[:, 0:4])


def k_five_free_dims_dma(a, out):
    t = nl.ndarray((128, 1, 1, 1, 2, 2), dtype=nl.float32)
    nisa.dma_copy(t, a.reshape(128, 1, 1, 1, 2, 2))  # <- here


def test_at_most_four_free_dims():
    err = expect(k_five_free_dims, ShapeError)
    assert "4 free dimensions" in err.message
    expect(k_five_free_dims_dma, ShapeError)
    run_ok(k_four_free_dims)


def k_reshape_needs_copy(a, out):
    flat = a.permute(1, 0).reshape(512)  # <- here
    del flat


def k_reshape_on_chip_needs_copy(a, out):
    t = nl.ndarray((128, 4, 2), dtype=nl.float32)
    ok = t[:, 0:2].reshape(128, 4)  # a contiguous block: no copy needed
    del ok
    bad = t.permute(0, 2, 1).reshape(128, 8)  # <- here
    del bad


def k_reshape_drops_partition_axis(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    flat = t.reshape(64, 8)  # <- here
    del flat


def test_reshape_that_needs_a_copy():
    err = expect(k_reshape_needs_copy, ShapeError)
    assert "copy" in err.message
    expect(k_reshape_on_chip_needs_copy, ShapeError)
    expect(k_reshape_drops_partition_axis, ShapeError)


# ============================================================================ dtypes


def k_matmul_mixed_dtypes(a, out):
    st = nl.ndarray((128, 128), dtype=nl.bfloat16)
    mv = nl.ndarray((128, 4), dtype=nl.float32)
    ps = nl.ndarray((128, 4), dtype=nl.float32, buffer=nl.psum)
    nisa.memset(st, 1.0)
    nisa.dma_copy(mv, a)
    nisa.nc_matmul(ps, st, mv)  # <- here


def k_matmul_int_inputs(a, out):
    st = nl.ndarray((128, 128), dtype=nl.int32)
    mv = nl.ndarray((128, 4), dtype=nl.int32)
    ps = nl.ndarray((128, 4), dtype=nl.float32, buffer=nl.psum)
    nisa.memset(st, 1.0)
    nisa.memset(mv, 1.0)
    nisa.nc_matmul(ps, st, mv)  # <- here


def k_matmul_dst_bf16(a, out):
    st = nl.ndarray((128, 128), dtype=nl.bfloat16)
    mv = nl.ndarray((128, 4), dtype=nl.bfloat16)
    ps = nl.ndarray((128, 4), dtype=nl.bfloat16, buffer=nl.psum)
    nisa.memset(st, 1.0)
    nisa.memset(mv, 1.0)
    nisa.nc_matmul(ps, st, mv)  # <- here


def k_int32_activation(a, out):
    t = nl.ndarray((128, 4), dtype=nl.int32)
    f = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(t, 1.0)
    nisa.activation(f, nl.exp, t)  # <- here


def k_int32_activation_dst(a, out):
    t = nl.ndarray((128, 4), dtype=nl.int32)
    f = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(f, 1.0)
    nisa.activation(t, nl.exp, f)  # <- here


def k_dma_int_float(a, out):
    t = nl.ndarray((128, 4), dtype=nl.int32)
    nisa.dma_copy(t, a)  # <- here


def k_copy_int_float(a, out):
    t = nl.ndarray((128, 4), dtype=nl.int32)
    f = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(f, 1.0)
    nisa.tensor_copy(t, f)  # <- here


def k_register_load_float(a, out):
    t = nl.ndarray((1, 1), dtype=nl.float32)
    nisa.memset(t, 1.0)
    nisa.register_load(nisa.register_alloc(), t)  # <- here


def k_max8_float_indices(a, out):
    t = nl.ndarray((128, 16), dtype=nl.float32)
    v = nl.ndarray((128, 8), dtype=nl.float32)
    i = nl.ndarray((128, 8), dtype=nl.float32)
    nisa.memset(t, 1.0)
    nisa.max8(v, t)
    nisa.nc_find_index8(i, t, v)  # <- here


def k_transpose_changes_dtype(a, out):
    t = nl.ndarray((32, 32), dtype=nl.float32)
    u = nl.ndarray((32, 32), dtype=nl.bfloat16)
    nisa.memset(t, 1.0)
    nisa.nc_transpose(u, t, engine=nisa.engine.vector)  # <- here


def k_sendrecv_dtype(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    u = nl.ndarray((128, 4), dtype=nl.bfloat16)
    nisa.memset(t, 1.0)
    nisa.sendrecv(t, u, _peer(), _peer(), 0, dma_engine=GPSIMD_DMA)  # <- here


def test_dtype_errors():
    err = expect(k_matmul_mixed_dtypes, DtypeError)
    assert "bfloat16" in err.message and "float32" in err.message
    expect(k_matmul_int_inputs, DtypeError)
    err = expect(k_matmul_dst_bf16, DtypeError)
    assert "fp32" in err.message
    expect(k_int32_activation, DtypeError)
    expect(k_int32_activation_dst, DtypeError)
    expect(k_dma_int_float, DtypeError)
    expect(k_copy_int_float, DtypeError)
    expect(k_register_load_float, DtypeError)
    expect(k_max8_float_indices, DtypeError)
    expect(k_transpose_changes_dtype, DtypeError)
    expect(k_sendrecv_dtype, DtypeError)


def k_unsupported_dtype(a, out):
    t = nl.ndarray((128, 4), dtype=np.float64)  # <- here
    del t


def test_unsupported_dtype_is_a_dtype_error():
    expect(k_unsupported_dtype, DtypeError)


def test_unsupported_dtype_is_refused_at_the_allocation():
    with pytest.raises(NpuError) as info:
        run_ok(k_unsupported_dtype)
    assert info.value.loc.line == marked_line(k_unsupported_dtype)


# ============================================================================ uninitialised reads


def k_read_fresh_sbuf(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.dma_copy(out, t)  # <- here


def k_read_fresh_sbuf_compute(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    u = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.activation(u, nl.exp, t)  # <- here


def k_read_partly_written(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(t[:, 0:3], 0.0)
    nisa.dma_copy(out, t)  # <- here


def k_read_fresh_psum(a, out):
    ps = nl.ndarray((128, 4), dtype=nl.float32, buffer=nl.psum)
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.tensor_copy(t, ps)  # <- here


def k_read_output_before_writing(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.dma_copy(t, out)  # <- here
    nisa.dma_copy(out, t)


def k_read_hbm_scratch_before_writing(a, out):
    scratch = nl.ndarray((128, 4), dtype=nl.float32, buffer=nl.hbm)
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.dma_copy(t, scratch)  # <- here


def k_read_fresh_scalar_operand(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    s = nl.ndarray((128, 1), dtype=nl.float32)
    nisa.dma_copy(t, a)
    nisa.tensor_scalar(t, t, nl.multiply, s)  # <- here


def k_read_fresh_register_source(a, out):
    idx = nl.ndarray((1, 1), dtype=nl.int32)
    nisa.register_load(nisa.register_alloc(), idx)  # <- here


def test_uninitialised_reads():
    err = expect(k_read_fresh_sbuf, UninitializedRead)
    assert "512 of 512" in err.message
    assert err.instr_index == 0 and err.engine == "sync"
    expect(k_read_fresh_sbuf_compute, UninitializedRead)
    err = expect(k_read_partly_written, UninitializedRead)
    assert "128 of 512" in err.message
    expect(k_read_fresh_psum, UninitializedRead)
    err = expect(k_read_output_before_writing, UninitializedRead)
    assert "out" in err.message
    expect(k_read_hbm_scratch_before_writing, UninitializedRead)
    expect(k_read_fresh_scalar_operand, UninitializedRead)
    expect(k_read_fresh_register_source, UninitializedRead)


def k_accumulate_onto_memset_psum(a, out):
    st = nl.ndarray((128, 128), dtype=nl.bfloat16)
    mv = nl.ndarray((128, 4), dtype=nl.bfloat16)
    ps = nl.ndarray((128, 4), dtype=nl.float32, buffer=nl.psum)
    nisa.memset(st, 1.0)
    nisa.memset(mv, 1.0)
    nisa.memset(ps, 0.0)
    nisa.nc_matmul(ps, st, mv, accumulate=True)  # <- here


def k_accumulate_onto_copied_psum(a, out):
    st = nl.ndarray((128, 128), dtype=nl.bfloat16)
    mv = nl.ndarray((128, 4), dtype=nl.bfloat16)
    ps = nl.ndarray((128, 4), dtype=nl.float32, buffer=nl.psum)
    nisa.memset(st, 1.0)
    nisa.memset(mv, 1.0)
    nisa.nc_matmul(ps, st, mv)
    nisa.tensor_scalar(ps, ps, nl.multiply, 2.0)  # PSUM now holds a VectorE result
    nisa.nc_matmul(ps, st, mv, accumulate=True)  # <- here


def k_accumulate_onto_fresh_psum(a, out):
    st = nl.ndarray((128, 128), dtype=nl.bfloat16)
    mv = nl.ndarray((128, 4), dtype=nl.bfloat16)
    ps = nl.ndarray((128, 4), dtype=nl.float32, buffer=nl.psum)
    nisa.memset(st, 1.0)
    nisa.memset(mv, 1.0)
    nisa.nc_matmul(ps, st, mv, accumulate=True)  # <- here


def k_accumulate_after_matmul(a, out):
    st = nl.ndarray((128, 128), dtype=nl.bfloat16)
    mv = nl.ndarray((128, 4), dtype=nl.bfloat16)
    ps = nl.ndarray((128, 4), dtype=nl.float32, buffer=nl.psum)
    r = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(st, 1.0)
    nisa.memset(mv, 1.0)
    nisa.nc_matmul(ps, st, mv)
    nisa.nc_matmul(ps, st, mv, accumulate=True)
    nisa.tensor_copy(r, ps)
    nisa.dma_copy(out, r)


def test_accumulate_onto_psum_not_written_by_a_matmul():
    err = expect(k_accumulate_onto_memset_psum, IllegalAccess)
    assert err.engine == "tensor"
    expect(k_accumulate_onto_copied_psum, IllegalAccess)
    expect(k_accumulate_onto_fresh_psum, IllegalAccess)
    res = run_ok(k_accumulate_after_matmul)
    assert (res.outputs["out"] == 256.0).all()


# ============================================================================ host sync


def k_if_tile(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.dma_copy(t, a)
    if t:  # <- here
        nisa.dma_copy(out, t)


def k_int_tile(a, out):
    t = nl.ndarray((1, 1), dtype=nl.int32)
    n = int(t)  # <- here
    del n


def k_float_tile(a, out):
    t = nl.ndarray((1, 1), dtype=nl.float32)
    x = float(t)  # <- here
    del x


def k_asarray_tile(a, out):
    x = np.asarray(a)  # <- here
    del x


def k_numpy_ufunc_on_tile(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    x = np.exp(t)  # <- here
    del x


def k_iterate_tile(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    for row in t:  # <- here
        del row


def k_sum_tile(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    s = sum(t)  # <- here
    del s


def k_tile_plus_one(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    u = t + 1  # <- here
    del u


def k_one_times_tile(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    u = 2.0 * t  # <- here
    del u


def k_tile_compare(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    if t == 0:  # <- here
        pass


def k_tile_less(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    if t < 0:  # <- here
        pass


def k_tile_as_slice_bound(a, out):
    t = nl.ndarray((1, 1), dtype=nl.int32)
    u = nl.ndarray((128, 4), dtype=nl.float32)
    v = u[:, 0:t]  # <- here
    del v


def k_tile_as_index(a, out):
    t = nl.ndarray((1, 1), dtype=nl.int32)
    row = a[t]  # <- here
    del row


def k_if_register(ids, out):
    idx = nl.ndarray((1, 1), dtype=nl.int32)
    nisa.dma_copy(idx, ids)
    e = nisa.register_alloc()
    nisa.register_load(e, idx)
    if e:  # <- here
        pass


def k_int_register(ids, out):
    idx = nl.ndarray((1, 1), dtype=nl.int32)
    nisa.dma_copy(idx, ids)
    e = nisa.register_alloc()
    nisa.register_load(e, idx)
    n = int(e)  # <- here
    del n


def k_register_equals(ids, out):
    idx = nl.ndarray((1, 1), dtype=nl.int32)
    nisa.dma_copy(idx, ids)
    e = nisa.register_alloc()
    nisa.register_load(e, idx)
    if e == 3:  # <- here
        pass


def k_register_as_range(ids, out):
    idx = nl.ndarray((1, 1), dtype=nl.int32)
    nisa.dma_copy(idx, ids)
    e = nisa.register_alloc()
    nisa.register_load(e, idx)
    for _ in range(e):  # <- here
        pass


HOST_SYNC_KERNELS = [
    k_if_tile,
    k_int_tile,
    k_float_tile,
    k_asarray_tile,
    k_numpy_ufunc_on_tile,
    k_iterate_tile,
    k_sum_tile,
    k_tile_plus_one,
    k_one_times_tile,
    k_tile_compare,
    k_tile_less,
    k_tile_as_slice_bound,
    k_tile_as_index,
]
REGISTER_KERNELS = [k_if_register, k_int_register, k_register_equals, k_register_as_range]
IDS = {"ids": np.array([[3]], np.int32)}


@pytest.mark.parametrize("kernel", HOST_SYNC_KERNELS, ids=lambda k: k.__name__)
def test_python_control_flow_on_tiles_is_host_sync(kernel):
    expect(kernel, HostSync)


@pytest.mark.parametrize("kernel", REGISTER_KERNELS, ids=lambda k: k.__name__)
def test_python_control_flow_on_registers_is_host_sync(kernel):
    expect(kernel, HostSync, inputs=IDS)


def k_register_greater(ids, out):
    idx = nl.ndarray((1, 1), dtype=nl.int32)
    nisa.dma_copy(idx, ids)
    e = nisa.register_alloc()
    nisa.register_load(e, idx)
    if e > 0:  # <- here
        pass


def k_tile_matmul_operator(a, out):
    t = nl.ndarray((128, 128), dtype=nl.float32)
    u = t @ t  # <- here
    del u


def k_tile_power(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    u = t**2  # <- here
    del u


def test_register_ordering_comparison_is_host_sync():
    expect(k_register_greater, HostSync, inputs=IDS)


@pytest.mark.parametrize("kernel", [k_tile_matmul_operator, k_tile_power], ids=lambda k: k.__name__)
def test_other_tile_operators_are_host_sync(kernel):
    expect(kernel, HostSync)


def test_host_sync_operators_still_fail_with_a_typed_error_at_the_line():
    # Whatever their category, the operators above do fail at the right line.
    for kernel, inputs in (
        (k_register_greater, IDS),
        (k_tile_matmul_operator, None),
        (k_tile_power, None),
    ):
        with pytest.raises(NpuError) as info:
            run_ok(kernel, inputs=inputs)
        assert info.value.loc.line == marked_line(kernel)


# ============================================================================ two cores


def k_sendrecv_too_big(a, out):
    src = nl.ndarray((128, 257), dtype=nl.bfloat16)
    dst = nl.ndarray((128, 257), dtype=nl.bfloat16)
    nisa.memset(src, 1.0)
    nisa.sendrecv(
        src[:, 0:256], dst[:, 0:256], _peer(), _peer(), 0, dma_engine=GPSIMD_DMA
    )  # 512 B per partition: fine
    nisa.sendrecv(src, dst, _peer(), _peer(), 0, dma_engine=GPSIMD_DMA)  # <- here


def k_sendrecv_fp32_too_big(a, out):
    src = nl.ndarray((4, 129), dtype=nl.float32)
    dst = nl.ndarray((4, 129), dtype=nl.float32)
    nisa.memset(src, 1.0)
    nisa.sendrecv(src, dst, _peer(), _peer(), 0, dma_engine=GPSIMD_DMA)  # <- here


def k_sendrecv_single_core(a, out):
    src = nl.ndarray((128, 4), dtype=nl.float32)
    dst = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(src, 1.0)
    nisa.sendrecv(src, dst, _peer(), _peer(), 0, dma_engine=GPSIMD_DMA)  # <- here


def test_sendrecv_limits():
    err = expect(k_sendrecv_too_big, ResourceOverflow)
    assert "514" in err.message
    expect(k_sendrecv_fp32_too_big, ResourceOverflow)
    expect(k_sendrecv_single_core, IllegalAccess, grid=1)


def k_sendrecv_sizes_differ(a, out):
    c = nl.program_id(0)
    p = 32 if c == 0 else 64
    src = nl.ndarray((p, 4), dtype=nl.float32)
    dst = nl.ndarray((p, 4), dtype=nl.float32)
    nisa.dma_copy(src, a[0:p])
    nisa.sendrecv(src, dst, _peer(), _peer(), 0, dma_engine=GPSIMD_DMA)  # <- here


def test_sendrecv_halves_must_match_between_cores():
    with pytest.raises(NpuError) as info:
        run_ok(k_sendrecv_sizes_differ)
    err = info.value
    assert err.category in ("shape_error", "kernel_exception")
    assert os.path.abspath(err.loc.file) == THIS_FILE
    assert err.loc.line == marked_line(k_sendrecv_sizes_differ)


def k_divergent_extra_at_end(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.dma_copy(t, a)
    nisa.dma_copy(out, t)
    if nl.program_id(0) == 0:
        nisa.memset(t, 0.0)  # <- here


def k_divergent_core1_extra(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.dma_copy(t, a)
    if nl.program_id(0) == 1:
        nisa.memset(t, 0.0)  # <- here
    nisa.dma_copy(out, t)


def k_divergent_engines(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.dma_copy(t, a)
    engine = nisa.engine.vector if nl.program_id(0) == 0 else nisa.engine.gpsimd
    nisa.memset(t, 0.0, engine=engine)  # <- here


def k_divergent_hbm_scratch(a, out):
    n = 4 if nl.program_id(0) == 0 else 8
    scratch = nl.ndarray((128, n), dtype=nl.float32, buffer=nl.hbm)  # <- here
    del scratch


def k_same_program_different_offsets(a, out):
    # Core-dependent offsets are fine: both cores issue the same instructions.
    c = nl.program_id(0)
    t = nl.ndarray((64, 4), dtype=nl.float32)
    nisa.dma_copy(t, a[c * 64 : (c + 1) * 64])
    nisa.dma_copy(out[c * 64 : (c + 1) * 64], t)


def test_divergent_control_flow_between_cores():
    err = expect(k_divergent_extra_at_end, KernelException)
    assert "diverge" in err.message
    expect(k_divergent_core1_extra, KernelException)
    expect(k_divergent_engines, KernelException)
    expect(k_divergent_hbm_scratch, KernelException)
    res = run_ok(k_same_program_different_offsets)
    assert (res.outputs["out"] == A).all()
    # One core alone cannot diverge.
    run_ok(k_divergent_extra_at_end, grid=1)


def make_k_other_cores_tile():
    stash = []

    def k_other_cores_tile(a, out):
        t = nl.ndarray((128, 4), dtype=nl.float32)
        stash.append(t)  # a Python list outlives core 0's trace ...
        nisa.memset(stash[0], 0.0)  # <- here

    return k_other_cores_tile


def test_on_chip_memory_is_private_to_its_core():
    # ... so core 1 could name core 0's tile; only sendrecv may cross between the cores.
    err = expect(make_k_other_cores_tile(), IllegalAccess)
    assert err.core == 1
    assert "core 0" in err.message


def k_divergent_core0_extra(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.dma_copy(t, a)
    if nl.program_id(0) == 0:
        nisa.memset(t, 0.0)  # <- here
    nisa.dma_copy(out, t)


def test_divergence_points_at_the_extra_instruction():
    expect(k_divergent_core0_extra, KernelException)


def test_divergence_mid_kernel_is_still_rejected():
    with pytest.raises(KernelException) as info:
        run_ok(k_divergent_core0_extra)
    assert str(marked_line(k_divergent_core0_extra)) in info.value.message


# ============================================================================ Python errors


def k_zero_division(a, out):
    n = a.shape[0] - 128
    t = nl.ndarray((128, 4), dtype=nl.float32)
    step = 4 // n  # <- here
    del t, step


def _helper(t):
    return t.no_such_attribute  # <- here


def k_error_in_helper(a, out):
    _helper(a)


def k_key_error(a, out):
    names = {}
    x = names["missing"]  # <- here
    del x


def k_index_error(a, out):
    sizes = [1, 2]
    n = sizes[5]  # <- here
    del n


def k_bad_call(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(t, 0.0, bogus=1)  # <- here


def test_python_exception_inside_the_kernel():
    err = expect(k_zero_division, KernelException)
    assert err.message.startswith("ZeroDivisionError")
    assert err.core == 0
    err = expect(k_error_in_helper, KernelException, marked_in=_helper)
    assert "AttributeError" in err.message
    expect(k_key_error, KernelException)
    expect(k_index_error, KernelException)
    err = expect(k_bad_call, KernelException)
    assert "TypeError" in err.message


def k_recursion(a, out):
    def f(n):
        return f(n + 1)  # <- here

    f(0)


def test_unbounded_recursion_is_a_kernel_exception():
    err = expect(k_recursion, KernelException)
    assert "recursion" in err.message


def k_program_id_axis(a, out):
    c = nl.program_id(1)  # <- here
    del c


def k_bad_op(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(t, 0.0)
    nisa.tensor_tensor(t, t, t, "pow")  # <- here


def k_bad_activation(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(t, 0.0)
    nisa.activation(t, nl.add, t)  # <- here


def k_bad_dma_queue(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.dma_copy(t, a, dge_mode=nisa.dge_mode.hwdge, engine=nisa.engine.gpsimd)  # <- here


def k_bad_dma_engine(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.dma_copy(t, a, engine=nisa.engine.tensor)  # <- here


def k_wrong_engine(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.tensor_tensor(t, t, t, nl.add, engine=nisa.engine.scalar)  # <- here


def k_shape_mismatch(a, out):
    t = nl.ndarray((128, 8), dtype=nl.float32)
    nisa.dma_copy(t, a)  # <- here


def k_reduce_partition_axis(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    r = nl.ndarray((1, 4), dtype=nl.float32)
    nisa.memset(t, 0.0)
    nisa.tensor_reduce(r, nl.add, t, axis=0)  # <- here


def k_operand_not_column(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(t, 0.0)
    nisa.tensor_scalar(t, t, nl.multiply, t)  # <- here


def k_dma_into_broadcast(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(t, 0.0)
    nisa.dma_copy(out[0:1].broadcast_to(128, 4), t)  # <- here


def k_empty_slice(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    u = t[:, 0:0]  # <- here
    del u


@pytest.mark.parametrize(
    ("kernel", "cls"),
    [
        (k_program_id_axis, ShapeError),
        (k_bad_op, ShapeError),
        (k_bad_activation, ShapeError),
        (k_bad_dma_queue, IllegalAccess),
        (k_bad_dma_engine, IllegalAccess),
        (k_wrong_engine, IllegalAccess),
        (k_shape_mismatch, ShapeError),
        (k_reduce_partition_axis, ShapeError),
        (k_operand_not_column, ShapeError),
        (k_dma_into_broadcast, IllegalAccess),
        (k_empty_slice, ShapeError),
    ],
    ids=lambda x: getattr(x, "__name__", None),
)
def test_other_instruction_rules(kernel, cls):
    expect(kernel, cls)


def k_operand_partition_mismatch(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    s = nl.ndarray((64, 1), dtype=nl.float32)
    nisa.dma_copy(t, a)
    nisa.memset(s, 2.0)
    nisa.tensor_scalar(t, t, nl.multiply, s)  # <- here


def k_bias_partition_mismatch(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    b = nl.ndarray((32, 1), dtype=nl.float32)
    nisa.dma_copy(t, a)
    nisa.memset(b, 2.0)
    nisa.activation(t, nl.identity, t, bias=b)  # <- here


def k_operand_one_partition(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    s = nl.ndarray((1, 1), dtype=nl.float32)
    nisa.dma_copy(t, a)
    nisa.memset(s, 2.0)
    nisa.tensor_scalar(t, t, nl.multiply, s)  # <- here
    nisa.dma_copy(out, t)


@pytest.mark.parametrize(
    "kernel",
    [k_operand_partition_mismatch, k_bias_partition_mismatch, k_operand_one_partition],
    ids=lambda k: k.__name__,
)
def test_scalar_operand_partitions_must_match_the_data(kernel):
    expect(kernel, ShapeError)
