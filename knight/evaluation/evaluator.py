"""The evaluator: static checks, isolated runs, bit-exact comparison, integrity, score.

`LocalEvaluator.evaluate(source, problem)` is the whole pipeline behind `knight eval` and the
agent loop. A remote evaluator (docs/evaluator-protocol.md) returns the same `EvalReport`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from knight.errors import KnightError
from knight.evaluation.cache import FileCache, RunCache
from knight.evaluation.categories import Category
from knight.evaluation.compare import attribute_mismatch, same_outputs
from knight.evaluation.fingerprint import harness_fingerprint, versions
from knight.evaluation.pool import WorkerPool
from knight.evaluation.report import EvalReport, Failure, RunResult, WorkloadReport
from knight.evaluation.static_check import check_source
from knight.evaluation.worker import run_one
from knight.npu.machine import MachineSpec, load_machine
from knight.problems import Problem, Workload, weighted_geomean
from knight.source import canonical_source, source_hash

RERUN = "#rerun"  # cache suffix of the determinism re-run


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
    ) -> None:
        self.machine_name = machine
        self.cache: RunCache = cache if cache is not None else FileCache()
        self.isolate = isolate
        self.max_seeds = max_seeds
        self.pool = WorkerPool(workers, timeout_s, memory_mb) if isolate else None
        self.simulated = 0

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def __enter__(self) -> LocalEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ pipeline

    def evaluate(self, source: str, problem: Problem, *, heldout: bool = False, profile: bool = True) -> EvalReport:
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
        self, source: str, problem: Problem, workload: str | None = None, seed: int | None = None, trace: bool = False
    ) -> RunResult:
        """One isolated run with its profile (and Chrome trace): `knight profile`."""
        w = problem.workload(workload) if workload else problem.spec.workloads[0]
        s = w.seeds[0] if seed is None else seed
        source = canonical_source(source)
        failure = _static_failure(source, problem.spec.kernel_file)
        if failure is not None:
            return RunResult(workload=w.name, seed=s, ok=False, failure=failure)
        machine = load_machine(self.machine_name or problem.spec.machine)
        req = {
            "source": source, "filename": problem.spec.kernel_file, "problem_dir": str(problem.root),
            "workload": w.name, "seed": s, "machine": machine.name, "profile": True, "trace": trace,
        }
        return self.runs([req])[0]

    def runs(self, requests: list[dict[str, Any]], fresh: bool = False) -> list[RunResult]:
        self.simulated += len(requests)
        if self.pool is None:
            return [run_one(r) for r in requests]
        return self.pool.run_many(requests, fresh=fresh)


def _static_failure(source: str, filename: str) -> Failure | None:
    try:
        source.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates: no file could hold this text
        return Failure(category=Category.syntax_error, message=f"the source is not valid UTF-8 text ({e.reason})",
                       file=filename, line=source.count("\n", 0, e.start) + 1)
    try:
        violations = check_source(source, filename)
    except SyntaxError as e:
        return Failure(category=Category.syntax_error, message=e.msg or "invalid syntax", file=filename, line=e.lineno)
    except ValueError as e:  # e.g. NUL bytes in the source
        return Failure(category=Category.syntax_error, message=str(e), file=filename)
    except (RecursionError, MemoryError):  # the parser or the checker gave up: never crash the judge
        return Failure(category=Category.syntax_error, message="the source nests too deeply to be parsed", file=filename)
    if not violations:
        return None
    first = violations[0]
    return Failure(
        category=Category.forbidden_construct, message=first.message, file=filename, line=first.line,
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

    def __init__(self, ev: LocalEvaluator, problem: Problem, machine: MachineSpec, source: str) -> None:
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
            candidate_hash=self.cand_hash, problem=self.problem.id, harness=self.harness,
            machine=self.machine.name, status="ok", versions=versions(),
        )
        return self._report

    def _seeds(self, w: Workload) -> list[int]:
        return w.seeds[: self.ev.max_seeds] if self.ev.max_seeds else list(w.seeds)

    def judge(self, heldout: bool, profile: bool) -> Failure | None:
        visible = self.problem.all_workloads(heldout=False)
        pairs = [(w, s) for w in visible for s in self._seeds(w)]
        base, cand = self._collect(pairs, profile_first=profile)
        failure = self._check(visible, base, cand)
        self._fill_report(visible, base, cand, heldout=False)
        if failure is None:
            failure = self._determinism(visible[0], self._seeds(visible[0])[0], cand)
        if failure is None and heldout:
            failure = self._heldout()
        self._finish_report()
        return failure

    # -- running (through the cache)

    def _collect(self, pairs, profile_first: bool = False) -> tuple[dict, dict]:
        base = self._cached_runs(self.base_hash, self.base_source, pairs, "baseline.py", profile_first)
        cand = self._cached_runs(self.cand_hash, self.source, pairs, self.problem.spec.kernel_file, profile_first)
        bad = [r for r in base.values() if not r.ok]
        if bad:
            f = bad[0].failure
            raise KnightError(f"the baseline of {self.problem.id} fails on {bad[0].workload}: {f.one_line() if f else '?'}")
        return base, cand

    def _cached_runs(self, h: str, source: str, pairs, filename: str, profile_first: bool) -> dict:
        out: dict[tuple[str, int], RunResult] = {}
        todo = []
        for i, (w, s) in enumerate(pairs):
            hit = self.ev.cache.get(h, self.harness, w.name, s)
            if hit is not None and (not (profile_first and i == 0) or hit.profile):
                out[(w.name, s)] = hit
                self.cached += 1
            else:
                todo.append(self._request(source, filename, w.name, s, profile=profile_first and i == 0))
        for r in self.ev.runs(todo):
            self.simulated += 1
            out[(r.workload, r.seed)] = r
            self.ev.cache.put(h, self.harness, r)
        return out

    def _request(self, source: str, filename: str, workload: str, seed: int, profile: bool = False) -> dict[str, Any]:
        return {
            "source": source, "filename": filename, "problem_dir": str(self.problem.root),
            "workload": workload, "seed": seed, "machine": self.machine.name, "profile": profile,
        }

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
                    return Failure(category=Category.input_mutation, workload=w.name, seed=s,
                                   message=f"the kernel wrote into its inputs {r.inputs_mutated}",
                                   details={"inputs": r.inputs_mutated})
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
                    return Failure(category=Category.below_physical_floor, workload=w.name, seed=s,
                                   message=f"simulated {r.latency_ns:.0f} ns is below the physical floor of "
                                   f"{r.floor_ns:.0f} ns for the bytes this problem must move: a simulator or "
                                   "harness bug, never a win",
                                   details={"latency_ns": r.latency_ns, "floor_ns": r.floor_ns})
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
                    return Failure(category=Category.input_independent, workload=w.name, seed=b,
                                   message=f"the outputs for seeds {a} and {b} are identical although the inputs "
                                   "differ: the kernel ignores its inputs")
        self.integrity["input_dependent"] = True
        return None

    def _describer(self) -> Callable[[Workload, int], Callable | None]:
        hook = getattr(self.problem._module, "describe_mismatch", None)

        def for_run(w: Workload, s: int):
            if hook is None:
                return None

            def describe(name, diff):
                inputs = self.problem.make_inputs(w, s)
                return hook(name, diff, inputs, dict(w.params))

            return describe

        return for_run

    def _determinism(self, w: Workload, seed: int, cand: dict) -> Failure | None:
        """Run again in a fresh process with another hash seed: same bits, same latency."""
        key = w.name + RERUN
        again = self.ev.cache.get(self.cand_hash, self.harness, key, seed)
        if again is None:
            req = self._request(self.source, self.problem.spec.kernel_file, w.name, seed)
            again = self.ev.runs([req], fresh=True)[0]
            self.simulated += 1
            if again.ok:
                self.ev.cache.put(self.cand_hash, self.harness, again.model_copy(update={"workload": key}))
        else:
            self.cached += 1
        first = cand[(w.name, seed)]
        same = again.ok and same_outputs(first, again) and first.latency_ns == again.latency_ns
        self.integrity["deterministic"] = same
        if same:
            return None
        why = (again.failure.one_line() if again.failure else
               "different output bits" if not same_outputs(first, again) else
               f"latency {first.latency_ns} vs {again.latency_ns} ns")
        return Failure(category=Category.nondeterministic, workload=w.name, seed=seed,
                       message=f"running the same inputs again in a fresh process gave {why}")

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
        return Failure(category=Category.heldout_failure,
                       message=f"correct on every visible workload but failed a held-out one ({failure.category.value})",
                       details={"underlying": failure.category.value})

    # -- the report

    def _fill_report(self, workloads, base, cand, heldout: bool) -> None:
        for w in workloads:
            seeds = self._seeds(w)
            runs = [cand[(w.name, s)] for s in seeds]
            bruns = [base[(w.name, s)] for s in seeds]
            ok = all(r.ok for r in runs)
            lat = sum(r.latency_ns for r in runs) / len(runs) if ok else None
            floor = min((r.floor_ns for r in bruns if r.floor_ns), default=None)
            correct = ok and all(same_outputs(c, b) for c, b in zip(runs, bruns, strict=True))
            self.workloads.append(WorkloadReport(
                name=w.name, heldout=heldout, weight=0.0 if heldout else w.weight, latency_ns=lat,
                baseline_latency_ns=sum(r.latency_ns for r in bruns) / len(bruns), floor_ns=floor,
                roofline_fraction=(floor / lat) if (lat and floor) else None, correct=correct, seeds=seeds,
                failure=next((r.failure for r in runs if r.failure), None),
            ))
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
        if visible and all(w.latency_ns for w in visible):
            weights = {w.name: w.weight for w in visible}
            r.score_ns = weighted_geomean({w.name: w.latency_ns for w in visible}, weights)
            r.baseline_score_ns = weighted_geomean({w.name: w.baseline_latency_ns for w in visible}, weights)
            r.speedup = r.baseline_score_ns / r.score_ns
