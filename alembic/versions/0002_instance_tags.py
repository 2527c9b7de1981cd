"""Instance 1.1: instances.tags, a JSON list of strings.

Existing rows get an empty list through the server default, so the column can be NOT
NULL from the start without a separate backfill.

Revision ID: 0002
Revises: 0001
Create Date: 2026-02-02 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(
            sa.Column("tags", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("tags")
