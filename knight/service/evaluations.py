"""The server's evaluation queue: lanes in front of the evaluator, single-flight by request.

With the local evaluator, evaluations run one at a time (each already spreads its simulations over
the worker pool), so a run cached by one evaluation is a cache hit for the next. With `--evaluator
ray`, each evaluation is a Ray task and the queue keeps as many in flight as the cluster has task
slots. Identical requests that arrive while one is queued or running share it instead of
simulating again. The queue is bounded: a full queue is refused (the API answers 429 with
Retry-After) rather than letting latency grow without limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from knight.errors import KnightError
from knight.evaluation import LocalEvaluator, RunCache
from knight.evaluation.ray_evaluator import RayEvaluator
from knight.npu.machine import PRESET_NAMES
from knight.problems import Problem
from knight.service.refused import Refused
from knight.service.schemas import EvaluationJob, EvaluationRequest
from knight.source import canonical_source

log = logging.getLogger("knight.service")
T = TypeVar("T")
ServerEvaluator = LocalEvaluator | RayEvaluator  # both take profile=; see `EvaluationQueue`


@dataclass
class Job:
    """One submitted evaluation and, once finished, its report or error."""

    id: str
    key: str
    request: EvaluationRequest
    problem: Problem
    candidate_hash: str
    future: Future[None] = field(default_factory=Future)
    status: str = "queued"
    report: dict[str, Any] | None = None
    error: str | None = None

    def view(self) -> EvaluationJob:
        """The job as the API returns it."""
        return EvaluationJob(
            id=self.id,
            status=self.status,
            problem=self.problem.id,  # type: ignore[arg-type]
            problem_hash=self.problem.hash,
            candidate_hash=self.candidate_hash,
            report=self.report,
            error=self.error,
        )


@dataclass
class QueueStats:
    """Counters for /metrics."""

    evaluations: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0, "error": 0})
    evaluation_seconds: float = 0.0
    simulated_runs: int = 0
    cached_runs: int = 0
    refused_full: int = 0
    shared: int = 0  # requests answered by an identical evaluation already queued or running


class EvaluationQueue:
    """Accepts evaluation requests for the problems the server holds and judges them in order."""

    def __init__(
        self,
        problems: dict[str, Problem],
        cache: RunCache,
        *,
        workers: int | None = None,
        run_timeout_s: float = 300.0,
        memory_mb: int = 6144,
        max_queue: int = 64,
        keep_finished: int = 1000,
        ray_address: str | None = None,
        on_ray: bool = False,
    ) -> None:
        """`on_ray`: judge in Ray tasks on the cluster at `ray_address` (None: $RAY_ADDRESS or a
        local Ray) instead of local worker processes; connects now (KnightError if it cannot)."""
        self.problems, self.cache = problems, cache
        self.workers, self.run_timeout_s, self.memory_mb = workers, run_timeout_s, memory_mb
        self.max_queue, self.keep_finished = max_queue, keep_finished
        self.on_ray, self.ray_address = on_ray, ray_address
        self.stats = QueueStats()
        self._lock = threading.Lock()
        self._active: dict[str, Job] = {}  # single-flight key -> queued or running job
        self._jobs: OrderedDict[str, Job] = OrderedDict()  # id -> job (active and recent finished)
        self._evaluators: dict[tuple[str | None, int | None], ServerEvaluator] = {}
        self._mean_s = 1.0  # running mean of evaluation seconds, for Retry-After
        lanes = 1
        if on_ray:
            first = self._evaluator(None, None)
            assert isinstance(first, RayEvaluator)
            lanes = first.task_slots()
        self._lane = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="knight-eval")

    # ------------------------------------------------------------------ submitting

    def submit(self, req: EvaluationRequest) -> Job:
        """Queue `req` (or join an identical one in flight); raises `Refused` when it cannot."""
        problem = self.problems.get(req.problem)
        if problem is None:
            raise Refused(
                404,
                f"unknown problem {req.problem!r}; this server holds "
                f"{', '.join(sorted(self.problems))}",
            )
        if req.problem_hash is not None and req.problem_hash != problem.hash:
            raise Refused(
                409,
                f"this server holds {problem.id} version {problem.hash}, "
                f"not {req.problem_hash}: update one side so both judge by the same rules",
            )
        if req.machine is not None and req.machine not in PRESET_NAMES:
            raise Refused(
                422, f"unknown machine {req.machine!r}; choose one of {', '.join(PRESET_NAMES)}"
            )
        key, cand = _request_key(req, problem)
        with self._lock:
            same = self._active.get(key)
            if same is not None:
                self.stats.shared += 1
                return same
            if len(self._active) >= self.max_queue:
                self.stats.refused_full += 1
                wait = max(1, min(60, math.ceil(self._mean_s * len(self._active))))
                raise Refused(
                    429,
                    f"the evaluation queue is full ({self.max_queue} waiting)",
                    {"Retry-After": str(wait)},
                )
            job = Job(uuid.uuid4().hex, key, req, problem, cand)
            self._active[key] = job
            self._jobs[job.id] = job
            self._trim()
        self._lane.submit(self._judge, job)
        return job

    def get(self, job_id: str) -> Job | None:
        """A queued, running or recently finished job."""
        with self._lock:
            return self._jobs.get(job_id)

    async def wait(self, job: Job, timeout_s: float) -> bool:
        """Wait (without holding a thread) until `job` finishes; False on timeout."""
        if job.future.done():
            return True
        # asyncio.wait never cancels what it waits for: a timed-out waiter leaves the job queued.
        done, _ = await asyncio.wait([asyncio.wrap_future(job.future)], timeout=timeout_s)
        return bool(done)

    def call(self, fn: Callable[[Callable[[str | None], ServerEvaluator]], T]) -> Future[T]:
        """Run `fn(evaluator_for_machine)` in the evaluation lane (e.g. a replay)."""
        return self._lane.submit(fn, lambda machine: self._evaluator(machine, None))

    def depth(self) -> tuple[int, int]:
        """(queued, running) evaluations."""
        with self._lock:
            running = sum(1 for j in self._active.values() if j.status == "running")
            return len(self._active) - running, running

    def close(self) -> None:
        """Stop taking work, finish nothing more, stop the worker processes."""
        self._lane.shutdown(wait=False, cancel_futures=True)
        for ev in self._evaluators.values():
            ev.close()

    # ------------------------------------------------------------------ the lane

    def _evaluator(self, machine: str | None, max_seeds: int | None) -> ServerEvaluator:
        key = (machine, max_seeds)
        with self._lock:  # lanes run concurrently on Ray: one evaluator per key all the same
            if key not in self._evaluators:
                self._evaluators[key] = self._new_evaluator(machine, max_seeds)
            return self._evaluators[key]

    def _new_evaluator(self, machine: str | None, max_seeds: int | None) -> ServerEvaluator:
        if self.on_ray:
            return RayEvaluator(
                self.ray_address,
                machine,
                cache=self.cache,
                cpus_per_task=self.workers or 1,
                timeout_s=self.run_timeout_s,
                memory_mb=self.memory_mb,
                max_seeds=max_seeds,
            )
        return LocalEvaluator(
            machine,
            workers=self.workers,
            timeout_s=self.run_timeout_s,
            memory_mb=self.memory_mb,
            cache=self.cache,
            max_seeds=max_seeds,
        )

    def _judge(self, job: Job) -> None:
        req = job.request
        job.status = "running"
        t0 = time.perf_counter()
        outcome = "error"
        try:
            ev = self._evaluator(req.machine, req.max_seeds)
            report = ev.evaluate(req.source, job.problem, heldout=req.heldout, profile=req.profile)
            # Readers ignore unknown fields (protocol §3): the version judged is named in the answer.
            job.report = {**report.model_dump(mode="json"), "problem_hash": job.problem.hash}
            self.stats.simulated_runs += report.simulated_runs
            self.stats.cached_runs += report.cached_runs
            outcome = report.status
            job.status = "done"
        except KnightError as e:  # the evaluator's own trouble, e.g. a baseline that fails
            job.error, job.status = str(e), "error"
        except Exception as e:  # never let the lane die; the client gets one line, the log the rest
            log.exception("evaluation %s failed", job.id)
            job.error, job.status = f"internal error in the evaluator ({type(e).__name__})", "error"
        finally:
            seconds = time.perf_counter() - t0
            with self._lock:
                self.stats.evaluations[outcome] += 1
                self.stats.evaluation_seconds += seconds
                self._mean_s = 0.8 * self._mean_s + 0.2 * seconds
                self._active.pop(job.key, None)
            job.future.set_result(None)

    def _trim(self) -> None:
        """Forget the oldest finished jobs beyond `keep_finished` (callers hold the lock)."""
        finished = [
            k
            for k, j in self._jobs.items()
            if j.key not in self._active or self._active[j.key] is not j
        ]
        for k in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._jobs[k]


def _request_key(req: EvaluationRequest, problem: Problem) -> tuple[str, str]:
    """The single-flight key of a request, and the candidate's hash."""
    from knight.source import source_hash

    canonical = canonical_source(req.source)
    try:
        cand = source_hash(canonical)
    except UnicodeEncodeError:  # not valid UTF-8: hashed escaped, judged as a syntax error
        cand = source_hash(canonical.encode("utf-8", "backslashreplace").decode("utf-8"))
    parts = [
        cand,
        problem.id,
        problem.hash,
        req.machine or problem.spec.machine,
        req.heldout,
        req.max_seeds,
        req.profile,
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest(), cand
