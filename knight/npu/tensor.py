"""Tensors and views: where kernel data lives (shared HBM, SBUF, PSUM) and how it is addressed.

A `Tensor` is one allocation with its backing NumPy storage. A `View` is what a kernel holds:
a tensor plus the indexing steps that select part of it. Views are opaque to Python: a kernel
can pass them to instructions and slice them, but never read their numbers at trace time, so
control flow cannot depend on device values (`host_sync`).

On-chip tensors (SBUF, PSUM) have the partition axis first; indexing it with an integer keeps a
one-partition axis instead of dropping it, because every on-chip operand has a partition axis.
Indexing is bounds-checked (NumPy would silently clip a slice): out-of-range is `illegal_access`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from knight.npu.access import address, region_at
from knight.npu.errors import HostSync, IllegalAccess, ShapeError, SourceLoc
from knight.npu.program import Region

HBM, SBUF, PSUM = "hbm", "sbuf", "psum"


@dataclass(eq=False)
class Tensor:
    """One allocation: its buffer, shape, dtype, storage, and which elements were ever written."""

    id: int
    name: str
    buffer: str
    shape: tuple[int, ...]
    dtype: np.dtype
    data: np.ndarray
    written: np.ndarray | None  # None: fully initialised (kernel inputs)
    core: int | None = None  # None for shared HBM
    base: int = 0  # byte address of the allocation within each partition (on-chip)
    loc: SourceLoc | None = None
    matmul_written: np.ndarray | None = field(
        default=None, repr=False
    )  # PSUM: holds a matmul result
    group_open: np.ndarray | None = field(default=None, repr=False)  # PSUM: ... not yet read out
    copy_on_write: bool = False  # an input still sharing the caller's array
    _address: tuple[np.ndarray, int] | None = field(default=None, init=False, repr=False)

    def make_writable(self) -> None:
        """Give an input its own copy before its first write (the caller's array stays intact)."""
        if self.copy_on_write:
            self.data = np.array(self.data, copy=True)
            self.copy_on_write = False

    @property
    def on_chip(self) -> bool:
        return self.buffer != HBM

    def data_address(self) -> int:
        """The address of the storage's first byte (read again when the storage is replaced)."""
        if self._address is None or self._address[0] is not self.data:
            self._address = (self.data, address(self.data))
        return self._address[1]


@dataclass(frozen=True, slots=True)
class RegExpr:
    """An integer held in an engine register, scaled and offset: `scale * reg + offset`.

    Registers carry values known only on the device (an expert id read from a tile), so Python
    cannot see them; they can only index HBM in a DMA.
    """

    reg: int  # register id (also its pseudo-tensor id for dependency tracking)
    scale: int = 1
    offset: int = 0
    core: int = 0  # the physical core whose engine holds the register

    def __add__(self, other: int) -> RegExpr:
        return RegExpr(self.reg, self.scale, self.offset + _host_int(other), self.core)

    __radd__ = __add__

    def __sub__(self, other: int) -> RegExpr:
        return RegExpr(self.reg, self.scale, self.offset - _host_int(other), self.core)

    def __mul__(self, other: int) -> RegExpr:
        k = _host_int(other)
        return RegExpr(self.reg, self.scale * k, self.offset * k, self.core)

    __rmul__ = __mul__

    def value(self, regs: dict[int, int]) -> int:
        return self.scale * regs[self.reg] + self.offset

    def __bool__(self) -> bool:
        raise HostSync("a register value is only known on the device; Python cannot branch on it")

    def __int__(self) -> int:
        raise HostSync("a register value is only known on the device; Python cannot read it")

    __index__ = __int__

    def __eq__(self, other: object) -> bool:  # type: ignore[override]
        raise HostSync("a register value is only known on the device; Python cannot compare it")

    __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __eq__  # type: ignore[assignment]
    __hash__ = object.__hash__


def _host_int(x: object) -> int:
    if isinstance(x, RegExpr):
        raise ShapeError("registers combine only with Python integers (scale and offset)")
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise ShapeError(f"register arithmetic takes integers, not {type(x).__name__}")
    return int(x)


def ds(start: int | RegExpr, size: int) -> slice:
    """A dynamic-slice helper as in NKI: `ds(i, n)` is `i:i+n` (`start` may not be a register)."""
    if isinstance(start, RegExpr):
        raise ShapeError(
            "ds() with a register start is not supported; index the dimension with the register"
        )
    return slice(start, start + size)


class View:
    """A window onto a tensor: the tensor plus the indexing steps that select it."""

    __slots__ = ("_tensor", "_steps", "_arr", "_dynamic", "_mask", "_offset")

    def __init__(
        self,
        tensor: Tensor,
        steps: tuple = (),
        arr: np.ndarray | None = None,
        dynamic: bool = False,
    ):
        self._tensor = tensor
        self._steps = steps  # tuple of ("index", key) / ("reshape", shape); keys may hold RegExpr
        self._arr = tensor.data if arr is None else arr  # the data (static) or a template (dynamic)
        self._dynamic = dynamic
        self._mask = None
        self._offset: int | None = None  # byte offset into the tensor's storage, once computed

    # --- shape information is static and free to read
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._arr.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._tensor.dtype

    @property
    def buffer(self) -> str:
        return self._tensor.buffer

    @property
    def ndim(self) -> int:
        return self._arr.ndim

    def __len__(self) -> int:
        return self._arr.shape[0]

    def __repr__(self) -> str:
        return f"<{self._tensor.buffer} view {self._tensor.name}{list(self.shape)} {self.dtype}>"

    # --- indexing
    def __getitem__(self, key) -> View:
        key = key if isinstance(key, tuple) else (key,)
        norm, dynamic = _normalise_key(key, self._arr.shape, self._tensor.on_chip)
        template_key = tuple(0 if isinstance(k, RegExpr) else k for k in norm)
        arr = self._arr[template_key]
        return View(self._tensor, self._steps + (("index", norm),), arr, self._dynamic or dynamic)

    def reshape(self, *shape) -> View:
        shape = (
            tuple(shape[0])
            if len(shape) == 1 and isinstance(shape[0], (tuple, list))
            else tuple(shape)
        )
        if self._tensor.on_chip and (not shape or shape[0] != self._arr.shape[0]):
            raise ShapeError(
                f"reshape must keep the partition axis ({self._arr.shape[0]}); got {shape}"
            )
        arr = _reshape_no_copy(self._arr, shape)
        return View(self._tensor, self._steps + (("reshape", shape),), arr, self._dynamic)

    def permute(self, *axes) -> View:
        """Reorder axes (NumPy `transpose`); on-chip views keep the partition axis first."""
        axes = (
            tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else tuple(axes)
        )
        if sorted(axes) != list(range(self.ndim)):
            raise ShapeError(f"permute needs a permutation of 0..{self.ndim - 1}, got {axes}")
        if self._tensor.on_chip and axes[0] != 0:
            raise ShapeError("permute must keep the partition axis of an on-chip view first")
        return View(
            self._tensor,
            self._steps + (("permute", axes),),
            self._arr.transpose(axes),
            self._dynamic,
        )

    def broadcast_to(self, *shape) -> View:
        """Repeat an HBM view along new or unit axes (a DMA source only: it cannot be written)."""
        shape = (
            tuple(shape[0])
            if len(shape) == 1 and isinstance(shape[0], (tuple, list))
            else tuple(shape)
        )
        if self._tensor.on_chip:
            raise ShapeError("broadcast_to is for HBM views used as a DMA source")
        try:
            arr = np.broadcast_to(self._arr, shape)
        except ValueError:
            raise ShapeError(f"cannot broadcast {list(self.shape)} to {list(shape)}") from None
        return View(self._tensor, self._steps + (("broadcast", shape),), arr, self._dynamic)

    @property
    def is_broadcast(self) -> bool:
        return any(
            st == 0 and n > 1 for st, n in zip(self._arr.strides, self._arr.shape, strict=True)
        )

    # --- runtime resolution (numerics only)
    def data(self, regs: dict[int, int]) -> np.ndarray:
        if not self._dynamic and self._tensor.on_chip:
            return self._arr
        return self._apply(self._tensor.data, regs)  # HBM storage may be swapped by copy-on-write

    def mask(self, regs: dict[int, int]) -> np.ndarray | None:
        written = self._tensor.written
        if written is None:
            return None
        if not self._dynamic:
            if self._mask is None:
                self._mask = self._apply(written, regs)
            return self._mask
        return self._apply(written, regs)

    def mm_mask(self) -> np.ndarray:
        return self._apply(self._tensor.matmul_written, {})

    def group_mask(self) -> np.ndarray:
        return self._apply(self._tensor.group_open, {})

    def _apply(self, base: np.ndarray, regs: dict[int, int]) -> np.ndarray:
        out = base
        for kind, arg in self._steps:
            if kind == "index":
                out = out[tuple(_resolve(k, regs, out.shape, i) for i, k in enumerate(arg))]
            elif kind == "reshape":
                out = out.reshape(arg)
            elif kind == "permute":
                out = out.transpose(arg)
            else:
                out = np.broadcast_to(out, arg)
        return out

    def registers(self) -> list[int]:
        regs = []
        for kind, arg in self._steps:
            if kind == "index":
                regs.extend(k.reg for k in arg if isinstance(k, RegExpr))
        return regs

    # --- opacity: device values never reach Python
    def __bool__(self) -> bool:
        raise HostSync("a tile's values are only known on the device; Python cannot branch on them")

    def __int__(self) -> int:
        raise HostSync("a tile's values are only known on the device; Python cannot read them")

    __float__ = __int__
    __index__ = __int__

    def __array__(self, *args, **kwargs):
        raise HostSync("a tile's values are only known on the device; NumPy cannot read them")

    def __iter__(self):
        raise HostSync("iterating a tile would read device values; slice it instead")

    def __eq__(self, other: object) -> bool:  # type: ignore[override]
        raise HostSync("comparing tiles would read device values; use an instruction")

    __hash__ = object.__hash__

    def _no_arith(self, *_):
        raise HostSync(
            "arithmetic on tiles does not run on the host; issue an instruction "
            "(nisa.tensor_tensor, nisa.tensor_scalar, nisa.activation)"
        )

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _no_arith
    __truediv__ = __rtruediv__ = __neg__ = __pos__ = __lt__ = __le__ = __gt__ = __ge__ = __ne__ = (
        _no_arith
    )
    __matmul__ = __rmatmul__ = __pow__ = __rpow__ = __floordiv__ = __rfloordiv__ = _no_arith
    __mod__ = __rmod__ = __abs__ = __invert__ = __and__ = __or__ = __xor__ = _no_arith


def _normalise_key(key: tuple, shape: tuple[int, ...], on_chip: bool) -> tuple[tuple, bool]:
    """Bounds-check an index and make it explicit (no Ellipsis, one entry per consumed axis)."""
    n_ell = 0
    for k in key:
        if k is None:
            raise ShapeError("newaxis is not supported in tile indexing")
        if k is Ellipsis:
            n_ell += 1
    if n_ell > 1:
        raise ShapeError("at most one ... in an index")
    if n_ell:
        i = next(j for j, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1 :]
    if len(key) > len(shape):
        raise IllegalAccess(f"too many indices ({len(key)}) for a view of rank {len(shape)}")
    out: list = []
    dynamic = False
    for axis, (k, size) in enumerate(zip(key, shape, strict=False)):
        if isinstance(k, RegExpr):
            if on_chip:
                raise IllegalAccess("register (dynamic) indexing is only allowed on HBM tensors")
            out.append(k)
            dynamic = True
        elif isinstance(k, slice):
            out.append(_check_slice(k, size, axis))
        elif isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
            i = int(k)
            if i < -size or i >= size:
                raise IllegalAccess(f"index {i} is out of bounds for axis {axis} of size {size}")
            i %= size
            out.append(slice(i, i + 1) if (on_chip and axis == 0) else i)
        elif isinstance(k, View):
            raise HostSync("a tile cannot index another tile on the host; load it into a register")
        else:
            raise ShapeError(f"unsupported index {k!r} on axis {axis}")
    return tuple(out), dynamic


def _check_slice(s: slice, size: int, axis: int) -> slice:
    for part in (s.start, s.stop, s.step):
        if isinstance(part, RegExpr):
            raise ShapeError("a register cannot be a slice bound; index the axis with the register")
        if isinstance(part, View):
            raise HostSync("a tile cannot be a slice bound on the host")
    step = 1 if s.step is None else int(s.step)
    if step <= 0:
        raise ShapeError(f"slice step must be positive (axis {axis})")
    start = 0 if s.start is None else int(s.start)
    stop = size if s.stop is None else int(s.stop)
    if start < 0:
        start += size
    if stop < 0:
        stop += size
    if not (0 <= start <= size) or not (0 <= stop <= size):
        raise IllegalAccess(
            f"slice {s.start}:{s.stop} is out of bounds for axis {axis} of size {size}"
        )
    if stop <= start:
        raise ShapeError(f"empty slice {s.start}:{s.stop} on axis {axis}")
    return slice(start, stop, step)


def _resolve(k, regs: dict[int, int], shape: tuple[int, ...], axis: int):
    if not isinstance(k, RegExpr):
        return k
    v = k.value(regs)
    if not 0 <= v < shape[axis]:
        raise IllegalAccess(
            f"register index {v} is out of bounds for axis {axis} of size {shape[axis]}"
        )
    return v


def _reshape_no_copy(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if int(np.prod(shape, dtype=np.int64)) != arr.size:
        raise ShapeError(f"cannot reshape {tuple(arr.shape)} into {shape}")
    out = arr.view()
    try:
        out.shape = shape
    except AttributeError:
        raise ShapeError(
            f"cannot reshape a non-contiguous view {tuple(arr.shape)} into {shape} without a copy"
        ) from None
    return out


# --- geometry for the timing model


def region_of(view: View) -> Region:
    """The exact memory a view touches (partition set x byte intervals, `knight.npu.access`)."""
    t = view._tensor
    if view._dynamic:
        pstride = t.data.strides[0] if t.on_chip else 0
        per = pstride if t.on_chip else t.data.nbytes
        return Region(t.id, 0, t.shape[0] if t.on_chip else 1, t.base, t.base + per)
    return region_at(t.id, view._arr, byte_offset(view), t.data.strides[0], t.on_chip, t.base)


def byte_offset(view: View) -> int:
    """Where a static view starts in its tensor's storage, in bytes (computed once per view: an
    instruction asks for its operands' partitions and then their regions)."""
    if view._offset is None:
        view._offset = address(view._arr) - view._tensor.data_address()
    return view._offset


def partition_range(view: View) -> tuple[int, int, int]:
    """(first partition, partition count, partition step) of an on-chip view."""
    arr = view._arr
    pstride = view._tensor.data.strides[0]
    step = arr.strides[0] // pstride if arr.shape[0] > 1 else 1
    return byte_offset(view) // pstride, arr.shape[0], step


def contiguous_run(arr: np.ndarray, first_axis: int) -> int:
    """Elements in the longest contiguous run at the end of `arr`'s axes from `first_axis` on."""
    run = 1
    expected = arr.itemsize
    for d in range(arr.ndim - 1, first_axis - 1, -1):
        if arr.shape[d] == 1:
            continue
        if arr.strides[d] != expected:
            break
        run *= arr.shape[d]
        expected *= arr.shape[d]
    return run


def inner_stride_bytes(view: View) -> int:
    """Byte stride of the innermost non-unit free axis (the access-pattern stride that costs bandwidth)."""
    arr = view._arr
    first = 1 if view._tensor.on_chip else 0
    for d in range(arr.ndim - 1, first - 1, -1):
        if arr.shape[d] > 1:
            return abs(arr.strides[d])
    return arr.itemsize


def free_size(view: View) -> int:
    """Elements per partition (on-chip) of a view."""
    return math.prod(view._arr.shape[1:])
