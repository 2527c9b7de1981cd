"""The save lane: stock saves of changed fields, written straight from their primitives.

The commonest write is ``instance.save()`` of a copy read before, sent by our client as
:func:`~objects.persistent.save_primitive` (the id, the changed fields, their names and
the revision) through ``object_action``. Its body is ``self._db_save()``: one UPDATE of
the changed columns, expecting the revision, and the reply is ``[updates, None]`` with
the fields the row's values changed on the object, ``updated_at``, no changes left and the
new revision. :class:`StockSaves` gives exactly that without what the ordinary path
builds around it (context and argument objects, a batch of greenlets, the object, the
diff): it takes the saves of a message it can prove are such saves, writes them in one
``UPDATE`` per table and column set (``SQLStorage.update_many``), and stores each result
with its request id and digest in the same transaction, as ``UnitOfWork`` does (on
PostgreSQL in that ``UPDATE``'s own statement, ``requests.storing_results``: each result is
made from the row the update writes, known before it runs, and every row it returns is
compared with that one).

A request is a stock save when all of these hold (anything else, or any doubt, leaves it
to the ordinary path, unchanged):

* the RPC method is ``object_action`` with exactly its five arguments, ``objmethod``
  ``"save"``, ``args`` and ``kwargs`` empty, the caller's manifest ours;
* ``objinst`` is a primitive of ours (our keys and namespace) of the newest registered
  class at its version, with a revision, ``id`` and the changed fields only among its
  data, every change a column the save writes (none the storage manages), every value
  one of a built-in, non-object field that reads back as it was sent;
* the class's ``save`` is ``@saves_changes`` and its saving and primitives are stock
  (``objects.persistent``: the body writes the changed fields, reads nothing else), its
  table a registered model;
* the context is a plain dict claiming no admin, and requests are not scoped by project.

Exactly once: a redelivered message's saves are looked up first (``find_many``); a save
that fails (``NotFound``, ``ConcurrentUpdate``) is looked up after (a resend without the
redelivered flag), and answered from its stored result, or ``RequestIdReused`` when its
content differs. Digests are ``UnitOfWork``'s, of the arguments as they arrived. When a
statement fails, or a stored result clashes, the transaction rolls back and every save
of the message goes the ordinary way.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import transport

# NOTE: the plans and digest below are the ordinary path's own (how a field reads from the
# wire and from a row, how handle_object_action tells a changed field, how UnitOfWork
# digests a request), not copies: the lane's answers and digests are its by construction.
from conductor import db
from conductor.db import requests as db_requests
from conductor.db.engine import json_text
from conductor.db.models import utcnow as created_now
from conductor.db.statements import table_ops
from conductor.db.storage import SQLStorage
from conductor.lane import plain_context, served_class
from conductor.metrics import Metrics, outcome_of
from conductor.unit_of_work import UnitOfWork, current_request, digest_chunks, message_counted
from conductor.unit_of_work import _digest as unit_digest
from objects import exception
from objects import fields as obj_fields
from objects._primitive import (
    _KEY_CHANGES,
    _KEY_DATA,
    _KEY_NAME,
    _KEY_NAMESPACE,
    _KEY_REVISION,
    _KEY_VERSION,
)
from objects.context import RequestContext
from objects.indirection import _VALUE, _diff_plan, _diff_token
from objects.persistent import (
    _STOCK_FIELDS,
    STORAGE_MANAGED,
    UPDATE_MANAGED,
    _primitive_plan,
    _record_plan,
    _saves_changes_only,
)
from objects.registry import RegistryMemo
from objects.versioned import VersionedObject

__all__ = ["StockSaves"]

LOG = logging.getLogger(__name__)

Outcome = tuple[bool, Any]

_METHOD = "object_action"
_ARG_NAMES = frozenset({"objinst", "objmethod", "args", "kwargs", "object_versions"})
_PRIMITIVE_KEYS = frozenset(
    {_KEY_NAME, _KEY_NAMESPACE, _KEY_VERSION, _KEY_DATA, _KEY_CHANGES, _KEY_REVISION}
)


class _Save(NamedTuple):
    """One stock save: where it is in the message and what it writes."""

    position: int
    request_id: str
    id: int
    revision: int
    #: The sent fields' values as the object holds them (``id`` and the changes).
    sent: dict[str, Any]
    #: The changed columns' values.
    values: dict[str, Any]


_new_save = tuple.__new__


class _Class(NamedTuple):
    """What a class's stock saves need, computed once per registry state."""

    cls: type[VersionedObject]
    manifest: dict[str, str]
    #: The class's VERSION and OBJ_PROJECT_NAMESPACE.
    version: str
    namespace: str
    columns: frozenset[str]
    #: name -> (type taken as is, wire reader, whether a column the save writes, the
    #: field's copy of a value for its record or None: the value itself), for the
    #: fields a save may carry (``id`` and the columns).
    readers: dict[str, tuple[Any, Any, bool, Any]]
    #: name -> (type taken as is, record reader)
    record_readers: dict[str, tuple[Any, Any]]
    #: (name, field, diff kind, writer) in field order (``handle_object_action``'s).
    plan: tuple[tuple[str, Any, int, Any], ...]
    #: The columns of a written row the reply needs besides the sent ones.
    returned: tuple[str, ...]
    #: Whether those are only what an update writes itself (``id``, ``revision``,
    #: ``updated_at``), so a row is known before it is written (see :func:`_expected`).
    predicted: bool


class StockSaves:
    """Writes the stock saves of a message in one transaction (see the module docstring).

    Args:
        work: the conductor's unit of work: its engine, its transaction lock (SQLite),
            its pruning of stored results.
        metrics: counted as ``UnitOfWork`` counts.
    """

    def __init__(self, work: UnitOfWork, *, metrics: Metrics | None = None) -> None:
        self._work = work
        self._metrics = metrics
        self._found: RegistryMemo[str, _Class | None] = RegistryMemo()

    def serve(
        self,
        requests: Sequence[transport.RawRequest],
        outcomes: list[Outcome | None],
        serializer: Any,
    ) -> list[Outcome | None]:
        """Settle the stock saves among the requests ``outcomes`` leaves (None), in place;
        ``outcomes``. Results are serialized with ``serializer`` (``serialize_entity``)."""
        counted = any(outcome is not None for outcome in outcomes)
        classes = self._found.current()
        saves: dict[str, list[_Save]] = {}
        rows: set[tuple[str, int]] = set()
        for index, request in enumerate(requests):
            if outcomes[index] is not None:
                continue
            found = self._stock_save(index, request, classes)
            if found is not None:
                objname, save = found
                if (objname, save.id) in rows:
                    # A second save of a row runs after the first, the ordinary way (as
                    # in a batch, where it runs alone after the round).
                    continue
                rows.add((objname, save.id))
                saves.setdefault(objname, []).append(save)
        if not saves:
            return outcomes
        metrics = self._metrics
        taken = sum(len(items) for items in saves.values())
        started = time.monotonic()
        if metrics is not None:
            metrics.started(taken)
        token = current_request.set(requests[0][0]) if len(requests) == 1 else None
        try:
            settled = self._write(requests, saves, classes)
        except Exception as exc:  # noqa: BLE001 - the ordinary path runs them again
            LOG.debug("stock saves left to the ordinary path: %s", exc)
            settled = None
        finally:
            if token is not None:
                current_request.reset(token)
            if metrics is not None:
                metrics.finished(taken)
        if not settled:
            return outcomes
        for index, (ok, value) in settled.items():
            if ok and not _plain_reply(value):
                try:
                    value = serializer.serialize_entity(None, value)
                except Exception as exc:  # noqa: BLE001 - as the dispatcher would
                    ok, value = False, exc
            outcomes[index] = (ok, value)
        if any(outcome is None for outcome in outcomes):
            # The rest of this message runs the ordinary way, which would count it again.
            message_counted()
        if metrics is not None:
            if not counted:
                metrics.batch(len(requests))
            elapsed = time.monotonic() - started
            for index, (ok, value) in settled.items():
                objname = requests[index][3]["objinst"][_KEY_NAME]
                metrics.request_done(objname, "save", outcome_of(None if ok else value), elapsed)
        if LOG.isEnabledFor(logging.DEBUG):
            for index in settled:
                LOG.debug(
                    "served %s.save from its primitive", requests[index][3]["objinst"][_KEY_NAME]
                )
        return outcomes

    # -- the writes --------------------------------------------------------------------

    def _write(
        self,
        requests: Sequence[transport.RawRequest],
        saves: dict[str, list[_Save]],
        classes: dict[str, _Class | None],
    ) -> dict[int, Outcome]:
        """Every save's outcome (the unserialized result, or its error), committed; raises
        (rolled back) when the ordinary path must run them."""
        work = self._work
        work.maybe_prune()
        digests: dict[int, str | None] = {}
        heads: dict[Any, str] = {}

        def digest(index: int) -> str | None:
            if index not in digests:
                request = requests[index]
                digests[index] = save_digest(request[1], request[3], heads)
            return digests[index]

        settled: dict[int, Outcome] = {}
        # NOTE: the saves write (a redelivered message's lookup aside), so the transaction
        # begins at once.
        with work.transaction_lock, db.transaction_scope(work.engine, writing=True) as tx:
            if transport.current_request_redelivered():
                # NOTE: a redelivered message may have run before: look it up first.
                by_id = {s.request_id: s.position for items in saves.values() for s in items}
                stored = db_requests.find_many(tx.connection, list(by_id))
                for request_id, found in stored.items():
                    index = by_id[request_id]
                    settled[index] = _answer(request_id, found, digest(index))
                if stored and self._metrics is not None:
                    self._metrics.replayed(len(stored))
            storage = SQLStorage(tx)
            to_store: list[tuple[str, Any, str | None]] = []
            failed: dict[str, int] = {}
            for objname, items in saves.items():
                known = classes[objname]
                assert known is not None
                pending = [s for s in items if s.position not in settled]
                for save, outcome, stored_now in self._update(
                    storage, objname, known, pending, digest
                ):
                    if not outcome[0]:
                        failed[save.request_id] = save.position
                    elif not stored_now:
                        to_store.append((save.request_id, outcome[1], digest(save.position)))
                    settled[save.position] = outcome
            if failed:
                # A save sent again without the redelivered flag fails on the revision it
                # bumped (see UnitOfWork.run): the failed ones are looked up, in one query.
                for request_id, found in db_requests.find_many(tx.connection, list(failed)).items():
                    index = failed[request_id]
                    settled[index] = _answer(request_id, found, digest(index))
            if to_store:
                db_requests.store_results(tx.for_write(), to_store)
        return settled

    def _update(
        self,
        storage: SQLStorage,
        objname: str,
        known: _Class,
        saves: list[_Save],
        digest: Callable[[int], str | None],
    ) -> list[tuple[_Save, Outcome, bool]]:
        """Write the saves of one class: one statement per column set; a save whose row
        it did not write runs alone (raising NotFound or ConcurrentUpdate, as the body
        would). Each outcome says whether its result is stored already (see
        :func:`_expected`)."""
        groups: dict[tuple[str, ...], list[_Save]] = {}
        for save in saves:
            groups.setdefault(tuple(sorted(save.values)), []).append(save)
        done: list[tuple[_Save, Outcome, bool]] = []
        storing = storage.has_bulk_statements and known.predicted
        for columns, group in groups.items():
            returning = (*known.returned, *columns)
            entries = _reply_plan(known, {"id", *columns}, returning)
            written: dict[tuple[str, Any], Any] = {}
            updates = [(s.id, s.values, s.revision) for s in group]
            expected: list[tuple[dict[str, Any], list[Any]]] = []
            if storing:
                stored = functools.partial(
                    _stored_results, entries, group, written, expected, digest
                )
                records = storage.update_many(
                    objname,
                    updates,
                    returning=returning,
                    also=(db_requests.storing_results, stored),
                )
            else:
                records = storage.update_many(objname, updates, returning=returning)
            for position, (save, record) in enumerate(zip(group, records, strict=True)):
                if record is None:
                    try:
                        record = storage.update(objname, save.id, save.values, save.revision)
                    except (exception.NotFound, exception.ConcurrentUpdate) as exc:
                        done.append((save, (False, exc), False))
                        continue
                elif expected:
                    row, reply = expected[position]
                    if record != row:
                        # Its result, stored with it, is not the row's: the whole
                        # message goes the ordinary way (rolled back).
                        raise _NotPredicted(f"{objname} {save.id} reads back otherwise")
                    done.append((save, (True, reply), True))
                    continue
                done.append((save, (True, _reply(entries, save.sent, record, written)), False))
        return done

    # -- which requests ----------------------------------------------------------------

    def _stock_save(
        self, index: int, request: transport.RawRequest, classes: dict[str, _Class | None]
    ) -> tuple[str, _Save] | None:
        """(objname, the save) when the request is a stock save (see the module docstring)."""
        request_id, ctxt, method, args = request
        if method != _METHOD or type(args) is not dict or args.keys() != _ARG_NAMES:
            return None
        primitive, call_args, kwargs = args["objinst"], args["args"], args["kwargs"]
        if (
            args["objmethod"] != "save"
            or type(call_args) is not list
            or call_args
            or type(kwargs) is not dict
            or kwargs
            or type(primitive) is not dict
            or not primitive.keys() <= _PRIMITIVE_KEYS
            or not plain_context(ctxt)
        ):
            return None
        objname = primitive.get(_KEY_NAME)
        if type(objname) is not str:
            return None
        if objname in classes:
            known = classes[objname]
        else:
            known = classes[objname] = _stock_class(objname)
        if (
            known is None
            or args["object_versions"] != known.manifest
            or primitive.get(_KEY_VERSION) != known.version
            or primitive.get(_KEY_NAMESPACE) != known.namespace
        ):
            return None
        data, changes = primitive.get(_KEY_DATA), primitive.get(_KEY_CHANGES)
        revision = primitive.get(_KEY_REVISION)
        if (
            type(data) is not dict
            or type(changes) is not list
            or not changes
            or type(revision) is not int
            or type(data.get("id")) is not int
            or len(data) != len(changes) + 1
        ):
            return None
        readers = known.readers
        sent: dict[str, Any] = {}
        values: dict[str, Any] = {}
        try:
            for name, wire in data.items():
                entry = readers.get(name)
                if entry is None:
                    return None
                plain, read, column, copy = entry
                value = wire if type(wire) is plain else read(wire, None)
                sent[name] = value
                if column:
                    # What a record stores for the value (``field_to_record``'s).
                    values[name] = value if copy is None or value is None else copy(value)
        except Exception:  # noqa: BLE001 - the ordinary path says what is wrong with it
            return None
        if values.keys() != set(changes):
            return None
        # NOTE: _Save's own __new__ is a Python call; the tuple is the same.
        return objname, _new_save(_Save, (index, request_id, sent["id"], revision, sent, values))


#: One field of a reply: (name, field, diff kind, writer, type taken as is, record
#: reader, whether it was sent).
_Entry = tuple[str, Any, int, Any, Any, Any, bool]


def _reply_plan(known: _Class, sent: set[str], returned: tuple[str, ...]) -> tuple[_Entry, ...]:
    """The fields :func:`_reply` looks at for saves sending ``sent`` (``id`` and the
    changed fields), whose written rows hold ``returned`` (a row written alone holds every
    column, these among them): in field order, the sent ones and those the storage
    changes on an update."""
    record_readers = known.record_readers
    return tuple(
        (name, field, kind, writer, *record_readers[name], name in sent)
        for name, field, kind, writer in known.plan
        if name in returned and (name in sent or name in UPDATE_MANAGED)
    )


def _reply(
    entries: tuple[_Entry, ...],
    sent: dict[str, Any],
    record: dict[str, Any],
    written: dict[tuple[str, Any], Any],
) -> list[Any]:
    """``[updates, None]``, as ``handle_object_action`` answers a save of the sent fields
    (see the module docstring): the fields whose value the row changed, by the same
    comparison, and ``updated_at``; no changes left; the row's revision. ``written``: the
    primitives of the storage's own values (one ``updated_at`` for a statement's rows)
    made so far, for the replies of one statement."""
    updates: dict[str, Any] = {}
    for name, field, kind, writer, plain, read, was_sent in entries:
        raw = record[name]
        if was_sent:
            value = raw if type(raw) is plain else read(raw, None)
            before = sent[name]
            if kind == _VALUE:
                if value == before:
                    continue
            elif _diff_token(field, kind, value) == _diff_token(field, kind, before):
                continue
            updates[name] = value if writer is None else writer(value)
            continue
        if type(raw) is dt.datetime and raw.tzinfo is dt.UTC:
            # NOTE: immutable, its primitive (text) too, and equal ones in UTC are one
            # text: made once per value.
            key = (name, raw)
            primitive = written.get(key)
            if primitive is None:
                value = read(raw, None)
                primitive = value if writer is None else writer(value)
                if type(primitive) is str:
                    written[key] = primitive
            updates[name] = primitive
            continue
        value = raw if type(raw) is plain else read(raw, None)
        updates[name] = value if writer is None else writer(value)
    updates["obj_what_changed"] = []
    updates["obj_revision"] = int(record["revision"])
    return [updates, None]


class _NotPredicted(Exception):
    """A written row is not the one its stored result was made from."""


def _expected(
    entries: tuple[_Entry, ...],
    group: list[_Save],
    now: dt.datetime | None,
    written: dict[tuple[str, Any], Any],
) -> list[tuple[dict[str, Any], list[Any]]]:
    """PostgreSQL: each save's row as its update writes it (the id, the next revision,
    ``now`` as ``updated_at``, its values) and :func:`_reply` of that row, made before
    the statement so that it stores the results too (``requests.storing_results``).
    ``_update`` compares every row the statement returns with this one (a value that
    reads back otherwise rolls the message back to the ordinary path)."""
    out = []
    for save in group:
        row: dict[str, Any] = {"id": save.id, "revision": save.revision + 1}
        if now is not None:
            row["updated_at"] = now
        row.update(save.values)
        out.append((row, _reply(entries, save.sent, row, written)))
    return out


def _stored_results(
    entries: tuple[_Entry, ...],
    group: list[_Save],
    written: dict[tuple[str, Any], Any],
    expected: list[tuple[dict[str, Any], list[Any]]],
    digest: Callable[[int], str | None],
    now: dt.datetime | None,
) -> dict[str, Any]:
    """The parameters of ``requests.storing_results`` for ``group``'s saves written at
    ``now``: their results, in ``expected`` with their rows (see :func:`_expected`)."""
    expected.extend(_expected(entries, group, now, written))
    results = [
        [save.id, save.request_id, reply, digest(save.position)]
        for save, (_, reply) in zip(group, expected, strict=True)
    ]
    return {"w_results": json_text(results), "w_stored_at": created_now()}


def _plain_reply(value: Any) -> bool:
    """Whether ``value`` is a reply :func:`_reply` made with no dict in its updates: its
    own primitive (scalars and lists of strings), which ``ConductorSerializer`` sends as
    it is. Others (a dict field among the updates) go through the serializer."""
    if type(value) is not list or len(value) != 2 or value[1] is not None:
        return False
    updates = value[0]
    if type(updates) is not dict:
        return False
    for item in updates.values():
        if type(item) is dict:
            return False
        if type(item) is list and item and not all(type(i) is str for i in item):
            return False
    return True


#: Field types whose value, record value and primitive the lane may take as they are
#: read (no nested objects: their diff and writes are the object's business).
_LANE_FIELDS = _STOCK_FIELDS - {obj_fields.ObjectField}


def _stock_class(objname: str) -> _Class | None:
    """What stock saves of ``objname`` need, when they may take the lane."""
    found = served_class(objname)
    if found is None:
        return None
    cls, manifest = found
    try:
        if not _saves_changes_only(cls) or _primitive_plan(cls) is None:
            return None
        ops = table_ops(objname)
    except exception.ObjectsError:
        return None
    cls._obj_prepare_class()
    columns = frozenset(ops.names) - STORAGE_MANAGED - {"revision"}
    readers = {
        name: (plain, read, name != "id", field.copy_value if field.mutable else None)
        for name, (field, plain, read) in cls._obj_from_plan.items()
        if type(field) in _LANE_FIELDS
        and (name == "id" or (name not in STORAGE_MANAGED and name in columns))
    }
    record_readers = {name: (plain, read) for name, plain, read in _record_plan(cls)}
    writers = {name: writer for name, _, writer in cls._obj_to_plan}
    plan = tuple(
        (name, field, kind, writers[name])
        for name, field, kind in _diff_plan(cls)
        if type(field) in _LANE_FIELDS
    )
    returned = ("id", "revision", *(name for name in UPDATE_MANAGED if name in ops.names))
    return _Class(
        cls=cls,
        manifest=manifest,
        version=cls.VERSION,
        namespace=cls.OBJ_PROJECT_NAMESPACE,
        columns=columns,
        readers=readers,
        record_readers=record_readers,
        plan=plan,
        returned=returned,
        predicted=set(returned) <= {"id", "revision", "updated_at"},
    )


def save_digest(ctxt: dict[str, Any], args: dict[str, Any], heads: dict[Any, str]) -> str | None:
    """``UnitOfWork``'s digest of a stock save's request (``unit_of_work._digest`` of the
    context ``RequestContext.from_dict`` makes of the plain context ``ctxt``, and of
    ``args``' values as they arrived), byte for byte: the JSON text of the identity is
    kept in ``heads`` (for the saves of one message), and only the arguments' values are
    encoded per save. Anything else takes ``_digest`` itself."""
    # RequestContext.from_dict's identity, with _digest's sorted roles; a plain context
    # (plain_context) claims no admin.
    user = ctxt.get("user_id") or ctxt.get("user")
    project = ctxt.get("project_id") or ctxt.get("project") or ctxt.get("tenant")
    roles = ctxt.get("roles") or ()
    try:
        key = (user, project, *roles)
        head = heads.get(key)
        if head is None:
            # NOTE: only strings (and None) make a key, so no other value equal to one
            # (1 and True) finds its text.
            if (
                ctxt.get("is_admin", False)
                or not (user is None or type(user) is str)
                or not (project is None or type(project) is str)
                or not all(type(role) is str for role in roles)
            ):
                raise TypeError("not a plain identity")
            identity = [user, project, sorted(roles), False]
            head = heads[key] = "".join(digest_chunks([_METHOD, identity, []], 0))[:-3]
        text = head + "".join(digest_chunks(list(args.values()), 0)) + "]"
    except (TypeError, ValueError, RecursionError):
        return unit_digest(_METHOD, RequestContext.from_dict(ctxt), list(args.values()))
    return hashlib.sha256(text.encode()).hexdigest()


def _answer(request_id: str, stored: db_requests.Stored, digest: str | None) -> Outcome:
    try:
        return True, db_requests.answer(request_id, stored, digest)
    except exception.RequestIdReused as exc:
        return False, exc
