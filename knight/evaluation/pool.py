"""A pool of isolated worker processes with wall-clock timeouts and memory limits.

Each worker is a fresh Python (`python -m knight.evaluation.worker`) started with a scrubbed
environment (no API keys or other secrets, one BLAS thread, its own hash seed), in an empty
temporary directory. Workers are reused across runs: every run re-executes the kernel source in a
fresh namespace, and kernels cannot keep state (static checks). A worker that overruns its time
is killed; one that dies is replaced; either way the run becomes a typed failure.
"""

from __future__ import annotations

import json
import os
import queue
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import knight
from knight.evaluation.categories import Category
from knight.evaluation.report import Failure, RunResult

# Only these variables reach a worker; everything else (API keys, tokens, proxies) is dropped.
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "VIRTUAL_ENV", "TMPDIR")


def worker_env(hash_seed: int) -> dict[str, str]:
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    env.update(
        PYTHONPATH=str(Path(knight.__file__).resolve().parents[1]),
        PYTHONHASHSEED=str(hash_seed),
        PYTHONDONTWRITEBYTECODE="1",
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    return env


class Worker:
    """One worker process and the pipes to it."""

    def __init__(self, memory_mb: int, hash_seed: int) -> None:
        self.home = tempfile.mkdtemp(prefix="knight-worker-")
        env = worker_env(hash_seed)
        env["HOME"] = self.home
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "knight.evaluation.worker", "--memory-mb", str(memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self.home,
            env=env,
            close_fds=True,
            start_new_session=True,  # so a kill takes any child it might have made with it
        )
        self._buffer = b""

    def run(self, request: dict[str, Any], timeout_s: float) -> RunResult:
        """Send one request and wait for its answer, at most `timeout_s` seconds."""
        workload, seed = request["workload"], int(request["seed"])
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._died(workload, seed)
        deadline = time.monotonic() + timeout_s
        line = self._read_line(deadline)
        if line is None:
            if time.monotonic() < deadline:  # end of file before the deadline: the worker died
                try:
                    self.proc.wait(timeout=5)  # it may not be reaped yet; never mistake that for a timeout
                except subprocess.TimeoutExpired:
                    self.kill()
                    return _failed(workload, seed, Category.worker_crash, "the worker closed its answer channel")
                return self._died(workload, seed)
            if self.proc.poll() is None:
                self.kill()
                return _failed(workload, seed, Category.timeout, f"the run exceeded the {timeout_s:.0f} s wall-clock limit")
            return self._died(workload, seed)
        try:
            return RunResult.model_validate_json(line)
        except ValueError:
            self.kill()
            return _failed(workload, seed, Category.worker_crash, "the worker sent an unreadable answer")

    def _read_line(self, deadline: float) -> bytes | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    return None
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _died(self, workload: str, seed: int) -> RunResult:
        code = self.proc.wait()
        if code in (-signal.SIGKILL, -signal.SIGSEGV, -signal.SIGABRT) or code < 0:
            what = "was killed (out of memory?)" if code == -signal.SIGKILL else f"died with signal {-code}"
            cat = Category.memory_limit if code == -signal.SIGKILL else Category.worker_crash
        else:
            what, cat = f"exited with code {code}", Category.worker_crash
        return _failed(workload, seed, cat, f"the worker process {what}")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)

    def close(self) -> None:
        if self.alive:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        shutil.rmtree(self.home, ignore_errors=True)


def _failed(workload: str, seed: int, category: Category, message: str) -> RunResult:
    return RunResult(
        workload=workload, seed=seed, ok=False,
        failure=Failure(category=category, message=message, workload=workload, seed=seed),
    )


class WorkerPool:
    """Runs requests on up to `size` workers in parallel; results come back in request order."""

    def __init__(self, size: int | None = None, timeout_s: float = 300.0, memory_mb: int = 6144) -> None:
        self.size = max(1, size or os.cpu_count() or 1)
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._idle: list[Worker] = []
        self._all: list[Worker] = []  # every worker started, so close() can stop busy ones too
        self._lock = threading.Lock()
        self._seed = 1000

    def _take(self, fresh: bool) -> Worker:
        with self._lock:
            if not fresh:
                while self._idle:
                    w = self._idle.pop()
                    if w.alive:
                        return w
            self._seed += 1
            w = Worker(self.memory_mb, self._seed)
            self._all = [x for x in self._all if x.alive] + [w]
            return w

    def _give_back(self, w: Worker) -> None:
        with self._lock:
            if w.alive and len(self._idle) < self.size:
                self._idle.append(w)
                return
        w.close()

    def run_many(self, requests: list[dict[str, Any]], fresh: bool = False) -> list[RunResult]:
        """Run every request; `fresh` uses new processes (another hash seed) for each."""
        results: list[RunResult | None] = [None] * len(requests)
        todo: queue.Queue[int] = queue.Queue()
        for i in range(len(requests)):
            todo.put(i)

        def lane() -> None:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                w = self._take(fresh)
                results[i] = w.run(requests[i], self.timeout_s)
                self._give_back(w)

        lanes = [threading.Thread(target=lane, daemon=True) for _ in range(min(self.size, len(requests)))]
        for t in lanes:
            t.start()
        for t in lanes:
            t.join()
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Stop every worker: idle ones politely, busy ones (an interrupted run) at once."""
        with self._lock:
            idle, self._idle = self._idle, []
            busy = [w for w in self._all if w not in idle]
            self._all = []
        for w in idle:
            w.close()
        for w in busy:
            if w.alive:
                w.kill()
