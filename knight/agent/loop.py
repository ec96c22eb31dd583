"""The agent loop: propose, patch, evaluate, judge, record — one transaction per iteration.

A `Runner` owns one run of one problem. Each iteration builds the proposer's context from the
champion and the database, asks for a proposal, applies it (with a bounded fix round when the
patch does not apply or the candidate fails at trace time), evaluates it, and records the whole
attempt atomically, so a killed run loses at most the iteration in flight and `resume` continues
without duplicating it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import func, select

import knight
from knight.agent.context import Champion, build_context
from knight.agent.patching import PatchError, apply_edits, format_patch_error
from knight.agent.policy import Verdict, judge
from knight.errors import KnightError
from knight.evaluation import EvalReport, Evaluator
from knight.evaluation.categories import STAGES
from knight.npu.machine import load_machine
from knight.problems import Problem
from knight.proposal import Edit, Proposal
from knight.proposers import ProposalContext, ProposalResult, Proposer
from knight.skills import Skill
from knight.source import canonical_source, source_hash
from knight.store import (
    Database,
    Iteration,
    Lesson,
    LLMCall,
    Run,
    SkillEvent,
    accepted_chain,
    get_or_create_candidate,
    get_run,
    utcnow,
)
from knight.tunables import knob_edits

# Failures a proposer can plausibly fix in the same conversation.
FIXABLE = set(STAGES["patch"]) - {"duplicate_candidate", "patch_noop"} | set(STAGES["static"]) | set(STAGES["trace"])


@dataclass
class RunConfig:
    """What the user asked for."""

    budget: int = 10
    seed: int = 0
    max_cost: float | None = None
    time_limit_s: float | None = None
    min_gain: float = 1.02
    fix_rounds: int = 3
    max_proposer_errors: int = 3  # consecutive proposer failures (outage, rate-limit storm) that pause the run
    extra: dict[str, Any] = field(default_factory=dict)  # proposer settings, recorded with the run


@dataclass
class IterationOutcome:
    """A finished iteration, as the progress display sees it."""

    number: int
    status: str
    category: str | None
    hypothesis: str
    score_ns: float | None
    speedup_vs_baseline: float | None
    message: str


@dataclass
class RunSummary:
    """The end of a run (or of this session of it)."""

    run_id: int
    status: str
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
        return dict(self.__dict__)


class Events(Protocol):
    """Progress callbacks (the CLI shows them; tests may record them)."""

    def iteration_started(self, number: int, budget: int) -> None: ...

    def iteration_finished(self, outcome: IterationOutcome, best_speedup: float) -> None: ...

    def message(self, text: str) -> None: ...


class _Quiet:
    def iteration_started(self, number: int, budget: int) -> None:
        pass

    def iteration_finished(self, outcome: IterationOutcome, best_speedup: float) -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass
class _Attempt:
    """Everything one iteration produced, recorded in one transaction at its end."""

    number: int
    parent: Champion
    started_at: Any
    t0: float
    proposal: Proposal | None = None
    results: list[ProposalResult] = field(default_factory=list)
    fix_rounds: int = 0
    source: str | None = None
    candidate_hash: str | None = None
    edits: list[Edit] = field(default_factory=list)  # as applied: the proposal's edits plus its knob settings
    rungs: list[str] = field(default_factory=list)
    diff: str = ""
    report: EvalReport | None = None
    verdict: Verdict | None = None
    failure: dict[str, Any] | None = None


class _Exhausted(Exception):
    """The proposer ran out of proposals: the run ends early, without spending an iteration."""


class Runner:
    """Runs (or resumes) one optimisation run of one problem."""

    def __init__(
        self, db: Database, problem: Problem, evaluator: Evaluator, proposer: Proposer,
        skills: dict[str, Skill] | None = None, events: Events | None = None, machine: str | None = None,
    ) -> None:
        self.db, self.problem, self.evaluator, self.proposer = db, problem, evaluator, proposer
        self.skills = skills or {}
        self.events = events or _Quiet()
        self.machine = load_machine(machine or problem.spec.machine)

    # ------------------------------------------------------------------ start / resume

    def start(self, config: RunConfig) -> RunSummary:
        """Create a run, judge the baseline, and iterate until a budget is spent."""
        source = canonical_source(self.problem.baseline_source())
        self.events.message(f"evaluating the baseline of {self.problem.id} ...")
        report = self.evaluator.evaluate(source, self.problem, heldout=True)
        if not report.ok or report.score_ns is None:
            raise KnightError(f"the baseline of {self.problem.id} does not pass its own evaluation: "
                              f"{report.failure.one_line() if report.failure else 'no score'}")
        with self.db.session() as s:
            run = Run(
                problem_id=self.problem.id, problem_hash=self.problem.hash, machine=self.machine.name,
                machine_hash=self.machine.hash, knight_version=knight.__version__, proposer=self.proposer.name,
                seed=config.seed, budget=config.budget, max_cost=config.max_cost, time_limit_s=config.time_limit_s,
                status="running", baseline_hash=source_hash(source), baseline_score_ns=report.score_ns,
                champion_hash=source_hash(source), best_score_ns=report.score_ns,
                config={"min_gain": config.min_gain, "fix_rounds": config.fix_rounds, **config.extra},
            )
            s.add(run)
            s.flush()
            get_or_create_candidate(s, source, run.id)
            run_id = run.id
        champion = Champion(source_hash(source), source, report.score_ns, report)
        return self._loop(run_id, champion, config)

    def resume(self, run_id: int, budget: int | None = None) -> RunSummary:
        """Continue an interrupted (or finished, with a larger budget) run where it stopped."""
        with self.db.session() as s:
            run = get_run(s, run_id)
            if run.problem_id != self.problem.id:
                raise KnightError(f"run {run_id} optimises {run.problem_id}, not {self.problem.id}")
            chain = accepted_chain(s, run_id)
            champ_hash = chain[-1].candidate_hash if chain else run.baseline_hash
            from knight.store import Candidate

            source = s.get(Candidate, champ_hash).source
            cfg = dict(run.config)
            config = RunConfig(
                budget=budget or run.budget, seed=run.seed, max_cost=run.max_cost, time_limit_s=run.time_limit_s,
                min_gain=cfg.pop("min_gain", 1.02), fix_rounds=cfg.pop("fix_rounds", 3), extra=cfg,
            )
            run.status, run.budget, run.finished_at = "running", config.budget, None
        report = self.evaluator.evaluate(source, self.problem)
        if not report.ok or report.score_ns is None:
            raise KnightError(f"the champion of run {run_id} no longer passes evaluation (did the harness change?)")
        return self._loop(run_id, Champion(champ_hash, source, report.score_ns, report), config)

    # ------------------------------------------------------------------ the loop

    def _loop(self, run_id: int, champion: Champion, config: RunConfig) -> RunSummary:
        t0 = time.perf_counter()
        reason = "budget"
        failing = 0  # consecutive iterations without a proposal, in this session
        try:
            while True:
                done, cost = self._progress(run_id)
                if done >= config.budget:
                    break
                if config.max_cost is not None and cost >= config.max_cost:
                    reason = f"cost limit ${config.max_cost:.2f} reached"
                    break
                if config.time_limit_s is not None and time.perf_counter() - t0 >= config.time_limit_s:
                    reason = f"time limit {config.time_limit_s:.0f} s reached"
                    break
                if failing >= config.max_proposer_errors:
                    self._close_run(run_id, "interrupted")
                    return self._summary(run_id, f"the proposer failed {config.max_proposer_errors} times in a row "
                                         "(outage or rate limits); resume later with --resume",
                                         time.perf_counter() - t0)
                self.events.iteration_started(done + 1, config.budget)
                champion, category = self._iteration(run_id, done + 1, champion, config)
                failing = failing + 1 if category == "proposer_error" else 0
        except _Exhausted as e:
            reason = str(e)
        except KeyboardInterrupt:
            self._close_run(run_id, "interrupted")
            return self._summary(run_id, "interrupted by the user", time.perf_counter() - t0)
        self._close_run(run_id, "finished")
        return self._summary(run_id, reason, time.perf_counter() - t0)

    def _progress(self, run_id: int) -> tuple[int, float]:
        with self.db.session() as s:
            done = s.scalar(select(func.count()).select_from(Iteration).where(Iteration.run_id == run_id)) or 0
            cost = s.scalar(select(func.coalesce(func.sum(LLMCall.cost_usd), 0.0)).where(LLMCall.run_id == run_id))
        return done, float(cost or 0.0)

    def _iteration(self, run_id: int, number: int, champion: Champion, config: RunConfig) -> tuple[Champion, str | None]:
        att = _Attempt(number, champion, utcnow(), time.perf_counter())
        with self.db.session() as s:
            ctx = build_context(s, get_run(s, run_id), self.problem, champion, number, self.skills)
        result = self.proposer.propose(ctx)
        if result.exhausted:
            raise _Exhausted(result.error_message or "the proposer has nothing left to propose")
        while True:
            att.results.append(result)
            error = self._try(att, ctx, result, config)
            if error is None or att.fix_rounds >= config.fix_rounds:
                break
            fixed = self.proposer.fix(ctx, error)
            if fixed is None:
                break
            att.fix_rounds += 1
            result = fixed
        self._record(run_id, att)
        self.events.iteration_finished(self._outcome(run_id, att), self._best_speedup(run_id))
        category = att.verdict.category if att.verdict is not None else None
        if att.verdict is not None and att.verdict.status == "accepted":
            return Champion(att.candidate_hash, att.source, att.report.score_ns, att.report), category
        return champion, category

    def _try(self, att: _Attempt, ctx: ProposalContext, result: ProposalResult, config: RunConfig) -> str | None:
        """One round: apply and evaluate. Returns an error text worth a fix round, else None."""
        att.source = att.candidate_hash = att.report = att.failure = None
        att.edits = []
        att.proposal = result.proposal
        if result.proposal is None:
            cat = result.error_category or "proposer_error"
            att.verdict = Verdict("failed", cat, result.error_message or cat)
            return None
        kernel = self.problem.spec.kernel_file
        try:
            att.edits = list(result.proposal.edits) + knob_edits(att.parent.source, result.proposal.knobs, kernel)
            applied = apply_edits({kernel: att.parent.source}, att.edits, editable=[kernel])
        except ValueError as e:
            att.verdict = Verdict("failed", "malformed_proposal", str(e))
            return None
        except PatchError as e:
            att.verdict = Verdict("failed", e.category, e.message)
            att.failure = {"category": e.category, "message": e.message, **e.to_dict()}
            return format_patch_error(e) if e.category in FIXABLE else None
        att.source = canonical_source(applied.files[kernel])
        att.candidate_hash, att.rungs, att.diff = source_hash(att.source), applied.rungs, applied.diff
        if att.candidate_hash in ctx.tried_hashes:
            att.verdict = Verdict("rejected", "duplicate_candidate", "this exact kernel was already evaluated")
            return None
        report = self.evaluator.evaluate(att.source, self.problem)
        att.report = report
        verdict = judge(report, att.parent.score_ns, config.min_gain)
        if verdict.status == "accepted":
            held = self.evaluator.evaluate(att.source, self.problem, heldout=True)
            if not held.ok:
                verdict = Verdict("rejected", "heldout_failure", held.failure.one_line() if held.failure else "held-out failure")
                att.failure = held.failure.model_dump(mode="json") if held.failure else None
        elif report.failure is not None:
            att.failure = report.failure.model_dump(mode="json")
        att.verdict = verdict
        if report.failure is not None and report.failure.category.value in FIXABLE:
            f = report.failure
            return f"The candidate failed at {f.stage} stage: {f.one_line()}\nDetails: {f.details}\nHint: read skill {f.hint}"
        return None

    # ------------------------------------------------------------------ recording

    def _record(self, run_id: int, att: _Attempt) -> None:
        v = att.verdict
        assert v is not None
        prop = att.proposal
        report = att.report
        score = report.score_ns if report is not None and report.ok else None
        with self.db.session() as s:
            run = get_run(s, run_id)
            if att.source is not None:
                get_or_create_candidate(s, att.source, run_id)
            it = Iteration(
                run_id=run_id, number=att.number, parent_hash=att.parent.hash,
                candidate_hash=att.candidate_hash if att.source is not None else None,
                status=v.status, category=v.category,
                hypothesis=prop.hypothesis if prop else f"({v.category})",
                rationale=prop.rationale if prop else v.message,
                tags=list(prop.tags) if prop else [], skills_cited=list(prop.skills_used) if prop else [],
                edits=[e.model_dump() for e in (att.edits or (prop.edits if prop else []))],
                patch_rungs=att.rungs, diff=att.diff, score_ns=score, parent_score_ns=att.parent.score_ns,
                speedup_vs_baseline=(run.baseline_score_ns / score) if score else None,
                speedup_vs_parent=(att.parent.score_ns / score) if score else None,
                failure=att.failure or ({"category": v.category, "message": v.message} if v.status == "failed" else None),
                report=report.model_dump(mode="json") if report is not None else None,
                harness=report.harness if report is not None else None,
                started_at=att.started_at, finished_at=utcnow(), wall_s=time.perf_counter() - att.t0,
                fix_rounds=att.fix_rounds, proposer=self.proposer.name,
                transcript=[turn for r in att.results for turn in r.transcript] or None,
            )
            s.add(it)
            for i, r in enumerate(att.results):
                for call in r.llm_calls:
                    s.add(LLMCall(
                        run_id=run_id, iteration_number=att.number, model=call.model, round=i,
                        input_tokens=call.input_tokens, output_tokens=call.output_tokens,
                        cache_read_tokens=call.cache_read_tokens, cache_write_tokens=call.cache_write_tokens,
                        cost_usd=call.cost_usd, status=call.status, error=call.error, duration_s=call.duration_s,
                        request=call.request, response=call.response,
                    ))
            self._learn(s, run_id, att, score)
            if v.status == "accepted":
                run.champion_hash, run.best_score_ns = att.candidate_hash, score

    def _learn(self, s, run_id: int, att: _Attempt, score: float | None) -> None:
        """Skill events and lessons: wins, regressions to undo, and failures to avoid."""
        v, prop = att.verdict, att.proposal
        for r in att.results:
            for t in r.transcript:
                if t.get("kind") == "tool_use" and t.get("name") == "read_skill":
                    name = str((t.get("input") or {}).get("name", ""))[:120]
                    s.add(SkillEvent(run_id=run_id, iteration_number=att.number, skill=name, event="retrieved"))
        if prop is None:
            return
        for skill in prop.skills_used:
            s.add(SkillEvent(run_id=run_id, iteration_number=att.number, skill=skill, event="cited"))
            if v.status == "accepted":
                s.add(SkillEvent(run_id=run_id, iteration_number=att.number, skill=skill, event="won"))
            elif v.status == "failed":
                s.add(SkillEvent(run_id=run_id, iteration_number=att.number, skill=skill, event="failed"))
        gain = att.parent.score_ns / score if score else None
        if v.status == "accepted":
            kind, text = "win", f"{prop.hypothesis} -> {gain:.3f}x faster"
        elif v.category == "regression":
            kind, text = "undo", f"{prop.hypothesis} -> {1 / gain:.3f}x slower; do not repeat"
        elif v.status == "failed" and v.category not in ("proposer_error",):
            kind, text = "pitfall", f"{prop.hypothesis} -> {v.category}: {v.message[:240]}"
        else:
            return
        s.add(Lesson(run_id=run_id, iteration_number=att.number, kind=kind, text=text, tags=list(prop.tags),
                     evidence=[att.number]))

    def _close_run(self, run_id: int, status: str) -> None:
        with self.db.session() as s:
            run = get_run(s, run_id)
            run.status, run.finished_at = status, utcnow()

    # ------------------------------------------------------------------ reporting

    def _outcome(self, run_id: int, att: _Attempt) -> IterationOutcome:
        v = att.verdict
        score = att.report.score_ns if (att.report is not None and att.report.ok) else None
        with self.db.session() as s:
            base = get_run(s, run_id).baseline_score_ns
        sp = base / score if (score and base) else None
        return IterationOutcome(att.number, v.status, v.category, att.proposal.hypothesis if att.proposal else "",
                                score, sp, v.message)

    def _best_speedup(self, run_id: int) -> float:
        with self.db.session() as s:
            run = get_run(s, run_id)
            return (run.baseline_score_ns or 1.0) / (run.best_score_ns or run.baseline_score_ns or 1.0)

    def _summary(self, run_id: int, reason: str, wall_s: float) -> RunSummary:
        with self.db.session() as s:
            run = get_run(s, run_id)
            done, cost = self._progress(run_id)
            accepted = s.scalar(select(func.count()).select_from(Iteration).where(
                Iteration.run_id == run_id, Iteration.status == "accepted")) or 0
            return RunSummary(
                run_id=run_id, status=run.status, iterations=done, accepted=accepted,
                baseline_score_ns=run.baseline_score_ns, best_score_ns=run.best_score_ns,
                speedup=run.baseline_score_ns / run.best_score_ns, champion_hash=run.champion_hash,
                cost_usd=cost, stop_reason=reason, wall_s=wall_s,
            )
