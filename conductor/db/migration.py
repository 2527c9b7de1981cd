"""Schema migrations: alembic, driven from code (``conductor db upgrade``) or its own CLI.

The revisions live in the top-level ``alembic/`` folder of the source tree, next to
``alembic.ini`` so ``alembic upgrade head`` works there as well. A wheel carries the same
folder inside the package as ``conductor/db/migrations`` (pyproject force-includes it).
"""

from __future__ import annotations

import functools
import re
import threading
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import JSON, Column
from sqlalchemy.engine import URL

from alembic import command
from conductor.db.engine import create_engine
from conductor.db.errors import SchemaNotAtHead, mask_url, translate_errors
from objects import exception

__all__ = [
    "ALEMBIC_DIR",
    "alembic_config",
    "compare_server_default",
    "check_at_head",
    "current_revision",
    "head_revision",
    "upgrade",
]


def _alembic_dir() -> Path:
    """The migrations shipped in the package (a wheel), else the source tree's (editable)."""
    packaged = Path(__file__).resolve().parent / "migrations"
    if (packaged / "env.py").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "alembic"


#: The folder holding env.py and versions/.
ALEMBIC_DIR = _alembic_dir()


def alembic_config() -> Config:
    """An alembic Config pointing at our migrations (no ini file, no logging setup).

    Raises:
        DatabaseError: the ``alembic/`` folder is missing from the source tree.
    """
    if not (ALEMBIC_DIR / "env.py").is_file():
        raise exception.DatabaseError(
            f"The migrations folder {ALEMBIC_DIR} is missing; reinstall the package "
            "(pip install --force-reinstall conductor-objects)",
            reason="migrations folder missing",
        )
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    return config


# An arbitrary constant naming the advisory lock that serialises upgrades on PostgreSQL.
_UPGRADE_LOCK = 0x636F6E64

_process_lock = threading.Lock()

_CAST = re.compile(r"::[a-z ]+$")


def _literal(default: str) -> str:
    return _CAST.sub("", default.strip()).strip("()").strip().strip("'")


def compare_server_default(
    context: MigrationContext,
    inspected_column: Column[Any],
    metadata_column: Column[Any],
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """Autogenerate's server-default comparison, able to compare JSON defaults.

    PostgreSQL's ``json`` type has no ``=`` operator, so alembic's own comparison (which
    asks the database) fails on ``'[]'::json``; compare the literals as text instead.
    Returns True when they differ, None to let alembic decide for other columns.
    """
    if not isinstance(metadata_column.type, JSON):
        return None
    if inspected_default is None or rendered_metadata_default is None:
        return (inspected_default is None) != (rendered_metadata_default is None)
    return _literal(inspected_default) != _literal(rendered_metadata_default)


@functools.cache
def head_revision() -> str:
    """The newest migration this code ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "alembic/versions holds no revision"
    return head


def current_revision(database_url: str | URL) -> str | None:
    """The revision the database is at (None when it was never migrated).

    Raises:
        DatabaseError: the database cannot be reached.
    """
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with translate_errors(), engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def upgrade(database_url: str | URL, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (the newest by default); a no-op when there.

    Args:
        database_url: the database; its password is never logged.
        revision: an alembic revision id, or "head".

    Raises:
        DatabaseError: the database cannot be reached or refused a migration.
        ObjectValueError: ``revision`` is unknown.
        SchemaNotAtHead: the database was migrated by a newer version of the conductor.
    """
    config = alembic_config()
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with translate_errors(), engine.begin() as connection:
            # env.py uses this connection rather than opening one from a URL, so the
            # password never passes through alembic's ini-style config.
            config.attributes["connection"] = connection
            # Conductors starting together on one empty database would race to create the
            # same tables; whoever waits for this lock then finds the schema at head.
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_UPGRADE_LOCK})")
            elif connection.dialect.name == "sqlite":
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                # NOTE: alembic keeps the running migration in module globals
                # (alembic.context, alembic.op): one upgrade at a time per process.
                with _process_lock:
                    command.upgrade(config, revision)
            except CommandError as exc:
                current = MigrationContext.configure(connection).get_current_revision()
                if current is not None and current not in _known_revisions():
                    raise _newer_schema(mask_url(database_url), current) from exc
                raise exception.ObjectValueError(
                    reason=f"cannot upgrade {mask_url(database_url)} to {revision!r}: {exc}"
                ) from exc
    finally:
        engine.dispose()


def check_at_head(database_url: str | URL) -> None:
    """Make sure the database schema is the one this code expects.

    Raises:
        SchemaNotAtHead: it is behind (or was never migrated), or at a revision this
            code does not know (migrated by a newer conductor); the message names the
            command that fixes it.
        DatabaseError: the database cannot be reached.
    """
    current = current_revision(database_url)
    head = head_revision()
    if current == head:
        return
    url = mask_url(database_url)
    if current is not None and current not in _known_revisions():
        raise _newer_schema(url, current)
    raise SchemaNotAtHead(url=url, current=current or "none (empty database)", head=head)


@functools.cache
def _known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(rev.revision for rev in script.walk_revisions())


def _newer_schema(url: str, current: str) -> SchemaNotAtHead:
    head = head_revision()
    return SchemaNotAtHead(
        f"The database {url} is at schema revision {current}, which this conductor does "
        f"not know (its newest is {head}): it was migrated by a newer version; run that "
        "version's conductor instead",
        url=url,
        current=current,
        head=head,
    )
