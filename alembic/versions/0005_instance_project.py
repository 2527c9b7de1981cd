"""instances.project_id: the project of the context that created the row.

Lets a conductor started with project scoping (``conductor serve --project-scoping``)
show and change a project's rows only to that project's contexts (and to admins). Rows
created before this revision have no project: with scoping on, only admin contexts and
contexts without a project see them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 14:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("project_id", sa.String(255), nullable=True))
        batch.create_index("ix_instances_project_id", ["project_id"])


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_index("ix_instances_project_id")
        batch.drop_column("project_id")
