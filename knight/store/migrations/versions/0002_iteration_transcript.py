"""Keep each iteration's proposer conversation (prompt sections, tool calls, fix rounds).

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add iterations.transcript (JSON list of turns, NULL for older rows)."""
    with op.batch_alter_table("iterations") as batch:
        batch.add_column(sa.Column("transcript", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("iterations") as batch:
        batch.drop_column("transcript")
