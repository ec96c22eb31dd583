"""Generated inputs, made once per (problem version, workload, seed) and shared read-only.

Generating a workload's inputs can take a second (MoE weights are ~300 MB), so executors keep
them in an input cache folder: raw little-endian files, one per input, under
`<cache>/<problem hash>/<workload hash>/<seed>/`, memory-mapped read-only by every executor and
every run. The problem hash covers the whole problem folder, so a changed generator invalidates
its inputs. The first executor to need a set generates it under a file lock; the others wait and
map it. Without a cache folder the last few sets are kept in memory.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from knight.errors import KnightError
from knight.evaluation.cache import user_cache_dir
from knight.problems.spec import Problem, Workload, load_problem_dir

_problems: dict[str, Problem] = {}
_in_memory: OrderedDict[tuple[str, str, int], dict[str, np.ndarray]] = OrderedDict()
_KEEP = 4  # input sets kept per process (mapped ones cost address space, not memory)
_DONE = "complete"


def default_input_cache() -> Path:
    """Where shared inputs live: `$KNIGHT_INPUT_CACHE`, else beside the run cache."""
    env = os.environ.get("KNIGHT_INPUT_CACHE")
    if env:
        return Path(env)
    return user_cache_dir() / "inputs"


def load_problem_cached(path: str) -> Problem:
    """A problem folder, loaded once per process."""
    if path not in _problems:
        _problems[path] = load_problem_dir(Path(path))
    return _problems[path]


def cached_inputs(
    problem: Problem, workload: Workload, seed: int, cache: Path | None, limit: int | None = None
) -> dict[str, np.ndarray]:
    """The read-only inputs of one workload and seed (generated at most once per cache, which
    is kept under `limit` bytes, default `input_cache_limit()`)."""
    key = (problem.hash, workload.name, seed)
    hit = _in_memory.get(key)
    if hit is None:
        hit = (
            _mapped(problem, workload, seed, cache, limit)
            if cache is not None
            else _generate(problem, workload, seed)
        )
        _in_memory[key] = hit
        while len(_in_memory) > _KEEP:
            _in_memory.popitem(last=False)
    _in_memory.move_to_end(key)
    return hit


def _generate(problem: Problem, workload: Workload, seed: int) -> dict[str, np.ndarray]:
    arrays = problem.make_inputs(workload, seed)
    for a in arrays.values():
        a.flags.writeable = False
    return arrays


def _folder(problem: Problem, workload: Workload, seed: int, cache: Path) -> Path:
    # The workload's parameters are part of the key: a spec copy with other params is another set.
    wkey = hashlib.sha256(
        f"{workload.name}|{sorted(workload.params.items())}".encode()
    ).hexdigest()[:16]
    return cache / problem.hash / wkey / str(seed)


def _mapped(
    problem: Problem, workload: Workload, seed: int, cache: Path, limit: int | None
) -> dict[str, np.ndarray]:
    folder = _folder(problem, workload, seed, cache)
    for _ in range(3):  # another process may evict the set between our check and our mapping
        try:
            if (folder / _DONE).exists():
                os.utime(folder / _DONE)  # recently used: evicted last
            else:
                _generate_into(folder, problem, workload, seed)
                evict(cache, input_cache_limit() if limit is None else limit, keep=folder)
            return _map(folder, problem, workload)
        except FileNotFoundError:
            continue
    return _generate(problem, workload, seed)


def _generate_into(folder: Path, problem: Problem, workload: Workload, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one generator per set; the others wait here
        if (folder / _DONE).exists():
            return
        for name, a in _generate(problem, workload, seed).items():
            tmp = folder / f".{name}.{os.getpid()}.tmp"
            np.ascontiguousarray(a).tofile(tmp)
            os.replace(tmp, folder / f"{name}.bin")
        (folder / _DONE).write_text("")


def _map(folder: Path, problem: Problem, workload: Workload) -> dict[str, np.ndarray]:
    out = {}
    for name, ts in problem.spec.inputs.items():
        shape = ts.resolve(workload.params)
        path = folder / f"{name}.bin"
        if int(np.prod(shape, dtype=np.int64)) == 0 or path.stat().st_size == 0:
            out[name] = np.zeros(shape, dtype=ts.np_dtype)
        else:
            out[name] = np.memmap(path, dtype=ts.np_dtype, mode="r", shape=shape)
    return out


def input_cache_limit() -> int:
    """The input cache's size bound in bytes: `$KNIGHT_INPUT_CACHE_GB` GiB (default 8)."""
    raw = os.environ.get("KNIGHT_INPUT_CACHE_GB", "8")
    try:
        gib = float(raw)
    except ValueError:
        gib = -1.0
    if not gib >= 0:  # also refuses nan
        raise KnightError(f"KNIGHT_INPUT_CACHE_GB must be a number of GiB >= 0, not {raw!r}")
    return int(gib * 2**30)


def evict(cache: Path, limit: int, keep: Path | None = None) -> list[Path]:
    """Delete the least recently used input sets until the cache holds at most `limit` bytes
    (never `keep`, never a set being generated); returns the folders deleted.

    Without a bound the cache grows by a full set for every edit of a problem folder (its hash
    changes). A process that has a deleted set mapped keeps reading it: the kernel frees the
    files when the last mapping goes. Another process evicting at the same time is tolerated."""
    sets = []
    for marker in cache.glob(f"*/*/*/{_DONE}"):
        try:
            size = sum(f.stat().st_size for f in marker.parent.glob("*.bin"))
            sets.append((marker.stat().st_mtime, marker.parent, size))
        except FileNotFoundError:
            continue  # evicted by someone else meanwhile
    total = sum(size for *_, size in sets)
    deleted: list[Path] = []
    for _, folder, size in sorted(sets):
        if total <= limit:
            break
        if folder != keep and _delete_set(folder):
            total -= size
            deleted.append(folder)
    return deleted


def _delete_set(folder: Path) -> bool:
    """Delete one input set unless it is being generated; False if it was not ours to delete."""
    try:
        with open(folder / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # being generated right now
            (folder / _DONE).unlink()  # first: no reader starts on a partial set
            for f in folder.iterdir():
                f.unlink(missing_ok=True)
    except FileNotFoundError:
        return False  # another process evicted it first
    for empty in (folder, folder.parent, folder.parent.parent):
        try:
            empty.rmdir()
        except OSError:
            break  # not empty: another set, or one being generated, lives there
    return True
