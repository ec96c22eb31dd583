"""Drop evaluations.correct: no Knight ever wrote it, and a cached run cannot know it.

An `evaluations` row is one run of one kernel (the run cache), stored before the judge compares it
with the baseline, and shared by every evaluation that meets the same kernel. Whether a candidate
was correct is a verdict of the whole evaluation; it is kept in the iteration's report.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Remove the never-written column."""
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_column("correct")


def downgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("correct", sa.Boolean(), nullable=True))
