"""Test doubles that are real implementations: storage, indirection, version checker.

- :class:`MemoryStorage`: the :class:`objects.storage.Storage` protocol on dicts.
- :class:`LocalIndirectionAPI`: an in-process conductor. Every call and reply is
  serialized with ``VersionedObjectSerializer`` and round-tripped through JSON, exactly
  what a message broker would carry, so "remote" object tests catch what the wire loses.
- :func:`isolated_registry`: registrations made inside it are undone afterwards.
- :class:`ObjectVersionChecker`: fingerprints of object classes, to pin in a test so a
  change of fields or remotable signatures without a version bump fails.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import hashlib
import inspect
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from objects import exception
from objects.futures import chain
from objects.indirection import (
    IndirectionAPI,
    handle_backport,
    handle_class_action,
    handle_object_action,
)
from objects.persistent import save_primitive
from objects.registry import VersionedObjectRegistry
from objects.remoting import local_execution
from objects.serializer import VersionedObjectSerializer
from objects.storage import Record
from objects.versioned import VersionedObject

if TYPE_CHECKING:
    from objects.context import Context

__all__ = ["LocalIndirectionAPI", "MemoryStorage", "ObjectVersionChecker", "isolated_registry"]


@contextlib.contextmanager
def isolated_registry() -> Iterator[type[VersionedObjectRegistry]]:
    """Whatever is registered inside the block is forgotten when it ends."""
    snapshot = VersionedObjectRegistry.snapshot()
    try:
        yield VersionedObjectRegistry
    finally:
        VersionedObjectRegistry.restore(snapshot)


#: Unique columns of the built-in tables (what the SQL schema enforces too).
DEFAULT_UNIQUE: dict[str, tuple[str, ...]] = {
    "Instance": ("uuid",),
    "Flavor": ("flavorid",),
    "ComputeNode": ("host",),
}


class MemoryStorage:
    """The Storage protocol on dicts, safe to share between threads.

    Tables are named by object name; their columns are the fields of the newest
    registered class of that name. Ids start at 1; ``revision`` starts at 1 and is bumped
    by every update; ``created_at``/``updated_at`` are set when the class has those fields
    (``updated_at`` strictly increases per row).

    Args:
        unique: ``{objname: (column, ...)}`` single-column unique keys
            (default: the built-in tables' keys).
    """

    def __init__(self, unique: Mapping[str, Sequence[str]] | None = None) -> None:
        self._lock = threading.RLock()
        self._tables: dict[str, dict[int, Record]] = {}
        self._next_id: dict[str, int] = {}
        self._last_stamp = dt.datetime.min.replace(tzinfo=dt.UTC)
        self._unique = {
            k: tuple(v) for k, v in (DEFAULT_UNIQUE if unique is None else unique).items()
        }

    # -- helpers --------------------------------------------------------------------

    def _columns(self, objname: str) -> frozenset[str]:
        return frozenset(VersionedObjectRegistry.newest(objname).fields)

    def _check_columns(self, objname: str, names: Any, what: str) -> frozenset[str]:
        columns = self._columns(objname)
        unknown = sorted(set(names) - columns - {"id"})
        if unknown:
            raise exception.ObjectValueError(reason=f"unknown {objname} {what} {unknown}")
        return columns

    def _now(self) -> dt.datetime:
        now = dt.datetime.now(dt.UTC)
        if now <= self._last_stamp:
            now = self._last_stamp + dt.timedelta(microseconds=1)
        self._last_stamp = now
        return now

    def _table(self, objname: str) -> dict[int, Record]:
        table = self._tables.get(objname)
        if table is None:
            self._columns(objname)  # an unknown object name is UnsupportedObjectError
            table = self._tables[objname] = {}
        return table

    def _row(self, objname: str, id: int) -> Record:
        row = self._table(objname).get(id)
        if row is None:
            raise exception.NotFound(f"{objname} {id} not found", objname=objname, id=id)
        return row

    def _check_unique(self, objname: str, values: Mapping[str, Any], own_id: int | None) -> None:
        for column in self._unique.get(objname, ()):
            if column not in values:
                continue
            for row_id, row in self._table(objname).items():
                if row_id != own_id and row.get(column) == values[column]:
                    raise exception.DuplicateEntry(objname=objname, columns=column)

    @staticmethod
    def _matches(row: Record, filters: Mapping[str, Any]) -> bool:
        for name, wanted in filters.items():
            value = row.get(name)
            if isinstance(wanted, (list, tuple, set, frozenset)):
                if value not in wanted:
                    return False
            elif value != wanted:
                return False
        return True

    # -- the protocol -----------------------------------------------------------------

    def get(self, objname: str, id: int) -> Record:
        with self._lock:
            return copy.deepcopy(self._row(objname, id))

    def get_by(self, objname: str, **equals: Any) -> Record:
        self._check_columns(objname, equals, "field(s)")
        with self._lock:
            for row_id in sorted(self._table(objname)):
                row = self._tables[objname][row_id]
                if self._matches(row, equals):
                    return copy.deepcopy(row)
        raise exception.NotFound(
            f"{objname} with {equals} not found", objname=objname, **_jsonable(equals)
        )

    def query(
        self,
        objname: str,
        filters: Mapping[str, Any] | None = None,
        limit: int | None = None,
        marker: int | None = None,
    ) -> list[Record]:
        filters = dict(filters or {})
        self._check_columns(objname, filters, "filter field(s)")
        found: list[Record] = []
        with self._lock:
            table = self._table(objname)
            for row_id in sorted(table):
                if marker is not None and row_id <= marker:
                    continue
                if limit is not None and len(found) >= limit:
                    break
                if self._matches(table[row_id], filters):
                    found.append(copy.deepcopy(table[row_id]))
        return found

    def create(self, objname: str, values: Mapping[str, Any]) -> Record:
        columns = self._check_columns(objname, values, "field(s)")
        fields = VersionedObjectRegistry.newest(objname).fields
        missing = sorted(
            name
            for name, field in fields.items()
            if name not in values
            and not field.nullable
            and name not in ("id", "created_at", "updated_at")
        )
        if missing:
            # what a NOT NULL column does in SQL
            raise exception.ObjectValueError(reason=f"{objname} needs a value for {missing}")
        with self._lock:
            self._check_unique(objname, values, None)
            row_id = self._next_id.get(objname, 1)
            self._next_id[objname] = row_id + 1
            row: Record = {name: None for name in fields}
            row.update(copy.deepcopy(dict(values)))
            row["id"] = row_id
            row["revision"] = 1
            if "created_at" in columns or "updated_at" in columns:
                now = self._now()
                if "created_at" in columns:
                    row["created_at"] = now
                if "updated_at" in columns:
                    row["updated_at"] = now
            self._table(objname)[row_id] = row
            return copy.deepcopy(row)

    def update(
        self,
        objname: str,
        id: int,
        values: Mapping[str, Any],
        expected_revision: int | None = None,
    ) -> Record:
        columns = self._check_columns(objname, values, "field(s)")
        with self._lock:
            row = self._row(objname, id)
            self._check_revision(objname, id, row, expected_revision)
            self._check_unique(objname, values, id)
            row.update(copy.deepcopy({k: v for k, v in values.items() if k != "id"}))
            row["revision"] += 1
            if "updated_at" in columns:
                row["updated_at"] = self._now()
            return copy.deepcopy(row)

    def delete(self, objname: str, id: int, expected_revision: int | None = None) -> None:
        with self._lock:
            row = self._row(objname, id)
            self._check_revision(objname, id, row, expected_revision)
            del self._tables[objname][id]

    def get_many(self, objname: str, ids: Sequence[int]) -> dict[int, Record]:
        with self._lock:
            table = self._table(objname)
            return {i: copy.deepcopy(table[i]) for i in ids if i in table}

    @staticmethod
    def _check_revision(objname: str, id: int, row: Record, expected: int | None) -> None:
        if expected is not None and row["revision"] != expected:
            raise exception.ConcurrentUpdate(
                objname=objname, id=id, expected=expected, actual=row["revision"]
            )


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if isinstance(v, (str, int, float, bool, type(None)))}


def _wire(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _over_the_wire(exc: BaseException) -> BaseException:
    """``exc`` as the transport would rebuild it on the caller (allow-listed types only)."""
    cls = type(exc)
    allowed = cls.__module__ in ("objects.exception", "builtins")
    if not allowed:
        return exc
    try:
        payload = _wire({"args": list(exc.args), "kwargs": getattr(exc, "kwargs", {})})
    except (TypeError, ValueError):
        payload = {"args": [str(exc)], "kwargs": {}}
    try:
        rebuilt: BaseException = cls(*payload["args"], **payload["kwargs"])
    except Exception:  # noqa: BLE001 - an exception that cannot be rebuilt stays as it is
        return exc
    return rebuilt


class LocalIndirectionAPI(IndirectionAPI):
    """An in-process conductor: every call and reply crosses a JSON boundary.

    The server side gets a fresh context (``from_dict`` of the caller's) with ``.db``
    bound to ``storage``, runs ``handle_*`` under ``local_execution()``, and its reply
    is serialized back the same way. Exceptions come back rebuilt from their args and
    keyword fields like the transport does. The ``_async`` twins run on a small
    thread pool, so pending objects and futures resolve on another thread for real.

    Args:
        storage: the database the server side uses (default: a new MemoryStorage).
        max_workers: threads serving the ``_async`` twins.

    Attributes:
        calls: ``(objname, objmethod)`` of every call served, for assertions.
    """

    def __init__(self, storage: Any = None, max_workers: int = 4) -> None:
        self.storage = storage if storage is not None else MemoryStorage()
        self.serializer = VersionedObjectSerializer()
        self.calls: list[tuple[str, str]] = []
        self._calls_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="objects-local-api")

    def close(self) -> None:
        """Stop the thread pool (waits for calls in flight)."""
        self._pool.shutdown(wait=True)

    # -- the JSON boundary --------------------------------------------------------------

    def _serve(
        self,
        context: Context | None,
        request: dict[str, Any],
        run: Callable[[Any, Any], Any],
    ) -> Any:
        wire_ctx = _wire(self.serializer.serialize_context(context))
        wire_request = _wire(self.serializer.serialize_entity(context, request))
        server_ctx = self.serializer.deserialize_context(wire_ctx)
        server_ctx.db = self.storage
        try:
            with local_execution():
                server_request = self.serializer.deserialize_entity(server_ctx, wire_request)
                result = run(server_ctx, server_request)
                wire_reply = _wire(self.serializer.serialize_entity(server_ctx, result))
        except Exception as exc:
            raise _over_the_wire(exc) from None
        finally:
            server_ctx.db = None
        return self.serializer.deserialize_entity(context, wire_reply)

    def _record(self, objname: Any, objmethod: str) -> None:
        with self._calls_lock:
            self.calls.append((str(objname), objmethod))

    # -- IndirectionAPI -----------------------------------------------------------------

    def object_class_action_versions(
        self,
        context: Context,
        objname: str,
        objmethod: str,
        object_versions: dict[str, str],
        args: Any,
        kwargs: dict[str, Any],
    ) -> Any:
        self._record(objname, objmethod)
        request = {
            "objname": objname,
            "objmethod": objmethod,
            "object_versions": object_versions,
            "args": list(args),
            "kwargs": kwargs,
        }
        return self._serve(
            context,
            request,
            lambda ctx, r: handle_class_action(
                ctx, r["objname"], r["objmethod"], r["object_versions"], r["args"], r["kwargs"]
            ),
        )

    def object_action(
        self,
        context: Context,
        objinst: Any,
        objmethod: str,
        args: Any,
        kwargs: dict[str, Any],
        object_versions: dict[str, str] | None = None,
    ) -> tuple[dict[str, Any], Any]:
        self._record(objinst.obj_name(), objmethod)
        # A save goes as ConductorAPI sends it: only what it writes, when it can.
        sent = save_primitive(objinst) if objmethod == "save" else None
        request = {
            "objinst": objinst if sent is None else sent,
            "objmethod": objmethod,
            "args": list(args),
            "kwargs": kwargs,
            "object_versions": object_versions,
        }
        updates, result = self._serve(
            context,
            request,
            lambda ctx, r: list(
                handle_object_action(
                    ctx, r["objinst"], r["objmethod"], r["args"], r["kwargs"], r["object_versions"]
                )
            ),
        )
        return updates, result

    def object_backport_versions(
        self, context: Context | None, objinst: Any, object_versions: dict[str, str]
    ) -> Any:
        name = objinst.get("versioned_object.name") if isinstance(objinst, dict) else objinst
        self._record(name, "object_backport_versions")
        request = {"objinst": objinst, "object_versions": object_versions}
        return self._serve(
            context,
            request,
            lambda ctx, r: handle_backport(ctx, r["objinst"], r["object_versions"]),
        )

    def object_class_action_versions_async(
        self,
        context: Context,
        objname: str,
        objmethod: str,
        object_versions: dict[str, str],
        args: Any,
        kwargs: dict[str, Any],
        *,
        future: Future[Any] | None = None,
        then: Callable[[Any], Any] | None = None,
    ) -> Future[Any]:
        source = self._pool.submit(
            self.object_class_action_versions,
            context,
            objname,
            objmethod,
            object_versions,
            args,
            kwargs,
        )
        return source if future is None and then is None else chain(source, then or _same, future)

    def object_action_async(
        self,
        context: Context,
        objinst: Any,
        objmethod: str,
        args: Any,
        kwargs: dict[str, Any],
        object_versions: dict[str, str] | None = None,
        *,
        future: Future[Any] | None = None,
        then: Callable[[Any], Any] | None = None,
    ) -> Future[Any]:
        # Serialize now, on the caller's thread, as a transport does before returning.
        snapshot = objinst.obj_clone()
        source = self._pool.submit(
            self.object_action, context, snapshot, objmethod, args, kwargs, object_versions
        )
        return source if future is None and then is None else chain(source, then or _same, future)


def _same(value: Any) -> Any:
    return value


# -- fingerprints ---------------------------------------------------------------------------


def _default_repr(value: Any) -> Any:
    try:
        return {"json": json.loads(json.dumps(value, sort_keys=True))}
    except (TypeError, ValueError):
        return {"type": f"{type(value).__module__}.{type(value).__qualname__}"}


def _signature(fn: Callable[..., Any]) -> list[Any]:
    params = []
    for param in inspect.signature(fn).parameters.values():
        entry: dict[str, Any] = {"name": param.name, "kind": param.kind.name}
        if param.default is not inspect.Parameter.empty:
            entry["default"] = _default_repr(param.default)
        params.append(entry)
    return params


class ObjectVersionChecker:
    """Fingerprints object classes: ``"<VERSION>-<md5 of fields and remotable signatures>"``.

    The fingerprint covers each field's name, type, nullable, default, read_only, enum
    values and nested object name, and each remotable method's name, kind and parameters
    (names, kinds, defaults). It is built from JSON, never from ``repr``, so it is stable
    across Python versions.

    Args:
        obj_classes: ``{name: [classes, newest first]}`` (default: the registry's).
    """

    def __init__(self, obj_classes: Mapping[str, Sequence[type[VersionedObject]]] | None = None):
        self.obj_classes = (
            VersionedObjectRegistry.obj_classes() if obj_classes is None else dict(obj_classes)
        )

    @staticmethod
    def fingerprint_data(obj_cls: type[VersionedObject]) -> dict[str, Any]:
        """What the fingerprint of ``obj_cls`` hashes (JSON-compatible)."""
        fields = {name: field.describe() for name, field in sorted(obj_cls.fields.items())}
        methods: dict[str, Any] = {}
        for name in sorted(dir(obj_cls)):
            attr = inspect.getattr_static(obj_cls, name, None)
            func: Any = attr.__func__ if isinstance(attr, (classmethod, staticmethod)) else attr
            if getattr(func, "remotable", False) is not True:
                continue
            methods[name] = {
                "kind": func.remotable_kind,
                "params": _signature(func.original_fn),
            }
        return {"fields": fields, "remotable": methods}

    def get_hashes(
        self, extra_data_func: Callable[[type[VersionedObject]], Any] | None = None
    ) -> dict[str, str]:
        """``{name: "VERSION-md5"}`` for the newest class of every name."""
        hashes = {}
        for name in sorted(self.obj_classes):
            obj_cls = self.obj_classes[name][0]
            data: Any = self.fingerprint_data(obj_cls)
            if extra_data_func is not None:
                data = {"object": data, "extra": extra_data_func(obj_cls)}
            text = json.dumps(data, sort_keys=True, separators=(",", ":"))
            digest = hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()
            hashes[name] = f"{obj_cls.VERSION}-{digest}"
        return hashes

    def test_hashes(
        self,
        expected_hashes: Mapping[str, str],
        extra_data_func: Callable[[type[VersionedObject]], Any] | None = None,
    ) -> tuple[dict[str, str | None], dict[str, str | None]]:
        """``(expected, actual)`` for every object whose fingerprint differs (both empty: ok)."""
        actual_hashes = self.get_hashes(extra_data_func)
        expected: dict[str, str | None] = {}
        actual: dict[str, str | None] = {}
        for name in sorted(set(expected_hashes) | set(actual_hashes)):
            if expected_hashes.get(name) != actual_hashes.get(name):
                expected[name] = expected_hashes.get(name)
                actual[name] = actual_hashes.get(name)
        return expected, actual
