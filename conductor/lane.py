"""The lane: stock gets by id, answered straight from their rows.

The commonest request is ``Instance.get(ctx, id)`` from a caller at our versions. Its
answer is exactly :func:`~objects.persistent.record_to_primitive` of the row, so the
conductor can give it without what every other request needs: no context or argument
objects, no transaction, no stored result, no method body. :class:`StockGets` looks at the
requests of a message as they arrived (``transport.RawEndpoint``), takes those it can
prove are such gets, fetches their rows in one query per table, and answers each with its
primitive or its own ``NotFound``. Everything else goes the ordinary way, unchanged.

A message's gets are answered in parts of about :data:`PART`: each part's replies are
sent (``transport.answer_now``) as soon as it is built, so the caller's process takes in
the first while the rest are read.

A request is a stock get when all of these hold (anything else, or any doubt, leaves it):

* the RPC method is ``object_class_action_versions`` with exactly nova's five
  arguments, ``objmethod`` ``"get"``, ``args`` one ``int``, ``kwargs`` empty;
* the caller's manifest is ours for that class (``cls._obj_manifest()``), and the class
  the registry gives for the caller's version is the newest registered one;
* that ``get`` is marked ``@reads_record(by="id")`` and the class's loading and
  primitives are stock (:func:`~objects.persistent.fetches_by_id`,
  ``record_to_primitive`` answers for the row), its table is a registered model;
* the context is a plain dict that claims no admin (admin contexts go the ordinary way,
  which refuses them unless the conductor allows them), and the conductor does not scope
  requests by project.

What the ordinary path does besides, the lane does too: the metrics (one batch size per
message, requests in flight, each request's outcome with its labels), the request id on
log records, and ``DatabaseError`` (logged in one line per request) when the database
is away. Reads store no result, so exactly-once has nothing to do here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple, TypeVar

import orjson
from sqlalchemy import exc as sa_exc
from sqlalchemy import pool
from sqlalchemy import types as sa_types
from sqlalchemy.engine import Engine

import transport
from conductor import db
from conductor.db.engine import json_value
from conductor.db.statements import table_ops
from conductor.db.storage import SQLStorage, not_found
from conductor.metrics import Metrics, outcome_of
from conductor.unit_of_work import current_request, message_counted
from objects import exception
from objects._primitive import _KEY_DATA
from objects.persistent import (
    fetches_by_id,
    loads_as_its_primitive,
    primitive_is_plain,
    record_to_primitive,
)
from objects.registry import RegistryMemo, VersionedObjectRegistry
from objects.storage import Record, StoredRecord
from objects.versioned import OVO_REVISION_FIELD, VersionedObject

__all__ = ["StockGets"]

LOG = logging.getLogger(__name__)

Outcome = tuple[bool, Any]
T = TypeVar("T")

#: Gets answered together at most (about): one query, one reply message per caller.
#:
#: NOTE: a whole message of gets answered at once made its caller wait for the last row
#: before taking in the first reply, and the caller then sent its next calls together:
#: the pipeline settled into one batch of every call in flight going back and forth,
#: the caller's process and the conductor taking turns, each idle while the other
#: worked. Parts keep both busy: the caller's process takes in one while the conductor
#: builds the next. 32, 64 and 128 were measured alike; bench/RESULTS.md ("a message's
#: gets answered in parts") has the figures.
PART = 64

_METHOD = "object_class_action_versions"
_ARG_NAMES = frozenset({"objname", "objmethod", "object_versions", "args", "kwargs"})


class StockGets:
    """Answers the stock gets of a message from their rows (see the module docstring).

    Args:
        engine: the conductor's database.
        metrics: counted as :class:`~conductor.unit_of_work.UnitOfWork` counts.
        lock: held around each read (SQLite's one-transaction-at-a-time lock; on
            ``sqlite://`` in memory every thread shares one connection).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        metrics: Metrics | None = None,
        lock: contextlib.AbstractContextManager[Any] | None = None,
    ) -> None:
        self._metrics = metrics
        self._lock = lock if lock is not None else contextlib.nullcontext()
        # What an inline read tries to take without waiting (None: nothing to take).
        self._try_lock: Any = lock if hasattr(lock, "acquire") else None
        # NOTE: an in-memory SQLite database is one connection the pool shares out: the
        # lane cannot keep one of its own.
        self._reader: _Reader = (
            _Transactions(engine)
            if isinstance(engine.pool, pool.StaticPool)
            else _Connections(engine)
        )
        self._found: RegistryMemo[str, _Found] = RegistryMemo()

    def close(self) -> None:
        """Close the lane's own database connections (it opens new ones if used again)."""
        self._reader.close()

    def serve_local(self, request: transport.RawRequest) -> transport.InProcessResult | None:
        """A lone stock get's answer for a caller in this process that takes its local
        form (``transport.InlineEndpoint.serve_local``), when the row is there and loads
        as its primitive; None, with nothing done or counted, for anything else (the
        call then goes the ordinary way, which reads it again and says what is wrong)."""
        answer: _RowAnswer | None = self._serve_inline(request, local_only=True)
        return answer

    def serve_inline(self, request: transport.RawRequest) -> Outcome | None:
        """A lone stock get's outcome, read on the consuming thread or, in one process
        (``memory://``), on the caller's (``transport.InlineEndpoint``), or None to leave
        it to a worker. On a connection of its own, bounded at ``INLINE_TIMEOUT``: the
        server cuts its statements there on PostgreSQL; on an SQLite file (in WAL mode,
        where reads wait for no writer) it waits that long at most for a lock, and not at
        all for the conductor's own transaction lock (held by a write: left to a worker).
        A read that fails or is cut short goes to a worker (which reads as ever, and says
        what is wrong), and so do the next ``INLINE_BACKOFF`` seconds' reads. An in-memory
        SQLite database (one connection, shared) is never read inline."""
        outcome: Outcome | None = self._serve_inline(request, local_only=False)
        return outcome

    def _serve_inline(self, request: transport.RawRequest, local_only: bool) -> Any:
        """:meth:`serve_inline`; ``local_only``: :meth:`serve_local`'s answer instead."""
        reader = self._reader
        if not isinstance(reader, _Connections) or not reader.inline_ready():
            return None
        request_id, ctxt, method, args = request
        classes = self._found.current()
        id_ = self._stock_get(ctxt, method, args, classes)
        if id_ is None:
            return None
        objname: str = args["objname"]
        found = classes[objname]
        assert found is not None
        metrics = self._metrics
        started = 0.0
        if metrics is not None:
            started = time.monotonic()
            metrics.started(1)
        # A lone request's log records carry its id, as in UnitOfWork.run.
        token = current_request.set(request_id)
        try:
            record = self._read_inline(reader, objname, id_)
        finally:
            current_request.reset(token)
            if metrics is not None:
                metrics.finished(1)
        if record is _LEFT:
            return None
        cls = found[0]
        outcome: Outcome | None
        if record is not None and loads_as_its_primitive(cls):
            # Its primitive is made only for a caller beyond this process; it is counted
            # once its caller has it, as what the caller got (_RowAnswer).
            answer = _RowAnswer(self, request, started, cls, id_, record)
            return answer if local_only else (True, answer)
        if local_only:
            return None
        # A lone inline answer's primitive is its reply's alone (transport.FreshJSON: a
        # caller in this process takes it without a copy).
        fresh = transport.FreshJSON if primitive_is_plain(cls) else None
        outcome = self._outcome(cls, objname, id_, record, fresh)
        if outcome is not None:
            self._counted([request], [(0, outcome)], started)
        return outcome

    def _read_inline(self, reader: _Connections, objname: str, id_: int) -> Record | None | Any:
        """The row of ``id_`` (None: there is none), or ``_LEFT`` for a worker to read."""
        # NOTE: never waits for the lock: a write holding it may take long.
        lock = self._try_lock
        if lock is not None and not lock.acquire(False):
            return _LEFT  # a worker reads it
        try:
            return reader.fetch_one(objname, id_)
        except Exception as exc:  # noqa: BLE001 - a worker reads it again, and says what is wrong
            reader.inline_failed(exc)
            return _LEFT
        finally:
            if lock is not None:
                lock.release()

    def serve(self, requests: Sequence[transport.RawRequest]) -> list[Outcome | None]:
        """Each request's outcome (serialized as ``ConductorSerializer`` would have it),
        or None for those left to the ordinary path."""
        outcomes: list[Outcome | None] = [None] * len(requests)
        wanted: dict[str, list[tuple[int, int]]] = {}
        classes = self._found.current()
        for index, (_, ctxt, method, args) in enumerate(requests):
            id_ = self._stock_get(ctxt, method, args, classes)
            if id_ is not None:
                wanted.setdefault(args["objname"], []).append((index, id_))
        if not wanted:
            return outcomes
        metrics = self._metrics
        taken = sum(len(items) for items in wanted.values())
        started = time.monotonic()
        if metrics is not None:
            metrics.started(taken)
        work = [
            (classes[objname], objname, part)
            for objname, items in wanted.items()
            for part in _parts(items)
        ]
        last = len(work) - 1
        try:
            for k, (found, objname, part) in enumerate(work):
                assert found is not None
                self._answer(found[0], objname, part, requests, outcomes)
                if k < last:  # the last goes back with the rest of the message
                    transport.answer_now(
                        [
                            (requests[index][0], outcome)
                            for index, _ in part
                            if (outcome := outcomes[index]) is not None
                        ]
                    )
        finally:
            if metrics is not None:
                metrics.finished(taken)
        settled = [(index, outcome) for index, outcome in enumerate(outcomes) if outcome]
        if settled:
            if len(settled) < len(requests):
                # The rest of this message runs the ordinary way, which would count it again.
                message_counted()
            self._counted(requests, settled, started)
        return outcomes

    def _counted(
        self,
        requests: Sequence[transport.RawRequest],
        settled: list[tuple[int, Outcome]],
        started: float,
    ) -> None:
        """The metrics and debug log of the requests ``settled`` (index, outcome) of a
        message of ``requests``, answered since ``started`` (``time.monotonic``)."""
        metrics = self._metrics
        if metrics is not None:
            metrics.batch(len(requests))
            elapsed = time.monotonic() - started
            for index, (ok, value) in settled:
                error = None if ok else value
                objname = requests[index][3]["objname"]
                metrics.request_done(objname, "get", outcome_of(error), elapsed)
        if LOG.isEnabledFor(logging.DEBUG):
            for index, _ in settled:
                LOG.debug("served %s.get from its row", requests[index][3]["objname"])

    def _answer(
        self,
        cls: type[VersionedObject],
        objname: str,
        items: list[tuple[int, int]],
        requests: Sequence[transport.RawRequest],
        outcomes: list[Outcome | None],
    ) -> None:
        # A lone request's log records carry its id, as in UnitOfWork.run.
        token = current_request.set(requests[items[0][0]][0]) if len(requests) == 1 else None
        try:
            with self._lock:
                rows = self._reader.fetch(objname, [id_ for _, id_ in items])
        except exception.DatabaseError as exc:
            for index, _ in items:
                outcomes[index] = (False, exc)
                request_token = current_request.set(requests[index][0])
                try:
                    LOG.warning("%s.get failed: %s", objname, db.error_detail(exc))
                finally:
                    current_request.reset(request_token)
            return
        except Exception as exc:  # noqa: BLE001 - the ordinary path gives each its error
            LOG.debug("%s gets left to the ordinary path: %s", objname, exc)
            return
        finally:
            if token is not None:
                current_request.reset(token)
        # In a batch, two gets of one id share their record's values: their primitives
        # are not their replies' alone (transport.PlainJSON, not FreshJSON).
        vouched = transport.PlainJSON if primitive_is_plain(cls) else None
        for index, id_ in items:
            outcomes[index] = self._outcome(cls, objname, id_, rows.get(id_), vouched)

    @staticmethod
    def _outcome(
        cls: type[VersionedObject],
        objname: str,
        id_: int,
        record: Record | None,
        vouched: type[transport.PlainJSON] | None,
    ) -> Outcome | None:
        """The outcome of a get of ``id_`` whose row is ``record`` (None: no row), or None
        when only the object can say (the ordinary path builds it).

        The replies skip the encoder's read-back check when the class's primitives can
        hold nothing but JSON's own values (``primitive_is_plain``): the caller's
        ``vouched`` type says so, None that they can hold more."""
        if record is None:
            return False, not_found(objname, id_)
        primitive = record_to_primitive(cls, record)
        if primitive is None:
            return None
        revision = record.get("revision")
        if revision is not None:
            # As ConductorSerializer sends every object (for oslo callers' saves).
            primitive[_KEY_DATA][OVO_REVISION_FIELD] = int(revision)
        return True, (primitive if vouched is None else vouched(primitive))

    def _stock_get(
        self, ctxt: Any, method: Any, args: Any, classes: dict[str, _Found]
    ) -> int | None:
        """The id when the request is a stock get (see the module docstring)."""
        if method != _METHOD or type(args) is not dict or args.keys() != _ARG_NAMES:
            return None
        call_args, kwargs = args["args"], args["kwargs"]
        if (
            args["objmethod"] != "get"
            or type(call_args) is not list
            or len(call_args) != 1
            or type(call_args[0]) is not int
            or type(kwargs) is not dict
            or kwargs
            or not plain_context(ctxt)
        ):
            return None
        objname, manifest = args["objname"], args["object_versions"]
        if type(objname) is not str or type(manifest) is not dict:
            return None
        if objname in classes:
            found = classes[objname]
        else:
            found = classes[objname] = _stock_class(objname)
        if found is None or manifest != found[1]:
            return None
        id_: int = call_args[0]
        if not self._reader.holds(objname, id_):
            return None  # the ordinary path says what is wrong with it
        return id_


def _parts(items: list[T]) -> list[list[T]]:
    """``items`` in parts of about ``PART``, in order, their sizes at most one apart
    (200 -> 67, 67, 66; 70 -> one part)."""
    count = max(1, round(len(items) / PART))
    size, larger = divmod(len(items), count)
    parts = []
    lo = 0
    for k in range(count):
        hi = lo + size + (k < larger)
        parts.append(items[lo:hi])
        lo = hi
    return parts


class _RowAnswer(transport.InProcessResult):
    """A lone inline get's answer: for a pending object in this process that takes it
    (``transport.InProcessResult.local``), its row itself (``StoredRecord``, loaded as
    ``_from_record`` loads it); for everyone else, the row's primitive.

    NOTE: an embedded get (memory://, a caller in the conductor's process) made the row's
    primitive (record_to_primitive, about 6 us), checked its reply's size and depth
    (2 us), and read it back into the object (8 us); the record loads in about 8 us, after
    the same check made on the record (``fits``). The record is the lane's alone: read for
    this request, given to its one caller.

    The request is counted (metrics, debug log) when its caller has its answer: the
    primitive made, or the record loaded or refused (a stored value the object does not
    take fails the caller's get, and counts as that error). A primitive that cannot be
    made leaves the request to a worker, which counts it.
    """

    __slots__ = ("lane", "request", "started", "cls", "id", "record")

    def __init__(
        self,
        lane: StockGets,
        request: transport.RawRequest,
        started: float,
        cls: type[VersionedObject],
        id_: int,
        record: Record,
    ) -> None:
        self.lane = lane
        self.request = request
        self.started = started
        self.cls = cls
        self.id = id_
        self.record = record

    def local(self, limit: int | None) -> StoredRecord | None:
        if not self.fits(self.record, limit, _PRIMITIVE_EXTRA_BYTES, _PRIMITIVE_EXTRA_LEVELS):
            return None
        return StoredRecord(self.cls, self.record, self.settled)

    def wire(self) -> Any | None:
        objname = self.request[3]["objname"]
        outcome = StockGets._outcome(self.cls, objname, self.id, self.record, transport.FreshJSON)
        if outcome is None:
            return None
        self.settled(None)
        return outcome[1]

    def settled(self, error: BaseException | None) -> None:
        """Count the request as answered with ``error`` (None: its result)."""
        outcome: Outcome = (True, None) if error is None else (False, error)
        self.lane._counted([self.request], [(0, outcome)], self.started)


#: What a reply carrying a record's primitive may add to the record's own JSON: the
#: reply's and each object's head (names, namespace, version, revision: about 200 bytes
#: each), with room to spare; and the levels of the reply, the primitive and its data.
_PRIMITIVE_EXTRA_BYTES = 64 * 1024
_PRIMITIVE_EXTRA_LEVELS = 4


def plain_context(ctxt: Any) -> bool:
    """Whether ``ctxt`` is a context ``RequestContext.from_dict`` takes and that claims no
    admin (an admin context goes the ordinary way: refused, or allowed, there)."""
    if type(ctxt) is not dict or ctxt.get("is_admin"):
        return False
    roles = ctxt.get("roles")
    return not roles or isinstance(roles, (list, tuple))


#: A class whose gets may take the lane, and its manifest; None: they may not.
_Found = tuple[type[VersionedObject], dict[str, str]] | None


def served_class(objname: str) -> tuple[type[VersionedObject], dict[str, str]] | None:
    """(class, its manifest) of the newest registered ``objname`` when it has a table and
    a caller sending that manifest gets this very class on the ordinary path (not an
    older class registered at that version); None otherwise. Where a lane starts."""
    cls = VersionedObjectRegistry.find_newest(objname)
    if cls is None or objname not in db.registered_models():
        return None
    try:
        manifest = cls._obj_manifest()
        if VersionedObjectRegistry.lookup(objname, manifest[objname]) is not cls:
            return None
    except exception.ObjectsError:
        return None
    return cls, dict(manifest)


def _stock_class(objname: str) -> _Found:
    """(class, its manifest) when a get of ``objname`` may take the lane."""
    found = served_class(objname)
    if found is None or not fetches_by_id(found[0], "get"):
        return None
    return found


_LEFT: Any = object()  # an inline read left to a worker

#: Seconds an inline read (``StockGets.serve_inline``) may take on PostgreSQL before it
#: is cut short (or wait for a lock on SQLite) and is left to a worker; well under the
#: call monitor's heartbeat interval.
INLINE_TIMEOUT = 0.2
#: Seconds inline reads are not tried after one failed or was cut short.
INLINE_BACKOFF = 5.0


class _Reader:
    """Rows by id, in one query, outside any request's transaction."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._id_checks: dict[str, Any] = {}

    def holds(self, objname: str, id: int) -> bool:
        """Whether the table's id column can hold ``id`` (else it is not asked for)."""
        check = self._id_checks.get(objname)
        if check is None:
            check = self._id_checks[objname] = table_ops(objname).checks["id"]
        try:
            check(id)
        except exception.ObjectsError:
            return False
        return True

    def fetch(self, objname: str, ids: list[int]) -> dict[int, Record]:
        raise NotImplementedError

    def inline_failed(self, exc: BaseException) -> None:
        """An inline read failed: the next ones go to workers for a while."""

    def close(self) -> None:
        pass


class _Transactions(_Reader):
    """SQLite: the storage's own query, in a transaction of its own (there is no round
    trip to save, and a read in WAL mode makes no writer wait)."""

    def fetch(self, objname: str, ids: list[int]) -> dict[int, Record]:
        with db.transaction_scope(self._engine) as tx:
            return SQLStorage(tx).get_many(objname, ids)


class _Connections(_Transactions):
    """The storage's query, compiled once per table and sent on connections of the
    lane's own, in autocommit: every read on PostgreSQL, lone reads on an SQLite file
    (a batch there reads as :class:`_Transactions` does: its ``IN`` list is rendered per
    size, so there is no one statement to keep).

    They are the engine's (its connect arguments and events apply), taken out of its
    pool: one per worker thread reading at once, on top of the pool's, kept until
    :meth:`close` (``Conductor.stop``) or until one fails.

    NOTE: a pooled connection costs, per read, its checkout and return, setting and
    resetting autocommit, and SQLAlchemy's result handling (psycopg builds a column
    description per statement): about 100 us of CPU around a 60 us primary-key SELECT.
    These connections never leave autocommit (no BEGIN, no COMMIT, no isolation level to
    restore), each keeps one cursor, and psycopg prepares the statements on each. The
    values are converted by the columns' own result processors, so the records are the
    storage's, key for key.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._bulk = engine.dialect.name == "postgresql"
        self._free: list[_Kept] = []
        # The consuming thread's connection (serve_inline); inline reads wait until then.
        self._inline: list[_Kept] = []
        self._inline_after = 0.0
        self._plans: dict[str, _Plan] = {}
        self._json_missing = False
        # Connections left when the lane is dropped unclosed (tests, benchmarks) are
        # closed then, not left to warn at garbage collection.
        self._finalizer = weakref.finalize(self, _close_all, self._free)
        self._inline_finalizer = weakref.finalize(self, _close_all, self._inline)

    def close(self) -> None:
        _close_all(self._free)
        _close_all(self._inline)

    def inline_ready(self) -> bool:
        """Whether an inline read may be tried now (not backing off)."""
        return time.monotonic() >= self._inline_after

    def inline_failed(self, exc: BaseException) -> None:
        self._inline_after = time.monotonic() + INLINE_BACKOFF
        _close_all(self._inline)
        LOG.info(
            "lone gets go to workers for %.0fs: an inline read failed: %s", INLINE_BACKOFF, exc
        )

    def fetch_one(self, objname: str, id_: int) -> Record | None:
        """An inline read (on the inline connection) of the row of ``id_``, or None."""
        plan = self._plan_of(objname)
        with db.translate_errors(objname):
            rows = self._inline_rows(*plan.one, {"id": id_})
        return self._records(plan, rows).get(id_)

    def fetch(self, objname: str, ids: list[int]) -> dict[int, Record]:
        wanted = list(dict.fromkeys(ids))
        plan = self._plan_of(objname)
        if len(wanted) > 1 and not self._bulk:
            with db.translate_errors(objname):
                rows = self._json_rows(plan, wanted)
            if rows is None:
                return super().fetch(objname, wanted)
            return self._records(plan, rows)
        with db.translate_errors(objname):
            if len(wanted) == 1:
                # NOTE: psycopg sends one int for less than a one-item array (a third of
                # a lone get's statement CPU went to dumping the array).
                rows = self._rows(*plan.one, {"id": wanted[0]})
            else:
                # NOTE: the array as PostgreSQL's text of it (the ids are ints): psycopg
                # dumps a list item by item in Python.
                rows = self._rows(*plan.many, {"ids": f"{{{','.join(map(str, wanted))}}}"})
        return self._records(plan, rows)

    def _json_rows(self, plan: _Plan, ids: list[int]) -> list[Any] | None:
        """SQLite: the rows of ``ids`` as one JSON text (``plan.many``: see
        ``_sqlite_json``), read; None when they hold what JSON cannot carry exactly (REAL,
        BLOB): read them as ever."""
        if self._json_missing:
            return None
        try:
            ((text, inexact),) = self._rows(*plan.many, {"ids": orjson.dumps(ids).decode()})
        except sa_exc.OperationalError as exc:
            # An SQLite built without JSON functions (before 3.38 they were optional).
            if "no such function" in str(exc.orig):
                self._json_missing = True
            return None  # the ordinary read says what else is wrong
        if inexact:
            return None
        rows: list[Any] = orjson.loads(text)
        return rows

    def _records(self, plan: _Plan, rows: list[Any]) -> dict[int, Record]:
        found: dict[int, Record] = {}
        names, processors, timestamps = plan.names, plan.processors, plan.timestamps
        utc, datetime = dt.UTC, dt.datetime
        for row in rows:
            record = dict(zip(names, row, strict=True))
            for name, process in processors:
                record[name] = process(record[name])
            for name, process in timestamps:
                value = record[name]
                if type(value) is not datetime or value.tzinfo is not utc:
                    record[name] = process(value)
            found[record["id"]] = record
        return found

    def _plan_of(self, objname: str) -> _Plan:
        """The table's plan, made at its first read."""
        plan = self._plans.get(objname)
        if plan is None:
            plan = self._plans[objname] = self._plan(objname)
        return plan

    def _plan(self, objname: str) -> _Plan:
        dialect = self._engine.dialect
        ops = table_ops(objname)

        def compiled(stmt: Any) -> tuple[str, tuple[str, ...] | None]:
            done = stmt.compile(dialect=dialect)
            # Positional drivers (sqlite3) take the values in the statement's order.
            order = done.positiontup
            return done.string, (tuple(order) if dialect.positional and order else None)

        processors = []
        timestamps = []
        for column in ops.table.columns:
            kind = column.type.dialect_impl(dialect)
            process: Any = kind.result_processor(dialect, None)
            if process is None:
                continue
            if isinstance(kind, sa_types.JSON) and dialect._json_deserializer is json_value:
                # NOTE: what the dialect's processor gives (None as None, a number SQLite
                # hands back as itself, the text through json_value), without its two
                # wrappers: three JSON columns made six calls per row.
                process = json_value
            if (
                isinstance(kind, db.UTCDateTime)
                and kind.impl_instance.result_processor(dialect, None) is None
            ):
                # The driver gives datetimes (PostgreSQL): one already in timezone.utc is
                # what process_result_value makes of it (astimezone to its own zone is
                # the value itself), taken as it is.
                timestamps.append((column.name, process))
            else:
                processors.append((column.name, process))
        return _Plan(
            one=compiled(ops.select_one),
            many=compiled(ops.select_any)
            if self._bulk
            else (_sqlite_json(ops.table, dialect), ("ids",)),
            # Plain str: the names come as SQLAlchemy quoted_name (a str subclass orjson refuses
            # as a key, see _RowAnswer.local).
            names=tuple(str(name) for name in ops.names),
            processors=tuple(processors),
            timestamps=tuple(timestamps),
        )

    def _rows(self, sql: str, order: tuple[str, ...] | None, values: dict[str, Any]) -> list[Any]:
        params = _params(order, values)
        retried = False
        while True:
            reused = bool(self._free) and not retried
            connection = None
            try:
                connection = self._free.pop() if reused else self._connect()
                cursor = connection.cursor
                cursor.execute(sql, params)
                rows: list[Any] = cursor.fetchall()
            except BaseException as exc:
                # Its state is unknown now (the server restarted, a proxy dropped it while
                # idle, a statement cut short): drop it.
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection.close()
                error = self._engine.dialect.loaded_dbapi.Error
                if not isinstance(exc, error):
                    raise
                if reused:
                    # NOTE: a read can run again; a kept connection that died since its
                    # last use (the others likely with it) must not fail the request: once
                    # more, on a new connection.
                    retried = True
                    continue
                raise sa_exc.DBAPIError.instance(sql, params, exc, error) from exc
            self._free.append(connection)
            return rows

    def _inline_rows(
        self, sql: str, order: tuple[str, ...] | None, values: dict[str, Any]
    ) -> list[Any]:
        """A lone read on the inline connection, never retried: whatever goes wrong drops
        the connection and raises (the read then goes to a worker)."""
        params = _params(order, values)
        if not self._inline:
            kept = self._connect()
            try:
                # NOTE: the bound of an inline read: the consuming thread (or the caller)
                # waits for it, and callers get no heartbeat meanwhile. Set once, for the
                # session: PostgreSQL cuts the statement; SQLite waits no longer for a lock.
                bound = int(INLINE_TIMEOUT * 1000)
                kept.cursor.execute(
                    f"SET statement_timeout = {bound}"
                    if self._bulk
                    else f"PRAGMA busy_timeout = {bound}"
                )
            except BaseException:
                kept.close()
                raise
            self._inline.append(kept)
        kept = self._inline[0]
        try:
            kept.cursor.execute(sql, params)
            rows: list[Any] = kept.cursor.fetchall()
        except BaseException as exc:
            self._inline.clear()
            with contextlib.suppress(Exception):
                kept.close()
            error = self._engine.dialect.loaded_dbapi.Error
            if isinstance(exc, error):
                raise sa_exc.DBAPIError.instance(sql, params, exc, error) from exc
            raise
        return rows

    def _connect(self) -> Any:
        # From the engine's pool, so its connect events and arguments apply; detached
        # from it, since it stays with the lane.
        pooled = self._engine.raw_connection()
        connection = pooled.driver_connection
        assert connection is not None
        pooled.detach()
        if self._bulk:
            connection.autocommit = True
            # NOTE: psycopg gives timestamps in the session's time zone; in UTC they are
            # what UTCDateTime makes of them (timezone.utc) as they come, not converted
            # once more per value. Before any SELECT: a cursor keeps its loaders.
            # NOTE: the engine's connections prepare nothing (see db.create_engine);
            # this one prepares its reads (psycopg's default: after five runs), whose
            # generic plans PostgreSQL keeps until the table is analyzed (never, without
            # autovacuum). It reads by primary key only: with sequential scans off, no
            # plan made while the table held a few rows scans it whole once it is large.
            connection.prepare_threshold = 5
            try:
                connection.execute("SET TIME ZONE 'UTC'")
                connection.execute("SET enable_seqscan = off")
            except BaseException:
                connection.close()
                raise
        else:
            connection.isolation_level = None  # sqlite3: no implicit BEGIN, ever
        return _Kept(connection)


class _Plan(NamedTuple):
    """One table's statements (SQL text, positional parameter order) and converters."""

    one: tuple[str, tuple[str, ...] | None]
    many: tuple[str, tuple[str, ...] | None]
    names: tuple[str, ...]
    processors: tuple[tuple[str, Any], ...]
    #: UTCDateTime columns' processors, not needed for a value in timezone.utc
    timestamps: tuple[tuple[str, Any], ...]


class _Kept:
    """A connection of the lane's and the one cursor it reuses for every read."""

    __slots__ = ("connection", "cursor")

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.cursor = connection.cursor()

    def close(self) -> None:
        self.connection.close()


def _params(order: tuple[str, ...] | None, values: dict[str, Any]) -> Any:
    """A statement's parameters: ``values`` by name, or in ``order`` for a positional
    driver (sqlite3)."""
    return values if order is None else tuple(values[name] for name in order)


def _close_all(connections: list[Any]) -> None:
    while connections:
        with contextlib.suppress(Exception):
            connections.pop().close()


def _sqlite_json(table: Any, dialect: Any) -> str:
    """One SELECT giving the rows of a JSON array of ids (its one parameter) as a single
    row: a JSON array of their values, and how many of those are REAL.

    NOTE: the sqlite3 module lets go of the GIL for every row it steps to; while another
    thread of the process wants it (the caller's, issuing more gets), every row waited
    for it back: 256 rows took 200 thread switches and up to a second. One row is one
    step. JSON holds SQLite's integers, text and NULLs exactly; a REAL would come back
    rounded to 15 digits and json_array refuses a BLOB, so a row holding either (SQLite
    keeps what it is given, whatever the column's type) sends the read the ordinary
    way."""
    quote = dialect.identifier_preparer.quote
    columns = [quote(c.name) for c in table.columns]
    values = ", ".join(f"CASE WHEN typeof({c}) = 'blob' THEN NULL ELSE {c} END" for c in columns)
    inexact = " + ".join(f"(typeof({c}) IN ('real', 'blob'))" for c in columns)
    return (
        f"SELECT json_group_array(json_array({values})), total({inexact}) "
        f"FROM {quote(table.name)} WHERE {quote('id')} IN (SELECT value FROM json_each(?))"
    )
