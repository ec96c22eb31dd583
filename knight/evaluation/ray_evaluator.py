"""Candidate evaluation as Ray tasks: `knight run|serve --evaluator ray[://ADDRESS]`.

Each evaluation is one Ray task. Inside it, the ordinary `LocalEvaluator` judges the candidate
(one per problem and settings, kept by the Ray worker process, so consecutive tasks reuse its
warm workers) with the same sandboxed tracer and executor processes as on one machine (data-free
traces per workload shape, replays on the node's memory-mapped input cache; scrubbed environment,
memory and wall-clock limits), so a cluster changes where candidates run, never how they are
judged.

- Placement, resources and retries are Ray's: `num_cpus` per task, `max_retries` when the process
  running a task dies (a node lost, a worker killed), `retry_exceptions` when the sandbox itself
  crashed. Exhausted retries come back as a `worker_crash` report (a run failure that is never
  cached), never as another verdict on the kernel.
- Knight's own code and the problem's files travel with the job and the task (the job's
  `runtime_env.py_modules`, the task's arguments), so every node judges with exactly the driver's harness.
- Cache: the task starts from the driver's cached runs of the candidate and the baseline (and
  the candidate's `#determinism` verdicts) and returns what it simulated; the driver stores
  those in its own cache. A candidate is traced and executed no more often than with the local
  evaluator.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import knight
from knight.blas import SINGLE_THREADED
from knight.errors import KnightError, UsageError
from knight.evaluation.cache import MemoryCache, RunCache, cacheable, user_cache_dir
from knight.evaluation.categories import Category
from knight.evaluation.evaluator import DETERMINISM, LocalEvaluator
from knight.evaluation.fingerprint import harness_fingerprint, versions
from knight.evaluation.report import EvalReport, Failure, RunResult
from knight.npu.machine import load_machine
from knight.problems import Problem
from knight.source import canonical_source, source_hash

SCHEME = "ray"
CacheEntry = tuple[str, str, dict[str, Any]]  # candidate hash, harness, RunResult as JSON


def parse_evaluator(spec: str) -> tuple[str, str | None]:
    """`local`, `ray` or `ray://HOST:PORT` -> (kind, Ray address or None); UsageError otherwise."""
    if spec in ("local", SCHEME):
        return spec, None
    prefix = SCHEME + "://"
    if spec.startswith(prefix) and len(spec) > len(prefix):
        return SCHEME, spec[len(prefix) :]
    raise UsageError(f"unknown --evaluator {spec!r}; use local, ray or ray://HOST:PORT")


class SandboxCrash(Exception):
    """Raised inside a task whose sandboxed worker crashed, so that Ray retries the task."""

    def __init__(self, report_json: str) -> None:
        super().__init__("the sandboxed worker crashed")
        self.report_json = report_json

    def __reduce__(self) -> tuple[Any, ...]:
        return (SandboxCrash, (self.report_json,))


class _TaskCache:
    """The task's cache: the driver's entries to start from, and a log of what it adds."""

    def __init__(self, entries: list[CacheEntry]) -> None:
        self.memory = MemoryCache()
        for candidate, harness, result in entries:
            self.memory.put(candidate, harness, RunResult.model_validate(result))
        self.added: list[CacheEntry] = []

    def get(self, candidate: str, harness: str, workload: str, seed: int) -> RunResult | None:
        return self.memory.get(candidate, harness, workload, seed)

    def put(self, candidate: str, harness: str, result: RunResult) -> None:
        if cacheable(result):
            self.memory.put(candidate, harness, result)
            self.added.append((candidate, harness, result.model_dump(mode="json")))


def evaluate_task(
    source: str,
    problem_files: dict[str, bytes],
    heldout: bool,
    entries: list[CacheEntry],
    settings: dict[str, Any],
    profile: bool = True,
) -> dict[str, Any]:
    """The body of one Ray task: judge with this process's evaluator for the problem, return the
    report and the runs it simulated."""
    problem, evaluator = _task_evaluator(problem_files, settings)
    cache = _TaskCache(entries)
    evaluator.cache = cache  # a Ray worker process runs one task at a time
    try:
        report = evaluator.evaluate(source, problem, heldout=heldout, profile=profile)
    finally:
        evaluator.cache = MemoryCache()
    if report.failure is not None and report.failure.category == Category.worker_crash:
        raise SandboxCrash(report.model_dump_json())
    return {"report": report.model_dump(mode="json"), "added": cache.added}


# Per Ray worker process: the problem folders it has rebuilt and an evaluator for each (problem,
# settings), so consecutive tasks reuse warm sandboxed workers instead of starting new ones.
_EVALUATORS_KEPT = 2
_evaluators: OrderedDict[str, tuple[Problem, LocalEvaluator]] = OrderedDict()


def _task_evaluator(
    problem_files: dict[str, bytes], settings: dict[str, Any]
) -> tuple[Problem, LocalEvaluator]:
    from knight.problems import load_problem

    files = _files_digest(problem_files)
    key = hashlib.sha256((files + json.dumps(settings, sort_keys=True)).encode()).hexdigest()
    if key in _evaluators:  # a warm evaluator: no file is read or written
        _evaluators.move_to_end(key)
        return _evaluators[key]
    root = _problem_folder(problem_files, files)
    evaluator = LocalEvaluator(
        settings["machine"],
        workers=settings["workers"],
        timeout_s=settings["timeout_s"],
        memory_mb=settings["memory_mb"],
        max_seeds=settings["max_seeds"],
        cache=MemoryCache(),
    )
    _evaluators[key] = (load_problem(str(root)), evaluator)
    if len(_evaluators) == 1:
        atexit.register(_close_evaluators)
    while len(_evaluators) > _EVALUATORS_KEPT:
        _evaluators.popitem(last=False)[1][1].close()
    return _evaluators[key]


def _files_digest(problem_files: dict[str, bytes]) -> str:
    """A digest of a problem folder's file names and contents."""
    digest = hashlib.sha256()
    for name in sorted(problem_files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(problem_files[name]).digest())
    return digest.hexdigest()


def _problem_folder(problem_files: dict[str, bytes], digest: str) -> Path:
    """The problem's files in a folder of the user's cache named by their `digest`, shared by
    every Ray worker process of the node. It is written once (atomically) and never removed by a
    process: Ray kills idle worker processes without running their exit handlers, so a folder per
    process would be left behind by each; one per problem version is a bounded cache."""
    root = user_cache_dir() / "problems" / digest[:32]
    if _holds(root, problem_files):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root.parent))
    for name, data in problem_files.items():
        path = incoming / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if root.exists() and not _holds(root, problem_files):  # damaged: set it aside, then replace
        stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=root.parent))
        try:
            root.rename(stale / "problem")
        except OSError:
            pass  # another process moved it first
        shutil.rmtree(stale, ignore_errors=True)
    try:
        incoming.rename(root)
    except OSError:  # another process put the same files there first
        shutil.rmtree(incoming, ignore_errors=True)
    if not _holds(root, problem_files):
        raise KnightError(f"cannot write the problem's files to {root}")
    return root


def _holds(root: Path, problem_files: dict[str, bytes]) -> bool:
    """Whether `root` holds exactly these files (never trust a folder by its name alone)."""
    try:
        present = {
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
        return present == set(problem_files) and all(
            (root / name).read_bytes() == data for name, data in problem_files.items()
        )
    except OSError:
        return False


def _close_evaluators() -> None:
    while _evaluators:
        _evaluators.popitem()[1][1].close()


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """KnightError at once when a HOST:PORT cluster address does not accept connections (Ray
    itself would retry for minutes); other forms (None, "auto", ray:// client URLs) are Ray's."""
    if not address or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise KnightError(f"cannot connect to Ray at {address}: {error}") from None


def _problem_files(problem: Problem) -> dict[str, bytes]:
    """The problem folder's files (the folder's hash, hence the harness, is the same remotely)."""
    files: dict[str, bytes] = {}
    for path in sorted(problem.root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files[path.relative_to(problem.root).as_posix()] = path.read_bytes()
    return files


class RayEvaluator:
    """An `Evaluator` whose evaluations run as Ray tasks on a cluster (or a local Ray)."""

    def __init__(
        self,
        address: str | None = None,
        machine: str | None = None,
        *,
        cache: RunCache | None = None,
        cpus_per_task: int = 1,
        timeout_s: float = 300.0,
        memory_mb: int = 6144,
        max_seeds: int | None = None,
        max_retries: int = 3,
        ship_code: bool = True,
    ) -> None:
        """Connect to the Ray cluster at `address` (None: $RAY_ADDRESS, else a local Ray)."""
        try:
            import ray
        except ImportError:
            raise KnightError("--evaluator ray needs Ray: pip install 'knight[ray]'") from None
        self._ray = ray
        self.machine_name = machine
        self.cache: RunCache = cache if cache is not None else MemoryCache()
        self.max_seeds = max_seeds
        self.settings = {
            "machine": machine,
            "workers": cpus_per_task,
            "timeout_s": timeout_s,
            "memory_mb": memory_mb,
            "max_seeds": max_seeds,
        }
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # Job-level runtime environment: Ray uploads Knight's package once per job.
        env_vars = {"RAY_USAGE_STATS_ENABLED": "0", **SINGLE_THREADED}
        runtime_env: dict[str, Any] = {"env_vars": env_vars}
        if ship_code:
            runtime_env["py_modules"] = [str(Path(knight.__file__).resolve().parent)]
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            _check_reachable(address or os.environ.get("RAY_ADDRESS"))
            try:
                ray.init(
                    address=address,
                    runtime_env=runtime_env,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level="ERROR",
                )
            except (ConnectionError, RuntimeError, ValueError) as error:
                where = address or os.environ.get("RAY_ADDRESS") or "a local Ray"
                raise KnightError(f"cannot connect to Ray at {where}: {error}") from None
        self._task = ray.remote(evaluate_task).options(
            num_cpus=cpus_per_task,
            max_retries=max_retries,
            retry_exceptions=[SandboxCrash],
        )
        self.retries = max_retries

    def evaluate(
        self, source: str, problem: Problem, *, heldout: bool = False, profile: bool = True
    ) -> EvalReport:
        """Judge `source` in a Ray task; the report is the one the local evaluator would give
        (`profile=False` skips the profiles, as with the local evaluator)."""
        ray = self._ray
        start = time.perf_counter()
        source = canonical_source(source)
        entries = self._cached_entries(source, problem, heldout)
        files = _problem_files(problem)
        ref = self._task.remote(source, files, heldout, entries, self.settings, profile)
        try:
            out = ray.get(ref)
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, SandboxCrash):
                return EvalReport.model_validate_json(cause.report_json)
            if isinstance(cause, KnightError):
                raise KnightError(str(cause)) from None
            raise KnightError(f"a Ray evaluation task failed: {error}") from None
        except (ray.exceptions.RayError, ConnectionError) as error:
            # The task's process or node died more often than Ray retries: machine trouble.
            return self._crashed(source, problem, error, time.perf_counter() - start)
        for candidate, harness, result in out["added"]:
            self.cache.put(candidate, harness, RunResult.model_validate(result))
        return EvalReport.model_validate(out["report"])

    def task_slots(self) -> int:
        """How many evaluation tasks the cluster runs at once (its CPUs over the CPUs per task)."""
        cpus = self._ray.cluster_resources().get("CPU", 1)
        return max(1, int(cpus) // max(1, self.settings["workers"]))

    def _cached_entries(self, source: str, problem: Problem, heldout: bool) -> list[CacheEntry]:
        """The driver's cached runs of the candidate and the baseline under this harness."""
        harness = harness_fingerprint(problem, self._machine(problem))
        workloads = list(problem.all_workloads(heldout=False))
        keys = [(w.name, s) for w in workloads for s in self._seeds(w.seeds)]
        # A shape's determinism verdict is kept under one of its workloads (seed 0); which one
        # is the evaluator's choice, so every visible workload's key is offered.
        keys += [(w.name + DETERMINISM, 0) for w in workloads]
        if heldout:
            keys += [(w.name, s) for w in problem.spec.heldout for s in self._seeds(w.seeds)]
        baseline = canonical_source(problem.baseline_source())
        entries: list[CacheEntry] = []
        for digest in dict.fromkeys((source_hash(source), source_hash(baseline))):
            for workload, seed in keys:
                hit = self.cache.get(digest, harness, workload, seed)
                if hit is not None:
                    entries.append((digest, harness, hit.model_dump(mode="json")))
        return entries

    def _seeds(self, seeds: list[int]) -> list[int]:
        return list(seeds[: self.max_seeds]) if self.max_seeds else list(seeds)

    def _machine(self, problem: Problem):
        return load_machine(self.machine_name or problem.spec.machine)

    def _crashed(
        self, source: str, problem: Problem, error: Exception, wall_s: float
    ) -> EvalReport:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        message = (
            f"the Ray task died {self.retries + 1} times (node or worker lost; "
            f"{type(error).__name__}: {first[:200]})"
        )
        return EvalReport(
            candidate_hash=source_hash(source),
            problem=problem.id,
            harness=harness_fingerprint(problem, self._machine(problem)),
            machine=self._machine(problem).name,
            status="failed",
            failure=Failure(category=Category.worker_crash, message=message),
            wall_s=wall_s,
            versions=versions(),
        )

    def close(self) -> None:
        """Disconnect from Ray if this evaluator connected (a local Ray it started stops)."""
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()

    def __enter__(self) -> RayEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
