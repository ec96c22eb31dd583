"""Exact access patterns: which partitions and which bytes an instruction operand touches.

The timing model infers dependencies from the memory each instruction reads and writes (NPU.md
5.2). A bounding box would make two interleaved halves of one tile (`t[:, 0::2]`, `t[:, 1::2]`)
depend on each other; the hardware's access patterns (a partition range x up to 4 strided free
dimensions, ARCH1) do not overlap, so neither may ours. A `Region` therefore carries, besides its
bounding box, the partition step and the exact byte intervals within each partition when the
pattern is not one dense block. Dense regions (the common case) keep the fast bounding-box test.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from knight.npu.program import Region

# Patterns with more runs than this are kept as their bounding box (conservative: may serialize,
# never misses a dependency); real kernels stay far below it.
MAX_RUNS = 8192


def region_for(
    tensor_id: int, arr: np.ndarray, base: np.ndarray, on_chip: bool, base_addr: int
) -> Region:
    """The exact region of `arr`, a view into the tensor storage `base`.

    On-chip: axis 0 is the partition axis and byte offsets are within a partition, shifted by the
    allocation's address `base_addr`. HBM: one "partition" and byte offsets within the tensor.
    """
    off = address(arr) - address(base)
    return region_at(tensor_id, arr, off, base.strides[0], on_chip, base_addr)


def address(arr: np.ndarray) -> int:
    """The address of an array's first element."""
    return arr.__array_interface__["data"][0]


def region_at(
    tensor_id: int, arr: np.ndarray, off: int, pstride: int, on_chip: bool, base_addr: int
) -> Region:
    """`region_for` with the view's byte offset `off` into its storage and the storage's
    partition stride `pstride` already known (reading an array's address is not free)."""
    if on_chip:
        p0, start = divmod(off, pstride)
        n_p = arr.shape[0]
        pstep = arr.strides[0] // pstride if n_p > 1 else 1
        if pstep < 0:  # a reversed partition range covers the same partitions
            p0, pstep = p0 + (n_p - 1) * pstep, -pstep
        p1 = p0 + (n_p - 1) * pstep + 1
        if pstep == 0:
            p1, pstep = p0 + 1, 1
        if n_p == 1 or p1 - p0 == 1:
            pstep = 1
        start += base_addr
        shape, strides = arr.shape[1:], arr.strides[1:]
    else:
        p0, p1, pstep, start = 0, 1, 1, off
        shape, strides = arr.shape, arr.strides
    b0, b1, runs = byte_runs(start, shape, strides, arr.itemsize)
    return Region(tensor_id, p0, p1, b0, b1, pstep, runs)


def byte_runs(
    start: int, shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int
) -> tuple[int, int, tuple[tuple[int, ...], tuple[int, ...]] | None]:
    """(first byte, end byte, runs) of the elements start + sum(i_d * stride_d).

    `runs` is None when the bytes form one dense interval, else (starts, ends) of the sorted,
    disjoint, non-adjacent byte intervals.
    """
    dims: list[tuple[int, int]] = []  # (stride >= 1, count >= 2): the set is order-independent
    for n, s in zip(shape, strides, strict=True):
        if n == 0:
            return start, start, None
        if n == 1 or s == 0:
            continue  # a broadcast or unit axis adds no bytes
        if s < 0:
            start += (n - 1) * s
            s = -s
        dims.append((s, n))
    dims.sort()
    run = itemsize
    k = 0
    while k < len(dims) and dims[k][0] == run:  # inner dims that continue the run contiguously
        run *= dims[k][1]
        k += 1
    outer = dims[k:]
    count = 1
    for _, n in outer:
        count *= n
    if count == 1:
        return start, start + run, None
    span = sum((n - 1) * s for s, n in outer)
    if count > MAX_RUNS:
        return start, start + span + run, None
    starts = np.zeros(1, dtype=np.int64)
    for s, n in outer:
        starts = (starts[:, None] + np.arange(n, dtype=np.int64) * s).ravel()
    starts.sort()
    ends = starts + run
    # Merge overlapping or touching intervals.
    new = np.empty(len(starts), dtype=bool)
    new[0] = True
    np.greater(starts[1:], np.maximum.accumulate(ends)[:-1], out=new[1:])
    merged_starts = starts[new]
    group_end = np.maximum.reduceat(ends, np.flatnonzero(new))
    if len(merged_starts) == 1:
        return start, start + span + run, None
    s_t = tuple(int(x) + start for x in merged_starts)
    e_t = tuple(int(x) + start for x in group_end)
    return s_t[0], e_t[-1], (s_t, e_t)


def overlaps(a: Region, b: Region) -> bool:
    """Exact test: do two regions of the same tensor share a byte of a partition?"""
    if not (a.p0 < b.p1 and b.p0 < a.p1 and a.b0 < b.b1 and b.b0 < a.b1):
        return False
    if not partitions_meet(a, b):
        return False
    if a.runs is None and b.runs is None:
        return True
    a_runs = a.runs if a.runs is not None else ((a.b0,), (a.b1,))
    b_runs = b.runs if b.runs is not None else ((b.b0,), (b.b1,))
    if len(a_runs[0]) > len(b_runs[0]):
        a_runs, b_runs = b_runs, a_runs
    big_starts, big_ends = b_runs
    n = len(big_starts)
    for s, e in zip(*a_runs, strict=True):
        k = bisect_right(big_ends, s)  # the first interval of b ending after s
        if k < n and big_starts[k] < e:
            return True
    return False


def partitions_meet(a: Region, b: Region) -> bool:
    """Do the partition sets of two regions whose partition boxes overlap (ranges with steps)
    share a partition?"""
    if a.pstep == 1 and b.pstep == 1:
        return True  # contiguous ranges whose boxes overlap
    lo, hi = max(a.p0, b.p0), min(a.p1, b.p1)
    pa = range(a.p0 + -(-(lo - a.p0) // a.pstep) * a.pstep, hi, a.pstep)
    return any((p - b.p0) % b.pstep == 0 for p in pa)
