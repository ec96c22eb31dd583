"""The initial schema: runs, candidates, iterations, evaluations, llm_calls, skill_events, lessons.

Revision ID: 0001
Revises:
Written by hand; tests/test_store.py checks that it builds exactly the schema of models.py.
Names are wrapped in op.f(): they are final, the naming convention must not be applied again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    """A timestamp column (naive UTC, see models.UTCDateTime)."""
    return sa.Column(name, sa.DateTime(), nullable=nullable)


def upgrade() -> None:
    """Create every table and index."""
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        _timestamp("finished_at", nullable=True),
        sa.Column("problem_id", sa.String(), nullable=False),
        sa.Column("problem_hash", sa.String(), nullable=False),
        sa.Column("machine", sa.String(), nullable=False),
        sa.Column("machine_hash", sa.String(), nullable=False),
        sa.Column("knight_version", sa.String(), nullable=False),
        sa.Column("proposer", sa.String(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("max_cost", sa.Double(), nullable=True),
        sa.Column("time_limit_s", sa.Double(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("baseline_hash", sa.String(), nullable=False),
        sa.Column("baseline_score_ns", sa.Double(), nullable=True),
        sa.Column("champion_hash", sa.String(), nullable=True),
        sa.Column("best_score_ns", sa.Double(), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.CheckConstraint(
            "status IN ('running', 'finished', 'interrupted', 'failed')",
            name=op.f("ck_runs_status"),
        ),
    )
    op.create_index(op.f("ix_runs_problem_id"), "runs", ["problem_id"])

    op.create_table(
        "candidates",
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        _timestamp("created_at"),
        sa.Column("first_run_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_candidates")),
        sa.ForeignKeyConstraint(
            ["first_run_id"],
            ["runs.id"],
            name=op.f("fk_candidates_first_run_id_runs"),
            ondelete="SET NULL",
        ),
    )
    op.create_index(op.f("ix_candidates_first_run_id"), "candidates", ["first_run_id"])

    op.create_table(
        "iterations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("parent_hash", sa.String(64), nullable=False),
        sa.Column("candidate_hash", sa.String(64), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("category", sa.String(), nullable=True),
        sa.Column("hypothesis", sa.Text(), nullable=False),
        sa.Column("rationale", sa.Text(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("skills_cited", sa.JSON(), nullable=False),
        sa.Column("edits", sa.JSON(), nullable=False),
        sa.Column("patch_rungs", sa.JSON(), nullable=False),
        sa.Column("diff", sa.Text(), nullable=False),
        sa.Column("score_ns", sa.Double(), nullable=True),
        sa.Column("parent_score_ns", sa.Double(), nullable=True),
        sa.Column("speedup_vs_baseline", sa.Double(), nullable=True),
        sa.Column("speedup_vs_parent", sa.Double(), nullable=True),
        sa.Column("failure", sa.JSON(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("harness", sa.String(), nullable=True),
        _timestamp("started_at"),
        _timestamp("finished_at"),
        sa.Column("wall_s", sa.Double(), nullable=False),
        sa.Column("fix_rounds", sa.Integer(), nullable=False),
        sa.Column("proposer", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_iterations")),
        sa.UniqueConstraint("run_id", "number", name=op.f("uq_iterations_run_id_number")),
        sa.CheckConstraint("number >= 1", name=op.f("ck_iterations_number_positive")),
        sa.CheckConstraint(
            "status IN ('accepted', 'rejected', 'failed')", name=op.f("ck_iterations_status")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_iterations_run_id_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["parent_hash"], ["candidates.hash"], name=op.f("fk_iterations_parent_hash_candidates")
        ),
        sa.ForeignKeyConstraint(
            ["candidate_hash"],
            ["candidates.hash"],
            name=op.f("fk_iterations_candidate_hash_candidates"),
        ),
    )
    op.create_index(op.f("ix_iterations_run_id_status"), "iterations", ["run_id", "status"])
    op.create_index(op.f("ix_iterations_run_id_category"), "iterations", ["run_id", "category"])
    op.create_index(op.f("ix_iterations_parent_hash"), "iterations", ["parent_hash"])
    op.create_index(op.f("ix_iterations_candidate_hash"), "iterations", ["candidate_hash"])

    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("candidate_hash", sa.String(64), nullable=False),
        sa.Column("harness", sa.String(), nullable=False),
        sa.Column("workload", sa.String(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("latency_ns", sa.Double(), nullable=True),
        sa.Column("correct", sa.Boolean(), nullable=True),
        sa.Column("outputs_digest", sa.String(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
        sa.UniqueConstraint(
            "candidate_hash",
            "harness",
            "workload",
            "seed",
            name=op.f("uq_evaluations_candidate_hash_harness_workload_seed"),
        ),
    )

    op.create_table(
        "llm_calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("iteration_number", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_read_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_write_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Double(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=True),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_calls")),
        sa.CheckConstraint("status IN ('ok', 'error')", name=op.f("ck_llm_calls_status")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_llm_calls_run_id_runs"), ondelete="CASCADE"
        ),
    )
    op.create_index(
        op.f("ix_llm_calls_run_id_iteration_number"), "llm_calls", ["run_id", "iteration_number"]
    )

    op.create_table(
        "skill_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("iteration_number", sa.Integer(), nullable=True),
        sa.Column("skill", sa.String(), nullable=False),
        sa.Column("event", sa.String(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_skill_events")),
        sa.CheckConstraint(
            "event IN ('retrieved', 'cited', 'won', 'failed')", name=op.f("ck_skill_events_event")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_skill_events_run_id_runs"), ondelete="CASCADE"
        ),
    )
    op.create_index(op.f("ix_skill_events_skill_event"), "skill_events", ["skill", "event"])
    op.create_index(op.f("ix_skill_events_run_id"), "skill_events", ["run_id"])

    op.create_table(
        "lessons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("iteration_number", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lessons")),
        sa.CheckConstraint("kind IN ('win', 'pitfall', 'undo')", name=op.f("ck_lessons_kind")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_lessons_run_id_runs"), ondelete="SET NULL"
        ),
    )
    op.create_index(op.f("ix_lessons_kind"), "lessons", ["kind"])


def downgrade() -> None:
    """Drop every table, children first."""
    for table in (
        "lessons",
        "skill_events",
        "llm_calls",
        "evaluations",
        "iterations",
        "candidates",
        "runs",
    ):
        op.drop_table(table)
