"""The conductor's RPC endpoint: nova's object methods, each in its own transaction.

Every request runs under ``objects.base.local_execution()`` (the conductor never calls
itself, even when its process also has an indirection API installed) with a
``SQLStorage`` bound to one transaction. Writes are exactly-once in effect: the request
id the transport hands us is stored with the result in the same transaction, so a
redelivered request (the previous conductor died after commit, before the ack) is
answered from the stored result instead of running twice.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

import transport
from conductor import db
from conductor.db import requests as db_requests
from conductor.db.storage import SQLStorage
from objects import base, exception, indirection
from objects.context import RequestContext

LOG = logging.getLogger(__name__)

#: The request id being served by this thread, for log records (see cli's log filter).
current_request: contextvars.ContextVar[str] = contextvars.ContextVar(
    "conductor_request", default="-"
)


class ConductorManager:
    """Endpoint for the conductor topic; method names and arguments are nova's.

    Args:
        session_factory: makes a SQLAlchemy session per request.
        prune_every: seconds between prunes of stored request results.
        keep_results: seconds a stored result is kept for replay.
    """

    target = transport.Target(namespace=None, version="1.0")

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        prune_every: float = 60.0,
        keep_results: float = 3600.0,
    ) -> None:
        self._session_factory = session_factory
        self._prune_every = prune_every
        self._keep_results = keep_results
        self._last_prune = time.monotonic()

    # -- RPC methods (nova's names) -------------------------------------------------

    def object_class_action_versions(
        self,
        context: RequestContext,
        objname: str,
        objmethod: str,
        object_versions: dict[str, str],
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> Any:
        _check_call_shape(objname=objname, objmethod=objmethod, args=args, kwargs=kwargs)
        if not isinstance(object_versions, dict):
            raise exception.ObjectValueError(reason="object_versions must be a mapping")
        return self._run(
            context,
            f"{objname}.{objmethod}",
            lambda: indirection.handle_class_action(
                context, objname, objmethod, object_versions, args, kwargs
            ),
        )

    def object_action(
        self,
        context: RequestContext,
        objinst: Any,
        objmethod: str,
        args: list[Any],
        kwargs: dict[str, Any],
        object_versions: dict[str, str] | None = None,
    ) -> Any:
        if not isinstance(objinst, base.VersionedObject):
            raise exception.ObjectValueError(reason="objinst must be a versioned object primitive")
        _check_call_shape(objname=objinst.obj_name(), objmethod=objmethod, args=args, kwargs=kwargs)
        if object_versions is not None and not isinstance(object_versions, dict):
            raise exception.ObjectValueError(reason="object_versions must be a mapping")
        return self._run(
            context,
            f"{objinst.obj_name()}.{objmethod}",
            lambda: list(
                indirection.handle_object_action(
                    context, objinst, objmethod, args, kwargs, object_versions
                )
            ),
        )

    def object_backport_versions(
        self, context: RequestContext, objinst: Any, object_versions: dict[str, str]
    ) -> Any:
        if not isinstance(objinst, base.VersionedObject):
            raise exception.ObjectValueError(reason="objinst must be a versioned object primitive")
        with base.local_execution():
            return indirection.handle_backport(context, objinst, object_versions)

    # -- one request, one transaction -----------------------------------------------

    def _run(self, context: RequestContext, what: str, body: Callable[[], Any]) -> Any:
        if not isinstance(context, RequestContext):
            raise exception.ObjectValueError(reason="the request carries no valid context")
        request_id = transport.current_request_id()
        token = current_request.set(request_id or context.request_id)
        try:
            self._maybe_prune()
            try:
                result = self._run_once(context, what, body, request_id)
            except _AlreadyStored:
                # Another conductor committed this very request first (a redelivery raced
                # the original); its result is the answer.
                with db.session_scope(self._session_factory) as session:
                    found, result = db_requests.lookup_result(session, request_id or "")
                if not found:
                    raise exception.DatabaseError(reason="stored result vanished") from None
            LOG.debug("served %s", what)
            return result
        finally:
            current_request.reset(token)

    def _run_once(
        self, context: RequestContext, what: str, body: Callable[[], Any], request_id: str | None
    ) -> Any:
        with db.session_scope(self._session_factory) as session:
            if request_id is not None:
                found, stored = db_requests.lookup_result(session, request_id)
                if found:
                    LOG.info("replayed %s from its stored result", what)
                    return stored
            storage = SQLStorage(session)
            context.db = storage
            try:
                with base.local_execution():
                    result = body()
            finally:
                context.db = None
            if request_id is not None and storage.wrote:
                try:
                    db_requests.store_result(session, request_id, result)
                except exception.DuplicateEntry:
                    raise _AlreadyStored() from None
        return result

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < self._prune_every:
            return
        self._last_prune = now
        try:
            with self._session_factory() as session, session.begin():
                removed = db_requests.prune(session, self._keep_results)
            if removed:
                LOG.debug("pruned %d stored request results", removed)
        except Exception:  # noqa: BLE001 - pruning must never fail a request
            LOG.warning("could not prune stored request results", exc_info=True)


class _AlreadyStored(Exception):
    """The request id was stored by someone else during our transaction."""


def _check_call_shape(**parts: Any) -> None:
    if not isinstance(parts["objname"], str) or not isinstance(parts["objmethod"], str):
        raise exception.ObjectValueError(reason="objname and objmethod must be strings")
    if not isinstance(parts["args"], (list, tuple)):
        raise exception.ObjectValueError(reason="args must be a list")
    if not isinstance(parts["kwargs"], dict):
        raise exception.ObjectValueError(reason="kwargs must be a mapping")
