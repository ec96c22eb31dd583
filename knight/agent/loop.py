"""The agent loop: propose, patch, evaluate, judge, record — one transaction per iteration.

A `Runner` owns one run of one problem. The run advances in rounds of `parallel` candidates (one
by default), each drawn from a parent in the beam (the champion by default). Every candidate
builds the proposer's context, asks for a proposal (waiting out provider outages without spending
the budget), applies it (with bounded fix rounds while the patch does not apply or the candidate
fails before it runs), is evaluated, and is recorded through the `RunStore` in one transaction as
soon as it finishes, so a killed run loses at most the iterations in flight and a resume fills
exactly the numbers that are missing.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

import knight
from knight.agent.beam import Beam, round_parents
from knight.agent.config import ResumeOverrides, RunConfig, open_run
from knight.agent.context import Champion, ContextBuilder
from knight.agent.focus import choose_focus
from knight.agent.outage import OutageBackoff
from knight.agent.policy import Verdict, judge
from knight.errors import KnightError
from knight.evaluation import EvalReport, Evaluator
from knight.failure import Category, Failure, IterationStatus, RunStatus
from knight.npu.machine import load_machine
from knight.patch import PatchError, apply_edits
from knight.problems import Problem
from knight.proposal import Edit, Proposal
from knight.proposers import ProposalContext, ProposalResult, Proposer
from knight.skills import Skill
from knight.source import canonical_source, source_hash
from knight.store import (
    IterationRecord,
    IterationSummary,
    LessonRecord,
    RunInfo,
    RunSpec,
    RunStore,
    utcnow,
)
from knight.tunables import knob_edits


@dataclass
class RunSummary:
    """The end of a run (or of this session of it)."""

    run_id: int
    status: RunStatus
    iterations: int
    accepted: int
    baseline_score_ns: float
    best_score_ns: float
    speedup: float
    champion_hash: str
    cost_usd: float
    stop_reason: str
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (`knight run --json`)."""
        return {**self.__dict__, "status": self.status.value}


class Events(Protocol):
    """Progress callbacks (the CLI shows them; tests may record them)."""

    def iteration_started(self, number: int, budget: int) -> None: ...

    def iteration_finished(self, outcome: IterationSummary, best_speedup: float) -> None: ...

    def message(self, text: str) -> None: ...


class _Quiet:
    def iteration_started(self, number: int, budget: int) -> None:
        pass

    def iteration_finished(self, outcome: IterationSummary, best_speedup: float) -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass
class _Attempt:
    """What one iteration produced so far (the last round's candidate and verdict)."""

    number: int
    parent: Champion
    started_at: datetime
    t0: float
    proposer: str
    focus: str | None = None
    results: list[ProposalResult] = field(default_factory=list)
    fix_rounds: int = 0
    proposal: Proposal | None = None
    source: str | None = None
    edits: list[Edit] = field(default_factory=list)  # as applied: edits plus knob settings
    rungs: list[str] = field(default_factory=list)
    diff: str = ""
    report: EvalReport | None = None
    verdict: Verdict | None = None

    def reset_candidate(self, result: ProposalResult) -> None:
        """Start a new round from `result`: forget the previous round's candidate."""
        self.proposal, self.source, self.report, self.verdict = result.proposal, None, None, None
        self.edits, self.rungs, self.diff = [], [], ""


@dataclass
class _Slot:
    """One candidate of a round: its iteration number, parent, context and proposer."""

    number: int
    parent: Champion
    ctx: ProposalContext
    proposer: Proposer


class _Stop(Exception):
    """The session ends before the budget: `status` and why."""

    def __init__(self, status: RunStatus, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class Runner:
    """Runs (or resumes) one optimisation run of one problem."""

    def __init__(
        self,
        store: RunStore,
        problem: Problem,
        evaluator: Evaluator,
        proposer: Proposer,
        skills: dict[str, Skill] | None = None,
        events: Events | None = None,
        machine: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        proposer_factory: Callable[[], Proposer] | None = None,
    ) -> None:
        """`clock` and `sleep` drive time limits and outage waits (tests pass fakes);
        `proposer_factory` makes the extra proposers of parallel rounds (proposers keep a
        conversation per call, so concurrent calls need one each)."""
        self.store, self.problem, self.evaluator, self.proposer = (
            store,
            problem,
            evaluator,
            proposer,
        )
        self.skills = skills or {}
        self.events: Events = events or _Quiet()
        self.machine = load_machine(machine or problem.spec.machine)
        self.clock, self.sleep = clock, sleep
        self._spent_usd = 0.0  # model spending of the run so far (this session adds to it)
        self._proposers: list[Proposer] = [proposer]
        self._factory = proposer_factory
        self._lock = threading.Lock()  # guards spending and the round's claimed hashes
        self._claimed: set[str] = set()  # candidate hashes built in the current round

    # ------------------------------------------------------------------ start / resume

    def start(self, config: RunConfig) -> RunSummary:
        """Create a run, judge the baseline, and iterate until a budget is spent."""
        source = canonical_source(self.problem.baseline_source())
        self.events.message(f"evaluating the baseline of {self.problem.id} ...")
        report = self.evaluator.evaluate(source, self.problem, heldout=True)
        if not report.ok or report.score_ns is None:
            why = report.failure.one_line() if report.failure else "no score"
            raise KnightError(
                f"the baseline of {self.problem.id} does not pass its own evaluation: {why}"
            )
        run = self.store.start_run(
            RunSpec(
                problem_id=self.problem.id,
                problem_hash=self.problem.hash,
                machine=self.machine.name,
                machine_hash=self.machine.hash,
                knight_version=knight.__version__,
                proposer=self.proposer.name,
                seed=config.seed,
                budget=config.budget,
                max_cost=config.max_cost,
                time_limit_s=config.time_limit_s,
                baseline_source=source,
                baseline_score_ns=report.score_ns,
                config=config.stored_config(),
            )
        )
        champion = Champion(source_hash(source), source, report.score_ns, report)
        with self.store.hold_run(run.id):
            return self._loop(run, Beam(config.beam, [champion]), config)

    def resume(self, run_id: int, overrides: ResumeOverrides | None = None) -> RunSummary:
        """Continue a stopped run where it stopped, with `overrides` applied to its limits."""
        with self.store.hold_run(run_id):
            return self._resume(run_id, overrides)

    def _resume(self, run_id: int, overrides: ResumeOverrides | None) -> RunSummary:
        run, config = open_run(self.store, run_id, self.problem.id, overrides or ResumeOverrides())
        return self._loop(run, self._stored_beam(run_id, config.beam), config)

    def _stored_beam(self, run_id: int, width: int, before: int | None = None) -> Beam:
        """The beam rebuilt from the store (with `before`: from the kernels of the iterations
        numbered below it); each kernel is re-evaluated (a cache hit) for its report."""
        beam = Beam(width)
        for digest, number in self.store.beam(run_id, width, before):
            source = self.store.candidate_source(digest)
            report = self.evaluator.evaluate(source, self.problem)
            if report.ok and report.score_ns is not None:
                beam.offer(Champion(digest, source, report.score_ns, report, number))
            elif not beam.members:  # the best comes first: it must still pass
                self.store.close_run(run_id, RunStatus.interrupted)
                which = "champion" if before is None else f"best kernel before iteration {before}"
                raise KnightError(
                    f"the {which} of run {run_id} no longer passes evaluation "
                    "(did the harness change?)"
                )
        return beam

    # ------------------------------------------------------------------ the loop

    def _loop(self, run: RunInfo, beam: Beam, config: RunConfig) -> RunSummary:
        t0 = self.clock()
        context = ContextBuilder(self.store, self.problem, self.skills, config.min_gain)
        status, reason = RunStatus.finished, "budget"
        failing = 0  # consecutive iterations without a proposal, in this session
        # Read once; then counted here, so an iteration costs one read and one write of the store.
        self._spent_usd = self.store.progress(run.id).cost_usd
        used = self.store.iteration_numbers(run.id)
        rounds = 0
        try:
            while True:
                if len(used) >= config.budget:
                    break
                if config.max_cost is not None and self._spent_usd >= config.max_cost:
                    reason = f"cost limit ${config.max_cost:.2f} reached"
                    break
                if config.time_limit_s is not None and self.clock() - t0 >= config.time_limit_s:
                    reason = f"time limit {config.time_limit_s:g} s reached"
                    break
                if failing >= config.max_proposer_errors:
                    raise _Stop(
                        RunStatus.interrupted,
                        f"the proposer failed {failing} times in a row; "
                        "fix the cause, then resume with --resume",
                    )
                numbers = _free_numbers(used, min(config.parallel, config.budget - len(used)))
                slots = self._plan(run, context, beam, numbers, config, rounds)
                rounds += 1
                for slot in slots:
                    self.events.iteration_started(slot.number, config.budget)
                stop = None
                for outcome in self._run_round(run, slots, beam, config):
                    if isinstance(outcome, _Stop):
                        stop = stop or outcome
                        continue
                    used.add(outcome.number)
                    proposer_failed = outcome.category is Category.proposer_error
                    failing = failing + 1 if proposer_failed else 0
                if stop is not None:
                    raise stop
        except _Stop as stop:
            status, reason = stop.status, stop.reason
        except KeyboardInterrupt:
            status, reason = RunStatus.interrupted, "interrupted by the user"
        self.store.close_run(run.id, status)
        return self._summary(run.id, reason, self.clock() - t0)

    def _plan(
        self,
        run: RunInfo,
        context: ContextBuilder,
        beam: Beam,
        numbers: list[int],
        config: RunConfig,
        round_number: int,
    ) -> list[_Slot]:
        """The round's candidates: a parent from the beam, a context and a proposer each.

        A parent must be an earlier iteration than its child. A resumed run refills the numbers a
        killed round left empty, below kernels its finished calls may have added to the beam;
        such a number draws from the beam of the kernels recorded before it instead."""
        self._claimed = set()
        beams = [
            beam if beam.precedes(n) else self._stored_beam(run.id, config.beam, before=n)
            for n in numbers
        ]
        slots = []
        for i, (number, (parent, sibling)) in enumerate(
            zip(numbers, round_parents(beams), strict=True)
        ):
            ctx = context.build(run, parent, number)
            if config.parallel > 1:
                ctx = replace(ctx, focus=choose_focus(ctx, i, round_number), sibling=sibling)
            slots.append(_Slot(number, parent, ctx, self._proposer(i)))
        return slots

    def _proposer(self, index: int) -> Proposer:
        """The proposer of a round's call `index` (made on first use, kept for later rounds)."""
        while len(self._proposers) <= index:
            if self._factory is None:
                raise KnightError("parallel rounds need a proposer factory (one proposer per call)")
            self._proposers.append(self._factory())
        return self._proposers[index]

    def _run_round(
        self, run: RunInfo, slots: list[_Slot], beam: Beam, config: RunConfig
    ) -> Iterable[IterationSummary | _Stop]:
        """Run the round's candidates concurrently; record each the moment it finishes (in this
        thread, so the store and the events see one writer) and yield its summary, or the
        `_Stop` a call ended with."""
        if len(slots) == 1:  # today's sequential loop: no thread, Ctrl-C reaches the proposer
            try:
                attempt = self._attempt(run, slots[0], config)
            except _Stop as stop:
                yield stop
                return
            yield self._finish(run, attempt, beam)
            return
        done: queue.Queue[tuple[_Attempt | None, BaseException | None]] = queue.Queue()

        def call(slot: _Slot) -> None:
            try:
                done.put((self._attempt(run, slot, config), None))
            except BaseException as error:  # handed to the main thread, which decides
                done.put((None, error))

        # Daemon threads: an interrupted run exits without waiting for calls still in flight.
        for slot in slots:
            name = f"knight-candidate-{slot.number}"
            threading.Thread(target=call, args=(slot,), name=name, daemon=True).start()
        for _ in slots:
            attempt, error = done.get()
            if isinstance(error, _Stop):
                yield error
            elif error is not None:
                raise error
            else:
                assert attempt is not None
                yield self._finish(run, attempt, beam)

    def _attempt(self, run: RunInfo, slot: _Slot, config: RunConfig) -> _Attempt:
        """One candidate from proposal to verdict (fix rounds included); nothing is recorded."""
        outage = OutageBackoff(config.max_outage_s, self.clock)
        result = self._propose(run.id, slot.proposer, slot.ctx, outage)
        att = _Attempt(
            slot.number,
            slot.parent,
            utcnow(),
            self.clock(),
            proposer=slot.proposer.name,
            focus=slot.ctx.focus,
        )
        while True:
            att.results.append(result)
            failure = self._try(att, slot.ctx, result, config)
            if failure is None or not failure.fixable or att.fix_rounds >= config.fix_rounds:
                break
            fixed = slot.proposer.fix(slot.ctx, failure)
            if fixed is None or fixed.proposal is None:
                if fixed is not None:
                    att.results.append(fixed)  # its calls and turns are part of the iteration
                break
            att.fix_rounds += 1
            result = fixed
        return att

    def _finish(self, run: RunInfo, att: _Attempt, beam: Beam) -> IterationSummary:
        """Record a finished candidate; an accepted one is offered to the beam."""
        record = self._record(att)
        summary = self.store.record_iteration(run.id, record)
        with self._lock:
            self._spent_usd += sum(call.cost_usd for call in record.llm_calls)
        verdict = att.verdict
        if verdict is not None and verdict.status is IterationStatus.accepted:
            assert att.source is not None and att.report is not None and att.report.score_ns
            digest = source_hash(att.source)
            beam.offer(Champion(digest, att.source, att.report.score_ns, att.report, att.number))
        best = (run.baseline_score_ns or 0) / beam.best.score_ns
        self.events.iteration_finished(summary, best)
        return summary

    def _propose(
        self, run_id: int, proposer: Proposer, ctx: ProposalContext, outage: OutageBackoff
    ) -> ProposalResult:
        """A proposal (or a lasting failure); provider outages are waited out, not counted."""
        while True:
            result = proposer.propose(ctx)
            if result.exhausted:
                why = result.failure.message if result.failure else "nothing left to propose"
                raise _Stop(RunStatus.finished, why)
            if result.proposal is not None or not result.transient:
                outage.reset()
                return result
            self.store.record_proposer_calls(run_id, result.llm_calls)
            with self._lock:
                self._spent_usd += result.cost_usd
            outage.begin()
            wait = outage.next_wait(result.retry_after_s)
            what = result.failure.message if result.failure else "no answer"
            if wait is None:
                minutes = outage.elapsed_s() / 60
                raise _Stop(
                    RunStatus.interrupted,
                    f"the model provider was unavailable for {minutes:.1f} min ({what}); "
                    "resume with --resume",
                )
            self.events.message(f"waiting for the model provider: {what}; retrying in {wait:g} s")
            self.sleep(wait)
            outage.waited()

    def _try(
        self, att: _Attempt, ctx: ProposalContext, result: ProposalResult, config: RunConfig
    ) -> Failure | None:
        """One round: apply and evaluate; return the round's failure (None when it passed)."""
        att.reset_candidate(result)
        if result.proposal is None:
            failure = result.failure or Failure(
                category=Category.proposer_error, message="no proposal"
            )
            att.verdict = Verdict(IterationStatus.failed, failure)
            return failure
        kernel = self.problem.spec.kernel_file
        try:
            knobs = knob_edits(att.parent.source, result.proposal.knobs, kernel)
            att.edits = list(result.proposal.edits) + knobs
            applied = apply_edits({kernel: att.parent.source}, att.edits, editable=[kernel])
        except ValueError as e:
            failure = Failure(category=Category.malformed_proposal, message=str(e))
            att.verdict = Verdict(IterationStatus.failed, failure)
            return failure
        except PatchError as e:
            att.verdict = Verdict(IterationStatus.failed, e.failure)
            return e.failure
        att.source = canonical_source(applied.files[kernel])
        att.rungs, att.diff = applied.rungs, applied.diff
        if source_hash(att.source) in ctx.tried_hashes or not self._claim(att.source):
            failure = Failure(
                category=Category.duplicate_candidate,
                message="this exact kernel was already evaluated",
            )
            att.verdict = Verdict(IterationStatus.rejected, failure)
            return failure
        att.report = self.evaluator.evaluate(att.source, self.problem)
        verdict = judge(att.report, att.parent.score_ns, config.min_gain)
        if verdict.status is IterationStatus.accepted:
            verdict = self._heldout_verdict(att.source) or verdict
        att.verdict = verdict
        return verdict.failure

    def _claim(self, source: str) -> bool:
        """Whether this round has not built `source` yet (the first call to build it claims it)."""
        digest = source_hash(source)
        with self._lock:
            if digest in self._claimed:
                return False
            self._claimed.add(digest)
            return True

    def _heldout_verdict(self, source: str) -> Verdict | None:
        """A rejection when `source` fails a held-out workload (checked only before accepting:
        it costs time), else None."""
        held = self.evaluator.evaluate(source, self.problem, heldout=True)
        if held.ok:
            return None
        underlying = held.failure
        failure = Failure(
            category=Category.heldout_failure,
            message=underlying.one_line() if underlying else "a held-out workload failed",
            details={"underlying": underlying.model_dump(mode="json")} if underlying else {},
        )
        return Verdict(IterationStatus.rejected, failure)

    # ------------------------------------------------------------------ recording

    def _record(self, att: _Attempt) -> IterationRecord:
        """The attempt as the store records it."""
        verdict = att.verdict
        assert verdict is not None
        prop = att.proposal or next((r.proposal for r in att.results if r.proposal), None)
        report = att.report
        score = report.score_ns if report is not None and report.ok else None
        failure = verdict.failure
        if prop is not None:
            hypothesis, rationale = prop.hypothesis, prop.rationale
        else:  # no proposal at all: the failure is the only story
            hypothesis = f"({failure.category.value})" if failure else "(no proposal)"
            rationale = failure.message if failure else ""
        return IterationRecord(
            number=att.number,
            proposer=att.proposer,
            parent_hash=att.parent.hash,
            parent_score_ns=att.parent.score_ns,
            parent_iteration=att.parent.iteration,
            focus=att.focus,
            candidate_source=att.source,
            status=verdict.status,
            failure=verdict.failure,
            hypothesis=hypothesis,
            rationale=rationale,
            tags=list(prop.tags) if prop else [],
            skills_cited=list(prop.skills_used) if prop else [],
            skills_read=[name for r in att.results for name in r.skills_read],
            edits=att.edits or (list(prop.edits) if prop else []),
            patch_rungs=att.rungs,
            diff=att.diff,
            score_ns=score,
            report=report.model_dump(mode="json") if report is not None else None,
            harness=report.harness if report is not None else None,
            started_at=att.started_at,
            wall_s=self.clock() - att.t0,
            fix_rounds=att.fix_rounds,
            transcript=[turn for r in att.results for turn in r.transcript],
            llm_calls=[
                call.model_copy(update={"round": i})
                for i, r in enumerate(att.results)
                for call in r.llm_calls
            ],
            lessons=_lessons(prop, verdict, att.parent.score_ns, score),
        )

    def _summary(self, run_id: int, reason: str, wall_s: float) -> RunSummary:
        progress = self.store.progress(run_id)
        base = progress.baseline_score_ns or 0.0
        return RunSummary(
            run_id=run_id,
            status=progress.status,
            iterations=progress.iterations,
            accepted=progress.accepted,
            baseline_score_ns=base,
            best_score_ns=progress.best_score_ns or base,
            speedup=progress.speedup,
            champion_hash=progress.champion_hash or "",
            cost_usd=progress.cost_usd,
            stop_reason=reason,
            wall_s=wall_s,
        )


def _free_numbers(used: set[int], n: int) -> list[int]:
    """The `n` smallest iteration numbers not used yet (a killed round leaves gaps to refill)."""
    free: list[int] = []
    number = 1
    while len(free) < n:
        if number not in used:
            free.append(number)
        number += 1
    return free


def _lessons(
    prop: Proposal | None, verdict: Verdict, parent_ns: float, score: float | None
) -> list[LessonRecord]:
    """What the iteration teaches: a win, a regression to undo, or a pitfall to avoid."""
    if prop is None:
        return []
    gain = parent_ns / score if score else None
    category = verdict.failure.category if verdict.failure else None
    if verdict.status is IterationStatus.accepted and gain:
        kind, text = "win", f"{prop.hypothesis} -> {gain:.3f}x faster"
    elif category is Category.regression and gain:
        kind, text = "undo", f"{prop.hypothesis} -> {1 / gain:.3f}x slower; do not repeat"
    elif verdict.status is IterationStatus.failed and verdict.failure is not None:
        if category is Category.proposer_error:
            return []
        kind, text = "pitfall", f"{prop.hypothesis} -> {category}: {verdict.failure.message[:240]}"
    else:
        return []
    return [LessonRecord(kind=kind, text=text, tags=list(prop.tags))]
