"""The one dtype table: every layer that names a dtype agrees with it."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from pydantic import ValidationError

from knight.npu import nl, numerics
from knight.npu.dtypes import BY_NAME, HBM_NAMES, TABLE, name_of
from knight.problems.spec import TensorSpec


def test_the_kernel_language_offers_every_dtype_of_the_table() -> None:
    assert [getattr(nl, d.name) for d in TABLE] == [d.dtype for d in TABLE]
    assert name_of(numerics.BF16) == "bfloat16" and name_of(np.float32) == "float32"


def test_problem_specs_take_the_hbm_dtypes_and_refuse_the_index_dtype() -> None:
    for name in HBM_NAMES:
        assert TensorSpec(shape=[4], dtype=name).np_dtype == BY_NAME[name].dtype
    with pytest.raises(ValidationError):
        TensorSpec(shape=[4], dtype="uint32")


@pytest.mark.parametrize("entry", [d for d in TABLE if d.is_float], ids=lambda d: d.name)
def test_float_encodings_match_numpy(entry) -> None:
    """The bit layout the judge and `numerics.bits` rely on is the real one."""
    assert entry.bits.itemsize == entry.dtype.itemsize
    assert int(np.array(np.nan, dtype=entry.dtype).view(entry.bits)) == entry.canonical_nan
    assert int(np.array(np.inf, dtype=entry.dtype).view(entry.bits)) == entry.exponent_mask
    assert ml_dtypes.finfo(entry.dtype).nmant == entry.mantissa_bits  # numpy.finfo lacks bf16
