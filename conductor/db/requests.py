"""Exactly-once writes: the stored results of requests that changed data.

The broker may deliver a request twice (its conductor died after commit, before the ack).
The service looks the request id up first; when found it answers with the stored result
instead of running the method again. Otherwise it runs the method and, in the SAME
transaction, stores the result, so either both the change and its result are committed or
neither. Old ids are pruned once no redelivery can carry them any more.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from conductor.db.errors import translate_errors
from conductor.db.models import ConductorRequest, utcnow

__all__ = ["OBJNAME", "lookup_result", "lookup_results", "prune", "store_result", "store_results"]

#: The objname on errors about the requests table (DuplicateEntry on a racing replay).
OBJNAME = "ConductorRequest"

_table = cast(Table, ConductorRequest.__table__)
_lookup = select(_table.c.result).where(_table.c.request_id == bindparam("request_id"))
_store = insert(_table)


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


def store_result(session: Connection | Session, request_id: str, result: Any) -> None:
    """Record ``result`` (JSON-compatible) for ``request_id`` in the caller's transaction.

    Raises:
        DuplicateEntry: another conductor stored this request id first (a redelivery ran
            twice at once). Roll back and answer from :func:`lookup_result`.
        ObjectValueError: ``result`` is not JSON-compatible.
    """
    with translate_errors(OBJNAME):
        session.execute(
            _store, {"request_id": request_id, "result": result, "created_at": utcnow()}
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


def store_results(session: Connection | Session, results: Sequence[tuple[str, Any]]) -> None:
    """:func:`store_result` for many requests in one statement (executemany)."""
    if not results:
        return
    now = utcnow()
    rows = [{"request_id": rid, "result": result, "created_at": now} for rid, result in results]
    with translate_errors(OBJNAME):
        session.execute(_store, rows)


def prune(session: Connection | Session, older_than_seconds: float) -> int:
    """Forget results stored more than ``older_than_seconds`` ago.

    Returns:
        How many were deleted.
    """
    cutoff = utcnow() - dt.timedelta(seconds=older_than_seconds)
    with translate_errors(OBJNAME):
        result = session.execute(delete(_table).where(_table.c.created_at < cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]
