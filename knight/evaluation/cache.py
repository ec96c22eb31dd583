"""The run cache: one simulated (candidate, harness, workload, seed) is never simulated again."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
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


def user_cache_dir() -> Path:
    """Knight's folder in the user's cache: `$XDG_CACHE_HOME/knight`, else `~/.cache/knight`."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "knight"


def default_cache_dir() -> Path:
    env = os.environ.get("KNIGHT_CACHE")
    if env:
        return Path(env)
    return user_cache_dir() / "runs"


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
        write_cache_file(
            self._path(candidate, harness, result.workload, result.seed), result.model_dump_json()
        )


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


class ReferenceCache:
    """The baseline's runs on disk, per (baseline hash, harness, workload, seed).

    These are the problem's, not a candidate's: the harness fingerprint covers the problem hash,
    the machine preset and the judge code, so editing the problem (or the simulator) changes the
    key. Each entry carries its key and a sha256 of its body; a file that fails either check
    (truncated, bit-flipped, another key's) is recomputed, never trusted. Writes go to a
    private temporary file and are renamed into place, so racing writers are safe.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @staticmethod
    def _key(baseline: str, harness: str, workload: str, seed: int) -> str:
        return f"{baseline}|{harness}|{workload}|{seed}"

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.json"

    def get(self, baseline: str, harness: str, workload: str, seed: int) -> RunResult | None:
        """The stored run, or None when absent or not intact."""
        key = self._key(baseline, harness, workload, seed)
        try:
            entry = json.loads(self._path(key).read_text())
            body = entry["result"]
            if entry["key"] != key or entry["sha256"] != _digest(body):
                return None
            result = RunResult.model_validate_json(body)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return result if (result.workload, result.seed) == (workload, seed) else None

    def put(self, baseline: str, harness: str, result: RunResult) -> None:
        """Store a completed run (failed ones never: a failing baseline is an error)."""
        if not result.ok:
            return
        key = self._key(baseline, harness, result.workload, result.seed)
        body = result.model_dump_json()
        entry = {"key": key, "sha256": _digest(body), "result": body}
        write_cache_file(self._path(key), json.dumps(entry))


def write_cache_file(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (a reader sees the old file or the new one, whole, and
    racing writers are safe); a read-only or full cache only costs time, so errors are dropped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def default_reference_dir(cache: object) -> Path:
    """Where baseline runs live: beside a FileCache's entries, else under the default cache."""
    root = cache.root if isinstance(cache, FileCache) else default_cache_dir()
    return root / "reference"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
