"""The evaluator: static checks, data-free traces, isolated runs, bit-exact comparison, integrity.

`LocalEvaluator.evaluate(source, problem)` is the whole pipeline behind `knight eval` and the
agent loop. Per workload *shape* the candidate is traced once, in a tracer process that knows
only shapes and dtypes, into a call log; per workload and seed an executor process replays that
log on the inputs and times it. Determinism means: a second trace under another hash seed gives
the same call log, for every shape. A remote evaluator (docs/evaluator-protocol.md) returns the
same `EvalReport`.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from knight.errors import KnightError
from knight.evaluation.cache import FileCache, ReferenceCache, RunCache, default_reference_dir
from knight.evaluation.categories import Category
from knight.evaluation.compare import attribute_mismatch, same_outputs
from knight.evaluation.fingerprint import harness_fingerprint, versions
from knight.evaluation.inputs import cached_inputs, default_input_cache, input_cache_limit
from knight.evaluation.pool import WorkerKind, WorkerPool
from knight.evaluation.report import EvalReport, Failure, RunResult, WorkloadReport
from knight.evaluation.static_check import check_source
from knight.evaluation.tasks import Task, run_tasks
from knight.evaluation.worker import (
    ExecuteRequest,
    TensorDecl,
    TraceRequest,
    TraceResult,
    execute_one,
    trace_one,
)
from knight.npu.calllog import CallLog
from knight.npu.dtypes import name_of
from knight.npu.machine import MachineSpec, load_machine
from knight.problems import Problem, Workload, weighted_geomean
from knight.source import canonical_source, source_hash

DETERMINISM = "#determinism"  # cache suffix of a shape's determinism verdict
TRACE_SEED = 1001  # hash seed of the trace that is executed and scored
CHECK_SEED = 1002  # hash seed of the determinism re-trace
_LOGS_KEPT = 64  # call logs kept per evaluator (per candidate, shape and hash seed)


class Evaluator(Protocol):
    """Anything that can judge a kernel source for a problem."""

    def evaluate(self, source: str, problem: Problem, *, heldout: bool = False) -> EvalReport: ...

    def close(self) -> None: ...


class LocalEvaluator:
    """Judges candidates on this machine, in worker processes (or in-process with isolate=False)."""

    def __init__(
        self,
        machine: str | None = None,
        *,
        workers: int | None = None,
        timeout_s: float = 300.0,
        memory_mb: int = 6144,
        cache: RunCache | None = None,
        isolate: bool = True,
        max_seeds: int | None = None,
        input_cache: Path | None = None,
        reference_cache: Path | None = None,
    ) -> None:
        self.machine_name = machine
        self.cache: RunCache = cache if cache is not None else FileCache()
        # The baseline's runs are the problem's: kept on disk whatever the candidate cache is.
        self.reference = ReferenceCache(reference_cache or default_reference_dir(self.cache))
        self.isolate = isolate
        self.max_seeds = max_seeds
        self.input_cache = input_cache or default_input_cache()
        self.input_cache_limit = input_cache_limit()
        self.pool = WorkerPool(workers, timeout_s, memory_mb) if isolate else None
        self._aux: WorkerPool | None = None  # in-process mode: re-traces under another hash seed
        self._aux_args = (timeout_s, memory_mb)
        self._logs: OrderedDict[tuple, TraceResult] = OrderedDict()
        self._lock = threading.Lock()  # the trace memo: lanes call in parallel

    def close(self) -> None:
        for pool in (self.pool, self._aux):
            if pool is not None:
                pool.close()

    def __enter__(self) -> LocalEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ pipeline

    def evaluate(
        self, source: str, problem: Problem, *, heldout: bool = False, profile: bool = True
    ) -> EvalReport:
        """Judge `source` on every visible workload and seed (and the held-out ones if asked)."""
        start = time.perf_counter()
        source = canonical_source(source)  # what runs is exactly what the cache key hashes
        machine = load_machine(self.machine_name or problem.spec.machine)
        ctx = _Context(self, problem, machine, source)
        report = ctx.report()
        failure = _static_failure(source, problem.spec.kernel_file)
        if failure is None:
            failure = ctx.judge(heldout, profile)
        if failure is not None:
            # A failed candidate has no score: per-workload latencies stay as diagnostics only.
            report.status, report.failure = "failed", failure
            report.score_ns = report.speedup = None
        report.cached_runs, report.simulated_runs = ctx.cached, ctx.simulated
        report.wall_s = time.perf_counter() - start
        return report

    def profile_run(
        self,
        source: str,
        problem: Problem,
        workload: str | None = None,
        seed: int | None = None,
        trace: bool = False,
    ) -> RunResult:
        """One isolated run with its profile (and Chrome trace): `knight profile`."""
        w = problem.workload(workload) if workload else problem.spec.workloads[0]
        s = w.seeds[0] if seed is None else seed
        source = canonical_source(source)
        failure = _static_failure(source, problem.spec.kernel_file)
        if failure is not None:
            return RunResult(workload=w.name, seed=s, ok=False, failure=failure)
        machine = load_machine(self.machine_name or problem.spec.machine)
        [traced] = self.traces(source, problem.spec.kernel_file, problem, [w], machine, TRACE_SEED)
        if not traced.ok or traced.call_log is None:
            return _failed_run(w.name, s, traced.failure)
        req = ExecuteRequest(
            call_log=traced.call_log,
            problem_dir=str(problem.root),
            workload=w.name,
            seed=s,
            machine=machine.name,
            profile=True,
            trace=trace,
            input_cache=str(self.input_cache),
            input_cache_limit=self.input_cache_limit,
        )
        return self.execute(problem, [req])[0]

    # ------------------------------------------------------------------ the two kinds of process

    def traces(
        self,
        source: str,
        filename: str,
        problem: Problem,
        workloads: list[Workload],
        machine: MachineSpec,
        hash_seed: int,
    ) -> list[TraceResult]:
        """The call log of `source` for each workload's shape, traced data-free (memoised)."""
        return self.traces_for(
            [(source, filename, w) for w in workloads], problem, machine, hash_seed
        )

    def traces_for(
        self,
        jobs: list[tuple[str, str, Workload]],
        problem: Problem,
        machine: MachineSpec,
        hash_seed: int,
    ) -> list[TraceResult]:
        """Call logs for (source, file name, workload) jobs: one trace per distinct source and
        shape, all in one batch so that every tracer stays busy."""
        keys = []
        todo: dict[tuple, TraceRequest] = {}
        known: dict[tuple, TraceResult] = {}
        for source, filename, w in jobs:
            req = _trace_request(source, filename, problem, w, machine)
            key = trace_key(source, filename, req, hash_seed)
            keys.append(key)
            hit = self._memo_get(key)
            if hit is not None:
                known[key] = hit
            else:
                todo.setdefault(key, req)
        fresh = dict(zip(todo, self._run_traces(list(todo.values()), hash_seed), strict=True))
        for key, res in fresh.items():
            self._memo_put(key, res)
        return [fresh[k] if k in fresh else known[k] for k in keys]

    def _memo_get(self, key: tuple) -> TraceResult | None:
        with self._lock:
            hit = self._logs.get(key)
            if hit is not None:
                self._logs.move_to_end(key)
            return hit

    def _memo_put(self, key: tuple, res: TraceResult) -> None:
        if not (res.ok or res.failure is None or cacheable_failure(res.failure)):
            return  # a machine hiccup is retried, never remembered
        with self._lock:
            self._logs[key] = res
            while len(self._logs) > _LOGS_KEPT:
                self._logs.popitem(last=False)

    def trace_memo(self, key: tuple, req: TraceRequest, hash_seed: int) -> TraceResult:
        """One trace through the memo (the pipelined evaluation calls it from its lanes)."""
        hit = self._memo_get(key)
        if hit is None:
            [hit] = self._run_traces([req], hash_seed)
            self._memo_put(key, hit)
        return hit

    def _executor_kind(self, problem: Problem) -> WorkerKind:
        return WorkerKind(
            "execute", None, readable=(str(problem.root),), writable=(str(self.input_cache),)
        )

    def prestart_executors(self, problem: Problem, n: int) -> None:
        """Start up to `n` executors now, so they are ready when the first trace is."""
        if self.pool is not None and n > 0:
            self.pool.prestart(self._executor_kind(problem), n)

    @property
    def lanes(self) -> int:
        """How many tasks one evaluation runs at once: the pool's size (1 in-process)."""
        return self.pool.size if self.pool is not None else 1

    def _run_traces(self, reqs: list[TraceRequest], hash_seed: int) -> list[TraceResult]:
        pool = self.pool
        if pool is None:
            if hash_seed == TRACE_SEED:
                with _collector_paused():
                    return [trace_one(r) for r in reqs]
            if self._aux is None:  # another hash seed needs another process
                self._aux = WorkerPool(1, *self._aux_args)
            pool = self._aux
        out = pool.run_many(WorkerKind("trace", hash_seed), reqs, TraceResult)
        return [r if isinstance(r, TraceResult) else TraceResult(ok=False, failure=r) for r in out]

    def execute(
        self, problem: Problem, reqs: list[ExecuteRequest], *, sequence: bool = False
    ) -> list[RunResult]:
        """Replay call logs on inputs, in executor processes (or in this one with isolate=False).
        `sequence`: all on one executor in turn (runs of one shape share its replayed program)."""
        if self.pool is None:
            with _collector_paused():
                return [execute_one(r) for r in reqs]
        run = self.pool.run_sequence if sequence else self.pool.run_many
        out = run(self._executor_kind(problem), reqs, RunResult)
        return [
            r if isinstance(r, RunResult) else _failed_run(q.workload, q.seed, r)
            for q, r in zip(reqs, out, strict=True)
        ]


@contextmanager
def _collector_paused() -> Iterator[None]:
    """In-process traces and runs make many short-lived objects and few cycles; pausing the
    cyclic collector meanwhile (as workers do per request) saves most of their time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def cacheable_failure(f: Failure) -> bool:
    """A machine hiccup (timeout, memory, crash) is retried, never remembered."""
    return f.category not in (Category.timeout, Category.memory_limit, Category.worker_crash)


def _failed_run(workload: str, seed: int, failure: Failure | None) -> RunResult:
    f = (failure or Failure(category=Category.worker_crash, message="no answer")).model_copy(
        update={"workload": workload, "seed": seed}
    )
    return RunResult(workload=workload, seed=seed, ok=False, failure=f)


def _trace_request(
    source: str, filename: str, problem: Problem, w: Workload, machine: MachineSpec
) -> TraceRequest:
    def decls(specs: dict) -> dict[str, TensorDecl]:
        return {
            n: TensorDecl(shape=list(shape), dtype=name_of(dt)) for n, (shape, dt) in specs.items()
        }

    return TraceRequest(
        source=source,
        filename=filename,
        entry=problem.spec.entry,
        inputs=decls(problem.input_specs(w)),
        outputs=decls(problem.output_specs(w)),
        machine=machine.name,
        grid=problem.spec.grid,
    )


def _trace_difference(a: TraceResult, b: TraceResult) -> str | None:
    """How a second trace differs from the first (None: the same call log)."""
    if not (a.ok and b.ok):
        fa, fb = a.failure, b.failure
        if (fa and fa.one_line()) == (fb and fb.one_line()):
            return None
        return f"gave another result: {fb.one_line() if fb else 'a call log'} (first: {fa.one_line() if fa else 'a call log'})"
    if a.call_log == b.call_log:
        return None
    la, lb = CallLog.from_json(a.call_log or ""), CallLog.from_json(b.call_log or "")
    for core, (ca, cb) in enumerate(zip(la.cores, lb.cores, strict=False)):
        for i, (x, y) in enumerate(zip(ca, cb, strict=False)):
            if x != y:
                return (
                    f"issues another program: on core {core}, call {i} was {x.fn} at {x.loc} and is now "
                    f"{y.fn} at {y.loc} (iteration order of a set or dict of strings depends on the hash seed)"
                )
        if len(ca) != len(cb):
            return f"issues another program: core {core} makes {len(ca)} calls, then {len(cb)}"
    return "issues another program (the same calls on other tensors or views)"


def shape_key(req: TraceRequest) -> str:
    """What a trace depends on besides the source: shapes, dtypes, machine, grid."""
    return json.dumps(req.model_dump(exclude={"source", "filename"}), sort_keys=True)


def trace_key(source: str, filename: str, req: TraceRequest, hash_seed: int) -> tuple:
    """The memo key of one trace: the candidate, its file name, the shape and the hash seed."""
    return (_hash(source), filename, shape_key(req), hash_seed)


def _static_failure(source: str, filename: str) -> Failure | None:
    try:
        source.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates: no file could hold this text
        return Failure(
            category=Category.syntax_error,
            message=f"the source is not valid UTF-8 text ({e.reason})",
            file=filename,
            line=source.count("\n", 0, e.start) + 1,
        )
    try:
        violations = check_source(source, filename)
    except SyntaxError as e:
        return Failure(
            category=Category.syntax_error,
            message=e.msg or "invalid syntax",
            file=filename,
            line=e.lineno,
        )
    except ValueError as e:  # e.g. NUL bytes in the source
        return Failure(category=Category.syntax_error, message=str(e), file=filename)
    except (
        RecursionError,
        MemoryError,
    ):  # the parser or the checker gave up: never crash the judge
        return Failure(
            category=Category.syntax_error,
            message="the source nests too deeply to be parsed",
            file=filename,
        )
    if not violations:
        return None
    first = violations[0]
    return Failure(
        category=Category.forbidden_construct,
        message=first.message,
        file=filename,
        line=first.line,
        details={"violations": [{"line": v.line, "message": v.message} for v in violations[:20]]},
    )


def _hash(source: str) -> str:
    """The candidate's hash; text that is not valid UTF-8 (lone surrogates) is hashed escaped."""
    try:
        return source_hash(source)
    except UnicodeEncodeError:
        return source_hash(source.encode("utf-8", "backslashreplace").decode("utf-8"))


class _Context:
    """One evaluation: the candidate, the baseline, the machine, and the runs gathered so far."""

    def __init__(
        self, ev: LocalEvaluator, problem: Problem, machine: MachineSpec, source: str
    ) -> None:
        self.ev, self.problem, self.machine, self.source = ev, problem, machine, source
        self.harness = harness_fingerprint(problem, machine)
        self.cand_hash = _hash(source)
        self.base_source = canonical_source(problem.baseline_source())
        self.base_hash = source_hash(self.base_source)
        self.cached = self.simulated = 0
        self.workloads: list[WorkloadReport] = []
        self.integrity: dict[str, bool] = {}
        self.profile: dict[str, Any] = {}

    def report(self) -> EvalReport:
        self._report = EvalReport(
            candidate_hash=self.cand_hash,
            problem=self.problem.id,
            harness=self.harness,
            machine=self.machine.name,
            status="ok",
            versions=versions(),
        )
        return self._report

    def _seeds(self, w: Workload) -> list[int]:
        return w.seeds[: self.ev.max_seeds] if self.ev.max_seeds else list(w.seeds)

    def judge(self, heldout: bool, profile: bool) -> Failure | None:
        visible = self.problem.all_workloads(heldout=False)
        pairs = [(w, s) for w in visible for s in self._seeds(w)]
        # The determinism re-traces run alongside the runs; their verdict is read in order below.
        recheck = self._unchecked_shapes(visible)
        base, cand = self._collect(pairs, profile_first=profile, recheck=recheck)
        failure = self._check(visible, base, cand)
        self._fill_report(visible, base, cand, heldout=False)
        if failure is None:
            failure = self._determinism(visible)
        if failure is None and heldout:
            failure = self._heldout()
        self._finish_report()
        return failure

    # -- running (through the cache)

    def _collect(
        self, pairs, profile_first: bool = False, recheck: list[Workload] | None = None
    ) -> tuple[dict, dict]:
        """The baseline's and the candidate's runs on `pairs`, pipelined over the pool: each
        shape is traced once, its seeds then run in turn on one executor while other shapes are
        still being traced; the determinism re-traces of `recheck` fill idle lanes."""
        kernels = [
            (self.base_hash, self.base_source, "baseline.py"),
            (self.cand_hash, self.source, self.problem.spec.kernel_file),
        ]
        out: list[dict[tuple[str, int], RunResult]] = [{}, {}]
        same = self.cand_hash == self.base_hash
        # Profile each workload's first seed: the proposer sees every workload's digest, and the
        # worst workload's in full, not only the first one's. The baseline's profile is unused.
        profiled = {w.name: s for w, s in reversed(pairs)} if profile_first else {}
        groups: dict[tuple, tuple[TraceRequest, list[tuple[int, Workload, int, bool]]]] = {}
        for k, (h, src, filename) in enumerate(kernels[:1] if same else kernels):
            for w, s in pairs:
                profile = profiled.get(w.name) == s and (k == 1 or same)
                hit = self._cached(k, h, w.name, s)
                if hit is not None and (not profile or hit.profile):
                    out[k][(w.name, s)] = hit
                    self.cached += 1
                    continue
                req = _trace_request(src, filename, self.problem, w, self.machine)
                key = trace_key(src, filename, req, TRACE_SEED)
                groups.setdefault(key, (req, []))[1].append((k, w, s, profile))
        lock = threading.Lock()
        # The first candidate run over the wall-clock limit decides the verdict: the candidate's
        # remaining traces and runs are not started (each could cost the whole limit again).
        timed_out: list[Failure] = []

        def record(k: int, r: RunResult, simulated: bool) -> None:
            with lock:
                out[k][(r.workload, r.seed)] = r
                self.simulated += simulated
                if k == 1 and r.failure is not None and r.failure.category is Category.timeout:
                    timed_out.append(r.failure)
            self.ev.cache.put(kernels[k][0], self.harness, r)
            if k == 0:
                self.ev.reference.put(self.base_hash, self.harness, r)

        def skipped(items: list) -> bool:
            """Record the candidate's `items` as not run once it has timed out."""
            if not timed_out or any(k == 0 for k, *_ in items):
                return False
            first = timed_out[0]
            why = Failure(
                category=Category.timeout,
                message=f"{first.message} on {first.workload} (seed {first.seed}); "
                "this workload was not run",
            )
            for k, w, s, _ in items:
                record(k, _failed_run(w.name, s, why), simulated=False)
            return True

        def execute(items: list, call_log: str) -> list[Task]:
            if skipped(items):
                return []
            reqs = [
                ExecuteRequest(
                    call_log=call_log, problem_dir=str(self.problem.root), workload=w.name,
                    seed=s, machine=self.machine.name, profile=profile,
                    input_cache=str(self.ev.input_cache),
                    input_cache_limit=self.ev.input_cache_limit,
                )
                for _, w, s, profile in items
            ]  # fmt: skip
            for (k, *_), r in zip(
                items, self.ev.execute(self.problem, reqs, sequence=True), strict=True
            ):
                record(k, r, simulated=True)
            return []

        def traces(jobs: list) -> Iterator[Task]:
            """Trace shapes one after the other on one tracer; each traced shape's runs are
            handed to a free lane at once."""
            for key, req, items in jobs:
                if skipped(items):
                    continue
                t = self.ev.trace_memo(key, req, TRACE_SEED)
                if t.ok and t.call_log is not None:
                    yield Task(1, lambda items=items, log=t.call_log: execute(items, log))
                    continue
                for k, w, s, _ in items:  # a failed trace is the verdict of its shape's seeds
                    record(k, _failed_run(w.name, s, t.failure), simulated=False)

        def retraces(jobs: list) -> list[Task]:
            for key, req in jobs:  # memoised for _determinism, which reads the verdict in order
                if timed_out:
                    break  # the verdict is already a failure: _determinism will not run
                self.ev.trace_memo(key, req, CHECK_SEED)
            return []

        scored = [(key, req, items) for key, (req, items) in groups.items()]
        again = []
        for w in recheck or []:
            req = self._candidate_request(w)
            again.append(
                (trace_key(self.source, self.problem.spec.kernel_file, req, CHECK_SEED), req)
            )
        # Chains of traces, so each lane keeps one tracer busy: with re-traces to do, half the
        # lanes trace for scoring and half re-trace (the same amount of work); the lanes that
        # finish first run the executions.
        lanes = self.ev.lanes
        n_again = min(len(again), lanes // 2) if again else 0
        n_scored = max(1, lanes - max(n_again, 1 if again else 0)) if scored else 0
        tasks = [Task(0, lambda j=scored[i::n_scored]: traces(j)) for i in range(n_scored)]
        n_again = max(n_again, 1) if again else 0
        tasks += [Task(0, lambda j=again[i::n_again]: retraces(j)) for i in range(n_again)]
        self.ev.prestart_executors(self.problem, min(lanes, len(scored)))
        run_tasks(lanes, tasks)
        if same:  # the candidate is the baseline: its runs are the same
            out[1] = out[0]
        base, cand = out
        bad = [r for r in base.values() if not r.ok]
        if bad:
            f = bad[0].failure
            raise KnightError(
                f"the baseline of {self.problem.id} fails on {bad[0].workload}: {f.one_line() if f else '?'}"
            )
        return base, cand

    def _cached(self, k: int, h: str, workload: str, seed: int) -> RunResult | None:
        """A run from the run cache, or (the baseline's) from the reference cache."""
        hit = self.ev.cache.get(h, self.harness, workload, seed)
        if hit is None and k == 0:
            hit = self.ev.reference.get(self.base_hash, self.harness, workload, seed)
        return hit

    def _candidate_request(self, w: Workload) -> TraceRequest:
        return _trace_request(
            self.source, self.problem.spec.kernel_file, self.problem, w, self.machine
        )

    # -- checks, in the order that gives the most specific verdict

    def _check(self, workloads: list[Workload], base: dict, cand: dict) -> Failure | None:
        for w in workloads:
            for s in self._seeds(w):
                r = cand[(w.name, s)]
                if not r.ok:
                    return r.failure
        for w in workloads:
            for s in self._seeds(w):
                r = cand[(w.name, s)]
                if r.inputs_mutated:
                    self.integrity["inputs_unchanged"] = False
                    return Failure(
                        category=Category.input_mutation,
                        workload=w.name,
                        seed=s,
                        message=f"the kernel wrote into its inputs {r.inputs_mutated}",
                        details={"inputs": r.inputs_mutated},
                    )
        self.integrity["inputs_unchanged"] = True
        failure = self._input_independence(workloads, base, cand)
        if failure is not None:
            return failure
        describe = self._describer()
        for w in workloads:
            for s in self._seeds(w):
                failure = attribute_mismatch(cand[(w.name, s)], base[(w.name, s)], describe(w, s))
                if failure is not None:
                    return failure
        for w in workloads:
            for s in self._seeds(w):
                r = cand[(w.name, s)]
                if r.floor_ns and r.latency_ns is not None and r.latency_ns < r.floor_ns:
                    self.integrity["above_floor"] = False
                    return Failure(
                        category=Category.below_physical_floor,
                        workload=w.name,
                        seed=s,
                        message=f"simulated {r.latency_ns:.0f} ns is below the physical floor of "
                        f"{r.floor_ns:.0f} ns (bound by {r.floor_bound or 'hbm'}: the work this "
                        "problem must do at that resource's peak rate): a simulator or "
                        "harness bug, never a win",
                        details={
                            "latency_ns": r.latency_ns,
                            "floor_ns": r.floor_ns,
                            "floor_bound": r.floor_bound,
                        },
                    )
        self.integrity["above_floor"] = True
        return None

    def _input_independence(self, workloads, base, cand) -> Failure | None:
        for w in workloads:
            seeds = self._seeds(w)
            for a, b in zip(seeds, seeds[1:], strict=False):
                if same_outputs(cand[(w.name, a)], cand[(w.name, b)]) and not same_outputs(
                    base[(w.name, a)], base[(w.name, b)]
                ):
                    self.integrity["input_dependent"] = False
                    return Failure(
                        category=Category.input_independent,
                        workload=w.name,
                        seed=b,
                        message=f"the outputs for seeds {a} and {b} are identical although the inputs "
                        "differ: the kernel ignores its inputs",
                    )
        self.integrity["input_dependent"] = True
        return None

    def _describer(self) -> Callable[[Workload, int], Callable | None]:
        hook = getattr(self.problem._module, "describe_mismatch", None)

        def for_run(w: Workload, s: int):
            if hook is None:
                return None

            def describe(name, diff):
                inputs = cached_inputs(
                    self.problem, w, s, self.ev.input_cache, self.ev.input_cache_limit
                )
                return hook(name, diff, inputs, dict(w.params))

            return describe

        return for_run

    def _unchecked_shapes(self, workloads: list[Workload]) -> list[Workload]:
        """One workload per shape whose determinism verdict is not cached yet."""
        by_shape: dict[str, Workload] = {}
        for w in workloads:
            by_shape.setdefault(shape_key(self._candidate_request(w)), w)
        return [
            w
            for w in by_shape.values()
            if self.ev.cache.get(self.cand_hash, self.harness, w.name + DETERMINISM, 0) is None
        ]

    def _determinism(self, workloads: list[Workload]) -> Failure | None:
        """Trace every workload shape again under another hash seed: the call log must not change."""
        todo = self._unchecked_shapes(workloads)
        if todo:
            filename = self.problem.spec.kernel_file
            first = self.ev.traces(
                self.source, filename, self.problem, todo, self.machine, TRACE_SEED
            )
            again = self.ev.traces(
                self.source, filename, self.problem, todo, self.machine, CHECK_SEED
            )
            for w, a, b in zip(todo, first, again, strict=True):
                why = _trace_difference(a, b)
                if why is not None:
                    self.integrity["deterministic"] = False
                    return Failure(
                        category=Category.nondeterministic,
                        workload=w.name,
                        message=f"tracing the kernel again under another hash seed {why}",
                    )
                self.ev.cache.put(
                    self.cand_hash,
                    self.harness,
                    RunResult(workload=w.name + DETERMINISM, seed=0, ok=True),
                )
        self.integrity["deterministic"] = True
        return None

    def _heldout(self) -> Failure | None:
        held = self.problem.spec.heldout
        pairs = [(w, s) for w in held for s in self._seeds(w)]
        base, cand = self._collect(pairs)
        failure = self._check(held, base, cand)
        self._fill_report(held, base, cand, heldout=True)
        self.integrity["heldout"] = failure is None
        if failure is None:
            return None
        # Held-out inputs stay secret: say that it failed and how, not on what.
        return Failure(
            category=Category.heldout_failure,
            message=f"correct on every visible workload but failed a held-out one ({failure.category.value})",
            details={"underlying": failure.category.value},
        )

    # -- the report

    def _fill_report(self, workloads, base, cand, heldout: bool) -> None:
        for w in workloads:
            seeds = self._seeds(w)
            runs = [cand[(w.name, s)] for s in seeds]
            bruns = [base[(w.name, s)] for s in seeds]
            ok = all(r.ok for r in runs)
            lat = sum(r.latency_ns for r in runs) / len(runs) if ok else None
            floored = [r for r in bruns if r.floor_ns]
            lowest = min(floored, key=lambda r: r.floor_ns, default=None)
            floor = lowest.floor_ns if lowest else None
            correct = ok and all(same_outputs(c, b) for c, b in zip(runs, bruns, strict=True))
            self.workloads.append(
                WorkloadReport(
                    name=w.name,
                    heldout=heldout,
                    weight=0.0 if heldout else w.weight,
                    latency_ns=lat,
                    baseline_latency_ns=sum(r.latency_ns for r in bruns) / len(bruns),
                    floor_ns=floor,
                    floor_bound=lowest.floor_bound if lowest else None,
                    roofline_fraction=(floor / lat) if (lat and floor) else None,
                    correct=correct,
                    seeds=seeds,
                    failure=next((r.failure for r in runs if r.failure), None),
                    profile=runs[0].profile,
                )
            )
        if not self.profile:
            first = cand.get((workloads[0].name, self._seeds(workloads[0])[0]))
            if first is not None and first.profile:
                self.profile = first.profile

    def _finish_report(self) -> None:
        r = self._report
        r.workloads = self.workloads
        r.integrity = self.integrity
        r.profile = self.profile
        visible = [w for w in self.workloads if not w.heldout]
        scored = [w for w in visible if w.weight > 0 and w.floor_ns] or [
            w for w in visible if w.floor_ns
        ]
        if scored:  # the heaviest visible workload's floor: what the problem's size demands
            heaviest = max(scored, key=lambda w: w.floor_ns)
            r.floor_ns, r.floor_bound = heaviest.floor_ns, heaviest.floor_bound
        if visible and all(w.latency_ns for w in visible):
            weights = {w.name: w.weight for w in visible}
            r.score_ns = weighted_geomean({w.name: w.latency_ns for w in visible}, weights)
            r.baseline_score_ns = weighted_geomean(
                {w.name: w.baseline_latency_ns for w in visible}, weights
            )
            r.speedup = r.baseline_score_ns / r.score_ns
