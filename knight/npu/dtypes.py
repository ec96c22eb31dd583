"""The NPU's dtypes, one table: each name, its NumPy dtype and how its bits are laid out.

The kernel language (`nl.bfloat16`...), numerics, the runtime's argument check, problem specs and
the judge's bit comparison all read their dtypes from here, so a dtype is added in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

# Scalar types, for `np.asarray(x, dtype=BF16)` and `a.astype(BF16)`.
BF16 = ml_dtypes.bfloat16
FP16 = np.float16
FP32 = np.float32
INT32 = np.int32
UINT32 = np.uint32


@dataclass(frozen=True, slots=True)
class NpuDtype:
    """One dtype the NPU holds, with what bit-exact code needs to know about its encoding."""

    name: str
    dtype: np.dtype
    bits: np.dtype  # the unsigned integer of the same width: a value's bits are `a.view(bits)`
    mantissa_bits: int | None = None  # floats: stored fraction bits (None: an integer dtype)
    exponent_mask: int | None = None  # floats: NaN iff (bits without the sign) > this mask
    canonical_nan: int | None = None  # floats: the quiet NaN bit pattern np.nan casts to
    in_hbm: bool = True  # may be a kernel argument (uint32 is an on-chip index dtype only)

    @property
    def is_float(self) -> bool:
        return self.mantissa_bits is not None


_U16, _U32 = np.dtype(np.uint16), np.dtype(np.uint32)

TABLE: tuple[NpuDtype, ...] = (
    NpuDtype("bfloat16", np.dtype(BF16), _U16, 7, 0x7F80, 0x7FC0),
    NpuDtype("float16", np.dtype(FP16), _U16, 10, 0x7C00, 0x7E00),
    NpuDtype("float32", np.dtype(FP32), _U32, 23, 0x7F800000, 0x7FC00000),
    NpuDtype("int32", np.dtype(INT32), _U32),
    # NKI's index dtype (nc_find_index8 writes uint32); never a kernel argument
    NpuDtype("uint32", np.dtype(UINT32), _U32, in_hbm=False),
)

BY_NAME: dict[str, NpuDtype] = {d.name: d for d in TABLE}
BY_DTYPE: dict[np.dtype, NpuDtype] = {d.dtype: d for d in TABLE}
DTYPES: dict[str, np.dtype] = {d.name: d.dtype for d in TABLE}
HBM_NAMES: tuple[str, ...] = tuple(d.name for d in TABLE if d.in_hbm)
HBM_DTYPES: tuple[np.dtype, ...] = tuple(d.dtype for d in TABLE if d.in_hbm)
FLOAT_DTYPES: tuple[np.dtype, ...] = tuple(d.dtype for d in TABLE if d.is_float)
HALF_DTYPES: tuple[np.dtype, ...] = tuple(dt for dt in FLOAT_DTYPES if dt.itemsize == 2)
INT_DTYPES: tuple[np.dtype, ...] = tuple(d.dtype for d in TABLE if not d.is_float)


def name_of(dtype: object) -> str:
    """The NPU name of a dtype-like ("bfloat16" for ml_dtypes.bfloat16); KeyError if unsupported."""
    return BY_DTYPE[np.dtype(dtype)].name
