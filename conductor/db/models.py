"""SQLAlchemy models of the built-in domain, and the registry that maps object names to them.

One table per object, one column per scalar field under the field's name; list, dict and
nested-object fields are JSON columns. Every domain table carries ``revision``, the integer
:class:`conductor.db.storage.SQLStorage` bumps on each update for optimistic concurrency
(the ORM bumps it too, through ``version_id_col``, when user code writes through the session).

The migrations in ``alembic/versions`` track exactly the tables in :data:`MANAGED_TABLES`;
``tests/conductor/test_db_migrations.py`` fails if these models and those migrations drift.

A user's own objects (``conductor serve --objects MODULE``) declare their model on the same
:class:`Base`, mix in :class:`Revisioned`, and call :func:`register_model`; their tables are
created by :func:`ensure_user_tables`, not by alembic.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, MetaData, String, Table, text
from sqlalchemy.engine import Dialect, Engine, processors
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column
from sqlalchemy.types import TypeDecorator

from objects import exception

__all__ = [
    "MANAGED_TABLES",
    "Base",
    "ComputeNode",
    "ConductorRequest",
    "Flavor",
    "Instance",
    "Revisioned",
    "UTCDateTime",
    "ensure_user_tables",
    "get_table",
    "register_model",
    "registered_models",
    "utcnow",
]

_MICROSECOND = dt.timedelta(microseconds=1)
_clock_lock = threading.Lock()
_last_now = dt.datetime.min.replace(tzinfo=dt.UTC)


def utcnow() -> dt.datetime:
    """The current UTC time, timezone-aware and strictly increasing within this process.

    Two saves of one row inside the same microsecond (or a clock stepping back) would
    otherwise give ``updated_at`` values that do not increase.
    """
    global _last_now
    now = dt.datetime.now(dt.UTC)
    with _clock_lock:
        if now <= _last_now:
            now = _last_now + _MICROSECOND
        _last_now = now
    return now


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always read back timezone-aware, to the microsecond.

    PostgreSQL keeps ``timestamp with time zone``. SQLite has no time zones, so the value
    is stored as naive UTC text (SQLAlchemy's fixed-width format keeps microseconds and
    sorts correctly) and given back its UTC zone on the way out. Naive input is taken to be UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise exception.ObjectValueError(reason=f"expected a datetime, got {value!r}")
        value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        """SQLAlchemy's (the impl's processor, then :meth:`process_result_value`), with
        the text SQLite stores (``2026-11-22 02:03:25.123456``, naive UTC) read with its
        zone at once: ``fromisoformat`` of it plus ``+00:00`` is what the impl's
        ``fromisoformat`` and ``replace(tzinfo=UTC)`` give, at a third of the cost."""
        process = super().result_processor(dialect, coltype)
        if (
            process is None
            or self.impl_instance.result_processor(dialect, coltype) is not _str_to_datetime
        ):
            return process
        parse = dt.datetime.fromisoformat

        def process_text(value: Any) -> dt.datetime | None:
            # NOTE: a text of the stored width (26 characters: no room for a zone of
            # its own) parses with "+00:00" as the impl's value with UTC set; a date
            # alone would not ("2026-11-22+00:00" reads as a naive midnight).
            if type(value) is str and len(value) == 26:
                try:
                    return parse(value + "+00:00")
                except ValueError:
                    pass  # no such day or time, or its own zone: the impl says so
            return process(value)

        return process_text


#: SQLAlchemy's SQLite DATETIME processor (``datetime.fromisoformat``).
_str_to_datetime = processors.str_to_datetime


def _json() -> JSON:
    # none_as_null: Python None is SQL NULL, so NOT NULL columns refuse it rather than
    # silently storing the JSON text 'null'.
    return JSON(none_as_null=True)


class Base(DeclarativeBase):
    """Declarative base of every model the conductor serves, built-in or the user's own."""

    # Named constraints: migrations can refer to them, and SQLite batch mode can rebuild them.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Revisioned:
    """Mixin for a domain table: the ``revision`` column used for optimistic concurrency."""

    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        # The ORM then bumps and checks revision on its own UPDATEs, so user code that
        # writes through the session keeps the same optimistic-concurrency contract.
        return {"version_id_col": cls.revision}


class Flavor(Revisioned, Base):
    """The ``flavors`` table: Flavor 1.0."""

    __tablename__ = "flavors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    flavorid: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    vcpus: Mapped[int] = mapped_column(Integer, nullable=False)
    memory_mb: Mapped[int] = mapped_column(Integer, nullable=False)
    root_gb: Mapped[int] = mapped_column(Integer, nullable=False)


class Instance(Revisioned, Base):
    """The ``instances`` table: Instance 1.2 (``tags`` came with 1.1, ``metadata`` with 1.2)."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(36), nullable=False, unique=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    vcpus: Mapped[int] = mapped_column(Integer, nullable=False)
    memory_mb: Mapped[int] = mapped_column(Integer, nullable=False)
    flavor: Mapped[dict[str, Any] | None] = mapped_column(_json(), nullable=True)
    task_state: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(
        UTCDateTime(), nullable=True, default=utcnow, onupdate=utcnow
    )
    tags: Mapped[list[str]] = mapped_column(
        _json(), nullable=False, default=list, server_default=text("'[]'")
    )
    # NOTE: ``metadata`` is reserved on declarative classes, so the attribute has another
    # name; the column (what Storage records and the migrations use) is still ``metadata``.
    metadata_: Mapped[dict[str, str]] = mapped_column(
        "metadata", _json(), nullable=False, default=dict, server_default=text("'{}'")
    )
    #: The creating context's project (not an Instance field: the storage keeps it, and
    #: scopes rows by it when the conductor runs with project scoping).
    project_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)


class ComputeNode(Revisioned, Base):
    """The ``compute_nodes`` table: ComputeNode 1.0."""

    __tablename__ = "compute_nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    vcpus: Mapped[int] = mapped_column(Integer, nullable=False)
    vcpus_used: Mapped[int] = mapped_column(Integer, nullable=False)
    memory_mb: Mapped[int] = mapped_column(Integer, nullable=False)
    memory_mb_used: Mapped[int] = mapped_column(Integer, nullable=False)


class ConductorRequest(Base):
    """The ``conductor_requests`` table: results of writing requests, for exactly-once replies."""

    __tablename__ = "conductor_requests"

    request_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    result: Mapped[Any] = mapped_column(JSON(none_as_null=False), nullable=True)
    #: SHA-256 (hex) of the request's content; NULL for results stored before 0004.
    digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)


#: Tables created and altered by the alembic migrations; every other table on ``Base``
#: belongs to a user model and is created by :func:`ensure_user_tables`.
MANAGED_TABLES = frozenset({"flavors", "instances", "compute_nodes", "conductor_requests"})

_registry_lock = threading.Lock()
_registry: dict[str, type[Base]] = {
    "Flavor": Flavor,
    "Instance": Instance,
    "ComputeNode": ComputeNode,
}


def register_model(objname: str, model: type[Base]) -> None:
    """Serve the object ``objname`` from ``model``'s table.

    The table needs an integer ``id`` primary key and an integer ``revision`` column (mix
    in :class:`Revisioned`); ``created_at``/``updated_at`` are kept when present.

    Raises:
        ObjectValueError: the model lacks ``id`` or ``revision``, or another model already
            serves ``objname``.
    """
    table = model.__table__
    assert isinstance(table, Table)
    missing = [name for name in ("id", "revision") if name not in table.c]
    if missing:
        raise exception.ObjectValueError(
            reason=f"model {model.__name__} for {objname} lacks column(s) {', '.join(missing)}"
        )
    with _registry_lock:
        current = _registry.get(objname)
        if current is not None and current is not model:
            raise exception.ObjectValueError(
                reason=f"{objname} is already served by model {current.__name__}"
            )
        _registry[objname] = model


def registered_models() -> dict[str, type[Base]]:
    """A copy of the object name -> model mapping."""
    with _registry_lock:
        return dict(_registry)


def get_table(objname: str) -> Table:
    """The table serving ``objname``.

    Raises:
        UnsupportedObjectError: no model is registered for ``objname``.
    """
    model = _registry.get(objname)
    if model is None:
        raise exception.UnsupportedObjectError(
            f"No database table for object {objname!r}; register a model with "
            "conductor.db.register_model()",
            objtype=objname,
        )
    table = model.__table__
    assert isinstance(table, Table)
    return table


def ensure_user_tables(engine: Engine) -> list[str]:
    """Create the missing tables of registered user models (alembic manages the rest).

    Returns:
        The names of the tables that were checked (created when missing).
    """
    from conductor.db.errors import translate_errors

    tables = [
        t for t in (get_table(name) for name in registered_models()) if t.name not in MANAGED_TABLES
    ]
    if tables:
        with translate_errors():
            Base.metadata.create_all(engine, tables=tables, checkfirst=True)
    return [t.name for t in tables]
