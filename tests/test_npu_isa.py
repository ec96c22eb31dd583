"""The NKI-level rules of the kernel language: ISA legality (engines' memory access, access-pattern
field widths, perf-mode conditions, register ownership), the DMA queue rule and the instructions
added with the NKI API (activation reduce, dma_transpose, tensor_reduce negate, reversed
tensor_scalar operands). Each illegal kernel marks its offending line with `# <- here`.
"""

from __future__ import annotations

import inspect
import os

import ml_dtypes
import numpy as np
import pytest

from knight.npu import nisa, nl, numerics
from knight.npu.errors import DtypeError, IllegalAccess, NpuError, ShapeError
from knight.npu.program import PERF_COPY_STRIDED, PERF_COPY_UNIT, PERF_NONE, PERF_TT
from knight.npu.runtime import simulate

BF16 = ml_dtypes.bfloat16
F32 = np.float32
THIS = os.path.abspath(__file__)
A = np.arange(128 * 64, dtype=F32).reshape(128, 64)


def _line(fn) -> int:
    lines, start = inspect.getsourcelines(fn)
    (hit,) = [start + i for i, t in enumerate(lines) if t.rstrip().endswith("# <- here")]
    return hit


def expect(kernel, cls, inputs=None, outputs=None, grid=2) -> NpuError:
    with pytest.raises(NpuError) as info:
        simulate(
            kernel,
            inputs or {"a": A},
            outputs or {"out": ((128, 64), F32)},
            grid=grid,
            timing=False,
        )
    err = info.value
    assert type(err) is cls, f"expected {cls.__name__}, got {type(err).__name__}: {err}"
    assert os.path.abspath(err.loc.file) == THIS and err.loc.line == _line(kernel), str(err)
    return err


def run(kernel, inputs=None, outputs=None, grid=2, timing=False):
    return simulate(
        kernel, inputs or {"a": A}, outputs or {"out": ((128, 64), F32)}, grid=grid, timing=timing
    )


# ----------------------------------------------------------------------------- engines and memory


def k_gpsimd_reads_psum(a, out):
    ps = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.psum)
    nisa.memset(ps, 0.0)
    t = nl.ndarray((128, 64), dtype=nl.float32)
    nisa.tensor_copy(t, ps, engine=nisa.engine.gpsimd)  # <- here


def k_gpsimd_writes_psum(a, out):
    ps = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.psum)
    nisa.memset(ps, 0.0, engine=nisa.engine.gpsimd)  # <- here


def k_gpsimd_tensor_tensor_psum(a, out):
    t = nl.ndarray((128, 64), dtype=nl.float32)
    nisa.dma_copy(t, a)
    ps = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.psum)
    nisa.tensor_copy(ps, t)
    nisa.tensor_tensor(t, t, ps, nl.add, engine=nisa.engine.gpsimd)  # <- here


def test_gpsimd_refuses_psum_operands():
    """ISA (nki.isa.tensor_copy, tensor_tensor): "GpSimd Engine cannot access PSUM"."""
    for k in (k_gpsimd_reads_psum, k_gpsimd_writes_psum, k_gpsimd_tensor_tensor_psum):
        err = expect(k, IllegalAccess)
        assert "GpSimd" in err.message and "PSUM" in err.message


def test_vector_engine_may_read_and_write_psum_as_the_isa_allows():
    """nki.isa.tensor_tensor: the output may be in PSUM; nki.isa.nc_transpose: VectorE may
    read/write SBUF or PSUM."""

    def kernel(a, out):
        t = nl.ndarray((128, 64), dtype=nl.float32)
        nisa.dma_copy(t, a)
        ps = nl.ndarray((128, 64), dtype=nl.float32, buffer=nl.psum)
        nisa.tensor_tensor(ps, t, t, nl.add)
        tp = nl.ndarray((32, 32), dtype=nl.float32, buffer=nl.psum)
        nisa.nc_transpose(tp, ps[0:32, 0:32], engine=nisa.engine.vector)
        back = nl.ndarray((32, 32), dtype=nl.float32)
        nisa.tensor_copy(back, tp)
        res = nl.ndarray((128, 64), dtype=nl.float32)
        nisa.tensor_copy(res, ps)
        nisa.tensor_copy(res[0:32, 0:32], back)
        nisa.dma_copy(out, res)

    y = run(kernel).outputs["out"]
    assert (y[32:] == 2 * A[32:]).all() and (y[0:32, 0:32] == 2 * A[0:32, 0:32].T).all()


def k_engine_string(a, out):
    t = nl.ndarray((128, 64), dtype=nl.float32)
    nisa.memset(t, 0.0, engine="vector")  # <- here


def k_activation_on_vector(a, out):
    t = nl.ndarray((128, 64), dtype=nl.float32)
    nisa.memset(t, 0.0)
    nisa.tensor_copy(t, t, engine=nisa.engine.tensor)  # <- here


def test_engines_are_nki_enum_members_on_engines_that_run_the_instruction():
    assert "nisa.engine" in expect(k_engine_string, IllegalAccess).message
    expect(k_activation_on_vector, IllegalAccess)


# ----------------------------------------------------------------------------- field widths


def k_free_size_too_big(a, out):
    t = nl.ndarray((1, 65536), dtype=nl.bfloat16)
    nisa.memset(t, 0.0)  # <- here


def k_free_size_split(a, out):
    t = nl.ndarray((1, 4, 16384), dtype=nl.bfloat16)
    nisa.memset(t, 0.0)
    nisa.dma_copy(out[0:1, 0:4], t[:, :, 0])


def k_free_stride_too_big(a, out):
    t = nl.ndarray((2, 40000), dtype=nl.float32)
    nisa.memset(t, 0.0)
    u = nl.ndarray((2, 2), dtype=nl.float32)
    nisa.tensor_copy(u, t[:, 0:40000:39999])  # <- here


def test_access_pattern_sizes_and_strides_fit_their_fields():
    """ARCH1 (NPU.md 4): free-axis sizes are uint16, strides int16 in elements."""
    assert "65,535" in expect(k_free_size_too_big, ShapeError).message
    run(k_free_size_split)  # the same elements over two free dimensions are fine
    expect(k_free_stride_too_big, ShapeError)


# ----------------------------------------------------------------------------- perf modes


def _perf_of(op_kernel) -> list[str]:
    res = run(op_kernel, grid=1)
    return [i.perf for i in res.program.cores[0] if i.engine == "vector" and i.op != "memset"]


def test_copy_4x_mode_needs_a_unit_inner_stride():
    """ARCH2 (NPU.md 4): tensor_copy 4x is SBUF->SBUF 16-bit with unit inner stride; a 16-byte
    stride (8 bf16 elements) is strided and keeps only 2x."""

    def kernel(a, out):
        s = nl.ndarray((128, 64), dtype=nl.bfloat16)
        nisa.memset(s, 1.0)
        d = nl.ndarray((128, 64), dtype=nl.bfloat16)
        nisa.tensor_copy(d, s)  # unit stride: 4x
        nisa.tensor_copy(d[:, 0:8], s[:, 0:64:8])  # 16-B stride on the source: 2x
        f = nl.ndarray((128, 64), dtype=nl.float32)
        nisa.tensor_copy(f, s)  # 32-bit destination: no mode (ARCH2: 16-bit operands only)
        t = nl.ndarray((128, 64), dtype=nl.bfloat16)
        nisa.tensor_tensor(t, s, d, nl.multiply)  # 16-bit, SBUF: 2x
        nisa.tensor_tensor(f, s, d, nl.multiply)  # 32-bit destination: no mode
        nisa.dma_copy(out, f)

    assert _perf_of(kernel) == [
        PERF_COPY_UNIT,
        PERF_COPY_STRIDED,
        PERF_NONE,
        PERF_TT,
        PERF_NONE,
    ]


# ----------------------------------------------------------------------------- registers


def k_other_cores_register(ids, w, out, _smuggled=[]):  # noqa: B006 - the smuggling channel
    c = nl.program_id(0)
    t = nl.ndarray((1, 1), dtype=nl.int32)
    nisa.dma_copy(t, ids)
    e = nisa.register_alloc()
    nisa.register_load(e, t)
    _smuggled.append(e)
    x = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.dma_copy(x, w[_smuggled[0]])  # <- here
    nisa.dma_copy(out[c], x)


def test_a_register_belongs_to_the_core_that_allocated_it():
    """Registers live in one core's engine sequencers (nki.isa.register_alloc); core 1 using
    core 0's register is illegal_access at the line, not a crash."""
    w = np.arange(4 * 128 * 4, dtype=F32).reshape(4, 128, 4)
    err = expect(
        k_other_cores_register,
        IllegalAccess,
        inputs={"ids": np.array([[2]], np.int32), "w": w},
        outputs={"out": ((2, 128, 4), F32)},
    )
    assert "core 0" in err.message and "core 1" in err.message


def test_register_alloc_initial_value_indexes_hbm():
    w = np.arange(4 * 128 * 4, dtype=F32).reshape(4, 128, 4)

    def kernel(w, out):
        c = nl.program_id(0)
        e = nisa.register_alloc(3)
        x = nl.ndarray((128, 4), dtype=nl.float32)
        nisa.dma_copy(x, w[e])
        nisa.dma_copy(out[c], x)

    y = run(kernel, {"w": w}, {"out": ((2, 128, 4), F32)}).outputs["out"]
    assert (y[0] == w[3]).all() and (y[1] == w[3]).all()


# ----------------------------------------------------------------------------- DMA queues


def test_the_queue_follows_the_trigger_engine_and_descriptor_mode():
    """NKI dma_copy / DGE reference: hwdge is driven by SyncE or ScalarE, swdge by GpSimd, none
    uses precomputed descriptors; the kernel never picks a queue."""
    m, e = nisa.dge_mode, nisa.engine

    def route(mode, eng):
        return nisa.dma_route(mode, eng, None)

    assert route(m.unknown, e.unknown) == ("hwdge", "sync", 0)
    assert route(m.unknown, e.scalar) == ("hwdge", "scalar", 1)
    assert route(m.unknown, e.gpsimd) == ("swdge", "gpsimd", 2)
    assert route(m.swdge, e.unknown) == ("swdge", "gpsimd", 2)
    assert route(m.none, e.unknown) == ("none", "sync", 3)
    assert route(m.none, e.scalar) == ("none", "scalar", 4)
    for bad in ((m.hwdge, e.gpsimd), (m.swdge, e.sync), (m.unknown, e.vector)):
        with pytest.raises(IllegalAccess):
            route(*bad)
    assert "queue" not in inspect.signature(nisa.dma_copy).parameters

    def kernel(a, out):
        t = nl.ndarray((128, 64), dtype=nl.float32)
        nisa.dma_copy(t, a, dge_mode=nisa.dge_mode.none)
        nisa.dma_copy(out, t, engine=nisa.engine.scalar)

    load, store = [i for i in run(kernel, grid=1).program.cores[0] if i.dma is not None]
    assert (load.dma.mode, load.dma.engine, load.dma.queue, load.engine) == (
        "none",
        "sync",
        3,
        "sync",
    )
    assert (store.dma.mode, store.dma.engine, store.dma.queue) == ("hwdge", "scalar", 1)


def k_precomputed_descriptors_with_a_register(ids, w, out):
    t = nl.ndarray((1, 1), dtype=nl.int32)
    nisa.dma_copy(t, ids)
    e = nisa.register_alloc()
    nisa.register_load(e, t)
    x = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.dma_copy(x, w[e], dge_mode=nisa.dge_mode.none)  # <- here


def test_dge_none_cannot_address_dynamically():
    """NKI dma_copy: only sw_dge/hw_dge allow a dynamic start address."""
    w = np.zeros((4, 128, 4), F32)
    expect(
        k_precomputed_descriptors_with_a_register,
        IllegalAccess,
        inputs={"ids": np.array([[1]], np.int32), "w": w},
        outputs={"out": ((128, 4), F32)},
        grid=1,
    )


# ----------------------------------------------------------------------------- new instructions


def test_activation_fused_sum_equals_activation_then_reduce():
    """nki.isa.activation with reduce_cmd=reset_reduce (and activation_reduce) sums the activated
    fp32 values per partition, in index order, as VectorE's tensor_reduce does."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((128, 300)).astype(F32).astype(BF16)

    def kernel(x, fused, older, split):
        t = nl.ndarray((128, 300), dtype=nl.bfloat16)
        nisa.dma_copy(t, x)
        sq = nl.ndarray((128, 300), dtype=nl.float32)
        s1 = nl.ndarray((128, 1), dtype=nl.float32)
        nisa.activation(
            sq,
            nl.square,
            t,
            reduce_op=nl.add,
            reduce_res=s1,
            reduce_cmd=nisa.reduce_cmd.reset_reduce,
        )
        s2 = nl.ndarray((128, 1), dtype=nl.float32)
        nisa.activation_reduce(sq, nl.square, t, nl.add, s2)
        s3 = nl.ndarray((128, 1), dtype=nl.float32)
        nisa.tensor_reduce(s3, nl.add, sq, axis=1, keepdims=True)
        nisa.dma_copy(fused, s1)
        nisa.dma_copy(older, s2)
        nisa.dma_copy(split, s3)

    spec = ((128, 1), F32)
    res = run(kernel, {"x": x}, {"fused": spec, "older": spec, "split": spec}, grid=1)
    o = res.outputs
    assert (numerics.bits(o["fused"]) == numerics.bits(o["split"])).all()
    assert (numerics.bits(o["older"]) == numerics.bits(o["split"])).all()
    acts = [i for i in res.program.cores[0] if i.op == "activation"]
    assert len(acts) == 2 and all(i.engine == "scalar" for i in acts)


def k_reduce_cmd_reduce(a, out):
    t = nl.ndarray((128, 64), dtype=nl.float32)
    nisa.dma_copy(t, a)
    s = nl.ndarray((128, 1), dtype=nl.float32)
    # Errors point at the first line of a multi-line call.
    nisa.activation(  # <- here
        t, nl.exp, t, reduce_op=nl.add, reduce_res=s, reduce_cmd=nisa.reduce_cmd.reduce
    )


def test_accumulating_reduce_commands_are_refused():
    expect(k_reduce_cmd_reduce, IllegalAccess)


def test_tensor_reduce_negate_and_keepdims_follow_nki():
    def kernel(a, neg, flat):
        t = nl.ndarray((128, 64), dtype=nl.float32)
        nisa.dma_copy(t, a)
        n = nl.ndarray((128, 1), dtype=nl.float32)
        nisa.tensor_reduce(n, nl.maximum, t, axis=1, negate=True, keepdims=True)
        f = nl.ndarray((128,), dtype=nl.float32)
        nisa.tensor_reduce(f, nl.add, t, 1)  # keepdims=False by default: axis removed
        nisa.dma_copy(neg, n)
        nisa.dma_copy(flat, f)

    o = run(kernel, outputs={"neg": ((128, 1), F32), "flat": ((128,), F32)}, grid=1).outputs
    assert (o["neg"][:, 0] == -A.max(axis=1)).all()
    assert (o["flat"] == np.cumsum(A, axis=1, dtype=F32)[:, -1]).all()


def test_tensor_scalar_reverse_swaps_operands():
    def kernel(a, out):
        t = nl.ndarray((128, 64), dtype=nl.float32)
        nisa.dma_copy(t, a)
        r = nl.ndarray((128, 64), dtype=nl.float32)
        nisa.tensor_scalar(
            r, t, nl.subtract, 1.0, reverse0=True, op1=nl.divide, operand1=2.0, reverse1=True
        )
        nisa.dma_copy(out, r)

    y = run(kernel, grid=1).outputs["out"]
    with np.errstate(divide="ignore"):
        assert (y == F32(2.0) / (F32(1.0) - A)).all()


def test_dma_transpose_moves_two_byte_elements_across_partitions():
    x = (np.arange(16 * 128, dtype=F32).reshape(16, 128) / 7).astype(BF16)

    def kernel(x, out):
        t = nl.ndarray((128, 16), dtype=nl.bfloat16)
        nisa.dma_transpose(t, x, dge_mode=nisa.dge_mode.hwdge)
        nisa.dma_copy(out, t)

    res = run(kernel, {"x": x}, {"out": ((128, 16), BF16)}, grid=1)
    assert (numerics.bits(res.outputs["out"]) == numerics.bits(x.T)).all()
    (tr,) = [i for i in res.program.cores[0] if i.dma is not None and i.dma.transpose]
    assert tr.op == "dma_copy" and tr.dma.mode == "hwdge" and tr.dma.chunk_bytes == 2


def k_dma_transpose_fp32(a, out):
    t = nl.ndarray((64, 128), dtype=nl.float32)
    nisa.dma_transpose(t, a)  # <- here


def test_dma_transpose_refuses_four_byte_dtypes():
    expect(k_dma_transpose_fp32, DtypeError)


def k_sendrecv_to_self(a, out):
    c = nl.program_id(0)
    t = nl.ndarray((128, 64), dtype=nl.float32)
    nisa.dma_copy(t, a)
    u = nl.ndarray((128, 64), dtype=nl.float32)
    nisa.sendrecv(  # <- here
        t[:, 0:4], u[:, 0:4], c, 1 - c, 0, dma_engine=nisa.dma_engine.gpsimd_dma
    )


def k_sendrecv_shared_dma(a, out):
    c = nl.program_id(0)
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.memset(t, 0.0)
    nisa.sendrecv(t, t, 1 - c, 1 - c, 0)  # <- here


def k_barrier_on_sbuf(a, out):
    t = nl.ndarray((128, 4), dtype=nl.float32)
    nisa.core_barrier(t, (0, 1))  # <- here


def test_two_core_instructions_take_nki_arguments():
    expect(k_sendrecv_to_self, IllegalAccess)
    assert "gpsimd_dma" in expect(k_sendrecv_shared_dma, IllegalAccess).message
    expect(k_barrier_on_sbuf, IllegalAccess)
