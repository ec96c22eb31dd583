"""Bit-exact comparison and mismatch attribution: where outputs differ, by how much, and why."""

from __future__ import annotations

from typing import Any

import numpy as np

from knight.evaluation.categories import Category
from knight.evaluation.report import Failure, RunResult
from knight.npu.dtypes import BY_NAME, DTYPES

ROUNDING_ULPS = 4  # differences this small come from a changed accumulation or rounding order


def output_bits(result: RunResult, name: str) -> np.ndarray:
    """The canonical bits of one output, as an unsigned array of the output's shape."""
    ubits = BY_NAME[result.output_dtypes[name]].bits
    return np.frombuffer(bytes.fromhex(result.outputs[name]), dtype=ubits).reshape(
        result.output_shapes[name]
    )


def values(bits: np.ndarray, dtype_name: str) -> np.ndarray:
    dtype = DTYPES[dtype_name]
    return (
        bits.view(dtype).astype(np.float64)
        if dtype != np.int32
        else bits.view(np.int32).astype(np.float64)
    )


def same_outputs(a: RunResult, b: RunResult) -> bool:
    return a.outputs == b.outputs


def ulp_distance(a_bits: np.ndarray, b_bits: np.ndarray) -> np.ndarray:
    """Distance in units of the last place between float bit patterns (sign-magnitude ordered)."""
    width = a_bits.dtype.itemsize * 8
    sign = np.uint64(1) << np.uint64(width - 1)

    def ordered(x: np.ndarray) -> np.ndarray:
        u = x.astype(np.uint64)
        mag = (u & (sign - np.uint64(1))).astype(np.int64)
        return np.where((u & sign) != 0, -mag, mag)

    return np.abs(ordered(a_bits) - ordered(b_bits))


def attribute_mismatch(candidate: RunResult, baseline: RunResult, describe=None) -> Failure | None:
    """None when every output is bit-identical; otherwise a typed, located mismatch."""
    for name in baseline.outputs:
        if candidate.outputs.get(name) == baseline.outputs[name]:
            continue
        return _attribute(name, candidate, baseline, describe)
    return None


def _attribute(name: str, cand: RunResult, base: RunResult, describe) -> Failure:
    dtype = base.output_dtypes[name]
    cb, bb = output_bits(cand, name), output_bits(base, name)
    cv, bv = values(cb, dtype), values(bb, dtype)
    diff = cb != bb
    n_diff, total = int(diff.sum()), diff.size
    details: dict[str, Any] = {
        "output": name,
        "differing_elements": n_diff,
        "total_elements": total,
        "differing_share": round(n_diff / total, 6),
        **_where(diff),
    }
    regions = describe(name, diff) if describe is not None else {}
    details.update(regions)
    details["region_keys"] = list(regions)
    cand_nonfinite = ~np.isfinite(cv) & np.isfinite(bv)
    if dtype != "int32" and cand_nonfinite.any():
        nan_only = np.isnan(cv[cand_nonfinite]).all()
        if nan_only and np.array_equal(cand_nonfinite, diff):
            details["unwritten_elements"] = int(cand_nonfinite.sum())
            category = (
                Category.mismatch_partial if _is_strict_part(details) else Category.mismatch_values
            )
            return _failure(
                category,
                f"{int(cand_nonfinite.sum())} of {total} elements of {name!r} "
                f"were never written (still NaN){_region_text(details)}",
                cand,
                details,
            )
        return _failure(
            Category.nan_or_inf,
            f"{int(cand_nonfinite.sum())} elements of {name!r} are NaN or inf "
            f"where the baseline is finite{_region_text(details)}",
            cand,
            details,
        )
    err = np.abs(cv[diff] - bv[diff])
    details["max_abs_error"] = float(err.max())
    details["max_rel_error"] = float((err / np.maximum(np.abs(bv[diff]), 1e-30)).max())
    if dtype == "int32":
        return _failure(
            Category.mismatch_values,
            f"{n_diff} of {total} values of {name!r} differ{_region_text(details)}",
            cand,
            details,
        )
    ulps = ulp_distance(cb[diff], bb[diff])
    details["ulp_histogram"] = _histogram(ulps)
    details["max_ulp"] = int(ulps.max())
    # ULPs at the output's own scale: a sum that cancels turns one ULP of its terms into many
    # ULPs of a small result, so "small" is judged against the largest baseline magnitude.
    scale_ulp = _ulp_at(float(np.abs(bv).max()), dtype)
    details["max_error_in_output_ulps"] = round(float(err.max()) / scale_ulp, 3)
    share = 100.0 * n_diff / total
    if err.max() <= ROUNDING_ULPS * scale_ulp:
        return _failure(
            Category.mismatch_rounding,
            f"{share:.1f}% of {name!r} differs, by at most {details['max_error_in_output_ulps']:g} ULP at the "
            f"output's scale: the accumulation or rounding order changed (bit-exactness needs the baseline's "
            f"order){_region_text(details)}",
            cand,
            details,
        )
    if _is_strict_part(details):
        return _failure(
            Category.mismatch_partial,
            f"{share:.1f}% of {name!r} is wrong, confined to part of the "
            f"output{_region_text(details)}",
            cand,
            details,
        )
    return _failure(
        Category.mismatch_values,
        f"{share:.1f}% of {name!r} is wrong (max error {details['max_abs_error']:.3g}, "
        f"up to {int(ulps.max())} ULP){_region_text(details)}",
        cand,
        details,
    )


def _is_strict_part(details: dict) -> bool:
    """Confined to part of the output: a strict subset of the rows, or a strict subset of the
    columns in at most a few ranges (a 100 %-wrong output is never "partial")."""
    if details["rows_share"] < 1.0:
        return True
    return details["columns_share"] < 1.0 and len(details["column_ranges"]) <= 4


def _ulp_at(magnitude: float, dtype: str) -> float:
    """The spacing of `dtype` values around `magnitude` (its unit in the last place)."""
    if magnitude == 0 or not np.isfinite(magnitude):
        return float(np.finfo(np.float32).tiny)
    return float(2.0 ** (np.floor(np.log2(magnitude)) - BY_NAME[dtype].mantissa_bits))


def _failure(category: Category, message: str, cand: RunResult, details: dict) -> Failure:
    return Failure(
        category=category, message=message, workload=cand.workload, seed=cand.seed, details=details
    )


def _where(diff: np.ndarray) -> dict[str, Any]:
    """Which rows and column ranges of a (flattened to 2-D) output differ."""
    d2 = diff.reshape(diff.shape[0], -1) if diff.ndim > 1 else diff.reshape(1, -1)
    rows = np.flatnonzero(d2.any(axis=1))
    cols = np.flatnonzero(d2.any(axis=0))
    return {
        "rows": rows[:32].tolist(),
        "rows_share": round(len(rows) / d2.shape[0], 4),
        "column_ranges": _ranges(cols)[:16],
        "columns_share": round(len(cols) / d2.shape[1], 4),
    }


def _ranges(idx: np.ndarray) -> list[list[int]]:
    out: list[list[int]] = []
    for i in idx.tolist():
        if out and i == out[-1][1]:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def _histogram(ulps: np.ndarray) -> dict[str, int]:
    buckets = {
        "1": (1, 1),
        "2": (2, 2),
        "3-4": (3, 4),
        "5-16": (5, 16),
        ">16": (17, np.iinfo(np.int64).max),
    }
    return {k: int(((ulps >= lo) & (ulps <= hi)).sum()) for k, (lo, hi) in buckets.items()}


def _region_text(details: dict) -> str:
    parts = []
    if details.get("rows_share", 1.0) < 1.0:
        parts.append(f"rows {details['rows'][:8]}")
    if details.get("columns_share", 1.0) < 1.0:
        parts.append("columns " + ", ".join(f"{a}:{b}" for a, b in details["column_ranges"][:4]))
    for key in details.get("region_keys", []):  # the problem's own regions (describe_mismatch)
        parts.append(f"{key} {_short(details[key])}")
    return f" ({'; '.join(parts)})" if parts else ""


def _short(value: Any, limit: int = 8) -> str:
    """A region value for the one-line message: long lists are cut, with the count left out."""
    if isinstance(value, list) and len(value) > limit:
        return f"[{', '.join(map(str, value[:limit]))}, ... +{len(value) - limit}]"
    return str(value)
