"""`RunStore`: the typed run-history API over a Knight database.

Start, resume, record one iteration (one transaction), progress, history views, close. The loop,
the CLI and the service speak to the database only through this class and the records of
`knight.store.records`.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from knight.errors import KnightError, NotFoundError
from knight.failure import Failure, IterationStatus, RunStatus
from knight.proposal import Edit, ModelCall, Turn
from knight.source import canonical_source, source_hash
from knight.store.db import Database, SchemaUpgrade, run_lock
from knight.store.models import (
    Candidate,
    Evaluation,
    Iteration,
    Lesson,
    LLMCall,
    Run,
    SkillEvent,
    utcnow,
)
from knight.store.queries import get_or_create_candidate, get_run, skill_usage
from knight.store.records import (
    AttemptRow,
    IterationDetail,
    IterationRecord,
    IterationSummary,
    ProblemHistory,
    RunInfo,
    RunProgress,
    RunSpec,
    workload_outcomes,
)


class RunStore:
    """Run history in one database: every method is one short transaction."""

    def __init__(self, db: Database, schema_upgrade: SchemaUpgrade | None = None) -> None:
        """Use the open database `db`; `schema_upgrade` says what opening it did to the schema."""
        self.db = db
        self.schema_upgrade = schema_upgrade

    def close(self) -> None:
        """Close the database's connections."""
        self.db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def where(self) -> str:
        """The database's name in messages."""
        return self.db.where

    # ------------------------------------------------------------------ runs

    def start_run(self, spec: RunSpec) -> RunInfo:
        """Create a run whose champion is its baseline; store the baseline source."""
        source = canonical_source(spec.baseline_source)
        digest = source_hash(source)
        with self.db.session() as s:
            run = Run(
                problem_id=spec.problem_id,
                problem_hash=spec.problem_hash,
                machine=spec.machine,
                machine_hash=spec.machine_hash,
                knight_version=spec.knight_version,
                proposer=spec.proposer,
                seed=spec.seed,
                budget=spec.budget,
                max_cost=spec.max_cost,
                time_limit_s=spec.time_limit_s,
                status=RunStatus.running.value,
                baseline_hash=digest,
                baseline_score_ns=spec.baseline_score_ns,
                champion_hash=digest,
                best_score_ns=spec.baseline_score_ns,
                config=dict(spec.config),
            )
            s.add(run)
            s.flush()
            get_or_create_candidate(s, source, run.id)
            return _run_info(run)

    def reopen_run(
        self,
        run_id: int,
        *,
        budget: int,
        max_cost: float | None,
        time_limit_s: float | None,
        config: dict[str, object],
    ) -> RunInfo:
        """Mark a stopped run as running again with (possibly raised) limits."""
        with self.db.session() as s:
            run = get_run(s, run_id)
            run.status, run.finished_at = RunStatus.running.value, None
            run.budget, run.max_cost, run.time_limit_s = budget, max_cost, time_limit_s
            run.config = dict(config)
            return _run_info(run)

    def run(self, run_id: int) -> RunInfo:
        """Run `run_id`; NotFoundError if there is none."""
        with self.db.session() as s:
            return _run_info(get_run(s, run_id))

    def resolve_run_id(self, run_id: int | None) -> int:
        """`run_id` if it exists, else the latest run; KnightError in an empty database."""
        with self.db.session() as s:
            if run_id is not None:
                return get_run(s, run_id).id
            latest = s.scalar(select(func.max(Run.id)))
        if latest is None:
            raise KnightError(f"no runs in {self.where} yet; start one with 'knight run'")
        return int(latest)

    def list_runs(self) -> list[RunInfo]:
        """Every run, oldest first."""
        with self.db.session() as s:
            return [_run_info(run) for run in s.scalars(select(Run).order_by(Run.id))]

    def hold_run(self, run_id: int) -> AbstractContextManager[None]:
        """Hold run `run_id` while this process runs it: a second process that tries is refused
        (PostgreSQL advisory lock; SQLite serialises writers on its own)."""
        return run_lock(self.db, run_id)

    def close_run(self, run_id: int, status: RunStatus) -> None:
        """Record that a run stopped (finished, interrupted or failed)."""
        with self.db.session() as s:
            run = get_run(s, run_id)
            run.status, run.finished_at = status.value, utcnow()

    def candidate_source(self, digest: str) -> str:
        """The stored source of candidate `digest`; NotFoundError if it is not stored."""
        with self.db.session() as s:
            candidate = s.get(Candidate, digest)
            if candidate is None:
                raise NotFoundError(f"candidate {digest[:12]} is not stored in {self.where}")
            return candidate.source

    def sources(self, digests: Iterable[str]) -> dict[str, str]:
        """The stored sources of the given candidates (missing ones are left out)."""
        wanted = sorted(set(digests))
        if not wanted:
            return {}
        with self.db.session() as s:
            rows = s.execute(
                select(Candidate.hash, Candidate.source).where(Candidate.hash.in_(wanted))
            )
            return {digest: source for digest, source in rows}

    # ------------------------------------------------------------------ iterations

    def record_iteration(self, run_id: int, record: IterationRecord) -> IterationSummary:
        """Store one finished iteration, its model calls, skill events and lessons atomically;
        an accepted one becomes the run's champion."""
        with self.db.session() as s:
            # The run's row lock (PostgreSQL) serialises writers of one run: two processes that
            # both resumed it can never interleave a champion update.
            run = get_run(s, run_id, lock=True)
            candidate_hash = None
            if record.candidate_source is not None:
                candidate_hash = get_or_create_candidate(s, record.candidate_source, run_id).hash
            score = record.score_ns
            row = Iteration(
                run_id=run_id,
                number=record.number,
                parent_hash=record.parent_hash,
                parent_iteration=record.parent_iteration,
                focus=record.focus,
                candidate_hash=candidate_hash,
                status=record.status.value,
                category=record.category.value if record.category else None,
                hypothesis=record.hypothesis,
                rationale=record.rationale,
                tags=list(record.tags),
                skills_cited=list(record.skills_cited),
                edits=[edit.model_dump() for edit in record.edits],
                patch_rungs=list(record.patch_rungs),
                diff=record.diff,
                score_ns=score,
                parent_score_ns=record.parent_score_ns,
                speedup_vs_baseline=_ratio(run.baseline_score_ns, score),
                speedup_vs_parent=_ratio(record.parent_score_ns, score),
                failure=record.failure.model_dump(mode="json") if record.failure else None,
                report=record.report,
                harness=record.harness,
                started_at=record.started_at,
                finished_at=utcnow(),
                wall_s=record.wall_s,
                fix_rounds=record.fix_rounds,
                proposer=record.proposer,
                transcript=[t.model_dump(mode="json", exclude_none=True) for t in record.transcript]
                or None,
            )
            s.add(row)
            for call in record.llm_calls:
                s.add(_call_row(run_id, record.number, call))
            for event in _skill_events(record):
                s.add(SkillEvent(run_id=run_id, iteration_number=record.number, **event))
            for lesson in record.lessons:
                s.add(
                    Lesson(
                        run_id=run_id,
                        iteration_number=record.number,
                        kind=lesson.kind,
                        text=lesson.text,
                        tags=list(lesson.tags),
                        evidence=[record.number],
                    )
                )
            # Beam search accepts against each candidate's own parent: only a new best is champion.
            best = run.best_score_ns
            if record.status is IterationStatus.accepted and (best is None or score < best):
                run.champion_hash, run.best_score_ns = candidate_hash, score
            s.flush()
            return _summary(row)

    def record_proposer_calls(self, run_id: int, calls: Iterable[ModelCall]) -> None:
        """Store model calls that belong to no iteration (a provider outage the loop waited out)."""
        with self.db.session() as s:
            get_run(s, run_id)
            for call in calls:
                s.add(_call_row(run_id, None, call))

    def progress(self, run_id: int) -> RunProgress:
        """Iterations done, accepted, money spent and the best score (two aggregate queries)."""
        accepted = func.sum(case((Iteration.status == IterationStatus.accepted.value, 1), else_=0))
        outside = LLMCall.iteration_number.is_(None) & (LLMCall.status == "error")
        with self.db.session() as s:
            run = get_run(s, run_id)
            done, won = s.execute(
                select(func.count(Iteration.id), accepted).where(Iteration.run_id == run_id)
            ).one()
            cost, outage = s.execute(
                select(func.sum(LLMCall.cost_usd), func.sum(case((outside, 1), else_=0))).where(
                    LLMCall.run_id == run_id
                )
            ).one()
            return RunProgress(
                run_id=run_id,
                status=RunStatus(run.status),
                iterations=int(done),
                accepted=int(won or 0),
                cost_usd=float(cost or 0.0),
                proposer_outage_calls=int(outage or 0),
                baseline_score_ns=run.baseline_score_ns,
                best_score_ns=run.best_score_ns,
                champion_hash=run.champion_hash,
            )

    def history(
        self,
        run_id: int,
        *,
        status: IterationStatus | None = None,
        category: str | None = None,
        limit: int | None = None,
    ) -> list[IterationSummary]:
        """A run's iterations matching the filters, oldest first; `limit` keeps the newest."""
        query = select(Iteration).where(Iteration.run_id == run_id)
        if status is not None:
            query = query.where(Iteration.status == status.value)
        if category is not None:
            query = query.where(Iteration.category == category)
        query = query.order_by(Iteration.number.desc())
        if limit is not None:
            query = query.limit(limit)
        with self.db.session() as s:
            get_run(s, run_id)
            return [_summary(row) for row in reversed(s.scalars(query).all())]

    def accepted_chain(self, run_id: int) -> list[IterationSummary]:
        """The accepted iterations of a run in order (a linear run's patches, in replay order)."""
        chain = self.history(run_id, status=IterationStatus.accepted)
        return sorted(chain, key=lambda it: it.number)

    def lineage(self, run_id: int, number: int | None = None) -> list[IterationSummary]:
        """The accepted iterations from the baseline to the kernel of iteration `number` (default:
        the run's champion), root first: the chain `knight replay` re-applies."""
        accepted = {it.number: it for it in self.accepted_chain(run_id)}
        if number is None:
            champion = self.run(run_id).champion_hash
            number = max(
                (n for n, it in accepted.items() if it.candidate_hash == champion), default=0
            )
            if number == 0:
                return []  # the champion is the baseline
        elif number not in accepted:
            status = self.iteration(run_id, number).status.value  # NotFoundError when missing
            raise KnightError(
                f"iteration {number} of run {run_id} was {status}; only accepted kernels are "
                "in the lineage tree"
            )
        chain: list[IterationSummary] = []
        current: int | None = number
        while current is not None:
            it = accepted[current]
            chain.append(it)
            current = (
                it.parent_iteration if it.parent_iteration is not None else _by_hash(accepted, it)
            )
            if current is not None and (current >= it.number or current not in accepted):
                raise KnightError(
                    f"run {run_id}: iteration {it.number}'s parent {current} is not an earlier "
                    "accepted iteration; the lineage is broken"
                )
        return chain[::-1]

    def iteration_numbers(self, run_id: int) -> set[int]:
        """The numbers of a run's stored iterations (a parallel round may leave gaps when killed)."""
        with self.db.session() as s:
            get_run(s, run_id)
            return set(s.scalars(select(Iteration.number).where(Iteration.run_id == run_id)))

    def beam(
        self, run_id: int, width: int, before: int | None = None
    ) -> list[tuple[str, int | None]]:
        """The `width` best distinct kernels of a run (baseline or accepted), best first, as
        (hash, iteration that produced it; None for the baseline); with `before`, only kernels
        of iterations numbered below it (the possible parents of iteration `before`)."""
        accepted = [
            Iteration.run_id == run_id,
            Iteration.status == IterationStatus.accepted.value,
        ]
        if before is not None:
            accepted.append(Iteration.number < before)
        with self.db.session() as s:
            run = get_run(s, run_id)
            rows = s.execute(
                select(Iteration.candidate_hash, Iteration.number, Iteration.score_ns)
                .where(*accepted)
                .order_by(Iteration.number)
            ).all()
            kernels: dict[str, tuple[float, int | None]] = {
                run.baseline_hash: (run.baseline_score_ns or float("inf"), None)
            }
            for digest, number, score in rows:
                if digest is not None and score is not None and digest not in kernels:
                    kernels[digest] = (score, number)
        ranked = sorted(kernels.items(), key=lambda kv: (kv[1][0], kv[1][1] or 0))
        return [(digest, number) for digest, (_, number) in ranked[:width]]

    def iteration(self, run_id: int, number: int) -> IterationDetail:
        """Iteration `number` of run `run_id` in full; NotFoundError if there is none."""
        with self.db.session() as s:
            run = get_run(s, run_id)
            row = s.scalars(select(Iteration).filter_by(run_id=run_id, number=number)).first()
            if row is None:
                raise NotFoundError(f"run {run_id} has no iteration {number}")
            calls = s.scalars(
                select(LLMCall)
                .where(LLMCall.run_id == run_id, LLMCall.iteration_number == number)
                .order_by(LLMCall.id)
            ).all()
            parent_profile = _stored_profile(s, row.parent_hash, row.harness)
            return IterationDetail(
                **_summary(row).model_dump(),
                problem_id=run.problem_id,
                rationale=row.rationale,
                patch_rungs=list(row.patch_rungs),
                diff=row.diff,
                failure=_failure(row),
                report=row.report,
                transcript=[Turn.model_validate(t) for t in row.transcript or []],
                llm_calls=[_call(c) for c in calls],
                parent_profile=parent_profile,
                started_at=row.started_at,
                wall_s=row.wall_s,
            )

    def problem_history(
        self, problem_id: str, after_id: int = 0, lessons: int = 12
    ) -> ProblemHistory:
        """Iterations of every run of `problem_id` stored after `after_id` (callers keep the rest)
        with their parent and candidate sources, and the newest `lessons` lessons on the problem."""
        with self.db.session() as s:
            rows = s.execute(
                select(Iteration)
                .join(Run, Run.id == Iteration.run_id)
                .where(Run.problem_id == problem_id, Iteration.id > after_id)
                .order_by(Iteration.id)
            ).scalars()
            attempts = [AttemptRow(id=r.id, run_id=r.run_id, summary=_summary(r)) for r in rows]
            texts = s.scalars(
                select(Lesson)
                .join(Run, Run.id == Lesson.run_id)
                .where(Run.problem_id == problem_id)
                .order_by(Lesson.id.desc())
                .limit(lessons)
            ).all()
            wanted = {
                h for a in attempts for h in (a.summary.parent_hash, a.summary.candidate_hash) if h
            }
            rows = s.execute(
                select(Candidate.hash, Candidate.source).where(Candidate.hash.in_(sorted(wanted)))
            )
            return ProblemHistory(
                attempts=attempts,
                sources={digest: source for digest, source in rows},
                lessons=[f"[{row.kind}] {row.text}" for row in reversed(texts)],
                last_id=attempts[-1].id if attempts else after_id,
            )

    def skill_usage(self) -> dict[str, dict[str, int]]:
        """How often each skill was retrieved, cited, won and failed, over the whole database."""
        with self.db.session() as s:
            return skill_usage(s)


# ---------------------------------------------------------------------- row -> record


def _by_hash(accepted: dict[int, IterationSummary], it: IterationSummary) -> int | None:
    """A parent found by its hash (rows written before revision 0003 name no parent iteration)."""
    earlier = [
        n for n, p in accepted.items() if n < it.number and p.candidate_hash == it.parent_hash
    ]
    return max(earlier, default=None)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def _run_info(run: Run) -> RunInfo:
    return RunInfo.model_validate(run, from_attributes=True)


def _failure(row: Iteration) -> Failure | None:
    """The stored failure (older rows hold looser dicts; unknown keys are dropped)."""
    if row.failure:
        return Failure.model_validate(row.failure)
    if row.category and row.status != IterationStatus.accepted.value:
        return Failure(category=row.category, message=row.category)
    return None


def _summary(row: Iteration) -> IterationSummary:
    failure = _failure(row)
    return IterationSummary(
        run_id=row.run_id,
        number=row.number,
        status=IterationStatus(row.status),
        category=row.category,
        hypothesis=row.hypothesis,
        message=failure.message if failure else None,
        score_ns=row.score_ns,
        parent_score_ns=row.parent_score_ns,
        speedup_vs_baseline=row.speedup_vs_baseline,
        speedup_vs_parent=row.speedup_vs_parent,
        fix_rounds=row.fix_rounds,
        proposer=row.proposer,
        parent_hash=row.parent_hash,
        parent_iteration=row.parent_iteration,
        focus=row.focus,
        candidate_hash=row.candidate_hash,
        tags=list(row.tags),
        edits=[Edit.model_validate(e) for e in row.edits],
        harness=row.harness,
        skills_cited=list(row.skills_cited or []),
        failure_workload=failure.workload if failure else None,
        workloads=workload_outcomes(row.report),
    )


def _call_row(run_id: int, number: int | None, call: ModelCall) -> LLMCall:
    return LLMCall(run_id=run_id, iteration_number=number, **call.model_dump())


def _call(row: LLMCall) -> ModelCall:
    return ModelCall.model_validate(row, from_attributes=True)


def _skill_events(record: IterationRecord) -> list[dict[str, str]]:
    events = [{"skill": name[:120], "event": "retrieved"} for name in record.skills_read]
    verdict = {IterationStatus.accepted: "won", IterationStatus.failed: "failed"}.get(record.status)
    for name in record.skills_cited:
        events.append({"skill": name, "event": "cited"})
        if verdict is not None:
            events.append({"skill": name, "event": verdict})
    return events


def _stored_profile(s: Session, digest: str, harness: str | None) -> dict[str, object]:
    """A profile of candidate `digest` under `harness` from the evaluation cache, if any."""
    if harness is None:
        return {}
    reports = s.scalars(
        select(Evaluation.report).where(
            Evaluation.candidate_hash == digest, Evaluation.harness == harness
        )
    )
    for report in reports:
        if report.get("profile"):
            return dict(report["profile"])
    return {}
