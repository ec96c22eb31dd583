"""`nisa`: the instructions a kernel issues — DMA, matmul, transpose, ScalarE/VectorE/GpSimd ops,
registers, and the two-core exchange.

Each function checks its operands against the hardware's rules at trace time (raising a typed
error that names the kernel line), then records an `Instr` holding a numerics closure and the
cost metadata the timing model reads. Engines compute in fp32 and round on write (NPU.md 6).
"""

from __future__ import annotations

import math

import numpy as np

from knight.npu import numerics
from knight.npu.errors import (
    DtypeError,
    IllegalAccess,
    NpuError,
    ResourceOverflow,
    ShapeError,
    SourceLoc,
    UninitializedRead,
)
from knight.npu.program import (
    PERF_COPY_STRIDED,
    PERF_COPY_UNIT,
    PERF_NONE,
    PERF_SCALAR_HALF,
    PERF_TT,
    DmaShape,
    Instr,
    Region,
)
from knight.npu.tensor import (
    HBM,
    PSUM,
    SBUF,
    RegExpr,
    View,
    contiguous_run,
    free_size,
    inner_stride_bytes,
    partition_range,
    region_of,
)
from knight.npu.tracer import Tracer, active, caller_loc

FLOAT_DTYPES = (np.dtype(numerics.BF16), np.dtype(np.float16), np.dtype(np.float32))
HALF_DTYPES = (np.dtype(numerics.BF16), np.dtype(np.float16))
ALU = {
    "add": np.add,
    "subtract": np.subtract,
    "multiply": np.multiply,
    "divide": np.divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
}
DMA_ENGINES = {"sync": ("hwdge", 0), "scalar": ("hwdge", 1), "gpsimd": ("swdge", 2)}


# ----------------------------------------------------------------------------- helpers


def _tile(x, what: str, loc: SourceLoc) -> View:
    if not isinstance(x, View):
        raise ShapeError(f"{what} must be a tile (a view of an allocated tensor), got {type(x).__name__}", loc)
    return x


def _on_chip(v: View, what: str, loc: SourceLoc, allowed: tuple[str, ...] = (SBUF, PSUM)) -> None:
    if v.buffer not in allowed:
        names = " or ".join(b.upper() for b in allowed)
        raise IllegalAccess(f"{what} must be in {names}, not {v.buffer.upper()}", loc)
    if v._dynamic:
        raise IllegalAccess(f"{what} cannot use a register offset on an on-chip buffer", loc)
    _own(v, what, loc)
    p0, n, step = partition_range(v)
    if step != 1:
        raise IllegalAccess(f"{what}: partition ranges must be contiguous (step {step})", loc)
    # Access-pattern rule (ARCH1): where a partition range may start depends on its size.
    starts = (0,) if n > 64 else (0, 64) if n > 32 else (0, 32, 64, 96)
    if p0 not in starts:
        raise IllegalAccess(
            f"{what}: a range of {n} partitions must start at partition {' or '.join(map(str, starts))}, not {p0}",
            loc,
        )
    if v.ndim - 1 > 4:
        raise ShapeError(f"{what}: access patterns have at most 4 free dimensions, got {v.ndim - 1}", loc)


def _own(v: View, what: str, loc: SourceLoc) -> None:
    """On-chip memory is private to its physical core; only sendrecv crosses between cores."""
    core = active().core
    if v._tensor.core is not None and v._tensor.core != core:
        raise IllegalAccess(f"{what} is core {v._tensor.core}'s memory; core {core} cannot access it", loc)


def _same_shape(a: View, b: View, what: str, loc: SourceLoc) -> None:
    if a.shape != b.shape:
        raise ShapeError(f"{what}: shapes differ, {list(a.shape)} vs {list(b.shape)}", loc)


def _float(v: View, what: str, loc: SourceLoc) -> None:
    if v.dtype not in FLOAT_DTYPES:
        raise DtypeError(f"{what} must be a floating-point tile (bfloat16, float16, float32), not {v.dtype}", loc)


def _read(v: View, regs: dict[int, int], what: str) -> np.ndarray:
    mask = v.mask(regs)
    if mask is not None and not mask.all():
        n = int(mask.size - np.count_nonzero(mask))
        raise UninitializedRead(
            f"{what} reads {n} of {mask.size} elements of {v._tensor.name} that were never written"
        )
    if v._tensor.group_open is not None:
        v.group_mask()[...] = False  # a read-out closes the accumulation group
    return v.data(regs)


def _store(v: View, regs: dict[int, int], values: np.ndarray) -> None:
    """Round fp32 results to the destination dtype and mark them written."""
    out = v.data(regs)
    out[...] = numerics.round_to(np.asarray(values, dtype=np.float32), out.dtype)
    mask = v.mask(regs)
    if mask is not None:
        mask[...] = True
    if v._tensor.matmul_written is not None:
        v.mm_mask()[...] = False
        v.group_mask()[...] = False


def _operand(x, tr: Tracer, what: str, loc: SourceLoc, partitions: int | None = None):
    """A scalar operand: a Python number, or a [P, 1] tile broadcast along the free axis
    (P must equal the data's partition count)."""
    if isinstance(x, View):
        _on_chip(x, what, loc)
        if free_size(x) != 1:
            raise ShapeError(f"{what} tile must be [P, 1], got {list(x.shape)}", loc)
        if partitions is not None and x.shape[0] != partitions:
            raise ShapeError(f"{what} tile has {x.shape[0]} partitions; the data has {partitions}", loc)
        return x
    if isinstance(x, RegExpr):
        raise IllegalAccess(f"{what}: registers can only index HBM", loc)
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise ShapeError(f"{what} must be a number or a [P, 1] tile, got {type(x).__name__}", loc)
    return np.float32(x)


def _operand_value(x, regs: dict[int, int], ndim: int, what: str) -> np.ndarray | np.float32:
    if isinstance(x, View):
        a = numerics.to_fp32(_read(x, regs, what)).reshape(x.shape[0], *([1] * (ndim - 1)))
        return a
    return x


def _alu(name, loc: SourceLoc):
    op = str(name) if name is not None else None
    if op not in ALU:
        raise ShapeError(f"unknown ALU op {name!r}; use one of {', '.join(ALU)}", loc)
    return ALU[op]


def _vector_perf(op: str, engine: str, srcs: list[View], dst: View, strided: bool) -> str:
    """Which performance mode applies (NPU.md 4): VectorE's on Trn2 and later, ScalarE's 16-bit
    copy mode on Trn3 (the preset holds the factors; they change no bits)."""
    half = all(v.dtype in HALF_DTYPES for v in srcs) and dst.dtype in HALF_DTYPES
    if engine == "scalar" and op in ("tensor_copy", "tensor_scalar") and half:
        return PERF_SCALAR_HALF
    if engine != "vector":
        return PERF_NONE
    in_sbuf = all(v.buffer == SBUF for v in srcs)
    if op in ("tensor_copy", "tensor_scalar"):
        if half and in_sbuf and dst.buffer == SBUF and not strided:
            return PERF_COPY_UNIT
        return PERF_COPY_STRIDED
    if op == "tensor_tensor" and half and in_sbuf:
        return PERF_TT
    return PERF_NONE


def _is_strided(tr: Tracer, *views: View) -> bool:
    limit = tr.machine.stride_penalty_bytes
    return any(inner_stride_bytes(v) > limit for v in views)


def _compute(tr: Tracer, op: str, engine: str, loc: SourceLoc, srcs: list[View], dsts: list[View], run, *, perf=None, n_inputs=None) -> Instr:
    tiles = [v for v in srcs if isinstance(v, View)]
    strided = _is_strided(tr, *tiles, *dsts)
    reads = tuple(region_of(v) for v in tiles)
    writes = tuple(region_of(v) for v in dsts)
    return tr.emit(
        Instr(
            op=op,
            engine=engine,
            core=tr.core,
            index=0,
            loc=loc,
            reads=reads,
            writes=writes,
            elems=max(free_size(v) for v in [*tiles, *dsts]),
            n_inputs=n_inputs if n_inputs is not None else max(1, len(tiles)),
            perf=perf if perf is not None else _vector_perf(op, engine, tiles, dsts[0], strided),
            strided=strided,
            psum_access=any(v.buffer == PSUM for v in [*tiles, *dsts]),
            run=run,
        )
    )


def _engine(engine: str, allowed: tuple[str, ...], loc: SourceLoc) -> str:
    if engine not in allowed:
        raise IllegalAccess(f"this instruction runs on {' or '.join(allowed)}, not {engine!r}", loc)
    return engine


# ----------------------------------------------------------------------------- DMA


def dma_copy(dst: View, src: View, engine: str = "sync", queue: int | None = None) -> None:
    """Copy between HBM and SBUF (or within either). `engine` triggers the transfer:
    "sync" or "scalar" use hardware descriptor generation (HWDGE), "gpsimd" software (SWDGE).
    `queue` picks the DMA queue (default: one per trigger engine). Casts go through fp32."""
    tr, loc = active(), caller_loc()
    dst, src = _tile(dst, "dst", loc), _tile(src, "src", loc)
    if engine not in DMA_ENGINES:
        raise IllegalAccess(f"DMA is triggered from sync, scalar or gpsimd, not {engine!r}", loc)
    mode, default_queue = DMA_ENGINES[engine]
    q = default_queue if queue is None else queue
    if not isinstance(q, int) or not 0 <= q < tr.machine.dma_queues:
        raise IllegalAccess(f"DMA queue must be an integer in 0..{tr.machine.dma_queues - 1}, got {queue!r}", loc)
    if dst.is_broadcast:
        raise IllegalAccess("dma_copy dst cannot be a broadcast view", loc)
    for v, what in ((dst, "dma_copy dst"), (src, "dma_copy src")):
        if v.buffer == PSUM:
            raise IllegalAccess(f"{what}: DMA cannot access PSUM; copy to SBUF first", loc)
        if v.buffer == SBUF:
            _on_chip(v, what, loc, (SBUF,))
    _same_shape(dst, src, "dma_copy", loc)
    if (dst.dtype == np.int32) != (src.dtype == np.int32):
        raise DtypeError(f"dma_copy cannot convert between {src.dtype} and {dst.dtype}", loc)
    shape = _dma_shape(dst, src, mode, q)
    regs = tr.regs
    cast = dst.dtype != src.dtype

    def run() -> None:
        data = _read(src, regs, "dma_copy")
        dst._tensor.make_writable()
        out = dst.data(regs)
        out[...] = numerics.round_to(numerics.to_fp32(data), out.dtype) if cast else data
        mask = dst.mask(regs)
        if mask is not None:
            mask[...] = True

    reads = [region_of(src)] + [Region(r, 0, 1, 0, 4) for r in src.registers() + dst.registers()]
    tr.emit(
        Instr(
            op="dma_copy", engine=engine, core=tr.core, index=0, loc=loc,
            reads=tuple(reads), writes=(region_of(dst),), dma=shape,
            dynamic=src._dynamic or dst._dynamic, run=run,
        )
    )


def _dma_shape(dst: View, src: View, mode: str, queue: int) -> DmaShape:
    """Cut a transfer into per-partition contiguous runs (descriptors), as DMA engines do."""
    chip = dst if dst.buffer == SBUF else src if src.buffer == SBUF else None
    if chip is not None:
        p0, parts, _ = partition_range(chip)
    else:
        p0, parts = 0, dst.shape[0] if dst.ndim > 1 else 1
    per_partition = dst._arr.size // parts
    first = 1 if dst.ndim > 1 else 0
    run = min(contiguous_run(dst._arr, first), contiguous_run(src._arr, first), per_partition)
    run = math.gcd(run, per_partition) or 1
    itemsize = max(dst.dtype.itemsize, src.dtype.itemsize)
    hbm = (src._arr.size * src.dtype.itemsize if src.buffer == HBM else 0) + (
        dst._arr.size * dst.dtype.itemsize if dst.buffer == HBM else 0
    )
    return DmaShape(
        mode=mode, queue=queue, p0=p0, partitions=parts, chunks_per_partition=per_partition // run,
        chunk_bytes=run * itemsize, total_bytes=parts * per_partition * itemsize, hbm_bytes=hbm,
    )


# ----------------------------------------------------------------------------- TensorE


def nc_matmul(dst: View, stationary: View, moving: View, accumulate: bool | None = False) -> None:
    """dst[M, N] (PSUM, fp32) = stationary[K, M].T @ moving[K, N]; K on partitions.
    `accumulate=False` overwrites; `True` adds into dst, which must hold a matmul result;
    `None` adds when dst holds a matmul result not yet read out (an open group), else overwrites."""
    tr, loc = active(), caller_loc()
    m = tr.machine
    dst, st, mv = _tile(dst, "dst", loc), _tile(stationary, "stationary", loc), _tile(moving, "moving", loc)
    _on_chip(st, "stationary", loc, (SBUF,))
    _on_chip(mv, "moving", loc, (SBUF,))
    _on_chip(dst, "matmul dst", loc, (PSUM,))
    for v, what in ((st, "stationary"), (mv, "moving"), (dst, "matmul dst")):
        if v.ndim != 2:
            raise ShapeError(f"{what} must be 2-D [partitions, free], got {list(v.shape)}", loc)
    k, mdim = st.shape
    k2, n = mv.shape
    if k != k2:
        raise ShapeError(f"contraction sizes differ: stationary K={k}, moving K={k2}", loc)
    if k > m.matmul_max_contract:
        raise ShapeError(f"contraction K={k} exceeds {m.matmul_max_contract} partitions", loc)
    if mdim > m.matmul_max_stationary:
        raise ShapeError(f"stationary free size M={mdim} exceeds {m.matmul_max_stationary}", loc)
    if n > m.matmul_max_moving:
        raise ShapeError(f"moving free size N={n} exceeds {m.matmul_max_moving} (one PSUM bank)", loc)
    if dst.shape != (mdim, n):
        raise ShapeError(f"matmul dst must be [{mdim}, {n}], got {list(dst.shape)}", loc)
    if dst.dtype != np.float32:
        raise DtypeError(f"matmul accumulates in fp32 PSUM; dst is {dst.dtype}", loc)
    if st.dtype != mv.dtype or st.dtype not in FLOAT_DTYPES:
        raise DtypeError(f"matmul inputs must share one float dtype, got {st.dtype} and {mv.dtype}", loc)
    region = region_of(dst)
    bank = m.psum_bank_bytes
    if region.b0 // bank != (region.b1 - 1) // bank:
        raise ResourceOverflow(
            f"matmul output spans PSUM bytes {region.b0}..{region.b1} per partition, crossing a "
            f"{bank}-byte bank boundary; an accumulation group lives in one bank",
            loc,
        )
    regs = tr.regs
    if accumulate is not None:
        if not isinstance(accumulate, (bool, int, np.bool_, np.integer)):
            raise ShapeError(f"accumulate must be True, False or None, not {accumulate!r}", loc)
        accumulate = bool(accumulate)
    acc = accumulate is not False

    def run() -> None:
        res = numerics.matmul(_read(st, regs, "matmul stationary"), _read(mv, regs, "matmul moving"))
        out = dst.data(regs)
        if accumulate is True and not dst.mm_mask().all():
            raise IllegalAccess("accumulate=True onto PSUM that does not hold a matmul result (undefined on hardware)")
        if accumulate is None:
            open_ = dst.group_mask()
            out[...] = np.where(open_, numerics.accumulate(out, res), res)
        elif accumulate:
            out[...] = numerics.accumulate(out, res)
        else:
            out[...] = res
        dst.mask(regs)[...] = True
        dst.mm_mask()[...] = True
        dst.group_mask()[...] = True

    reads = (region_of(st), region_of(mv)) + ((region,) if acc else ())
    tr.emit(
        Instr(
            op="matmul", engine="tensor", core=tr.core, index=0, loc=loc, reads=reads, writes=(region,),
            moving=n, stationary=mdim, contract=k, fp32_matmul=st.dtype == np.float32,
            accumulate=acc, psum_access=True, run=run,
        )
    )


def nc_transpose(dst: View, src: View, engine: str = "tensor") -> None:
    """dst[F, P] = src[P, F], bit for bit. TensorE: SBUF -> PSUM up to 128x128;
    VectorE: up to 32x32 (hardware silently writes zeros beyond; the simulator refuses)."""
    tr, loc = active(), caller_loc()
    m = tr.machine
    dst, src = _tile(dst, "dst", loc), _tile(src, "src", loc)
    _engine(engine, ("tensor", "vector"), loc)
    if src.ndim != 2 or dst.ndim != 2 or dst.shape != src.shape[::-1]:
        raise ShapeError(f"transpose needs src [P, F] and dst [F, P]; got {list(src.shape)} -> {list(dst.shape)}", loc)
    p, f = src.shape
    if engine == "tensor":
        _on_chip(src, "transpose src", loc, (SBUF,))
        _on_chip(dst, "transpose dst", loc, (PSUM,))
        if p > m.matmul_max_contract or f > m.matmul_max_stationary:
            raise ShapeError(f"TensorE transpose is at most 128x128, got {p}x{f}", loc)
    else:
        _on_chip(src, "transpose src", loc)
        _on_chip(dst, "transpose dst", loc, (SBUF,))
        lim = m.vector_transpose_max
        if p > lim or f > lim:
            raise ShapeError(
                f"VectorE transpose is limited to {lim}x{lim} (got {p}x{f}); hardware would silently "
                "write zeros beyond the block. Use engine='tensor' for larger tiles",
                loc,
            )
    if dst.dtype != src.dtype and dst.dtype != np.float32:
        raise DtypeError(f"transpose copies bits: dst must be {src.dtype} (or float32), not {dst.dtype}", loc)
    regs = tr.regs
    same = dst.dtype == src.dtype

    def run() -> None:
        data = _read(src, regs, "transpose").T
        out = dst.data(regs)
        out[...] = data if same else numerics.to_fp32(data)
        dst.mask(regs)[...] = True
        if dst._tensor.matmul_written is not None:
            dst.mm_mask()[...] = engine == "tensor"

    tr.emit(
        Instr(
            op="transpose", engine=engine, core=tr.core, index=0, loc=loc,
            reads=(region_of(src),), writes=(region_of(dst),), moving=p, stationary=f, contract=p,
            elems=max(p, f), psum_access=dst.buffer == PSUM or src.buffer == PSUM, run=run,
        )
    )


# ----------------------------------------------------------------------------- ScalarE / VectorE / GpSimd


def activation(dst: View, op, data: View, bias: View | None = None, scale=1.0) -> None:
    """ScalarE: dst = op(data * scale + bias), in fp32, rounded to dst's dtype.
    `scale` is a number or a [P, 1] tile; `bias` a [P, 1] tile."""
    tr, loc = active(), caller_loc()
    dst, data = _tile(dst, "dst", loc), _tile(data, "data", loc)
    _on_chip(dst, "activation dst", loc)
    _on_chip(data, "activation data", loc)
    _same_shape(dst, data, "activation", loc)
    _float(data, "activation data", loc)
    _float(dst, "activation dst", loc)
    name = str(op)
    if name not in numerics.ACTIVATIONS:
        raise ShapeError(f"unknown activation {op!r}; use one of {', '.join(sorted(numerics.ACTIVATIONS))}", loc)
    fn = numerics.ACTIVATIONS[name]
    sc = _operand(scale, tr, "activation scale", loc, data.shape[0])
    bi = _operand(bias, tr, "activation bias", loc, data.shape[0]) if bias is not None else None
    regs = tr.regs
    nd = data.ndim

    def run() -> None:
        x = numerics.to_fp32(_read(data, regs, "activation"))
        x = (x * _operand_value(sc, regs, nd, "activation scale")).astype(np.float32)
        if bi is not None:
            x = (x + _operand_value(bi, regs, nd, "activation bias")).astype(np.float32)
        _store(dst, regs, fn(x))

    srcs = [data] + [v for v in (sc, bi) if isinstance(v, View)]
    _compute(tr, "activation", "scalar", loc, srcs, [dst], run, perf=PERF_NONE, n_inputs=1)


def tensor_tensor(dst: View, data1: View, data2: View, op, engine: str = "vector") -> None:
    """dst = data1 <op> data2 elementwise in fp32 (add, subtract, multiply, divide, maximum, minimum)."""
    tr, loc = active(), caller_loc()
    _engine(engine, ("vector", "gpsimd"), loc)
    dst, a, b = _tile(dst, "dst", loc), _tile(data1, "data1", loc), _tile(data2, "data2", loc)
    for v, what in ((dst, "dst"), (a, "data1"), (b, "data2")):
        _on_chip(v, f"tensor_tensor {what}", loc)
    _same_shape(a, b, "tensor_tensor", loc)
    _same_shape(dst, a, "tensor_tensor", loc)
    if a.buffer == PSUM and b.buffer == PSUM:
        raise IllegalAccess("tensor_tensor cannot read both inputs from PSUM", loc)
    fn = _alu(op, loc)
    regs = tr.regs

    def run() -> None:
        x = numerics.to_fp32(_read(a, regs, "tensor_tensor data1"))
        y = numerics.to_fp32(_read(b, regs, "tensor_tensor data2"))
        with np.errstate(all="ignore"):
            _store(dst, regs, fn(x, y))

    _compute(tr, "tensor_tensor", engine, loc, [a, b], [dst], run)


def tensor_scalar(dst: View, data: View, op0, operand0, op1=None, operand1=None, engine: str = "vector") -> None:
    """dst = (data <op0> operand0) <op1> operand1, in fp32; operands are numbers or [P, 1] tiles."""
    tr, loc = active(), caller_loc()
    _engine(engine, ("vector", "scalar", "gpsimd"), loc)
    dst, data = _tile(dst, "dst", loc), _tile(data, "data", loc)
    _on_chip(dst, "tensor_scalar dst", loc)
    _on_chip(data, "tensor_scalar data", loc)
    _same_shape(dst, data, "tensor_scalar", loc)
    f0 = _alu(op0, loc)
    o0 = _operand(operand0, tr, "operand0", loc, data.shape[0])
    f1 = _alu(op1, loc) if op1 is not None else None
    o1 = _operand(operand1, tr, "operand1", loc, data.shape[0]) if op1 is not None else None
    regs = tr.regs
    nd = data.ndim

    def run() -> None:
        x = numerics.to_fp32(_read(data, regs, "tensor_scalar"))
        with np.errstate(all="ignore"):
            x = f0(x, _operand_value(o0, regs, nd, "operand0")).astype(np.float32)
            if f1 is not None:
                x = f1(x, _operand_value(o1, regs, nd, "operand1")).astype(np.float32)
        _store(dst, regs, x)

    srcs = [data] + [v for v in (o0, o1) if isinstance(v, View)]
    _compute(tr, "tensor_scalar", engine, loc, srcs, [dst], run, n_inputs=1)


def tensor_copy(dst: View, src: View, engine: str = "vector") -> None:
    """Copy a tile (e.g. a PSUM read-out to SBUF); same dtype copies bits, otherwise casts via fp32."""
    tr, loc = active(), caller_loc()
    _engine(engine, ("vector", "scalar", "gpsimd"), loc)
    dst, src = _tile(dst, "dst", loc), _tile(src, "src", loc)
    _on_chip(dst, "tensor_copy dst", loc)
    _on_chip(src, "tensor_copy src", loc)
    _same_shape(dst, src, "tensor_copy", loc)
    if (dst.dtype == np.int32) != (src.dtype == np.int32):
        raise DtypeError(f"tensor_copy cannot convert between {src.dtype} and {dst.dtype}", loc)
    regs = tr.regs
    same = dst.dtype == src.dtype

    def run() -> None:
        data = _read(src, regs, "tensor_copy")
        if same:
            dst.data(regs)[...] = data
            dst.mask(regs)[...] = True
            if dst._tensor.matmul_written is not None:
                dst.mm_mask()[...] = False
                dst.group_mask()[...] = False
        else:
            _store(dst, regs, numerics.to_fp32(data))

    _compute(tr, "tensor_copy", engine, loc, [src], [dst], run)


def tensor_reduce(dst: View, data: View, op, axis=-1, engine: str = "vector", keepdims: bool = True) -> None:
    """Reduce free axes with add/maximum/minimum; sums accumulate in fp32 in index order."""
    tr, loc = active(), caller_loc()
    _engine(engine, ("vector", "gpsimd"), loc)
    dst, data = _tile(dst, "dst", loc), _tile(data, "data", loc)
    _on_chip(dst, "tensor_reduce dst", loc)
    _on_chip(data, "tensor_reduce data", loc)
    name = str(op)
    if name not in ("add", "maximum", "minimum"):
        raise ShapeError(f"tensor_reduce supports add, maximum, minimum; got {op!r}", loc)
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = tuple(sorted(a % data.ndim for a in axes))
    if 0 in axes:
        raise ShapeError("tensor_reduce reduces free axes only; the partition axis (0) cannot be reduced", loc)
    expect = tuple(1 if i in axes else s for i, s in enumerate(data.shape)) if keepdims else tuple(
        s for i, s in enumerate(data.shape) if i not in axes
    )
    if dst.shape != expect:
        raise ShapeError(f"tensor_reduce dst must be {list(expect)}, got {list(dst.shape)}", loc)
    regs = tr.regs

    def run() -> None:
        x = numerics.to_fp32(_read(data, regs, "tensor_reduce"))
        keep = [i for i in range(x.ndim) if i not in axes]
        flat = np.transpose(x, keep + list(axes)).reshape(*(x.shape[i] for i in keep), -1)
        if name == "add":
            res = np.cumsum(flat, axis=-1, dtype=np.float32)[..., -1]  # sequential fp32, fixed order
        elif name == "maximum":
            res = flat.max(axis=-1)
        else:
            res = flat.min(axis=-1)
        _store(dst, regs, res.reshape(dst.shape))

    _compute(tr, "tensor_reduce", engine, loc, [data], [dst], run)


def memset(dst: View, value: float, engine: str = "vector") -> None:
    """Fill a tile with a constant (rounded to its dtype)."""
    tr, loc = active(), caller_loc()
    _engine(engine, ("vector", "scalar", "gpsimd"), loc)
    dst = _tile(dst, "dst", loc)
    _on_chip(dst, "memset dst", loc)
    val = _operand(value, tr, "memset value", loc)
    if isinstance(val, View):
        raise ShapeError("memset takes a number", loc)
    regs = tr.regs

    def run() -> None:
        _store(dst, regs, np.full(dst.shape, val, dtype=np.float32))

    _compute(tr, "memset", engine, loc, [], [dst], run, n_inputs=1)


def max8(dst_values: View, dst_indices: View, src: View, engine: str = "vector") -> None:
    """Top-8 per partition along the free axis: values in descending order and their int32
    indices; ties go to the lower index (VectorE's max/max_index pair)."""
    tr, loc = active(), caller_loc()
    _engine(engine, ("vector",), loc)
    dv, di, src = _tile(dst_values, "dst_values", loc), _tile(dst_indices, "dst_indices", loc), _tile(src, "src", loc)
    for v, what in ((dv, "max8 values"), (di, "max8 indices"), (src, "max8 src")):
        _on_chip(v, what, loc)
    if src.ndim != 2 or src.shape[1] < 8:
        raise ShapeError(f"max8 src must be [P, N] with N >= 8, got {list(src.shape)}", loc)
    p = src.shape[0]
    if dv.shape != (p, 8) or di.shape != (p, 8):
        raise ShapeError(f"max8 outputs must be [{p}, 8]", loc)
    if di.dtype != np.int32:
        raise DtypeError(f"max8 indices must be int32, not {di.dtype}", loc)
    _float(src, "max8 src", loc)
    regs = tr.regs

    def run() -> None:
        x = numerics.to_fp32(_read(src, regs, "max8"))
        order = np.argsort(-x, axis=1, kind="stable")[:, :8]
        _store(dv, regs, np.take_along_axis(x, order, axis=1))
        di.data(regs)[...] = order.astype(np.int32)
        di.mask(regs)[...] = True

    instr = _compute(tr, "max8", engine, loc, [src], [dv, di], run)
    instr.elems = src.shape[1]


def register_load(src: View, engine: str = "sync") -> RegExpr:
    """Read one int32 element of an SBUF tile into an engine register, for indexing HBM in a DMA.
    The value stays on the device: Python sees only an opaque register."""
    tr, loc = active(), caller_loc()
    _engine(engine, ("sync", "scalar", "gpsimd", "vector"), loc)
    src = _tile(src, "src", loc)
    if src.buffer != SBUF or src._dynamic:
        raise IllegalAccess("register_load reads an SBUF tile", loc)
    _own(src, "register_load src", loc)
    if src._arr.size != 1:
        raise ShapeError(f"register_load reads exactly one element, got a tile of {list(src.shape)}", loc)
    if src.dtype != np.int32:
        raise DtypeError(f"register_load reads an int32 element, not {src.dtype}", loc)
    reg = tr.new_register()
    regs = tr.regs

    def run() -> None:
        regs[reg] = int(_read(src, regs, "register_load").reshape(-1)[0])

    tr.emit(
        Instr(
            op="register_load", engine=engine, core=tr.core, index=0, loc=loc, reads=(region_of(src),),
            writes=(Region(reg, 0, 1, 0, 4),), elems=1, run=run,
        )
    )
    return RegExpr(reg)


# ----------------------------------------------------------------------------- two cores


def sendrecv(dst: View, src: View, engine: str = "gpsimd") -> None:
    """Send `src` to the other physical core, which receives it in its `dst` (both cores call it
    at the same point). GpSimd-DMA variant: at most 512 bytes per partition."""
    tr, loc = active(), caller_loc()
    _engine(engine, ("gpsimd",), loc)
    if tr.grid != 2:
        raise IllegalAccess("sendrecv needs the two-core grid (grid=2)", loc)
    dst, src = _tile(dst, "dst", loc), _tile(src, "src", loc)
    _on_chip(dst, "sendrecv dst", loc, (SBUF,))
    _on_chip(src, "sendrecv src", loc, (SBUF,))
    _same_shape(dst, src, "sendrecv", loc)
    if dst.dtype != src.dtype:
        raise DtypeError(f"sendrecv copies bits: dtypes differ ({src.dtype} vs {dst.dtype})", loc)
    per_partition = free_size(src) * src.dtype.itemsize
    if per_partition > tr.machine.sendrecv_max_partition_bytes:
        raise ResourceOverflow(
            f"sendrecv moves {per_partition} B per partition; the GpSimd-DMA path carries at most "
            f"{tr.machine.sendrecv_max_partition_bytes}",
            loc,
        )
    instr = Instr(
        op="sendrecv", engine=engine, core=tr.core, index=0, loc=loc, reads=(region_of(src),),
        writes=(region_of(dst),), xfer_bytes=src._arr.size * src.dtype.itemsize, elems=free_size(src),
    )
    instr.run = _Exchange(src, dst, tr.regs)  # joined with the other core's half by the runtime
    tr.emit(instr)


def core_barrier() -> None:
    """Wait until both physical cores reach this point (through shared HBM semaphores)."""
    tr, loc = active(), caller_loc()
    tr.emit(Instr(op="barrier", engine="sync", core=tr.core, index=0, loc=loc, run=None))


class _Exchange:
    """One core's half of a sendrecv; the runtime calls `exchange(a, b)` when both are reached."""

    def __init__(self, src: View, dst: View, regs: dict[int, int]) -> None:
        self.src, self.dst, self.regs = src, dst, regs

    def __call__(self) -> None:  # pragma: no cover - the runtime always joins the two halves
        raise NpuError("sendrecv without a partner")


def exchange(a: _Exchange, b: _Exchange) -> None:
    """Perform a joint sendrecv: each core's src lands in the other's dst."""
    if a.src.shape != b.dst.shape or b.src.shape != a.dst.shape or a.src.dtype != b.dst.dtype:
        raise ShapeError(
            f"sendrecv halves do not match: core 0 sends {list(a.src.shape)} {a.src.dtype} into core 1's "
            f"{list(b.dst.shape)} {b.dst.dtype}, core 1 sends {list(b.src.shape)} into core 0's {list(a.dst.shape)}"
        )
    data_a = _read(a.src, a.regs, "sendrecv").copy()
    data_b = _read(b.src, b.regs, "sendrecv").copy()
    for half, data in ((a, data_b), (b, data_a)):
        half.dst.data(half.regs)[...] = data
        half.dst.mask(half.regs)[...] = True


__all__ = [
    "dma_copy", "nc_matmul", "nc_transpose", "activation", "tensor_tensor", "tensor_scalar",
    "tensor_copy", "tensor_reduce", "memset", "max8", "register_load", "sendrecv", "core_barrier",
]
