"""Typed queries the agent loop and the CLI use; each takes an open session and never commits."""

from __future__ import annotations

import importlib
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from knight.errors import NotFoundError
from knight.source import canonical_source, source_hash
from knight.store.models import Base, Candidate, Evaluation, Run, SkillEvent


def _insert_ignore(
    session: Session, model: type[Base], values: dict[str, Any], key: list[str]
) -> None:
    """Insert a row unless one with the same `key` exists (another run may race us to it)."""
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        # The dialect's own module, imported here: the PostgreSQL one is large and most stores
        # are SQLite files.
        insert = importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert
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
        "outputs_digest": outputs_digest,
    }
    _insert_ignore(session, Evaluation, values, ["candidate_hash", "harness", "workload", "seed"])
    stored = cached_evaluation(session, candidate_hash, harness, workload, seed)
    assert stored is not None
    return stored


def get_run(session: Session, run_id: int, lock: bool = False) -> Run:
    """Run `run_id`; NotFoundError if there is none. `lock` holds its row until the transaction
    ends (SELECT ... FOR UPDATE on PostgreSQL; SQLite's writer lock already serialises writes)."""
    run = session.get(Run, run_id, with_for_update=lock or None)
    if run is None:
        raise NotFoundError(f"run {run_id} not found")
    return run


def skill_usage(session: Session) -> dict[str, dict[str, int]]:
    """How often each skill was retrieved, cited, won and failed, over the whole database."""
    q = select(SkillEvent.skill, SkillEvent.event, func.count()).group_by(
        SkillEvent.skill, SkillEvent.event
    )
    usage: dict[str, dict[str, int]] = {}
    for skill, event, n in session.execute(q):
        usage.setdefault(skill, {})[event] = n
    return usage
