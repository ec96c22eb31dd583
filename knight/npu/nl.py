"""`nl`: the kernel language's declarations — dtypes, buffers, allocation, grid, op names.

A strict subset of NKI's `nki.language` (names, parameters and defaults; the table is
`knight/npu/conformance.py`): `nl.ndarray((128, 512), dtype=nl.bfloat16, buffer=nl.sbuf)`
allocates a tile, `nl.program_id(0)` says which of the two physical cores is running, and the op
names below (`nl.exp`, `nl.add`, ...) are what `nisa` instructions take as their `op` arguments.
Instructions themselves live in `nisa`.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from knight.npu.dtypes import DTYPES
from knight.npu.errors import DtypeError, ShapeError
from knight.npu.tensor import HBM, PSUM, SBUF, View, ds
from knight.npu.tracer import active, caller_loc

# --- dtypes
bfloat16 = DTYPES["bfloat16"]
float16 = DTYPES["float16"]
float32 = DTYPES["float32"]
int32 = DTYPES["int32"]
uint32 = DTYPES["uint32"]

# --- buffers
sbuf = SBUF
psum = PSUM
hbm = HBM
shared_hbm = HBM

# --- hardware tile-size limits (NKI names); the machine preset is authoritative
tile_size = SimpleNamespace(pmax=128, psum_fmax=512, gemm_stationary_fmax=128, gemm_moving_fmax=512)


class Op(str):
    """The name of an elementwise function or ALU operation, passed to instructions."""


# activation functions (ScalarE)
identity = Op("identity")
copy = Op("copy")
exp = Op("exp")
log = Op("log")
sigmoid = Op("sigmoid")
silu = Op("silu")
tanh = Op("tanh")
gelu = Op("gelu")
relu = Op("relu")
square = Op("square")
sqrt = Op("sqrt")
rsqrt = Op("rsqrt")
reciprocal = Op("reciprocal")
# ALU operations (tensor_tensor, tensor_scalar, tensor_reduce)
add = Op("add")
subtract = Op("subtract")
multiply = Op("multiply")
divide = Op("divide")
maximum = Op("maximum")
minimum = Op("minimum")

ACTIVATION_OPS = (
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
)
ALU_OPS = ("add", "subtract", "multiply", "divide", "maximum", "minimum")

# The public language: the only `nl` names kernel code may use (the evaluator enforces it).
__all__ = [
    "bfloat16",
    "float16",
    "float32",
    "int32",
    "uint32",
    "sbuf",
    "psum",
    "hbm",
    "shared_hbm",
    "tile_size",
    "ndarray",
    "zeros",
    "program_id",
    "num_programs",
    "affine_range",
    "sequential_range",
    "static_range",
    "ds",
    *ACTIVATION_OPS,
    *ALU_OPS,
]


def ndarray(shape, dtype, buffer=SBUF, name="") -> View:
    """Allocate a tensor (fresh memory is NaN-filled; reading it before writing is an error)."""
    dt = _dtype(dtype)
    t = active().allocate(shape, dt, buffer, name or None)
    return View(t)


def zeros(shape, dtype, buffer=SBUF, name="") -> View:
    """Allocate a tensor and fill it with zeros (a memset on VectorE)."""
    from knight.npu import nisa

    v = ndarray(shape, dtype, buffer, name)
    nisa.memset(v, 0.0)
    return v


def program_id(axis) -> int:
    """Which physical core of the logical core runs this trace (0 or 1 at LNC=2)."""
    if axis != 0:
        raise ShapeError("the launch grid has one axis", caller_loc())
    return active().core


def num_programs(axes=None) -> int:
    """Number of physical cores running the kernel (the grid size)."""
    if axes not in (None, 0):
        raise ShapeError("the launch grid has one axis", caller_loc())
    return active().grid


def affine_range(start, stop=None, step=1) -> range:
    """Loop iterations with no loop-carried dependency (unrolled at trace time, like `range`)."""
    return range(start, stop, step) if stop is not None else range(0, start, step)


def sequential_range(start, stop=None, step=1) -> range:
    """Loop iterations that depend on each other (unrolled at trace time, like `range`)."""
    return range(start, stop, step) if stop is not None else range(0, start, step)


def static_range(start, stop=None, step=1) -> range:
    """A fully unrolled loop (every loop is unrolled at trace time here)."""
    return range(start, stop, step) if stop is not None else range(0, start, step)


def _dtype(dtype) -> np.dtype:
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise DtypeError(
                f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}", caller_loc()
            )
        return DTYPES[dtype]
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise DtypeError(
            f"unsupported dtype {dtype!r}; use one of {', '.join(DTYPES)}", caller_loc()
        ) from None
    if dt not in DTYPES.values():
        raise DtypeError(f"unsupported dtype {dt}; use one of {', '.join(DTYPES)}", caller_loc())
    return dt
