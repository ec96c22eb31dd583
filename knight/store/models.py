"""SQLAlchemy models: one class per table of the Knight database (see docs/database.md).

JSON columns are plain `JSON`: the ORM does not see in-place edits, so assign a new list or dict.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from knight.failure import IterationStatus, RunStatus

RUN_STATUSES = tuple(status.value for status in RunStatus)
ITERATION_STATUSES = tuple(status.value for status in IterationStatus)
LLM_CALL_STATUSES = ("ok", "error")
SKILL_EVENTS = ("retrieved", "cited", "won", "failed")
LESSON_KINDS = ("win", "pitfall", "undo")

# Named constraints: SQLite batch migrations can only drop or alter constraints that have a name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and read back as an aware UTC `datetime`."""

    # SQLite drops time zones; storing naive UTC everywhere makes all backends agree.
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to naive UTC; naive values are taken to be UTC already."""
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to the stored naive value."""
        return value.replace(tzinfo=UTC) if value is not None else None


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    """SQL text of a CHECK that `column` takes one of `values`."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Declarative base holding the metadata that migrations must reproduce."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # none_as_null: a Python None must be SQL NULL (so `IS NULL` finds it), not the JSON text 'null'.
    type_annotation_map = {
        dict[str, Any]: JSON(none_as_null=True),
        list[Any]: JSON(none_as_null=True),
        datetime: UTCDateTime(),
        # Explicit: SQLAlchemy 2.0 maps float to FLOAT, 2.1 to DOUBLE; the migration says DOUBLE.
        float: Double(),
    }


class Run(Base):
    """One `knight run`: its problem, machine, proposer, budget, outcome and configuration."""

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        Index(None, "problem_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    problem_id: Mapped[str]
    problem_hash: Mapped[str]
    machine: Mapped[str]
    machine_hash: Mapped[str]
    knight_version: Mapped[str]
    proposer: Mapped[str]
    seed: Mapped[int]
    budget: Mapped[int]
    max_cost: Mapped[float | None]
    time_limit_s: Mapped[float | None]
    status: Mapped[str] = mapped_column(default="running")
    baseline_hash: Mapped[str]
    baseline_score_ns: Mapped[float | None]
    champion_hash: Mapped[str | None]
    best_score_ns: Mapped[float | None]
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    notes: Mapped[str] = mapped_column(Text, default="")


class Candidate(Base):
    """A kernel source, addressed by the sha256 of its canonical text."""

    __tablename__ = "candidates"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    first_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), index=True
    )


class Iteration(Base):
    """One proposal of a run, its patch, its evaluation and the verdict."""

    __tablename__ = "iterations"
    __table_args__ = (
        UniqueConstraint("run_id", "number"),
        CheckConstraint("number >= 1", name="number_positive"),
        CheckConstraint(_in("status", ITERATION_STATUSES), name="status"),
        Index(None, "run_id", "status"),
        Index(None, "run_id", "category"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    number: Mapped[int]
    parent_hash: Mapped[str] = mapped_column(String(64), ForeignKey("candidates.hash"), index=True)
    candidate_hash: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("candidates.hash"), index=True
    )
    status: Mapped[str]
    category: Mapped[str | None]
    hypothesis: Mapped[str] = mapped_column(Text)
    rationale: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[Any]] = mapped_column(default=list)
    skills_cited: Mapped[list[Any]] = mapped_column(default=list)
    edits: Mapped[list[Any]] = mapped_column(default=list)
    patch_rungs: Mapped[list[Any]] = mapped_column(default=list)
    diff: Mapped[str] = mapped_column(Text, default="")
    score_ns: Mapped[float | None]
    parent_score_ns: Mapped[float | None]
    speedup_vs_baseline: Mapped[float | None]
    speedup_vs_parent: Mapped[float | None]
    failure: Mapped[dict[str, Any] | None]
    report: Mapped[dict[str, Any] | None]
    harness: Mapped[str | None]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    wall_s: Mapped[float]
    fix_rounds: Mapped[int] = mapped_column(default=0)
    proposer: Mapped[str]
    transcript: Mapped[list[Any] | None]  # the proposer's conversation, all rounds (revision 0002)
    # The iteration whose candidate is this one's parent (None: the baseline); revision 0003.
    parent_iteration: Mapped[int | None]
    focus: Mapped[str | None] = mapped_column(Text)  # what a parallel round asked this call for


class Evaluation(Base):
    """One candidate measured under one harness, workload and seed; doubles as the cache."""

    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("candidate_hash", "harness", "workload", "seed"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # No foreign key: the cache is keyed by content hash and may hold sources never stored here.
    candidate_hash: Mapped[str] = mapped_column(String(64))
    harness: Mapped[str]
    workload: Mapped[str]
    seed: Mapped[int]
    status: Mapped[str]
    latency_ns: Mapped[float | None]
    outputs_digest: Mapped[str | None]
    report: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LLMCall(Base):
    """One request to a language model: tokens, cost, outcome and transcript."""

    __tablename__ = "llm_calls"
    __table_args__ = (
        CheckConstraint(_in("status", LLM_CALL_STATUSES), name="status"),
        Index(None, "run_id", "iteration_number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    # Not a foreign key: calls are paid for before (and even if) their iteration is stored.
    iteration_number: Mapped[int | None]
    model: Mapped[str]
    round: Mapped[int] = mapped_column(default=0)
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    cache_read_tokens: Mapped[int] = mapped_column(default=0)
    cache_write_tokens: Mapped[int] = mapped_column(default=0)
    cost_usd: Mapped[float] = mapped_column(default=0.0)
    status: Mapped[str] = mapped_column(default="ok")
    error: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[float] = mapped_column(default=0.0)
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    response: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SkillEvent(Base):
    """A skill was retrieved, cited, helped win, or was cited by a failed attempt."""

    __tablename__ = "skill_events"
    __table_args__ = (
        CheckConstraint(_in("event", SKILL_EVENTS), name="event"),
        Index(None, "skill", "event"),
        Index(None, "run_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    iteration_number: Mapped[int | None]
    skill: Mapped[str]
    event: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Lesson(Base):
    """A consolidated piece of experience (a win, a pitfall, an undo) with its evidence."""

    __tablename__ = "lessons"
    __table_args__ = (
        CheckConstraint(_in("kind", LESSON_KINDS), name="kind"),
        Index(None, "kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Lessons outlive the run that taught them.
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    iteration_number: Mapped[int | None]
    kind: Mapped[str]
    text: Mapped[str] = mapped_column(Text)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    evidence: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
