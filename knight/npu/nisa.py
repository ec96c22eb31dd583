"""`nisa`: the instructions a kernel issues, a strict subset of NKI's `nki.isa`.

Every public name here has NKI's name, parameter names, order and defaults (the table is
`knight/npu/conformance.py`). Parameter values the simulator does not model (a matmul tiling
position, an out-of-bounds skip mode, ...) are refused with a clear error rather than ignored.

Each function checks its operands against the hardware's rules at trace time (raising a typed
error that names the kernel line), then records an `Instr` holding a numerics closure and the
cost metadata the timing model reads. Engines compute in fp32 and round on write (NPU.md 6).
"""

from __future__ import annotations

import enum
import math

import numpy as np

from knight.npu import numerics
from knight.npu.dtypes import FLOAT_DTYPES, HALF_DTYPES, INT_DTYPES
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

FREE_SIZE_MAX = 65_535  # an access pattern's per-dimension size field is uint16 (ARCH1)
FREE_STRIDE_MAX = 32_767  # its stride field is int16, in elements
ALU = {
    "add": np.add,
    "subtract": np.subtract,
    "multiply": np.multiply,
    "divide": np.divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
}


# ----------------------------------------------------------------------------- NKI enums


class engine(enum.Enum):  # noqa: N801 - NKI's spelling
    """Neuron engines (`nki.isa.engine`); `unknown` lets the compiler choose."""

    tensor = 1
    vector = 5
    scalar = 2
    gpsimd = 3
    dma = 4
    sync = 6
    unknown = 0


class dge_mode(enum.Enum):  # noqa: N801
    """Where DMA descriptors are made (`nki.isa.dge_mode`)."""

    unknown = 0  # let the compiler decide
    swdge = 1  # software DGE: generated on GpSimd at run time
    hwdge = 2  # hardware DGE: the SyncE/ScalarE sequencer drives the DGE block
    none = 3  # precomputed by the runtime before execution, stored in HBM


class oob_mode(enum.Enum):  # noqa: N801
    """What an out-of-bounds dynamic index does (`nki.isa.oob_mode`)."""

    error = 0
    skip = 1


class reduce_cmd(enum.Enum):  # noqa: N801
    """ScalarE accumulator-register commands (`nki.isa.reduce_cmd`)."""

    idle = 0
    reset = 1
    reduce = 2
    reset_reduce = 3


class matmul_perf_mode(enum.Enum):  # noqa: N801
    """TensorE performance modes (`nki.isa.matmul_perf_mode`)."""

    none = 0
    double_row = 1


class dma_engine(enum.Enum):  # noqa: N801
    """Which DMA path a `sendrecv` uses (`nki.isa.dma_engine`)."""

    dma = 0  # the shared DMA engines
    gpsimd_dma = 1  # GpSimd's internal DMA: low-latency SBUF-to-SBUF swaps at LNC=2


_Engine, _DgeMode, _OobMode, _ReduceCmd = engine, dge_mode, oob_mode, reduce_cmd
_MatmulPerfMode, _DmaEngine = matmul_perf_mode, dma_engine

# Engines that may trigger a DMA, and the DGE mode each implies when the mode is `unknown`.
DMA_TRIGGERS = ("sync", "scalar", "gpsimd")
# (DGE mode, trigger engine) -> DMA queue id. A transfer takes one queue ID on every DMA engine,
# set by its trigger engine and descriptor mode (NPU.md 2.4, DGE): each pair below is its own ring.
DMA_QUEUES = {
    ("hwdge", "sync"): 0,
    ("hwdge", "scalar"): 1,
    ("swdge", "gpsimd"): 2,
    ("none", "sync"): 3,
    ("none", "scalar"): 4,
    ("none", "gpsimd"): 5,
}


# ----------------------------------------------------------------------------- helpers


def _tile(x, what: str, loc: SourceLoc) -> View:
    if not isinstance(x, View):
        raise ShapeError(
            f"{what} must be a tile (a view of an allocated tensor), got {type(x).__name__}", loc
        )
    return x


def _name(name, loc: SourceLoc) -> None:
    if name is not None and not isinstance(name, str):
        raise ShapeError(f"name must be a string or None, not {type(name).__name__}", loc)


def _choose(value, allowed: tuple[str, ...], default: str, what: str, loc: SourceLoc) -> str:
    """Resolve an `engine=` argument: a `nisa.engine` member; `unknown` becomes `default`."""
    if not isinstance(value, _Engine):
        raise IllegalAccess(
            f"{what}: engine must be a nisa.engine member (e.g. nisa.engine.{default}), "
            f"not {value!r}",
            loc,
        )
    if value is _Engine.unknown:
        return default
    if value.name not in allowed:
        names = " or ".join(f"nisa.engine.{a}" for a in allowed)
        raise IllegalAccess(f"{what} runs on {names}, not nisa.engine.{value.name}", loc)
    return value.name


def _enum(value, cls: type[enum.Enum], what: str, loc: SourceLoc):
    if not isinstance(value, cls):
        raise ShapeError(f"{what} must be a nisa.{cls.__name__} member, not {value!r}", loc)
    return value


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
            f"{what}: a range of {n} partitions must start at partition "
            f"{' or '.join(map(str, starts))}, not {p0}",
            loc,
        )
    if v.ndim - 1 > 4:
        raise ShapeError(
            f"{what}: access patterns have at most 4 free dimensions, got {v.ndim - 1}", loc
        )
    arr = v._arr
    for d in range(1, arr.ndim):  # access-pattern fields: sizes uint16, strides int16 (ARCH1)
        if arr.shape[d] > FREE_SIZE_MAX:
            raise ShapeError(
                f"{what}: free dimension {d} has {arr.shape[d]} elements; an access pattern's "
                f"sizes are 16-bit (at most {FREE_SIZE_MAX:,}): split the axis",
                loc,
            )
        stride = arr.strides[d] // arr.itemsize
        if arr.shape[d] > 1 and not -FREE_STRIDE_MAX - 1 <= stride <= FREE_STRIDE_MAX:
            raise ShapeError(
                f"{what}: free dimension {d} steps {stride} elements; an access pattern's "
                f"strides are 16-bit signed (|stride| <= {FREE_STRIDE_MAX})",
                loc,
            )


def _engine_memory(eng: str, views: list, what: str, loc: SourceLoc) -> None:
    """GpSimd has no port to PSUM (ISA: "GpSimd Engine cannot access PSUM")."""
    if eng == "gpsimd" and any(isinstance(v, View) and v.buffer == PSUM for v in views):
        raise IllegalAccess(
            f"{what} on GpSimd cannot access PSUM (GpSimd has no PSUM port); use VectorE or "
            "ScalarE for PSUM operands",
            loc,
        )


def _own(v: View, what: str, loc: SourceLoc) -> None:
    """On-chip memory is private to its physical core; only sendrecv crosses between cores."""
    core = active().core
    if v._tensor.core is not None and v._tensor.core != core:
        raise IllegalAccess(
            f"{what} is core {v._tensor.core}'s memory; core {core} cannot access it", loc
        )


def _own_registers(v: View, what: str, loc: SourceLoc) -> None:
    """A register lives in one core's engine sequencer; the other core cannot read it."""
    core = active().core
    for kind, arg in v._steps:
        if kind != "index":
            continue
        for k in arg:
            if isinstance(k, RegExpr) and k.core != core:
                raise IllegalAccess(
                    f"{what} is indexed by a register of core {k.core}; core {core} cannot read "
                    "another core's registers (load the value on this core)",
                    loc,
                )


def _same_shape(a: View, b: View, what: str, loc: SourceLoc) -> None:
    if a.shape != b.shape:
        raise ShapeError(f"{what}: shapes differ, {list(a.shape)} vs {list(b.shape)}", loc)


def _float(v: View, what: str, loc: SourceLoc) -> None:
    if v.dtype not in FLOAT_DTYPES:
        raise DtypeError(
            f"{what} must be a floating-point tile (bfloat16, float16, float32), not {v.dtype}",
            loc,
        )


def _unwritten_box(mask: np.ndarray) -> str:
    """The index ranges, in the read view's coordinates, that bound its unwritten elements."""
    idx = np.argwhere(~mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    ranges = ", ".join(f"{a}:{b}" for a, b in zip(lo.tolist(), hi.tolist(), strict=True))
    return f"unwritten within [{ranges}] of the view"


def _read(v: View, regs: dict[int, int], what: str) -> np.ndarray:
    mask = v.mask(regs)
    if mask is not None and not mask.all():
        n = int(mask.size - np.count_nonzero(mask))
        raise UninitializedRead(
            f"{what} reads {n} of {mask.size} elements of {v._tensor.name} that were never written"
            f" ({_unwritten_box(mask)}{' in PSUM' if v.buffer == PSUM else ''})"
        )
    if v._tensor.group_open is not None:
        v.group_mask()[...] = False  # a read-out closes the accumulation group
    return v.data(regs)


def _mark_written(v: View, regs: dict[int, int]) -> None:
    mask = v.mask(regs)
    if mask is not None:
        mask[...] = True
    if v._tensor.matmul_written is not None:
        v.mm_mask()[...] = False
        v.group_mask()[...] = False


def _store(v: View, regs: dict[int, int], values: np.ndarray) -> None:
    """Round fp32 results to the destination dtype and mark them written."""
    out = v.data(regs)
    out[...] = numerics.round_to(np.asarray(values, dtype=np.float32), out.dtype)
    _mark_written(v, regs)


def _operand(x, what: str, loc: SourceLoc, partitions: int | None = None):
    """A scalar operand: a Python number, or a [P, 1] tile broadcast along the free axis
    (P must equal the data's partition count)."""
    if isinstance(x, View):
        _on_chip(x, what, loc)
        if free_size(x) != 1:
            raise ShapeError(f"{what} tile must be [P, 1], got {list(x.shape)}", loc)
        if partitions is not None and x.shape[0] != partitions:
            raise ShapeError(
                f"{what} tile has {x.shape[0]} partitions; the data has {partitions}", loc
            )
        return x
    if isinstance(x, RegExpr):
        raise IllegalAccess(f"{what}: registers can only index HBM", loc)
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise ShapeError(f"{what} must be a number or a [P, 1] tile, got {type(x).__name__}", loc)
    return np.float32(x)


def _operand_value(x, regs: dict[int, int], ndim: int, what: str) -> np.ndarray | np.float32:
    if isinstance(x, View):
        return numerics.to_fp32(_read(x, regs, what)).reshape(x.shape[0], *([1] * (ndim - 1)))
    return x


def _alu(name, loc: SourceLoc):
    op = str(name) if name is not None else None
    if op not in ALU:
        raise ShapeError(f"unknown ALU op {name!r}; use one of {', '.join(ALU)}", loc)
    return ALU[op]


def _vector_perf(op: str, engine: str, srcs: list[View], dst: View, unit_stride: bool) -> str:
    """Which performance mode applies (NPU.md 4, ARCH2): VectorE's on Trn2 and later, ScalarE's
    16-bit copy mode on Trn3 (the preset holds the factors; they change no bits). The 4x copy
    mode needs SBUF -> SBUF, 16-bit data and a unit inner stride on every operand (a 16-byte
    stride is not unit: it gets the 2x mode); 32-bit copies get neither."""
    half = all(v.dtype in HALF_DTYPES for v in srcs) and dst.dtype in HALF_DTYPES
    if engine == "scalar" and op in ("tensor_copy", "tensor_scalar") and half:
        return PERF_SCALAR_HALF
    if engine != "vector":
        return PERF_NONE
    in_sbuf = all(v.buffer == SBUF for v in srcs)
    if op in ("tensor_copy", "tensor_scalar") and half:
        # ARCH2 grants both copy modes to BF16/FP16 data only; 32-bit copies run at the base rate.
        if in_sbuf and dst.buffer == SBUF and unit_stride:
            return PERF_COPY_UNIT
        return PERF_COPY_STRIDED
    if op == "tensor_tensor" and half and in_sbuf:
        return PERF_TT
    return PERF_NONE


def _is_strided(tr: Tracer, *views: View) -> bool:
    limit = tr.machine.stride_penalty_bytes
    return any(inner_stride_bytes(v) > limit for v in views)


def _compute(
    tr: Tracer,
    op: str,
    engine: str,
    loc: SourceLoc,
    srcs: list[View],
    dsts: list[View],
    run,
    *,
    perf=None,
    n_inputs=None,
) -> Instr:
    tiles = [v for v in srcs if isinstance(v, View)]
    strided = _is_strided(tr, *tiles, *dsts)
    unit = all(inner_stride_bytes(v) == v.dtype.itemsize for v in [*tiles, *dsts])
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
            perf=perf if perf is not None else _vector_perf(op, engine, tiles, dsts[0], unit),
            strided=strided,
            psum_access=any(v.buffer == PSUM for v in [*tiles, *dsts]),
            run=run,
        )
    )


# ----------------------------------------------------------------------------- DMA


def dma_route(mode: dge_mode, trigger: engine, loc: SourceLoc) -> tuple[str, str, int]:
    """The one rule for where a DMA goes: (descriptor mode, trigger engine, queue id).

    NKI: `hwdge` is driven by the SyncE or ScalarE sequencer, `swdge` generates descriptors on
    GpSimd, `none` uses descriptors the runtime precomputed. `unknown` (let the compiler decide)
    resolves to `swdge` when the trigger is GpSimd and to `hwdge` otherwise; an unknown trigger
    engine resolves to SyncE (GpSimd for `swdge`). The queue follows (mode, trigger): see
    `DMA_QUEUES`. The user never picks a queue.
    """
    mode = _enum(mode, _DgeMode, "dge_mode", loc)
    if not isinstance(trigger, _Engine):
        raise IllegalAccess(
            f"DMA engine must be a nisa.engine member (e.g. nisa.engine.sync), not {trigger!r}", loc
        )
    trig = trigger
    if trig is not _Engine.unknown and trig.name not in DMA_TRIGGERS:
        raise IllegalAccess(
            f"a DMA is triggered from nisa.engine.sync, .scalar or .gpsimd, not nisa.engine.{trig.name}",
            loc,
        )
    if mode is _DgeMode.unknown:
        name = "swdge" if trig is _Engine.gpsimd else "hwdge"
    else:
        name = mode.name
    if name == "hwdge":
        eng = "sync" if trig is _Engine.unknown else trig.name
        if eng == "gpsimd":
            raise IllegalAccess(
                "hardware DGE is driven by the SyncE or ScalarE sequencer, not GpSimd; use "
                "dge_mode=nisa.dge_mode.swdge for a GpSimd-triggered DMA",
                loc,
            )
    elif name == "swdge":
        eng = "gpsimd" if trig is _Engine.unknown else trig.name
        if eng != "gpsimd":
            raise IllegalAccess(
                f"software DGE generates descriptors on GpSimd; it cannot be triggered from "
                f"nisa.engine.{eng}",
                loc,
            )
    else:
        eng = "sync" if trig is _Engine.unknown else trig.name
    return name, eng, DMA_QUEUES[(name, eng)]


def _dma_operands(dst: View, src: View, what: str, loc: SourceLoc) -> None:
    if dst.is_broadcast:
        raise IllegalAccess(f"{what} dst cannot be a broadcast view", loc)
    for v, side in ((dst, "dst"), (src, "src")):
        if v.buffer == PSUM:
            raise IllegalAccess(f"{what} {side}: DMA cannot access PSUM; copy to SBUF first", loc)
        if v.buffer == SBUF:
            _on_chip(v, f"{what} {side}", loc, (SBUF,))
        _own_registers(v, f"{what} {side}", loc)
    if (dst.dtype in INT_DTYPES) != (src.dtype in INT_DTYPES):
        raise DtypeError(f"{what} cannot convert between {src.dtype} and {dst.dtype}", loc)


def _dma_checks(dst: View, src: View, mode: str, oob, what: str, loc: SourceLoc) -> None:
    if _enum(oob, _OobMode, "oob_mode", loc) is not _OobMode.error:
        raise IllegalAccess(
            f"{what}: only oob_mode=nisa.oob_mode.error is modelled (an out-of-bounds register "
            "index is an error)",
            loc,
        )
    if mode == "none" and (src._dynamic or dst._dynamic):
        raise IllegalAccess(
            f"{what}: a register-indexed (dynamic) address needs descriptors generated at run "
            "time (dge_mode hwdge or swdge); dge_mode.none precomputes them before execution",
            loc,
        )


def dma_copy(
    dst: View,
    src: View,
    oob_mode=oob_mode.error,
    dge_mode=dge_mode.unknown,
    engine=engine.unknown,
    name=None,
) -> None:
    """Copy between HBM and SBUF (or within either) on the DMA engines; casts go through fp32.
    The trigger engine and descriptor mode decide the queue (`dma_route`)."""
    tr, loc = active(), caller_loc()
    _name(name, loc)
    dst, src = _tile(dst, "dst", loc), _tile(src, "src", loc)
    mode, trig, queue = dma_route(dge_mode, engine, loc)
    _dma_operands(dst, src, "dma_copy", loc)
    _dma_checks(dst, src, mode, oob_mode, "dma_copy", loc)
    _same_shape(dst, src, "dma_copy", loc)
    shape = _dma_shape(dst, src, mode, queue, trig)
    regs = tr.regs
    cast = dst.dtype != src.dtype
    ints = dst.dtype in INT_DTYPES

    def run() -> None:
        data = _read(src, regs, "dma_copy")
        dst._tensor.make_writable()
        out = dst.data(regs)
        if not cast:
            out[...] = data
        elif ints:
            out[...] = data.astype(out.dtype)
        else:
            out[...] = numerics.round_to(numerics.to_fp32(data), out.dtype)
        mask = dst.mask(regs)
        if mask is not None:
            mask[...] = True

    _emit_dma(tr, loc, "dma_copy", trig, src, dst, shape, run)


def dma_transpose(
    dst: View,
    src: View,
    axes=None,
    dge_mode=dge_mode.unknown,
    oob_mode=oob_mode.error,
    name=None,
) -> None:
    """Transpose on the DMA engines: 2-D [A, B] -> [B, A] (axes (1, 0)); 3-D axes (2, 1, 0);
    4-D axes (3, 1, 2, 0). Two-byte dtypes only; bits are copied unchanged."""
    tr, loc = active(), caller_loc()
    _name(name, loc)
    dst, src = _tile(dst, "dst", loc), _tile(src, "src", loc)
    default_axes = {2: (1, 0), 3: (2, 1, 0), 4: (3, 1, 2, 0)}
    if src.ndim not in default_axes:
        raise ShapeError(f"dma_transpose takes a 2-, 3- or 4-D src, got {list(src.shape)}", loc)
    perm = default_axes[src.ndim] if axes is None else tuple(axes)
    if perm != default_axes[src.ndim]:
        raise ShapeError(
            f"dma_transpose of a {src.ndim}-D tile supports axes {default_axes[src.ndim]}, "
            f"not {perm}",
            loc,
        )
    mode_arg = _enum(dge_mode, _DgeMode, "dge_mode", loc)
    if mode_arg not in (_DgeMode.unknown, _DgeMode.hwdge):
        raise IllegalAccess(
            "dma_transpose runs on the hardware DGE transpose path: dge_mode must be unknown or "
            "hwdge (the indirect swdge form is not modelled)",
            loc,
        )
    mode, trig, queue = dma_route(_DgeMode.hwdge, _Engine.unknown, loc)
    _dma_operands(dst, src, "dma_transpose", loc)
    _dma_checks(dst, src, mode, oob_mode, "dma_transpose", loc)
    if src.dtype.itemsize != 2 or dst.dtype != src.dtype:
        raise DtypeError(
            f"dma_transpose moves 2-byte elements unchanged: src and dst must share a 2-byte "
            f"dtype (got {src.dtype} -> {dst.dtype})",
            loc,
        )
    moved = src._arr.transpose(perm)  # the source in destination order (geometry only)
    if dst.shape != moved.shape:
        raise ShapeError(
            f"dma_transpose dst must be {list(moved.shape)} (src {list(src.shape)} with axes "
            f"{perm}), got {list(dst.shape)}",
            loc,
        )
    if mode_arg is _DgeMode.hwdge and (src.shape[0] != 16 or src.shape[-1] % 128 != 0):
        raise ShapeError(
            "a hardware-DGE dma_transpose needs src.shape[0] == 16 and src.shape[-1] a multiple "
            f"of 128, got {list(src.shape)}",
            loc,
        )
    shape = _dma_shape(dst, src, mode, queue, trig, src_arr=moved)
    regs = tr.regs

    def run() -> None:
        data = _read(src, regs, "dma_transpose").transpose(perm)
        dst._tensor.make_writable()
        dst.data(regs)[...] = data
        mask = dst.mask(regs)
        if mask is not None:
            mask[...] = True

    _emit_dma(tr, loc, "dma_copy", trig, src, dst, shape, run)


def _emit_dma(
    tr: Tracer, loc: SourceLoc, op: str, trig: str, src: View, dst: View, shape: DmaShape, run
) -> None:
    reads = [region_of(src)] + [Region(r, 0, 1, 0, 4) for r in src.registers() + dst.registers()]
    tr.emit(
        Instr(
            op=op,
            engine=trig,
            core=tr.core,
            index=0,
            loc=loc,
            reads=tuple(reads),
            writes=(region_of(dst),),
            dma=shape,
            dynamic=src._dynamic or dst._dynamic,
            run=run,
        )
    )


def _dma_shape(
    dst: View, src: View, mode: str, queue: int, trigger: str, src_arr: np.ndarray | None = None
) -> DmaShape:
    """Cut a transfer into per-partition contiguous runs (descriptors), as DMA engines do.
    `src_arr` is the source as read in destination order when that differs (a DMA transpose)."""
    transpose = src_arr is not None
    src_order = src._arr if src_arr is None else src_arr
    chip = dst if dst.buffer == SBUF else src if src.buffer == SBUF else None
    if chip is not None:
        p0, parts, _ = partition_range(chip)
    else:
        p0, parts = 0, dst.shape[0] if dst.ndim > 1 else 1
    per_partition = dst._arr.size // parts
    first = 1 if dst.ndim > 1 else 0
    run = min(contiguous_run(dst._arr, first), contiguous_run(src_order, first), per_partition)
    run = math.gcd(run, per_partition) or 1
    itemsize = max(dst.dtype.itemsize, src.dtype.itemsize)
    hbm = (src._arr.size * src.dtype.itemsize if src.buffer == HBM else 0) + (
        dst._arr.size * dst.dtype.itemsize if dst.buffer == HBM else 0
    )
    return DmaShape(
        mode=mode,
        queue=queue,
        engine=trigger,
        p0=p0,
        partitions=parts,
        chunks_per_partition=per_partition // run,
        chunk_bytes=run * itemsize,
        total_bytes=parts * per_partition * itemsize,
        hbm_bytes=hbm,
        transpose=transpose,
    )


# ----------------------------------------------------------------------------- TensorE


def nc_matmul(
    dst: View,
    stationary: View,
    moving: View,
    is_stationary_onezero=False,
    is_moving_onezero=False,
    is_transpose=False,
    accumulate=None,
    tile_position=(),
    tile_size=(),
    perf_mode=matmul_perf_mode.none,
    name=None,
) -> None:
    """dst[M, N] (PSUM, fp32) = stationary[K, M].T @ moving[K, N]; K on partitions.
    `accumulate=False` overwrites; `True` adds into dst, which must hold a matmul result;
    `None` adds when dst holds a matmul result not yet read out (an open group), else overwrites."""
    tr, loc = active(), caller_loc()
    _name(name, loc)
    m = tr.machine
    for flag, what in (
        (is_stationary_onezero, "is_stationary_onezero"),
        (is_moving_onezero, "is_moving_onezero"),
        (is_transpose, "is_transpose"),
    ):
        if flag is not False:
            raise IllegalAccess(
                f"nc_matmul {what}=True is not modelled (use nisa.nc_transpose to transpose)", loc
            )
    if tuple(tile_position) or tuple(tile_size):
        raise IllegalAccess(
            "nc_matmul row/column tiling (tile_position, tile_size) is not modelled", loc
        )
    if _enum(perf_mode, _MatmulPerfMode, "perf_mode", loc) is not _MatmulPerfMode.none:
        raise IllegalAccess("nc_matmul double_row performance mode (FP8) is not modelled", loc)
    dst = _tile(dst, "dst", loc)
    st, mv = _tile(stationary, "stationary", loc), _tile(moving, "moving", loc)
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
        raise ShapeError(
            f"moving free size N={n} exceeds {m.matmul_max_moving} (one PSUM bank)", loc
        )
    if dst.shape != (mdim, n):
        raise ShapeError(f"matmul dst must be [{mdim}, {n}], got {list(dst.shape)}", loc)
    if dst.dtype != np.float32:
        raise DtypeError(f"matmul accumulates in fp32 PSUM; dst is {dst.dtype}", loc)
    if st.dtype != mv.dtype or st.dtype not in FLOAT_DTYPES:
        raise DtypeError(
            f"matmul inputs must share one float dtype, got {st.dtype} and {mv.dtype}", loc
        )
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
        res = numerics.matmul(
            _read(st, regs, "matmul stationary"), _read(mv, regs, "matmul moving")
        )
        out = dst.data(regs)
        if accumulate is True and not dst.mm_mask().all():
            raise IllegalAccess(
                "accumulate=True onto PSUM that does not hold a matmul result "
                "(undefined on hardware)"
            )
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
            op="matmul",
            engine="tensor",
            core=tr.core,
            index=0,
            loc=loc,
            reads=reads,
            writes=(region,),
            moving=n,
            stationary=mdim,
            contract=k,
            fp32_matmul=st.dtype == np.float32,
            accumulate=acc,
            psum_access=True,
            run=run,
        )
    )


def nc_transpose(dst: View, data: View, engine=engine.unknown, name=None) -> None:
    """dst[F, P] = data[P, F], bit for bit. TensorE (the default): SBUF -> PSUM up to 128x128;
    VectorE: up to 32x32 (hardware silently writes zeros beyond; the simulator refuses)."""
    tr, loc = active(), caller_loc()
    _name(name, loc)
    m = tr.machine
    eng = _choose(engine, ("tensor", "vector"), "tensor", "nc_transpose", loc)
    dst, src = _tile(dst, "dst", loc), _tile(data, "data", loc)
    if src.ndim != 2 or dst.ndim != 2 or dst.shape != src.shape[::-1]:
        raise ShapeError(
            f"transpose needs data [P, F] and dst [F, P]; got {list(src.shape)} -> "
            f"{list(dst.shape)}",
            loc,
        )
    p, f = src.shape
    if eng == "tensor":
        _on_chip(src, "transpose data", loc, (SBUF,))
        _on_chip(dst, "transpose dst", loc, (PSUM,))
        if p > m.matmul_max_contract or f > m.matmul_max_stationary:
            raise ShapeError(f"TensorE transpose is at most 128x128, got {p}x{f}", loc)
    else:
        _on_chip(src, "transpose data", loc)
        _on_chip(dst, "transpose dst", loc)
        lim = m.vector_transpose_max
        if p > lim or f > lim:
            raise ShapeError(
                f"VectorE transpose is limited to {lim}x{lim} (got {p}x{f}); hardware would "
                "silently write zeros beyond the block. Use nisa.engine.tensor for larger tiles",
                loc,
            )
    if dst.dtype != src.dtype and dst.dtype != np.float32:
        raise DtypeError(
            f"transpose copies bits: dst must be {src.dtype} (or float32), not {dst.dtype}", loc
        )
    regs = tr.regs
    same = dst.dtype == src.dtype

    def run() -> None:
        values = _read(src, regs, "transpose").T
        out = dst.data(regs)
        out[...] = values if same else numerics.to_fp32(values)
        dst.mask(regs)[...] = True
        if dst._tensor.matmul_written is not None:
            dst.mm_mask()[...] = eng == "tensor"

    tr.emit(
        Instr(
            op="transpose",
            engine=eng,
            core=tr.core,
            index=0,
            loc=loc,
            reads=(region_of(src),),
            writes=(region_of(dst),),
            moving=p,
            stationary=f,
            contract=p,
            elems=max(p, f),
            psum_access=dst.buffer == PSUM or src.buffer == PSUM,
            run=run,
        )
    )


# ----------------------------------------------------------------------------- ScalarE


def activation(
    dst: View,
    op,
    data: View,
    bias=None,
    scale=1.0,
    reduce_op=None,
    reduce_res=None,
    reduce_cmd=reduce_cmd.idle,
    name=None,
) -> None:
    """ScalarE: dst = op(data * scale + bias), in fp32, rounded to dst's dtype. `scale` and
    `bias` are numbers or [P, 1] tiles. With `reduce_cmd=reset_reduce`, `reduce_res` [P, 1]
    also receives the fp32 sum (`reduce_op=nl.add`) of the activated values along the free axes."""
    tr, loc = active(), caller_loc()
    _name(name, loc)
    cmd = _enum(reduce_cmd, _ReduceCmd, "reduce_cmd", loc)
    if cmd is _ReduceCmd.idle:
        if reduce_res is not None or reduce_op is not None:
            raise ShapeError(
                "activation: reduce_op/reduce_res need reduce_cmd=nisa.reduce_cmd.reset_reduce",
                loc,
            )
        _activate(tr, loc, dst, op, data, bias, scale, None, None)
        return
    if cmd is not _ReduceCmd.reset_reduce:
        raise IllegalAccess(
            f"activation: reduce_cmd={cmd.name} keeps state in ScalarE's accumulator registers "
            "across instructions, which is not modelled; use reset_reduce (or activation_reduce)",
            loc,
        )
    _activate(tr, loc, dst, op, data, bias, scale, reduce_op, reduce_res)


def activation_reduce(
    dst: View, op, data: View, reduce_op, reduce_res: View, bias=None, scale=1.0, name=None
) -> None:
    """ScalarE: `activation` plus the fp32 sum of the activated values of each partition into
    `reduce_res` [P, 1] (NKI: equivalent to activation with reduce_cmd=reset_reduce)."""
    tr, loc = active(), caller_loc()
    _name(name, loc)
    _activate(tr, loc, dst, op, data, bias, scale, reduce_op, reduce_res)


def _activate(tr: Tracer, loc: SourceLoc, dst, op, data, bias, scale, reduce_op, reduce_res):
    dst, data = _tile(dst, "dst", loc), _tile(data, "data", loc)
    _on_chip(dst, "activation dst", loc)
    _on_chip(data, "activation data", loc)
    _same_shape(dst, data, "activation", loc)
    _float(data, "activation data", loc)
    _float(dst, "activation dst", loc)
    fname = str(op)
    if fname not in numerics.ACTIVATIONS:
        raise ShapeError(
            f"unknown activation {op!r}; use one of {', '.join(sorted(numerics.ACTIVATIONS))}",
            loc,
        )
    fn = numerics.ACTIVATIONS[fname]
    sc = _operand(scale, "activation scale", loc, data.shape[0])
    bi = _operand(bias, "activation bias", loc, data.shape[0]) if bias is not None else None
    res = None
    if reduce_res is not None or reduce_op is not None:
        if str(reduce_op) != "add":
            raise ShapeError(
                f"ScalarE's reduction registers only sum: reduce_op must be nl.add, not {reduce_op!r}",
                loc,
            )
        res = _tile(reduce_res, "reduce_res", loc)
        _on_chip(res, "activation reduce_res", loc)
        _float(res, "activation reduce_res", loc)
        if res.shape[0] != data.shape[0] or free_size(res) != 1:
            raise ShapeError(f"reduce_res must be [{data.shape[0]}, 1], got {list(res.shape)}", loc)
    regs = tr.regs
    nd = data.ndim

    def run() -> None:
        x = numerics.to_fp32(_read(data, regs, "activation"))
        x = (x * _operand_value(sc, regs, nd, "activation scale")).astype(np.float32)
        if bi is not None:
            x = (x + _operand_value(bi, regs, nd, "activation bias")).astype(np.float32)
        y = fn(x)
        _store(dst, regs, y)
        if res is not None:
            flat = np.asarray(y, dtype=np.float32).reshape(y.shape[0], -1)
            total = np.cumsum(flat, axis=-1, dtype=np.float32)[:, -1]  # fp32, in index order
            _store(res, regs, total.reshape(res.shape))

    srcs = [data] + [v for v in (sc, bi) if isinstance(v, View)]
    dsts = [dst] + ([res] if res is not None else [])
    _compute(tr, "activation", "scalar", loc, srcs, dsts, run, perf=PERF_NONE, n_inputs=1)


# ----------------------------------------------------------------------------- VectorE / GpSimd


def tensor_tensor(
    dst: View, data1: View, data2: View, op, engine=engine.unknown, name=None
) -> None:
    """dst = data1 <op> data2 elementwise in fp32 (add, subtract, multiply, divide, maximum,
    minimum). VectorE by default; GpSimd on request."""
    tr, loc = active(), caller_loc()
    _name(name, loc)
    eng = _choose(engine, ("vector", "gpsimd"), "vector", "tensor_tensor", loc)
    dst, a, b = _tile(dst, "dst", loc), _tile(data1, "data1", loc), _tile(data2, "data2", loc)
    for v, what in ((dst, "dst"), (a, "data1"), (b, "data2")):
        _on_chip(v, f"tensor_tensor {what}", loc)
    _same_shape(a, b, "tensor_tensor", loc)
    _same_shape(dst, a, "tensor_tensor", loc)
    if a.buffer == PSUM and b.buffer == PSUM:
        raise IllegalAccess("tensor_tensor cannot read both inputs from PSUM", loc)
    _engine_memory(eng, [dst, a, b], "tensor_tensor", loc)
    fn = _alu(op, loc)
    regs = tr.regs

    def run() -> None:
        x = numerics.to_fp32(_read(a, regs, "tensor_tensor data1"))
        y = numerics.to_fp32(_read(b, regs, "tensor_tensor data2"))
        with np.errstate(all="ignore"):
            _store(dst, regs, fn(x, y))

    _compute(tr, "tensor_tensor", eng, loc, [a, b], [dst], run)


def tensor_scalar(
    dst: View,
    data: View,
    op0,
    operand0,
    reverse0=False,
    op1=None,
    operand1=None,
    reverse1=False,
    engine=engine.unknown,
    name=None,
) -> None:
    """dst = (data <op0> operand0) <op1> operand1, in fp32; operands are numbers or [P, 1]
    tiles. `reverse0`/`reverse1` swap an operator's inputs (operand0 <op0> data)."""
    tr, loc = active(), caller_loc()
    _name(name, loc)
    eng = _choose(engine, ("vector", "scalar", "gpsimd"), "vector", "tensor_scalar", loc)
    dst, data = _tile(dst, "dst", loc), _tile(data, "data", loc)
    _on_chip(dst, "tensor_scalar dst", loc)
    _on_chip(data, "tensor_scalar data", loc)
    _same_shape(dst, data, "tensor_scalar", loc)
    f0 = _alu(op0, loc)
    o0 = _operand(operand0, "operand0", loc, data.shape[0])
    f1 = _alu(op1, loc) if op1 is not None else None
    o1 = _operand(operand1, "operand1", loc, data.shape[0]) if op1 is not None else None
    if op1 is None and operand1 is not None:
        raise ShapeError("tensor_scalar: operand1 given without op1", loc)
    _engine_memory(eng, [dst, data, o0, o1], "tensor_scalar", loc)
    r0, r1 = bool(reverse0), bool(reverse1)
    regs = tr.regs
    nd = data.ndim

    def run() -> None:
        x = numerics.to_fp32(_read(data, regs, "tensor_scalar"))
        with np.errstate(all="ignore"):
            v0 = _operand_value(o0, regs, nd, "operand0")
            x = (f0(v0, x) if r0 else f0(x, v0)).astype(np.float32)
            if f1 is not None:
                v1 = _operand_value(o1, regs, nd, "operand1")
                x = (f1(v1, x) if r1 else f1(x, v1)).astype(np.float32)
        _store(dst, regs, x)

    srcs = [data] + [v for v in (o0, o1) if isinstance(v, View)]
    _compute(tr, "tensor_scalar", eng, loc, srcs, [dst], run, n_inputs=1)


def tensor_copy(dst: View, src: View, engine=engine.unknown, name=None) -> None:
    """Copy a tile (e.g. a PSUM read-out to SBUF); same dtype copies bits, otherwise casts via
    fp32. VectorE by default; ScalarE or GpSimd on request."""
    tr, loc = active(), caller_loc()
    _name(name, loc)
    eng = _choose(engine, ("vector", "scalar", "gpsimd"), "vector", "tensor_copy", loc)
    dst, src = _tile(dst, "dst", loc), _tile(src, "src", loc)
    _on_chip(dst, "tensor_copy dst", loc)
    _on_chip(src, "tensor_copy src", loc)
    _same_shape(dst, src, "tensor_copy", loc)
    if (dst.dtype in INT_DTYPES) != (src.dtype in INT_DTYPES):
        raise DtypeError(f"tensor_copy cannot convert between {src.dtype} and {dst.dtype}", loc)
    _engine_memory(eng, [dst, src], "tensor_copy", loc)
    regs = tr.regs
    same = dst.dtype == src.dtype

    def run() -> None:
        values = _read(src, regs, "tensor_copy")
        if same:
            dst.data(regs)[...] = values
            _mark_written(dst, regs)
        else:
            _store(dst, regs, numerics.to_fp32(values))

    _compute(tr, "tensor_copy", eng, loc, [src], [dst], run)


def tensor_reduce(dst: View, op, data: View, axis, negate=False, keepdims=False, name=None) -> None:
    """VectorE: reduce the last free axes with add/maximum/minimum (sums accumulate in fp32 in
    index order); `negate` multiplies the result by -1; `keepdims` keeps reduced axes as 1."""
    tr, loc = active(), caller_loc()
    _name(name, loc)
    dst, data = _tile(dst, "dst", loc), _tile(data, "data", loc)
    _on_chip(dst, "tensor_reduce dst", loc)
    _on_chip(data, "tensor_reduce data", loc)
    fname = str(op)
    if fname not in ("add", "maximum", "minimum"):
        raise ShapeError(f"tensor_reduce supports add, maximum, minimum; got {op!r}", loc)
    raw = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = tuple(sorted(int(a) % data.ndim for a in raw))
    if not axes or 0 in axes:
        raise ShapeError(
            "tensor_reduce reduces free axes only; the partition axis (0) cannot be reduced", loc
        )
    if axes != tuple(range(data.ndim - len(axes), data.ndim)):
        raise ShapeError(
            f"tensor_reduce axes must be the last contiguous free axes (ending at axis "
            f"{data.ndim - 1}), got {list(raw)}",
            loc,
        )
    keep = bool(keepdims)
    shape = data.shape
    expect = (
        tuple(1 if i in axes else s for i, s in enumerate(shape))
        if keep
        else tuple(s for i, s in enumerate(shape) if i not in axes)
    )
    if dst.shape != expect:
        hint = " (pass keepdims=True for a [P, 1] result)" if not keep else ""
        raise ShapeError(
            f"tensor_reduce dst must be {list(expect)}, got {list(dst.shape)}{hint}", loc
        )
    sign = np.float32(-1.0 if negate else 1.0)
    regs = tr.regs

    def run() -> None:
        x = numerics.to_fp32(_read(data, regs, "tensor_reduce"))
        flat = x.reshape(*x.shape[: x.ndim - len(axes)], -1)
        if fname == "add":
            res = np.cumsum(flat, axis=-1, dtype=np.float32)[..., -1]  # sequential fp32
        elif fname == "maximum":
            res = flat.max(axis=-1)
        else:
            res = flat.min(axis=-1)
        _store(dst, regs, (res * sign).reshape(dst.shape))

    _compute(tr, "tensor_reduce", "vector", loc, [data], [dst], run)


def memset(dst: View, value, engine=engine.unknown, name=None) -> None:
    """Fill a tile with a constant (rounded to its dtype) on VectorE (default) or GpSimd."""
    tr, loc = active(), caller_loc()
    _name(name, loc)
    eng = _choose(engine, ("vector", "gpsimd"), "vector", "memset", loc)
    dst = _tile(dst, "dst", loc)
    _on_chip(dst, "memset dst", loc)
    _engine_memory(eng, [dst], "memset", loc)
    val = _operand(value, "memset value", loc)
    if isinstance(val, View):
        raise ShapeError("memset takes a number", loc)
    regs = tr.regs

    def run() -> None:
        _store(dst, regs, np.full(dst.shape, val, dtype=np.float32))

    _compute(tr, "memset", eng, loc, [], [dst], run, n_inputs=1)


def max8(dst: View, src: View, name=None) -> None:
    """VectorE: the 8 largest values of each partition, in descending order, into dst [P, 8]."""
    tr, loc = active(), caller_loc()
    _name(name, loc)
    dv, src = _tile(dst, "dst", loc), _tile(src, "src", loc)
    _on_chip(dv, "max8 dst", loc)
    _on_chip(src, "max8 src", loc)
    _float(src, "max8 src", loc)
    _float(dv, "max8 dst", loc)
    p, n = src.shape[0], free_size(src)
    if not 8 <= n <= 16384:
        raise ShapeError(f"max8 reads 8..16384 elements per partition, got {n}", loc)
    if dv.shape != (p, 8):
        raise ShapeError(f"max8 dst must be [{p}, 8], got {list(dv.shape)}", loc)
    regs = tr.regs

    def run() -> None:
        x = numerics.to_fp32(_read(src, regs, "max8")).reshape(p, -1)
        _store(dv, regs, -np.sort(-x, axis=1, kind="stable")[:, :8])

    instr = _compute(tr, "max8", "vector", loc, [src], [dv], run)
    instr.elems = n


def nc_find_index8(dst: View, data: View, vals: View, name=None) -> None:
    """VectorE: for each of the 8 values per partition in `vals`, the index of its first
    occurrence in `data` (uint32 dst [P, 8]); a value absent from the data gives 0xFFFFFFFF.
    After `max8`, tied values therefore share the lower index."""
    tr, loc = active(), caller_loc()
    _name(name, loc)
    di, data, vals = _tile(dst, "dst", loc), _tile(data, "data", loc), _tile(vals, "vals", loc)
    for v, what in ((di, "dst"), (data, "data"), (vals, "vals")):
        _on_chip(v, f"nc_find_index8 {what}", loc)
    _float(data, "nc_find_index8 data", loc)
    _float(vals, "nc_find_index8 vals", loc)
    p, n = data.shape[0], free_size(data)
    if not 8 <= n <= 16384:
        raise ShapeError(f"nc_find_index8 reads 8..16384 elements per partition, got {n}", loc)
    if vals.shape[0] != p or free_size(vals) != 8:
        raise ShapeError(f"nc_find_index8 vals must hold 8 values per partition of {p}", loc)
    if di.shape != (p, 8):
        raise ShapeError(f"nc_find_index8 dst must be [{p}, 8], got {list(di.shape)}", loc)
    if di.dtype != np.uint32:
        raise DtypeError(f"nc_find_index8 writes uint32 indices; dst is {di.dtype}", loc)
    regs = tr.regs

    def run() -> None:
        x = numerics.to_fp32(_read(data, regs, "nc_find_index8 data")).reshape(p, 1, -1)
        v = numerics.to_fp32(_read(vals, regs, "nc_find_index8 vals")).reshape(p, 8, 1)
        hit = x == v  # [P, 8, N]
        first = np.argmax(hit, axis=-1).astype(np.uint32)
        di.data(regs)[...] = np.where(hit.any(axis=-1), first, np.uint32(0xFFFFFFFF))
        _mark_written(di, regs)

    instr = _compute(tr, "nc_find_index8", "vector", loc, [data, vals], [di], run)
    instr.elems = n


def nc_match_replace8(dst: View, data: View, vals: View, imm, dst_idx=None, name=None) -> None:
    """VectorE: dst = data with the first occurrence of each of the 8 values per partition of
    `vals` replaced by `imm`, matched last to first (vals[7] .. vals[0]) as NKI documents, so
    repeated values take distinct positions, the earliest going to the last repeat. `dst_idx`
    (uint32 [P, 8]) gets the positions; a value absent from the data gives 0xFFFFFFFF."""
    tr, loc = active(), caller_loc()
    _name(name, loc)
    dv, data, vals = _tile(dst, "dst", loc), _tile(data, "data", loc), _tile(vals, "vals", loc)
    di = None if dst_idx is None else _tile(dst_idx, "dst_idx", loc)
    for v, what in ((dv, "dst"), (data, "data"), (vals, "vals"), (di, "dst_idx")):
        if v is not None:
            _on_chip(v, f"nc_match_replace8 {what}", loc)
    for v, what in ((dv, "dst"), (data, "data"), (vals, "vals")):
        _float(v, f"nc_match_replace8 {what}", loc)
    p, n = data.shape[0], free_size(data)
    if n > 16384:
        raise ShapeError(
            f"nc_match_replace8 reads at most 16384 elements per partition, got {n}", loc
        )
    _same_shape(dv, data, "nc_match_replace8", loc)
    if vals.shape[0] != p or free_size(vals) != 8:
        raise ShapeError(f"nc_match_replace8 vals must hold 8 values per partition of {p}", loc)
    if di is not None and di.shape != (p, 8):
        raise ShapeError(f"nc_match_replace8 dst_idx must be [{p}, 8], got {list(di.shape)}", loc)
    if di is not None and di.dtype != np.uint32:
        raise DtypeError(f"nc_match_replace8 writes uint32 indices; dst_idx is {di.dtype}", loc)
    if isinstance(imm, View) or not isinstance(imm, (int, float)) or isinstance(imm, bool):
        raise ShapeError("nc_match_replace8 imm must be a Python number", loc)
    fill = np.float32(imm)
    regs = tr.regs

    def run() -> None:
        x = numerics.to_fp32(_read(data, regs, "nc_match_replace8 data")).reshape(p, -1).copy()
        v = numerics.to_fp32(_read(vals, regs, "nc_match_replace8 vals")).reshape(p, 8)
        idx = np.full((p, 8), 0xFFFFFFFF, dtype=np.uint32)
        for i in range(7, -1, -1):  # NKI: duplicate values pair with positions last slot first
            hit = x == v[:, i : i + 1]
            rows = np.flatnonzero(hit.any(axis=1))
            first = np.argmax(hit[rows], axis=1)
            idx[rows, i] = first
            x[rows, first] = fill
        _store(dv, regs, x.reshape(dv.shape))
        if di is not None:
            di.data(regs)[...] = idx
            _mark_written(di, regs)

    outs = [dv] if di is None else [dv, di]
    instr = _compute(tr, "nc_match_replace8", "vector", loc, [data, vals], outs, run)
    instr.elems = n


# ----------------------------------------------------------------------------- registers


def register_alloc(x=None) -> RegExpr:
    """A fresh engine register of this core, optionally set to the integer `x`; it holds values
    known only on the device and can index HBM in a DMA."""
    tr, loc = active(), caller_loc()
    if x is not None and (isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer))):
        raise ShapeError(f"register_alloc takes an integer initial value or None, not {x!r}", loc)
    reg = RegExpr(tr.new_register(), core=tr.core)
    if x is not None:
        regs, value = tr.regs, int(x)

        def run() -> None:
            regs[reg.reg] = value

        tr.emit(
            Instr(
                op="register_move",
                engine="sync",
                core=tr.core,
                index=0,
                loc=loc,
                writes=(Region(reg.reg, 0, 1, 0, 4),),
                elems=1,
                run=run,
            )
        )
    return reg


def register_load(dst: RegExpr, src: View) -> None:
    """Load one integer element of an SBUF tile into the register `dst` (from
    `register_alloc`). The value stays on the device: Python never sees it."""
    tr, loc = active(), caller_loc()
    if not isinstance(dst, RegExpr) or dst.scale != 1 or dst.offset != 0:
        raise ShapeError("register_load dst must be a register from nisa.register_alloc()", loc)
    if dst.core != tr.core:
        raise IllegalAccess(
            f"register_load: the register belongs to core {dst.core}; core {tr.core} cannot "
            "write it",
            loc,
        )
    src = _tile(src, "src", loc)
    if src.buffer != SBUF or src._dynamic:
        raise IllegalAccess("register_load reads an SBUF tile", loc)
    _own(src, "register_load src", loc)
    if src._arr.size != 1:
        raise ShapeError(
            f"register_load reads exactly one element, got a tile of {list(src.shape)}", loc
        )
    if src.dtype not in INT_DTYPES:
        raise DtypeError(f"register_load reads an int32/uint32 element, not {src.dtype}", loc)
    regs = tr.regs
    reg = dst.reg

    def run() -> None:
        regs[reg] = int(_read(src, regs, "register_load").reshape(-1)[0])

    tr.emit(
        Instr(
            op="register_load",
            engine="sync",
            core=tr.core,
            index=0,
            loc=loc,
            reads=(region_of(src),),
            writes=(Region(reg, 0, 1, 0, 4),),
            elems=1,
            run=run,
        )
    )


# ----------------------------------------------------------------------------- two cores


def sendrecv(
    src: View,
    dst: View,
    send_to_rank,
    recv_from_rank,
    pipe_id,
    dma_engine=dma_engine.dma,
    name=None,
) -> None:
    """Send `src` to the other physical core, which receives it in its `dst` (both cores call
    it at the same point). Modelled path: `dma_engine=nisa.dma_engine.gpsimd_dma`, at most 512
    bytes per partition."""
    tr, loc = active(), caller_loc()
    _name(name, loc)
    if tr.grid != 2:
        raise IllegalAccess("sendrecv needs the two-core grid (grid=2)", loc)
    if _enum(dma_engine, _DmaEngine, "dma_engine", loc) is not _DmaEngine.gpsimd_dma:
        raise IllegalAccess(
            "sendrecv over the shared DMA engines is not modelled; pass "
            "dma_engine=nisa.dma_engine.gpsimd_dma (GpSimd's SBUF-to-SBUF path)",
            loc,
        )
    other = 1 - tr.core
    for rank, what in ((send_to_rank, "send_to_rank"), (recv_from_rank, "recv_from_rank")):
        if isinstance(rank, (bool, np.bool_)) or not isinstance(rank, (int, np.integer)):
            raise ShapeError(f"sendrecv {what} must be an integer rank, not {rank!r}", loc)
        if int(rank) != other:
            raise IllegalAccess(
                f"sendrecv {what}={int(rank)}: core {tr.core} can only exchange with core {other}",
                loc,
            )
    if isinstance(pipe_id, (bool, np.bool_)) or not isinstance(pipe_id, (int, np.integer)):
        raise ShapeError(f"sendrecv pipe_id must be an integer, not {pipe_id!r}", loc)
    dst, src = _tile(dst, "dst", loc), _tile(src, "src", loc)
    _on_chip(dst, "sendrecv dst", loc, (SBUF,))
    _on_chip(src, "sendrecv src", loc, (SBUF,))
    _same_shape(dst, src, "sendrecv", loc)
    if dst.dtype != src.dtype:
        raise DtypeError(f"sendrecv copies bits: dtypes differ ({src.dtype} vs {dst.dtype})", loc)
    per_partition = free_size(src) * src.dtype.itemsize
    if per_partition > tr.machine.sendrecv_max_partition_bytes:
        raise ResourceOverflow(
            f"sendrecv moves {per_partition} B per partition; the GpSimd-DMA path carries at "
            f"most {tr.machine.sendrecv_max_partition_bytes}",
            loc,
        )
    instr = Instr(
        op="sendrecv",
        engine="gpsimd",
        core=tr.core,
        index=0,
        loc=loc,
        reads=(region_of(src),),
        writes=(region_of(dst),),
        xfer_bytes=src._arr.size * src.dtype.itemsize,
        elems=free_size(src),
    )
    instr.run = _Exchange(src, dst, tr.regs)  # joined with the other core's half by the runtime
    tr.emit(instr)


def core_barrier(data: View, cores, engine=engine.gpsimd, name=None) -> None:
    """Wait until both physical cores reach this point, so that what each wrote to the shared
    HBM tensor `data` is visible to the other (semaphores through HBM)."""
    tr, loc = active(), caller_loc()
    _name(name, loc)
    eng = _choose(engine, ("sync", "scalar", "vector", "gpsimd"), "gpsimd", "core_barrier", loc)
    data = _tile(data, "data", loc)
    if data.buffer != HBM:
        raise IllegalAccess(
            "core_barrier data must be the shared HBM tensor the cores exchange", loc
        )
    try:
        pair = tuple(int(c) for c in cores)
    except TypeError:
        raise ShapeError(f"core_barrier cores must be (0, 1), not {cores!r}", loc) from None
    if pair != (0, 1):
        raise IllegalAccess(f"core_barrier supports cores=(0, 1) only, not {cores!r}", loc)
    tr.emit(Instr(op="barrier", engine=eng, core=tr.core, index=0, loc=loc, run=None))


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
            f"sendrecv halves do not match: core 0 sends {list(a.src.shape)} {a.src.dtype} into "
            f"core 1's {list(b.dst.shape)} {b.dst.dtype}, core 1 sends {list(b.src.shape)} into "
            f"core 0's {list(a.dst.shape)}"
        )
    data_a = _read(a.src, a.regs, "sendrecv").copy()
    data_b = _read(b.src, b.regs, "sendrecv").copy()
    for half, values in ((a, data_b), (b, data_a)):
        half.dst.data(half.regs)[...] = values
        half.dst.mask(half.regs)[...] = True


# Instructions first, then NKI's configuration enums (classes: not wrapped as instructions).
INSTRUCTIONS = (
    "dma_copy",
    "dma_transpose",
    "nc_matmul",
    "nc_transpose",
    "activation",
    "activation_reduce",
    "tensor_tensor",
    "tensor_scalar",
    "tensor_copy",
    "tensor_reduce",
    "memset",
    "max8",
    "nc_find_index8",
    "nc_match_replace8",
    "register_alloc",
    "register_load",
    "sendrecv",
    "core_barrier",
)
ENUMS = ("engine", "dge_mode", "oob_mode", "reduce_cmd", "matmul_perf_mode", "dma_engine")
__all__ = [*INSTRUCTIONS, *ENUMS]
