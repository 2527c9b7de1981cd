"""conductor_requests.digest: a digest of each stored request's content.

A request id that arrives again with other content is another request reusing the id;
the conductor refuses it instead of answering with the stored result. Results stored
before this revision have no digest and are answered as before.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conductor_requests") as batch:
        batch.add_column(sa.Column("digest", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conductor_requests") as batch:
        batch.drop_column("digest")
