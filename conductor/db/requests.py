"""Exactly-once writes: the stored results of requests that changed data.

The broker may deliver a request twice (its conductor died after commit, before the ack).
The service looks the request id up first; when found it answers with the stored result
instead of running the method again. Otherwise it runs the method and, in the SAME
transaction, stores the result, so either both the change and its result are committed or
neither. Old ids are pruned once no redelivery can carry them any more.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import (
    Table,
    Text,
    any_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from conductor.db.engine import json_text
from conductor.db.errors import translate_errors
from conductor.db.models import ConductorRequest, utcnow
from objects import exception

__all__ = [
    "OBJNAME",
    "Stored",
    "answer",
    "find",
    "find_many",
    "lookup_result",
    "lookup_results",
    "prune",
    "store_result",
    "store_results",
    "storing_results",
]

#: The objname on errors about the requests table (DuplicateEntry on a racing replay).
OBJNAME = "ConductorRequest"

_table: Table = ConductorRequest.__table__  # type: ignore[assignment]
_lookup = select(_table.c.result).where(_table.c.request_id == bindparam("request_id"))
_find = select(_table.c.result, _table.c.digest).where(
    _table.c.request_id == bindparam("request_id")
)
_store = insert(_table)
_IDS_PER_QUERY = 5000
#: PostgreSQL: :func:`find_many`'s query with the ids as one array parameter (one
#: statement text whatever their number: no IN list to render, nor for psycopg to parse).
_find_any = select(_table.c.request_id, _table.c.result, _table.c.digest).where(
    _table.c.request_id == any_(bindparam("ids", type_=postgresql.ARRAY(Text)))
)


class Stored(NamedTuple):
    """A stored request: its result, and the digest of its content (None before 0004)."""

    result: Any
    digest: str | None


def find(session: Connection | Session, request_id: str) -> Stored | None:
    """The stored result and digest of a request that already ran, or None."""
    with translate_errors(OBJNAME):
        row = session.execute(_find, {"request_id": request_id}).first()
    return None if row is None else Stored(row[0], row[1])


def find_many(session: Connection | Session, request_ids: Sequence[str]) -> dict[str, Stored]:
    """:func:`find` for many request ids, in one query."""
    found: dict[str, Stored] = {}
    ids = list(request_ids)
    bind = session.get_bind() if isinstance(session, Session) else session
    if bind.dialect.name == "postgresql":
        if ids:
            with translate_errors(OBJNAME):
                rows = session.execute(_find_any, {"ids": ids})
                found.update((row[0], Stored(row[1], row[2])) for row in rows)
        return found
    # A batch may carry tens of thousands of requests: a few thousand ids per query keeps
    # each under the databases' bound-parameter limits.
    for start in range(0, len(ids), _IDS_PER_QUERY):
        stmt = select(_table.c.request_id, _table.c.result, _table.c.digest).where(
            _table.c.request_id.in_(ids[start : start + _IDS_PER_QUERY])
        )
        with translate_errors(OBJNAME):
            found.update((row[0], Stored(row[1], row[2])) for row in session.execute(stmt))
    return found


def answer(request_id: str, stored: Stored, digest: str | None) -> Any:
    """The stored result, when the request asking for it is the one that was stored.

    Raises:
        RequestIdReused: both digests are known and differ: another request reused the id.
    """
    if stored.digest is not None and digest is not None and stored.digest != digest:
        raise exception.RequestIdReused(request_id=request_id)
    return stored.result


def lookup_result(session: Connection | Session, request_id: str) -> tuple[bool, Any]:
    """The stored result of a request that already ran.

    Returns:
        ``(True, result)`` when the request id is known, else ``(False, None)``.
    """
    with translate_errors(OBJNAME):
        row = session.execute(_lookup, {"request_id": request_id}).first()
    if row is None:
        return False, None
    return True, row[0]


def store_result(
    session: Connection | Session, request_id: str, result: Any, digest: str | None = None
) -> None:
    """Record ``result`` (JSON-compatible) for ``request_id`` in the caller's transaction,
    with the ``digest`` of the request's content (see :func:`answer`).

    Raises:
        DuplicateEntry: another conductor stored this request id first (a redelivery ran
            twice at once). Roll back and answer from :func:`lookup_result`.
        ObjectValueError: ``result`` is not JSON-compatible.
    """
    with translate_errors(OBJNAME):
        session.execute(
            _store,
            {"request_id": request_id, "result": result, "digest": digest, "created_at": utcnow()},
        )


def lookup_results(session: Connection | Session, request_ids: Sequence[str]) -> dict[str, Any]:
    """The stored results of those request ids that already ran, in one query."""
    if not request_ids:
        return {}
    stmt = select(_table.c.request_id, _table.c.result).where(
        _table.c.request_id.in_(list(request_ids))
    )
    with translate_errors(OBJNAME):
        return {row[0]: row[1] for row in session.execute(stmt)}


def store_results(
    session: Connection | Session,
    results: Sequence[tuple[str, Any] | tuple[str, Any, str | None]],
) -> None:
    """:func:`store_result` for many requests in one statement (executemany): ``(request
    id, result)`` or ``(request id, result, digest)``."""
    if not results:
        return
    now = utcnow()
    bind = session.get_bind() if isinstance(session, Session) else session
    with translate_errors(OBJNAME):
        if bind.dialect.name == "postgresql" and len(results) > 1:
            # One statement and one parameter whatever the number of rows: executemany
            # sends an INSERT per row, and arrays of JSON text cost psycopg a regular
            # expression per quote to escape.
            records = json_text(
                [[item[0], item[1], item[2] if len(item) > 2 else None] for item in results]
            )
            session.execute(_store_many(), {"rows": records, "created_at": now})
        elif bind.dialect.paramstyle == "qmark" and isinstance(bind, Connection):
            # SQLite: the driver's executemany of the rows as the columns' own bind
            # processors make them (one created_at for all), without SQLAlchemy's per-row
            # processing of each parameter of each row.
            dialect = bind.dialect
            to_json = _table.c.result.type.bind_processor(dialect)
            to_time = _table.c.created_at.type.bind_processor(dialect)
            created = now if to_time is None else to_time(now)
            rows = [
                (
                    item[0],
                    item[1] if to_json is None else to_json(item[1]),
                    item[2] if len(item) > 2 else None,
                    created,
                )
                for item in results
            ]
            bind.exec_driver_sql(_STORE_QMARK, rows)
        else:
            session.execute(
                _store,
                [
                    {
                        "request_id": item[0],
                        "result": item[1],
                        "digest": item[2] if len(item) > 2 else None,
                        "created_at": now,
                    }
                    for item in results
                ],
            )


_STORE_QMARK = (
    f"INSERT INTO {_table.name} (request_id, result, digest, created_at) VALUES (?, ?, ?, ?)"
)


@functools.cache
def _store_many() -> Any:
    """PostgreSQL: one INSERT of every row of ``:rows``, a JSON array of ``[request id,
    result, digest]``."""
    return text(
        f"INSERT INTO {_table.name} (request_id, result, digest, created_at) "
        "SELECT v.value ->> 0, v.value -> 1, v.value ->> 2, :created_at "
        "FROM json_array_elements(CAST(:rows AS json)) AS v"
    ).bindparams(
        bindparam("rows", type_=Text), bindparam("created_at", type_=_table.c.created_at.type)
    )


@functools.lru_cache(maxsize=256)
def storing_results(update: Any) -> Any:
    """PostgreSQL: ``update`` (an ``UPDATE ... RETURNING`` whose first column is the
    row's ``id``) that also stores, in the same statement, the results of the rows it
    writes: ``:w_results`` is a JSON array of ``[id, request id, result, digest]`` (a row
    it does not write stores nothing), stored at ``:w_stored_at``. Its rows are the
    update's.

    NOTE: no parameter may bear the name of a column of the updated table: SQLAlchemy
    would take it for a value the UPDATE sets (``created_at`` did).

    NOTE: one statement where :func:`store_results` after the update is another: a
    round trip, and its execution in SQLAlchemy, psycopg and the server, per batch.
    """
    written = update.cte("written")
    stored = (
        func.json_array_elements(cast(bindparam("w_results", type_=Text), postgresql.JSON))
        .table_valued("value")
        .alias("stored")
    )
    rows = select(
        literal_column("stored.value ->> 1"),
        literal_column("stored.value -> 2"),
        literal_column("stored.value ->> 3"),
        bindparam("w_stored_at", type_=_table.c.created_at.type),
    ).select_from(
        stored.join(written, written.c.id == literal_column("CAST(stored.value ->> 0 AS BIGINT)"))
    )
    insert_stored = (
        insert(_table)
        .from_select(["request_id", "result", "digest", "created_at"], rows)
        .cte("stored_results")
    )
    return select(*written.c).add_cte(insert_stored)


def prune(session: Connection | Session, older_than_seconds: float) -> int:
    """Forget results stored more than ``older_than_seconds`` ago.

    Returns:
        How many were deleted.
    """
    cutoff = utcnow() - dt.timedelta(seconds=older_than_seconds)
    with translate_errors(OBJNAME):
        result = session.execute(delete(_table).where(_table.c.created_at < cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]
