"""Alembic environment of the conductor's schema.

The database comes from ``config.attributes["connection"]`` (how ``conductor.db.upgrade``
calls us, with its own engine) or else from ``sqlalchemy.url`` in the config, then from
``CONDUCTOR_DATABASE_URL`` (for ``alembic upgrade head`` with the root ``alembic.ini``).
Only the tables in ``conductor.db.models.MANAGED_TABLES`` are
ours: tables of users' own models live on the same metadata but are not migrated here.
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from typing import Any

from sqlalchemy.engine import Connection

from alembic import context
from conductor.db.engine import create_engine
from conductor.db.migration import compare_server_default
from conductor.db.models import MANAGED_TABLES, Base

config = context.config
target_metadata = Base.metadata

# Only the alembic CLI (an ini file, no connection handed in) sets up logging; called from
# code, we leave the application's logging alone.
if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Reflect only our tables (and everything inside them)."""
    if type_ == "table":
        return name in MANAGED_TABLES
    return True


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Compare and generate only our tables, never a user model's."""
    if type_ == "table":
        return name in MANAGED_TABLES
    table = getattr(obj, "table", None)
    return table is None or table.name in MANAGED_TABLES


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("CONDUCTOR_DATABASE_URL")
    if not url:
        raise SystemExit(
            "No database URL: set sqlalchemy.url in alembic.ini, export "
            "CONDUCTOR_DATABASE_URL, or run `conductor db upgrade --database-url URL`"
        )
    return url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_name=include_name,
        include_object=include_object,
        compare_type=True,
        compare_server_default=compare_server_default,
        # SQLite can only ALTER by copying the table; batch mode does that for us.
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        include_name=include_name,
        include_object=include_object,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), pool_size=1, max_overflow=0)
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
