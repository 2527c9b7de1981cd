"""The conductor's unit of work: one transaction per request (or per batch), exactly once.

Every request runs under ``objects.base.local_execution()`` (the conductor never calls
itself, even when its process also has an indirection API installed) with ``context.db``
bound to a ``SQLStorage`` on one transaction. Writes are exactly-once in effect: the
request id the transport hands us is stored with the result in the same transaction, so
a request that arrives again is answered from the stored result instead of running twice:
a redelivery (the previous conductor died after commit, before the ack) is looked up
first; a request published again as a fresh message (a client resending after a lost
publisher confirm) runs, fails on what its first run wrote (or on the stored id) and is
then answered from the stored result. Requests that wrote nothing (their storage's
:class:`~conductor.db.writes.WriteTracker` says so) are not stored: run again, they read
again. A stored result carries the digest of its request's content; the same id with
other content is refused (``RequestIdReused``).

:class:`UnitOfWork` does all of it: :meth:`UnitOfWork.run` for one request (the endpoint
hands it the method body), :meth:`UnitOfWork.run_batch` for the requests of one message
(the endpoint's ``transport.BatchEndpoint`` hook), stored results pruned as it goes.
A request of a batch finds its storage already bound to its context: the batch owns the
transaction and the stored results.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from json import encoder as json_encoder
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

import transport
from conductor import db
from conductor.batching import Batch, BatchStorage
from conductor.db import requests as db_requests
from conductor.db.storage import SQLStorage
from conductor.db.writes import WriteTracker
from conductor.metrics import Metrics, outcome_of
from objects import base, exception
from objects.context import RequestContext
from objects.persistent import fetches_by_id
from objects.registry import VersionedObjectRegistry

if TYPE_CHECKING:
    from objects.context import Context

__all__ = ["ServedContext", "UnitOfWork", "current_request", "digest_of", "message_counted"]

LOG = logging.getLogger(__name__)

#: True while the requests of one message run after ``conductor_batch_size`` counted
#: that message: their batch could not run together (one transaction each), or the lane
#: (``conductor.lane``) answered the others.
_message_counted: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "conductor_message_counted", default=False
)
#: The request id being served by this thread, for log records (see cli's log filter).
current_request: contextvars.ContextVar[str] = contextvars.ContextVar(
    "conductor_request", default="-"
)


def _no_digest() -> str | None:
    return None


def message_counted() -> None:
    """Say that ``conductor_batch_size`` counted the message whose requests run next in
    this ``contextvars`` context (the transport's dispatcher gives each message a context
    of its own when an endpoint sees its requests first)."""
    _message_counted.set(True)


class UnitOfWork:
    """Runs requests in transactions, exactly once, and counts them in ``metrics``.

    Args:
        engine: the database; each request (or batch) runs in one ``db.Transaction``.
        prune_every: seconds between prunes of stored request results.
        keep_results: seconds a stored result is kept for replay.
        serialize_transactions: run one transaction at a time (SQLite).
        project_scoping: confine each request to its context's project's rows, unless the
            context is admin (see ``SQLStorage``).
        metrics: counts each request once, whether it ran alone, in a batch, or alone
            after its batch fell back to one transaction per request.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        prune_every: float = 60.0,
        keep_results: float = 3600.0,
        serialize_transactions: bool = False,
        project_scoping: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self._engine = engine
        self._project_scoping = project_scoping
        self._metrics = metrics
        # NOTE: SQLite has one writer at a time and makes the others poll with sleeps of
        # up to 100 ms; queueing our own transactions on a lock is far faster.
        self._tx_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if serialize_transactions else contextlib.nullcontext()
        )
        self._prune_every = prune_every
        self._keep_results = keep_results
        self._last_prune = time.monotonic()

    @property
    def engine(self) -> Engine:
        """The database every request runs in."""
        return self._engine

    @property
    def transaction_lock(self) -> contextlib.AbstractContextManager[Any]:
        """Held around every transaction (a lock on SQLite, nothing on PostgreSQL)."""
        return self._tx_lock

    # -- one request, one transaction -----------------------------------------------

    def run(
        self,
        context: RequestContext,
        what: str,
        body: Callable[[], Any],
        reads_only: bool = False,
        digest: Callable[[], str | None] = _no_digest,
    ) -> Any:
        """Run one request's method body (``what`` is ``Objname.method``) exactly once.

        Args:
            reads_only: the method never writes (a failure then cannot mean it ran before).
            digest: the digest of the request's content (see :func:`digest_of`).
        """
        if not isinstance(context, RequestContext):
            raise exception.ObjectValueError(reason="the request carries no valid context")
        if context.has_db:
            # Part of a batch (run_batch bound its storage): the batch owns the
            # transaction and the stored results.
            with base.local_execution():
                result = body()
            LOG.debug("served %s", what)
            return result
        request_id = transport.current_request_id()
        token = current_request.set(request_id or context.request_id)
        metrics = self._metrics
        started = time.monotonic()
        error: BaseException | None = None
        if metrics is not None:
            if not _message_counted.get():
                metrics.batch(1)  # a message of one request (a batch that fell back counted)
            metrics.started()
        try:
            self.maybe_prune()
            try:
                result = self._run_once(context, what, body, request_id, digest)
            except _AlreadyStored:
                # This very request id was committed first by another run (a redelivery
                # or a resend raced the original); its result is the answer.
                with db.transaction_scope(self._engine) as tx:
                    stored = db_requests.find(tx.connection, request_id or "")
                if stored is None:
                    raise exception.DatabaseError(reason="stored result vanished") from None
                result = db_requests.answer(request_id or "", stored, digest())
            except (exception.DatabaseError, exception.RequestIdReused):
                raise
            except Exception:
                # NOTE: a request sent again without the redelivered flag (a client resending
                # after a lost publisher confirm) fails when it runs again: its create hits
                # the unique key it wrote, its save the revision it bumped, its destroy the
                # missing row. Only then is it looked up, so the success path of every
                # request costs no extra query.
                if request_id is None or reads_only:
                    raise
                stored = self._stored_after_failure(request_id)
                if stored is None:
                    raise
                result = db_requests.answer(request_id, stored, digest())
                LOG.info("replayed %s from its stored result", what)
                if self._metrics is not None:
                    self._metrics.replayed()
            LOG.debug("served %s", what)
            return result
        except exception.DatabaseError as exc:
            # One line per failed request while the database is away, not a traceback;
            # where the database lives is for this log, not for the caller.
            LOG.warning("%s failed: %s", what, db.error_detail(exc))
            error = exc
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            current_request.reset(token)
            if metrics is not None:
                metrics.finished()
                objname, _, objmethod = what.rpartition(".")
                metrics.request_done(
                    objname, objmethod, outcome_of(error), time.monotonic() - started
                )

    def _run_once(
        self,
        context: RequestContext,
        what: str,
        body: Callable[[], Any],
        request_id: str | None,
        digest: Callable[[], str | None],
    ) -> Any:
        with self._tx_lock, db.transaction_scope(self._engine) as tx:
            # NOTE: a redelivered message may have run before: look it up first. Other
            # messages are looked up only if they fail (see run), which saves a query
            # on every request.
            if request_id is not None and transport.current_request_redelivered():
                stored = db_requests.find(tx.connection, request_id)
                if stored is not None:
                    result = db_requests.answer(request_id, stored, digest())
                    LOG.info("replayed %s from its stored result", what)
                    if self._metrics is not None:
                        self._metrics.replayed()
                    return result
            writes = WriteTracker()
            storage = SQLStorage(tx, writes=writes, **self._scope_of(context))
            result = _with_storage(context, storage, body)
            if request_id is not None and writes.wrote:
                try:
                    db_requests.store_result(tx.for_write(), request_id, result, digest())
                except exception.DuplicateEntry:
                    raise _AlreadyStored() from None
        return result

    def _scope_of(self, context: Context) -> dict[str, Any]:
        """The project scope of a request's storage (see ``SQLStorage``)."""
        return {
            "project_id": getattr(context, "project_id", None),
            "scoped": self._project_scoping and not getattr(context, "is_admin", False),
        }

    def _stored_after_failure(self, request_id: str) -> db_requests.Stored | None:
        """The stored request whose run just failed (it may have run before); None when
        there is none or the database cannot tell."""
        try:
            with db.transaction_scope(self._engine) as tx:
                return db_requests.find(tx.connection, request_id)
        except exception.DatabaseError:
            return None

    # -- many requests, one transaction -------------------------------------------------

    def run_batch(self, calls: Sequence[transport.BatchCall]) -> None:
        """Run requests that arrived in one message in one transaction; settle each call.

        The bodies run side by side (``conductor.batching``): their gets by id, inserts
        and updates go to the database a few statements at a time. Each request keeps its
        own result or error and its own stored result for replays. A request that fails
        after writing (or with an error that may have aborted the transaction) sends the
        whole batch back to one transaction per request (:meth:`run`, which counts each
        in ``metrics``), so no request's outcome depends on another's failure.
        """
        if len(calls) > 1:
            if self._settle_together(calls):
                return
            for call in calls:
                try:
                    call.reset()
                except Exception as exc:  # noqa: BLE001 - the call's own outcome
                    call.set_exception(exc)
                    self._count_settled([call], time.monotonic())
        # A batch that fell back was counted in conductor_batch_size already; a message of
        # one request is counted by run().
        token = _message_counted.set(len(calls) > 1 or _message_counted.get())
        try:
            for call in calls:
                if call.outcome is not None:
                    continue
                try:
                    call.set_result(call.run())
                except Exception as exc:  # noqa: BLE001 - the call's own outcome
                    call.set_exception(exc)
        finally:
            _message_counted.reset(token)

    def _settle_together(self, calls: Sequence[transport.BatchCall]) -> bool:
        """Settle every call from one transaction, and count them; False (nothing settled,
        nothing counted) when the batch must run request by request."""
        metrics, started = self._metrics, time.monotonic()
        if metrics is not None:
            if not _message_counted.get():
                metrics.batch(len(calls))
            metrics.started(len(calls))
        try:
            outcomes = self._run_batch(calls)
        except _Fallback as why:
            LOG.debug("batch of %d ran request by request: %s", len(calls), why)
            return False
        except exception.ObjectsError as exc:
            LOG.debug("batch of %d failed as a whole (%s); request by request", len(calls), exc)
            return False
        finally:
            if metrics is not None:
                metrics.finished(len(calls))
        for call, (ok, value) in zip(calls, outcomes, strict=True):
            if ok:
                call.set_result(value)
            else:
                call.set_exception(value)
        self._count_settled(calls, started)
        return True

    def _count_settled(self, calls: Sequence[transport.BatchCall], started: float) -> None:
        metrics = self._metrics
        if metrics is None:
            return
        elapsed = time.monotonic() - started
        for call in calls:
            objname, objmethod = _labels(call)
            failed = call.outcome is not None and not call.outcome[0]
            error = call.outcome[1] if call.outcome is not None and failed else None
            metrics.request_done(objname, objmethod, outcome_of(error), elapsed)

    def _run_batch(self, calls: Sequence[transport.BatchCall]) -> list[tuple[bool, Any]]:
        self.maybe_prune()
        outcomes: list[tuple[bool, Any]] = []
        # NOTE: taken now only where the arguments did not arrive with the context (a
        # dispatcher driven directly): a method body may change them. The others are
        # taken from the arguments as they arrived, and only when needed.
        digests = {
            c.request_id: digest_of(c.context, c.method, c.kwargs)
            for c in calls
            if not isinstance(c.context, ServedContext) or c.context.wire_args is None
        }
        by_id = {c.request_id: c for c in calls}

        def digest(request_id: str) -> Callable[[], str | None]:
            found = digests.get(request_id)
            if found is None:
                call = by_id[request_id]
                found = digests[request_id] = digest_of(call.context, call.method, call.kwargs)
            return found

        with self._tx_lock, db.transaction_scope(self._engine) as tx:
            replayable = [c.request_id for c in calls if c.redelivered]
            stored = {
                request_id: _answer(request_id, found, digest(request_id))
                for request_id, found in db_requests.find_many(tx.connection, replayable).items()
            }
            if stored and self._metrics is not None:
                self._metrics.replayed(len(stored))
            batch = Batch(tx)
            pending = [call for call in calls if call.request_id not in stored]
            storages = [BatchStorage(batch, **self._scope_of(call.context)) for call in pending]
            alone = _prime_gets(batch, pending)
            gets = iter(alone)  # built-in gets by id: they write nothing, ever
            if self._project_scoping:
                # Scoped requests run alone: a round's statements serve many requests,
                # of many projects.
                alone = [True] * len(pending)
            elif not batch.coalesces_writes:
                # SQLite: only creates and saves gain from running side by side (one
                # statement of many rows; see Batch.gains_from_rounds); the others would
                # pay greenlet switches for nothing.
                alone = [
                    primed or not batch.gains_from_rounds(call)
                    for primed, call in zip(alone, pending, strict=True)
                ]
            bound = _bind(pending, storages)
            try:
                ran = batch.run([call.run for call in pending], alone)
            finally:
                for context in bound:
                    context.db = None
            results = iter(zip(ran, storages, strict=True))
            to_store: list[tuple[str, Any, str | None]] = []
            failed: dict[str, int] = {}
            for call in calls:
                if call.request_id in stored:
                    outcomes.append(stored[call.request_id])
                    continue
                (ok, value), storage = next(results)
                primed_get = next(gets)
                wrote = storage.writes.wrote
                if not ok:
                    if wrote or not isinstance(value, _CLEAN_ERRORS):
                        raise _Fallback(f"{type(value).__name__} in a write") from value
                    if not primed_get:
                        failed[call.request_id] = len(outcomes)
                    outcomes.append((False, value))
                    continue
                if wrote:
                    to_store.append((call.request_id, value, digest(call.request_id)()))
                outcomes.append((True, value))
            if failed:
                # A request sent again without the redelivered flag fails when it runs
                # again (see run): the failed ones are looked up, in one query.
                for request_id, found in db_requests.find_many(tx.connection, list(failed)).items():
                    outcomes[failed[request_id]] = _answer(request_id, found, digest(request_id))
            try:
                if to_store:
                    db_requests.store_results(tx.for_write(), to_store)
            except exception.DuplicateEntry:
                raise _Fallback("a request of the batch was stored by another conductor") from None
        return outcomes

    def maybe_prune(self) -> None:
        """Prune stored request results when ``prune_every`` has passed since the last
        prune (never failing: a failed prune is logged)."""
        now = time.monotonic()
        if now - self._last_prune < self._prune_every:
            return
        self._last_prune = now
        try:
            with self._tx_lock, db.transaction_scope(self._engine) as tx:
                removed = db_requests.prune(tx.for_write(), self._keep_results)
            if removed:
                LOG.debug("pruned %d stored request results", removed)
        except Exception:  # noqa: BLE001 - pruning must never fail a request
            LOG.warning("could not prune stored request results", exc_info=True)


#: Errors after which the batch's transaction is still usable: raised before any write
#: and without a failed statement (the others may have aborted it on PostgreSQL).
_CLEAN_ERRORS = (
    exception.NotFound,
    exception.ConcurrentUpdate,
    exception.ObjectActionError,
    exception.UnsupportedObjectError,
    exception.IncompatibleObjectVersion,
)


def _bind(
    calls: Sequence[transport.BatchCall], storages: Sequence[BatchStorage]
) -> list[RequestContext]:
    """Bind each call's storage to its context (see ``UnitOfWork.run``); the contexts
    bound. A call without a valid context is left unbound: it fails in ``run``."""
    bound = []
    for call, storage in zip(calls, storages, strict=True):
        context = call.context
        if isinstance(context, RequestContext):
            context.db = storage
            bound.append(context)
    return bound


def _labels(call: transport.BatchCall) -> tuple[str, str]:
    """(objname, objmethod) of a batched request, for metrics."""
    kwargs = call.kwargs
    objinst = kwargs.get("objinst")
    objname = kwargs.get("objname") or (objinst.obj_name() if objinst is not None else "?")
    return str(objname), str(kwargs.get("objmethod", call.method))


class _Fallback(Exception):
    """The batch cannot finish in one transaction; run its requests one by one."""


def _prime_gets(batch: Batch, calls: Sequence[transport.BatchCall]) -> list[bool]:
    """Fetch the rows of the batch's gets by id (``reads_record(by="id")``, which write
    nothing, ever) in one query per table; which calls they are (they run alone, from
    those rows)."""
    wanted: dict[str, list[int]] = {}
    alone: list[bool] = []
    models = db.registered_models()
    for call in calls:
        kwargs = call.kwargs
        args = kwargs.get("args")
        objname = kwargs.get("objname")
        is_get = (
            call.method == "object_class_action_versions"
            and kwargs.get("objmethod") == "get"
            and isinstance(args, list)
            and len(args) == 1
            and type(args[0]) is int
            and not kwargs.get("kwargs")
            and isinstance(objname, str)
            and objname in models
            and _gets_by_id(objname, kwargs.get("object_versions"))
        )
        if is_get:
            wanted.setdefault(str(objname), []).append(args[0])  # type: ignore[index]
        alone.append(is_get)
    for objname, ids in wanted.items():
        batch.prime(objname, ids)
    return alone


def _gets_by_id(objname: str, versions: Any) -> bool:
    """Whether the ``get`` of the class a caller at ``versions`` runs fetches its row by
    id (see ``objects.persistent.fetches_by_id``)."""
    version = versions.get(objname) if isinstance(versions, dict) else None
    try:
        cls = (
            VersionedObjectRegistry.newest(objname)
            if version is None
            else VersionedObjectRegistry.lookup(objname, version)
        )
    except exception.ObjectsError:
        return False  # not primed: it runs side by side, which is never wrong
    return fetches_by_id(cls, "get")


# -- request digests -------------------------------------------------------------------


class ServedContext(RequestContext):
    """A request context as the conductor received it, with the request's arguments as
    they arrived (``wire_args``: JSON values, before any object was built from them).

    ``ConductorSerializer`` makes these; the digest of a request's content
    (:func:`digest_of`) is taken from ``wire_args``, which no method body changes, and
    only when it is needed (a write to store, a stored request to compare with).
    """

    wire_args: list[Any] | None = None
    #: The foreign object namespace the request came in (``conductor.namespaces``); its
    #: answer goes out in the same form. None: ours.
    object_form: Any = None


_primitives = base.VersionedObjectSerializer()


def digest_of(context: Context, method: str, arguments: dict[str, Any]) -> Callable[[], str | None]:
    """The digest of a request's content: the RPC method, who asks (user, project, roles,
    admin) and the argument values (a SHA-256, hex).

    Taken lazily, when first asked for, from the arguments as they arrived when the
    context has them (their order is the message's: a request sent again is the same
    message); otherwise (a manager driven directly, in tests) now, from ``arguments`` in
    name order, before the method body can change them.
    """
    if not isinstance(context, RequestContext):
        return _no_digest
    wire = context.wire_args if isinstance(context, ServedContext) else None
    if wire is not None:
        cached: list[str | None] = []

        def lazy() -> str | None:
            if not cached:
                cached.append(_digest(method, context, wire))
            return cached[0]

        return lazy
    if context.has_db:
        return _no_digest  # inside a batch, which takes the digests itself
    values = [
        _primitives.serialize_entity(context, arguments[name])
        for name in sorted(arguments)
        if arguments[name] is not None
    ]
    fixed = _digest(method, context, values)
    return lambda: fixed


_digest_encoder = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def _digest_encoder_c() -> Callable[[Any, int], Any]:
    """What ``_digest_encoder.encode`` joins for a list, as ``(value, 0)``: its C encoder
    (made once here, where ``encode`` makes one per call), or ``iterencode`` without the
    C module."""
    make = getattr(json_encoder, "c_make_encoder", None)
    enc = _digest_encoder
    if make is None:  # pragma: no cover - CPython has it
        return lambda value, _level: enc.iterencode(value, _one_shot=True)
    return make(  # type: ignore[no-any-return]
        None,  # check_circular=False: no markers
        enc.default,
        json_encoder.encode_basestring_ascii,  # ensure_ascii
        enc.indent,
        enc.key_separator,
        enc.item_separator,
        enc.sort_keys,
        enc.skipkeys,
        enc.allow_nan,
    )


#: ``digest_chunks(value, 0)``: the chunks of ``_digest_encoder.encode(value)`` for a list
#: ``value``.
digest_chunks = _digest_encoder_c()


def _digest(method: str, context: RequestContext, values: list[Any]) -> str | None:
    identity = [context.user_id, context.project_id, sorted(context.roles), context.is_admin]
    try:
        # NOTE: one C-encoder pass over the arguments (about as much CPU as encoding the
        # reply), paid only by requests that write or replay.
        text = "".join(digest_chunks([method, identity, values], 0))
    except (TypeError, ValueError, RecursionError):
        return None  # not JSON (cannot have come over the wire): nothing to compare
    return hashlib.sha256(text.encode()).hexdigest()


def _answer(
    request_id: str, stored: db_requests.Stored, digest: Callable[[], str | None]
) -> tuple[bool, Any]:
    """A batch request's outcome from its stored result (see ``db_requests.answer``)."""
    try:
        return True, db_requests.answer(request_id, stored, digest())
    except exception.RequestIdReused as exc:
        return False, exc


def _with_storage(context: RequestContext, storage: SQLStorage, body: Callable[[], Any]) -> Any:
    """Run a method body locally with ``context.db`` bound to ``storage``."""
    context.db = storage
    try:
        with base.local_execution():
            return body()
    finally:
        context.db = None


class _AlreadyStored(Exception):
    """The request id was stored by someone else during our transaction."""
