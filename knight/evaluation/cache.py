"""The run cache: one simulated (candidate, harness, workload, seed) is never simulated again."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

from knight.evaluation.categories import STAGES, Stage
from knight.evaluation.report import RunResult

# Failures of the run stage are the machine's rather than the kernel's: never cached, so a hiccup
# is retried.
UNCACHED_CATEGORIES = STAGES[Stage.run]


def cacheable(result: RunResult) -> bool:
    return result.failure is None or result.failure.category not in UNCACHED_CATEGORIES


class RunCache(Protocol):
    def get(self, candidate: str, harness: str, workload: str, seed: int) -> RunResult | None: ...

    def put(self, candidate: str, harness: str, result: RunResult) -> None: ...


def default_cache_dir() -> Path:
    env = os.environ.get("KNIGHT_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "knight" / "runs"


class FileCache:
    """Run results as JSON files named by the hash of their key; written atomically."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_cache_dir()

    def _path(self, candidate: str, harness: str, workload: str, seed: int) -> Path:
        key = hashlib.sha256(f"{candidate}|{harness}|{workload}|{seed}".encode()).hexdigest()
        return self.root / key[:2] / f"{key}.json"

    def get(self, candidate: str, harness: str, workload: str, seed: int) -> RunResult | None:
        path = self._path(candidate, harness, workload, seed)
        try:
            return RunResult.model_validate_json(path.read_text())
        except (OSError, ValueError):
            return None

    def put(self, candidate: str, harness: str, result: RunResult) -> None:
        if not cacheable(result):
            return  # a machine hiccup must not stick to a candidate forever
        path = self._path(candidate, harness, result.workload, result.seed)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(result.model_dump_json())
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only or full cache only costs time


class MemoryCache:
    """An in-process cache (tests, one-off evaluations)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str, str, int], RunResult] = {}

    def get(self, candidate: str, harness: str, workload: str, seed: int) -> RunResult | None:
        return self.entries.get((candidate, harness, workload, seed))

    def put(self, candidate: str, harness: str, result: RunResult) -> None:
        if not cacheable(result):
            return  # as FileCache: a timeout or crash is retried by the next evaluation
        self.entries[(candidate, harness, result.workload, result.seed)] = result
