"""A pool of isolated worker processes with wall-clock timeouts and memory limits.

Each worker is a fresh Python (`python -m knight.evaluation.worker --role R`) started with a
scrubbed environment (no API keys or other secrets, one BLAS thread, its own hash seed), inside
the OS sandbox (`sandbox.py`) when one is available, else in an empty temporary directory.
Tracers (role "trace", kernel code, no data) and executors (role "execute", data, no kernel
code) never share a process. A tracer's hash seed is chosen by the request, so a trace is
reproducible and the determinism check can ask for another seed. Workers are reused across
runs of their role, seed and sandbox view: every trace re-executes the kernel source in a fresh
namespace. A worker that overruns its time is killed; one that dies is replaced; either way the
run becomes a typed failure.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

import knight
from knight.blas import SINGLE_THREADED
from knight.errors import KnightError
from knight.evaluation import sandbox
from knight.evaluation.categories import Category
from knight.evaluation.report import Failure
from knight.evaluation.wire import LineReader

M = TypeVar("M", bound=BaseModel)

# Only these variables reach a worker; everything else (API keys, tokens, proxies) is dropped.
_PASSED_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "VIRTUAL_ENV",
    "TMPDIR",
)


def worker_env(hash_seed: int) -> dict[str, str]:
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    env.update(SINGLE_THREADED)  # always one: a worker per core already uses every core
    env.update(
        PYTHONPATH=str(Path(knight.__file__).resolve().parents[1]),
        PYTHONHASHSEED=str(hash_seed),
        PYTHONDONTWRITEBYTECODE="1",
        # No pydantic plugins: no code from other installed packages runs beside the kernel,
        # and no scan of every package's entry points at each worker's start.
        PYDANTIC_DISABLE_PLUGINS="__all__",
    )
    return env


def default_workers() -> int:
    """Workers per kind when none is asked for: `$KNIGHT_WORKERS`, else the CPU cores this
    process may run on (its affinity mask, which containers and `taskset` narrow)."""
    raw = os.environ.get("KNIGHT_WORKERS", "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise KnightError(f"KNIGHT_WORKERS must be a whole number >= 1, not {raw!r}")
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class WorkerKind:
    """What a worker is for: its role, its hash seed (tracers), and the folders it may see."""

    role: str  # "trace" or "execute"
    hash_seed: int | None = None  # None: any (executors never run kernel code)
    readable: tuple[str, ...] = ()
    writable: tuple[str, ...] = ()


class Worker:
    """One worker process and the pipes to it."""

    def __init__(self, kind: WorkerKind, memory_mb: int, hash_seed: int) -> None:
        self.kind = kind
        env = worker_env(hash_seed)
        argv = [
            sys.executable,
            "-m",
            "knight.evaluation.worker",
            "--role",
            kind.role,
            "--memory-mb",
            str(memory_mb),
        ]
        argv, env, cwd = sandbox.wrap(
            argv,
            env,
            readable=[Path(p) for p in kind.readable],
            writable=[Path(p) for p in kind.writable],
        )
        # Inside the OS sandbox HOME and the working folder are its private /tmp, which vanishes
        # with the worker. An unsandboxed worker gets an empty folder here, removed by whichever
        # of the two ends last (a parent killed outright never gets to close its workers).
        self.home: str | None = None
        if cwd is None:
            self.home = cwd = tempfile.mkdtemp(prefix="knight-worker-")
            env["HOME"] = self.home
            argv = [*argv, "--remove-at-exit", self.home]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            close_fds=True,
            start_new_session=True,  # so a kill takes any child it might have made with it
        )
        assert self.proc.stdout is not None
        self._reader = LineReader(self.proc.stdout.fileno())

    def run(self, request: BaseModel, answer: type[M], timeout_s: float) -> M | Failure:
        """Send one request and wait for its answer, at most `timeout_s` seconds."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((request.model_dump_json() + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._died()
        deadline = time.monotonic() + timeout_s
        try:
            line = self._reader.read_line(deadline)
        except OverflowError:
            self.kill()
            return Failure(
                category=Category.worker_crash, message="the worker sent an oversized answer"
            )
        if line is None:
            if time.monotonic() < deadline:  # end of file before the deadline: the worker died
                try:
                    self.proc.wait(
                        timeout=5
                    )  # it may not be reaped yet; never mistake that for a timeout
                except subprocess.TimeoutExpired:
                    self.kill()
                    return Failure(
                        category=Category.worker_crash,
                        message="the worker closed its answer channel",
                    )
                return self._died()
            if self.proc.poll() is None:
                self.kill()
                return Failure(
                    category=Category.timeout,
                    message=f"the run exceeded the {timeout_s:.0f} s wall-clock limit",
                )
            return self._died()
        try:
            return answer.model_validate_json(line)
        except ValueError:
            self.kill()
            return Failure(
                category=Category.worker_crash, message="the worker sent an unreadable answer"
            )

    def _died(self) -> Failure:
        code = self.proc.wait()
        self._remove_home()
        if code in (-signal.SIGKILL, -signal.SIGSEGV, -signal.SIGABRT) or code < 0:
            what = (
                "was killed (out of memory?)"
                if code == -signal.SIGKILL
                else f"died with signal {-code}"
            )
            cat = Category.memory_limit if code == -signal.SIGKILL else Category.worker_crash
        elif code == 137:  # bubblewrap reports its child's SIGKILL as 128 + 9
            what, cat = "was killed (out of memory?)", Category.memory_limit
        else:
            what, cat = f"exited with code {code}", Category.worker_crash
        return Failure(category=cat, message=f"the worker process {what}")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self._remove_home()

    def close(self) -> None:
        if self.alive:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        self._remove_home()

    def _remove_home(self) -> None:
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)


class WorkerPool:
    """Runs requests on up to `size` workers of each kind at once; answers come back in request
    order. Concurrent `run_many` calls (the evaluations of a parallel round) share those workers
    instead of starting extra ones that would be closed again when idle."""

    def __init__(
        self, size: int | None = None, timeout_s: float = 300.0, memory_mb: int = 6144
    ) -> None:
        self.size = max(1, size or default_workers())
        self.sandbox = sandbox.mode()  # a misconfigured KNIGHT_SANDBOX fails here, in one line
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._idle: list[Worker] = []
        self._all: list[Worker] = []  # every worker started, so close() can stop busy ones too
        self._lock = threading.Lock()
        self._slots: dict[WorkerKind, threading.Semaphore] = {}  # `size` busy workers per kind
        self._seed = 1000
        # Workers are started from one long-lived thread: bubblewrap's --die-with-parent fires when
        # the *thread* that started it ends, and the lanes of run_many end after every batch.
        self._spawns: queue.Queue[tuple[WorkerKind, int, queue.Queue] | None] = queue.Queue()
        self._spawner: threading.Thread | None = None

    def _spawn(self, kind: WorkerKind, hash_seed: int) -> Worker:
        with self._lock:
            if self._spawner is None or not self._spawner.is_alive():
                self._spawner = threading.Thread(
                    target=self._spawn_loop, daemon=True, name="knight-spawner"
                )
                self._spawner.start()
        done: queue.Queue[Worker | BaseException] = queue.Queue(maxsize=1)
        self._spawns.put((kind, hash_seed, done))
        w = done.get()
        if isinstance(w, BaseException):
            raise w
        return w

    def _spawn_loop(self) -> None:
        while True:
            item = self._spawns.get()
            if item is None:
                return
            kind, hash_seed, done = item
            try:
                done.put(Worker(kind, self.memory_mb, hash_seed))
            except BaseException as e:  # noqa: BLE001 - handed to the lane that asked
                done.put(e)

    def _take(self, kind: WorkerKind) -> Worker:
        with self._lock:
            for w in reversed(self._idle):
                if w.kind == kind:
                    self._idle.remove(w)
                    if w.alive:
                        return w
            self._seed += 1
            seed = kind.hash_seed if kind.hash_seed is not None else self._seed
        w = self._spawn(kind, seed)
        with self._lock:
            self._all = [x for x in self._all if x.alive] + [w]
        return w

    def _give_back(self, w: Worker) -> None:
        with self._lock:
            if w.alive:
                self._idle.append(w)
                # Keep at most `size` idle workers per kind and 3 x `size` in all: close the oldest.
                same = [x for x in self._idle if x.kind == w.kind]
                extra = same[: max(0, len(same) - self.size)]
                rest = [x for x in self._idle if x not in extra]
                extra += rest[: max(0, len(rest) - 3 * self.size)]
                self._idle = [x for x in self._idle if x not in extra]
            else:
                extra = []
        for x in extra:
            x.close()

    def run_many(
        self, kind: WorkerKind, requests: list[BaseModel], answer: type[M]
    ) -> list[M | Failure]:
        """Run every request on workers of `kind`; each answer is the reply or a Failure."""
        results: list[M | Failure | None] = [None] * len(requests)
        with self._lock:
            slots = self._slots.setdefault(kind, threading.Semaphore(self.size))
        todo: queue.Queue[int] = queue.Queue()
        for i in range(len(requests)):
            todo.put(i)

        def lane() -> None:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                with slots:
                    w = self._take(kind)
                    results[i] = w.run(requests[i], answer, self.timeout_s)
                    self._give_back(w)

        lanes = [
            threading.Thread(target=lane, daemon=True) for _ in range(min(self.size, len(requests)))
        ]
        for t in lanes:
            t.start()
        for t in lanes:
            t.join()
        return [r for r in results if r is not None]

    def prestart(self, kind: WorkerKind, n: int) -> None:
        """Start workers of `kind` until `n` are idle (at most the pool's size), without waiting:
        their interpreters start up while other work runs instead of when a request comes."""
        with self._lock:
            have = sum(1 for w in self._idle if w.kind == kind and w.alive)
        for _ in range(min(n, self.size) - have):
            with self._lock:
                self._seed += 1
                seed = kind.hash_seed if kind.hash_seed is not None else self._seed
            w = self._spawn(kind, seed)
            with self._lock:
                self._all = [x for x in self._all if x.alive] + [w]
                self._idle.insert(0, w)  # taken after the warm ones (`_take` picks from the end)

    def run_sequence(
        self, kind: WorkerKind, requests: list[BaseModel], answer: type[M]
    ) -> list[M | Failure]:
        """Run `requests` one after the other on one worker of `kind` (replaced if it dies), in
        the calling thread: consecutive runs of one shape reuse the worker's replayed program."""
        out: list[M | Failure] = []
        w: Worker | None = None
        for req in requests:
            if w is None or not w.alive:
                if w is not None:
                    self._give_back(w)  # a dead worker is dropped there
                w = self._take(kind)
            out.append(w.run(req, answer, self.timeout_s))
        if w is not None:
            self._give_back(w)
        return out

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
        if self._spawner is not None:
            self._spawns.put(None)
