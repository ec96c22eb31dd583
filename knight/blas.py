"""One BLAS thread per Knight process.

Knight runs in parallel with processes (a worker per core, an xdist worker per core in the tests);
a simulated matmul is far too small to gain from BLAS threads, and OpenBLAS starts a thread per core
when numpy loads, whose start-up and idle spinning take ~0.1 CPU-s per process from the cores the
other processes are using. Set before numpy loads; a user's own setting wins.
"""

from __future__ import annotations

import os

SINGLE_THREADED: dict[str, str] = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def default_to_one_thread() -> None:
    """One BLAS thread in this process and its children unless the environment names a count;
    effective only before numpy is first imported."""
    for name, value in SINGLE_THREADED.items():
        os.environ.setdefault(name, value)
