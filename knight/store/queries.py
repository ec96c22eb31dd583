"""Typed queries the agent loop and the CLI use; each takes an open session and never commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from knight.errors import NotFoundError
from knight.source import canonical_source, source_hash
from knight.store.models import Base, Candidate, Evaluation, Iteration, Run, SkillEvent


def _insert_ignore(
    session: Session, model: type[Base], values: dict[str, Any], key: list[str]
) -> None:
    """Insert a row unless one with the same `key` exists (another run may race us to it)."""
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        session.execute(insert(model).values(**values).on_conflict_do_nothing(index_elements=key))
        return
    # Other backends: check then insert; a concurrent writer can still raise IntegrityError.
    match = select(model).filter_by(**{column: values[column] for column in key})
    if session.scalars(match).first() is None:
        session.add(model(**values))
        session.flush()


def get_or_create_candidate(session: Session, source: str, run_id: int | None) -> Candidate:
    """The candidate for `source` (stored in canonical form, addressed by its hash), stored if new."""
    source = canonical_source(source)
    digest = source_hash(source)
    candidate = session.get(Candidate, digest)
    if candidate is None:
        values = {"hash": digest, "source": source, "first_run_id": run_id}
        _insert_ignore(session, Candidate, values, ["hash"])
        candidate = session.get_one(Candidate, digest)
    return candidate


def next_iteration_number(session: Session, run_id: int) -> int:
    """The number the next iteration of `run_id` gets (1 for a run without iterations)."""
    highest = session.scalar(select(func.max(Iteration.number)).where(Iteration.run_id == run_id))
    return (highest or 0) + 1


def cached_evaluation(
    session: Session, candidate_hash: str, harness: str, workload: str, seed: int
) -> Evaluation | None:
    """The stored evaluation for this key, or None when it must be run."""
    return session.scalars(
        select(Evaluation).filter_by(
            candidate_hash=candidate_hash, harness=harness, workload=workload, seed=seed
        )
    ).one_or_none()


def save_evaluation(
    session: Session,
    candidate_hash: str,
    harness: str,
    workload: str,
    seed: int,
    *,
    status: str,
    report: dict[str, Any],
    latency_ns: float | None = None,
    correct: bool | None = None,
    outputs_digest: str | None = None,
) -> Evaluation:
    """Store an evaluation unless its key is already stored; return the stored row.

    The first write wins: the same candidate, harness, workload and seed give the same result.
    """
    values = {
        "candidate_hash": candidate_hash,
        "harness": harness,
        "workload": workload,
        "seed": seed,
        "status": status,
        "report": report,
        "latency_ns": latency_ns,
        "correct": correct,
        "outputs_digest": outputs_digest,
    }
    _insert_ignore(session, Evaluation, values, ["candidate_hash", "harness", "workload", "seed"])
    stored = cached_evaluation(session, candidate_hash, harness, workload, seed)
    assert stored is not None
    return stored


def list_iterations(
    session: Session,
    run_id: int | None = None,
    status: str | None = None,
    category: str | None = None,
    limit: int | None = None,
) -> list[Iteration]:
    """Iterations matching the filters, oldest first; with `limit`, only the most recent ones."""
    query = select(Iteration)
    if run_id is not None:
        query = query.where(Iteration.run_id == run_id)
    if status is not None:
        query = query.where(Iteration.status == status)
    if category is not None:
        query = query.where(Iteration.category == category)
    newest_first = query.order_by(Iteration.run_id.desc(), Iteration.number.desc())
    if limit is not None:
        newest_first = newest_first.limit(limit)
    return list(reversed(session.scalars(newest_first).all()))


def get_iteration(session: Session, run_id: int, number: int) -> Iteration:
    """Iteration `number` of run `run_id`; NotFoundError if there is none."""
    iteration = session.scalars(
        select(Iteration).filter_by(run_id=run_id, number=number)
    ).one_or_none()
    if iteration is None:
        raise NotFoundError(f"run {run_id} has no iteration {number}")
    return iteration


def get_run(session: Session, run_id: int) -> Run:
    """Run `run_id`; NotFoundError if there is none."""
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id} not found")
    return run


def latest_run(session: Session) -> Run | None:
    """The most recently created run, or None in an empty database."""
    return session.scalars(select(Run).order_by(Run.id.desc()).limit(1)).first()


def list_runs(session: Session) -> list[Run]:
    """Every run, oldest first."""
    return list(session.scalars(select(Run).order_by(Run.id)).all())


def accepted_chain(session: Session, run_id: int) -> list[Iteration]:
    """The accepted iterations of a run in number order: the patches replay re-applies."""
    return list(
        session.scalars(
            select(Iteration).filter_by(run_id=run_id, status="accepted").order_by(Iteration.number)
        ).all()
    )


def skill_usage(session: Session) -> dict[str, dict[str, int]]:
    """How often each skill was retrieved, cited, won and failed, over the whole database."""
    q = select(SkillEvent.skill, SkillEvent.event, func.count()).group_by(
        SkillEvent.skill, SkillEvent.event
    )
    usage: dict[str, dict[str, int]] = {}
    for skill, event, n in session.execute(q):
        usage.setdefault(skill, {})[event] = n
    return usage
