"""Lineage for beam search and parallel rounds: each iteration's parent iteration and focus.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add iterations.parent_iteration and iterations.focus; fill the parents of older rows."""
    with op.batch_alter_table("iterations") as batch:
        batch.add_column(sa.Column("parent_iteration", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("focus", sa.Text(), nullable=True))
    # Older runs were linear: a parent is the latest earlier accepted iteration of the same run
    # whose candidate is the parent's source (none when the parent is the baseline).
    op.execute(
        """
        UPDATE iterations SET parent_iteration = (
            SELECT MAX(p.number) FROM iterations AS p
            WHERE p.run_id = iterations.run_id AND p.number < iterations.number
              AND p.status = 'accepted' AND p.candidate_hash = iterations.parent_hash
        )
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("iterations") as batch:
        batch.drop_column("focus")
        batch.drop_column("parent_iteration")
