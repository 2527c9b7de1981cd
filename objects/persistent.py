"""``PersistentObject``: the one place where storage records become objects and back.

Mix it into a versioned object whose rows live in a table named after the object (the
``Storage`` protocol in :mod:`objects.storage`, reached through ``context.db``), and its
remotable methods become one-liners::

    @remotable_classmethod
    def get(cls, context, id):
        return cls._db_get(context, id)

    @remotable
    def save(self):
        self._db_save()

A load of one object may instead say only which record it reads (``@reads_record``
under ``@remotable_classmethod``, returning ``cls._db_get_record(context, id)``): the
conductor then answers a caller that reads our versions straight from the record
(:func:`record_to_primitive`, the same primitive without building the object) whenever
the class, its nested classes and their fields are stock; otherwise it builds the object.

Records hold scalar fields as Python values and list, dict and nested-object fields as
JSON-compatible values (a nested object as the dict of its field primitives). The
record's ``"revision"`` becomes ``obj_revision``, used for optimistic saves.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from objects import exception
from objects import fields as obj_fields
from objects._primitive import _KEY_CHANGES, _KEY_REVISION, primitive_head
from objects.fields import Reader, fast_reader
from objects.registry import VersionedObjectRegistry
from objects.remoting import is_remotable

if TYPE_CHECKING:
    from objects.context import Context
    from objects.fields import Field
    from objects.storage import Record, Storage
    from objects.versioned import VersionedObject

    _Base = VersionedObject
else:
    _Base = object

__all__ = [
    "PersistentObject",
    "field_from_record",
    "field_to_record",
    "fetches_by_id",
    "loads_as_its_primitive",
    "primitive_is_plain",
    "reads_record",
    "record_fetch_of",
    "record_to_primitive",
    "save_primitive",
    "saves_changes",
]

P = TypeVar("P", bound="PersistentObject")

#: Columns the storage owns: never written from an object.
STORAGE_MANAGED = frozenset({"id", "created_at", "updated_at"})
#: Of those, the columns an update sets by itself (besides the revision).
UPDATE_MANAGED = frozenset({"updated_at"})


def field_to_record(field: Field, value: Any) -> Any:
    """The value a record stores for ``field``."""
    if value is None:
        return None
    if field.is_object:
        if field.mutable:
            return [_object_to_record(item) for item in value]
        return _object_to_record(value)
    if field.mutable:
        return field.copy_value(value)
    return value


def field_from_record(field: Field, value: Any, context: Context | None) -> Any:
    """The field value for what a record stores (validated like an assignment)."""
    if value is None:
        return field.coerce(None)
    if field.is_object:
        objname: str = field.objname  # type: ignore[attr-defined]
        if field.mutable:
            return [_object_from_record(objname, item, context) for item in value]
        return _object_from_record(objname, value, context)
    return field.coerce(value)


_RecordPlan = tuple[tuple[str, Any, Reader], ...]


def _record_plan(cls: type[VersionedObject]) -> _RecordPlan:
    """Per class (and per ``fields`` dict): ``(name, type taken as is, reader)``.

    Records come typed from the storage, so canonical values pass in one check; the rest
    goes through :func:`field_from_record` (validated like an assignment).
    """
    cached = cls.__dict__.get("_obj_record_plan")
    if cached is not None and cached[0] is cls.fields:
        return cached[1]  # type: ignore[no-any-return]
    cls._obj_prepare_class()
    plan = tuple(
        (name, cls._obj_from_plan[name][1], fast_reader(field, _record_reader(field), "record"))
        for name, field in cls.fields.items()
    )
    cls._obj_record_plan = (cls.fields, plan)  # type: ignore[attr-defined]
    return plan


def _record_reader(field: Field) -> Reader:
    def read(value: Any, context: Context | None) -> Any:
        return field_from_record(field, value, context)

    return read


def _object_to_record(obj: VersionedObject) -> dict[str, Any]:
    prim = obj.obj_to_primitive()
    return dict(prim["versioned_object.data"])


def _object_from_record(objname: str, values: Any, context: Context | None) -> VersionedObject:
    if not isinstance(values, Mapping):
        raise exception.ObjectValueError(
            reason=f"a stored {objname} must be a dict of its fields, got {type(values).__name__}"
        )
    cls = VersionedObjectRegistry.newest(objname)
    return cls._obj_from_data(dict(values), context)


# -- loads answered from the record -------------------------------------------------------

#: ``fn.record_fetch`` of a body made by :func:`reads_record`.
_FETCH_ATTR = "record_fetch"
#: ``fn.record_key`` of a body made by ``reads_record(by=...)``.
_KEY_ATTR = "record_key"
#: The keys a :func:`reads_record` body may say it fetches its row by.
_RECORD_KEYS = frozenset({"id"})


@overload
def reads_record(fetch: Callable[..., Record], *, by: None = None) -> Callable[..., Any]: ...
@overload
def reads_record(
    fetch: None = None, *, by: str | None = None
) -> Callable[[Callable[..., Record]], Callable[..., Any]]: ...
def reads_record(fetch: Callable[..., Record] | None = None, *, by: str | None = None) -> Any:
    """A classmethod body that loads one object: ``fetch(cls, context, *args, **kwargs)``
    finds its record, the body returns ``cls._from_record(context, record)``.

    Put it under ``@remotable_classmethod``. Saying which record, apart from turning it
    into an object, lets a conductor answer a caller that reads our versions straight
    from the record (:func:`record_to_primitive`), without building the object::

        @remotable_classmethod
        @reads_record
        def get(cls, context, id):
            return cls._db_get_record(context, id)

    ``by="id"`` says more: the body takes one argument, the row's id, and returns
    ``cls._db_get_record(context, id)``, nothing else. A conductor may then fetch the
    rows of many such loads in one query, without running the bodies at all
    (:func:`fetches_by_id`). A body that checks, filters or logs anything of its own must
    not say it.
    """
    if by is not None and by not in _RECORD_KEYS:
        raise ValueError(f"reads_record(by={by!r}): only {sorted(_RECORD_KEYS)} are known")

    def decorate(fetch: Callable[..., Record]) -> Callable[..., Any]:
        @functools.wraps(fetch)
        def body(cls: Any, context: Context, *args: Any, **kwargs: Any) -> Any:
            return cls._from_record(context, fetch(cls, context, *args, **kwargs))

        setattr(body, _FETCH_ATTR, fetch)
        setattr(body, _KEY_ATTR, by)
        return body

    return decorate if fetch is None else decorate(fetch)


def record_fetch_of(method: Any) -> Callable[..., Record] | None:
    """The ``fetch`` of a remotable classmethod whose body :func:`reads_record` made."""
    original = getattr(method, "original_fn", None)
    return getattr(original, _FETCH_ATTR, None)


#: What a load by id answered from its row relies on being ours, besides
#: :func:`record_to_primitive`'s own conditions: which row it reads.
_BY_ID_METHODS = ("_db_get_record",)


def fetches_by_id(cls: type[VersionedObject], objmethod: str) -> bool:
    """Whether ``cls.objmethod`` is a remotable classmethod whose body is
    ``reads_record(by="id")``'s and whose record is this module's ``_db_get_record``:
    its answer to ``(context, id)`` is the row with that id (NotFound when there is none),
    turned into the object, and nothing else happens."""
    method = getattr(cls, objmethod, None)
    return (
        is_remotable(method, "classmethod")
        and getattr(getattr(method, "original_fn", None), _KEY_ATTR, None) == "id"
        and issubclass(cls, PersistentObject)
        and _ours(cls, _BY_ID_METHODS)
    )


#: ``fn.saves_changes`` of a body made by :func:`saves_changes`.
_SAVES_CHANGES_ATTR = "saves_changes"


def saves_changes(body: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an instance method body that only writes the changed fields (``self._db_save()``)
    and reads no other field of the object.

    Put it under ``@remotable``. A caller of such a save sends only the object's ``id``,
    its changed fields, their names and its revision (:func:`save_primitive`): what the
    body reads. A body that reads anything else must not be marked::

        @remotable
        @saves_changes
        def save(self):
            self._db_save()
    """
    setattr(body, _SAVES_CHANGES_ATTR, True)
    return body


#: What a save of only the changed fields relies on being ours: the primitive written
#: here (change tracking, wire form) and the body run on the conductor (which fields it
#: writes, which it reads back from the row).
_SAVE_METHODS = (
    "obj_to_primitive",
    "obj_what_changed",
    "obj_reset_changes",
    "_obj_from_data",
    "_obj_read_into",
    "_db_save",
    "_record_values",
    "_obj_loaded_or",
    "_obj_fill",
    "_obj_take_record",
    "_obj_require_id",
)


def _saves_changes_only(cls: type[VersionedObject]) -> bool:
    """Per class: whether its ``save`` may be sent as :func:`save_primitive`."""
    cached = cls.__dict__.get("_obj_saves_changes")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    save = getattr(cls, "save", None)
    body = getattr(save, "original_fn", None)
    able = (
        issubclass(cls, PersistentObject)
        and getattr(save, "remotable_kind", None) == "instance"
        and getattr(body, _SAVES_CHANGES_ATTR, False) is True
        and "id" in cls.fields
        and _ours(cls, _SAVE_METHODS)
    )
    cls._obj_saves_changes = able  # type: ignore[attr-defined]
    return able


def save_primitive(obj: Any, changes: set[str] | None = None) -> dict[str, Any] | None:
    """The primitive a remote ``save`` of ``obj`` needs: its ``id``, its changed fields
    (``versioned_object.changes``) and its revision, at its own version. What the
    conductor's save body reads, so the row is written as the whole object's primitive
    would have it written, and the reply's updates are the columns it wrote and those
    the storage manages (``updated_at``). None when that cannot be promised (a class
    with a save or primitive methods of its own): send ``obj_to_primitive()``.

    ``changes``: ``obj.obj_what_changed()`` when the caller has just taken it (the
    remotable call's sent state, :func:`objects.remoting.sent_changes`); read only.
    """
    cls = type(obj)
    if not _saves_changes_only(cls):
        return None
    if obj._obj_pending is not None:
        obj._obj_wait_load()
    if changes is None:
        changes = obj.obj_what_changed()
    d = obj.__dict__
    data: dict[str, Any] = {}
    for name, _field, writer in cls._obj_to_plan:
        if name != "id" and name not in changes:
            continue
        value = d.get(name, _MISSING)
        if value is _MISSING:
            continue
        data[name] = value if writer is None else writer(value)
    primitive = primitive_head(cls, cls.VERSION, data)
    sent = sorted(name for name in changes if name in data)
    if sent:
        primitive[_KEY_CHANGES] = sent
    if obj.obj_revision is not None:
        primitive[_KEY_REVISION] = obj.obj_revision
    return primitive


#: Field classes whose record reader, primitive writer and change tracking are ours.
_STOCK_FIELDS = frozenset(
    {
        obj_fields.IntegerField,
        obj_fields.FloatField,
        obj_fields.StringField,
        obj_fields.BooleanField,
        obj_fields.DateTimeField,
        obj_fields.UUIDField,
        obj_fields.EnumField,
        obj_fields.ListOfStringsField,
        obj_fields.DictOfStringsField,
        obj_fields.ObjectField,
    }
)
#: What the primitive of an object loaded from a record depends on, besides its fields.
_LOADED_METHODS = ("_from_record", "_obj_take_record")
_PRIMITIVE_METHODS = ("obj_to_primitive", "obj_reset_changes", "obj_what_changed")
_CHILD_METHODS = ("_obj_from_data", *_PRIMITIVE_METHODS)
_NEVER = object()  # a "plain type" no value has: the value always goes through its field
_NONE = type(None)
_UTC = dt.UTC

# (name, type taken as is, converter, nested object's name or None)
_PrimitivePlan = tuple[tuple[str, Any, Reader, str | None], ...]


def _ours(cls: type, names: Iterable[str]) -> bool:
    """Whether every method in ``names`` is this module's or ``VersionedObject``'s own
    (no class in between defines one of them)."""
    from objects.versioned import VersionedObject

    for name in names:
        for klass in cls.__mro__:
            if name in klass.__dict__:
                if klass is not PersistentObject and klass is not VersionedObject:
                    return False
                break
    return True


def _taken_as_is(field: Field, plain: Any, writer: Any) -> Any:
    """The type a primitive takes a field's value of as it is: the plain type of a field
    written as itself; for a nullable field with none, ``None`` (a nullable stock field
    reads None as None, and every writer writes it as None)."""
    if writer is None and plain is not None:
        return plain
    return _NONE if field.nullable else _NEVER


def _to_wire(field: Field, plain: Any, read: Reader, writer: Any) -> Reader:
    """``writer(read(value, context))`` (the primitive of a value read as ``field``) in
    one call, with the shortcut of :func:`~objects.fields.fast_reader`'s canonical values
    taken to their primitive at once."""
    kind = type(field)
    if kind is obj_fields.DateTimeField:

        def datetime_to_wire(value: Any, context: Context | None) -> Any:
            if type(value) is dt.datetime and value.tzinfo is _UTC:
                return obj_fields.utc_text(value)  # what the field writes
            return writer(read(value, context))

        return datetime_to_wire
    if kind is obj_fields.ListOfStringsField:

        def strings_to_wire(value: Any, context: Context | None) -> Any:
            if obj_fields.plain_strings(value):
                return value.copy()  # read and written: one copy, never the record's
            return writer(read(value, context))

        return strings_to_wire
    if kind is obj_fields.DictOfStringsField:

        def string_dict_to_wire(value: Any, context: Context | None) -> Any:
            if obj_fields.plain_string_dict(value):
                return value.copy()
            return writer(read(value, context))

        return string_dict_to_wire
    if writer is None:
        if plain is None or not field.nullable:
            return read  # None is taken as is (_taken_as_is), or refused

        def nullable_to_wire(value: Any, context: Context | None) -> Any:
            return None if value is None else read(value, context)

        return nullable_to_wire

    def to_wire(value: Any, context: Context | None) -> Any:
        return writer(read(value, context))

    return to_wire


def _primitive_plan(cls: type[VersionedObject]) -> _PrimitivePlan | None:
    """Per class (and ``fields`` dict): how a record's values become primitive data;
    None when this class's primitive cannot be promised without building the object."""
    cached = cls.__dict__.get("_obj_primitive_plan")
    if cached is not None and cached[0] is cls.fields:
        return cached[1]  # type: ignore[no-any-return]
    plan: _PrimitivePlan | None = None
    if issubclass(cls, PersistentObject) and _ours(cls, (*_LOADED_METHODS, *_PRIMITIVE_METHODS)):
        record_plan = _record_plan(cls)  # prepares the class's plans too
        entries = []
        for (name, plain, read), (_, field, writer) in zip(
            record_plan, cls._obj_to_plan, strict=True
        ):
            kind = type(field)
            if kind not in _STOCK_FIELDS:
                break
            child = field.objname if kind is obj_fields.ObjectField else None  # type: ignore[attr-defined]
            entries.append(
                (
                    name,
                    _taken_as_is(field, plain, writer),
                    _to_wire(field, plain, read, writer),
                    child,
                )
            )
        else:
            plan = tuple(entries)
    cls._obj_primitive_plan = (cls.fields, plan)  # type: ignore[attr-defined]
    return plan


# (name, type taken as is, wire reader and writer in one)
_ChildPlan = tuple[tuple[str, Any, Reader], ...]


def _child_plan(cls: type[VersionedObject]) -> _ChildPlan | None:
    """:func:`_primitive_plan` of a nested object's class (its record value is the dict
    of its field primitives); None for one with objects of its own nested in it."""
    cached = cls.__dict__.get("_obj_child_plan")
    if cached is not None and cached[0] is cls.fields:
        return cached[1]  # type: ignore[no-any-return]
    plan: _ChildPlan | None = None
    cls._obj_prepare_class()
    if _ours(cls, _CHILD_METHODS):
        entries = []
        for name, field, writer in cls._obj_to_plan:
            kind = type(field)
            if kind not in _STOCK_FIELDS or field.is_object:
                break
            _, plain, read = cls._obj_from_plan[name]
            entries.append(
                (name, _taken_as_is(field, plain, writer), _to_wire(field, plain, read, writer))
            )
        else:
            plan = tuple(entries)
    cls._obj_child_plan = (cls.fields, plan)  # type: ignore[attr-defined]
    return plan


def _child_primitive(objname: str, values: dict[str, Any], context: Context | None) -> Any:
    cls = VersionedObjectRegistry.find_newest(objname)
    plan = None if cls is None else _child_plan(cls)
    if plan is None:
        return None
    assert cls is not None
    data: dict[str, Any] = {}
    for name, plain, convert in plan:
        value = values.get(name, _MISSING)
        if type(value) is plain:
            data[name] = value
        elif value is not _MISSING:
            data[name] = convert(value, context)
    return primitive_head(cls, cls.VERSION, data)


_MISSING: Any = object()


#: Field types whose primitives hold only JSON's own values (str, int, bool, None, lists
#: and dicts of them): not FloatField, whose NaN and infinities the stdlib encoder refuses.
_PLAIN_FIELDS = _STOCK_FIELDS - {obj_fields.FloatField}


def primitive_is_plain(cls: type[VersionedObject]) -> bool:
    """Whether every primitive :func:`record_to_primitive` gives for ``cls`` holds only
    JSON's own values (``transport.PlainJSON``): each field, and each field of the objects
    nested in it (the newest registered class of their name), of a built-in type that is
    not a float. Its values are of their field's plain type or read by the field (an int,
    a str...), so nothing else can get in."""
    state = VersionedObjectRegistry.state()
    cached = cls.__dict__.get("_obj_plain_primitive")
    if cached is not None and cached[0] is cls.fields and cached[1] is state:
        return cached[2]  # type: ignore[no-any-return]
    plain = _plain_fields(cls, nested=False)
    cls._obj_plain_primitive = (cls.fields, state, plain)  # type: ignore[attr-defined]
    return plain


def _plain_fields(cls: type[VersionedObject], nested: bool) -> bool:
    for field in cls.fields.values():
        kind = type(field)
        if kind not in _PLAIN_FIELDS:
            return False
        if kind is obj_fields.ObjectField:
            if nested:
                return False  # record_to_primitive builds no object nested deeper
            child = VersionedObjectRegistry.find_newest(field.objname)  # type: ignore[attr-defined]
            if child is None or not _plain_fields(child, nested=True):
                return False
    return True


def loads_as_its_primitive(cls: type[VersionedObject]) -> bool:
    """Whether an object of ``cls`` loaded from a record (``cls._from_record``) is the one
    read back from the record's :func:`record_to_primitive` (a class whose loading and
    primitives are ours, of built-in field types), all of JSON's own values
    (:func:`primitive_is_plain`): where the primitive would only be read back in the
    same process, the record may be loaded instead."""
    return _primitive_plan(cls) is not None and primitive_is_plain(cls)


def record_to_primitive(
    cls: type[VersionedObject], record: Record, context: Context | None = None
) -> dict[str, Any] | None:
    """``cls._from_record(context, record).obj_to_primitive()``, without the object.

    The same primitive, key for key and in the same order, for a class whose loading,
    change tracking and primitives are ours and whose fields are built-in field types
    (objects nested in it too). None when that cannot be promised, or when a value
    would not load (the caller then builds the object, which raises the error).
    """
    plan = _primitive_plan(cls)
    if plan is None:
        return None
    data: dict[str, Any] = {}
    try:
        for name, plain, convert, child in plan:
            value = record.get(name, _MISSING)
            if type(value) is plain:
                data[name] = value
            elif value is _MISSING:
                continue
            elif child is not None and type(value) is dict:
                nested = _child_primitive(child, value, context)
                if nested is None:
                    return None
                data[name] = nested
            else:
                data[name] = convert(value, context)
        revision = record.get("revision")
        primitive = primitive_head(cls, cls.VERSION, data)
        if revision is not None:
            primitive[_KEY_REVISION] = int(revision)
    except Exception:  # noqa: BLE001 - building the object says what is wrong
        return None
    return primitive


def _coerced(cls: type[VersionedObject], name: str, value: Any) -> Any:
    """``value`` (a key or filter value for column ``name``) validated as that field.

    Before any query: the database must never see ``1.5`` or ``True`` for an integer id
    (PostgreSQL rounds and casts them). Lists, dicts and objects go as they are.
    """
    field = cls.fields.get(name)
    if field is None or field.mutable or field.is_object:
        return value
    try:
        return field.coerce(value)
    except (ValueError, TypeError) as exc:
        raise exception.ObjectValueError(reason=f"{cls.obj_name()}.{name}: {exc}") from None


def _coerced_filters(
    cls: type[VersionedObject], filters: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    if not filters:
        return filters
    out: dict[str, Any] = {}
    for name, value in filters.items():
        if isinstance(value, (list, tuple, set, frozenset)):
            out[name] = [_coerced(cls, name, item) for item in value]
        else:
            out[name] = _coerced(cls, name, value)
    return out


class PersistentObject(_Base):
    """Mixin: generic create/get/save/destroy/refresh through ``context.db``.

    Put it before ``VersionedObject`` in the bases. The table is ``obj_name()``'s (the
    storage maps names to tables); rows are keyed by the integer field ``id``.
    """

    @classmethod
    def _from_record(cls: type[P], context: Context, record: Record) -> P:
        """A clean object (no changes) from a storage record; unknown keys are ignored."""
        obj = cls.__new__(cls)
        d = obj.__dict__
        d["_context"] = context
        d["_changed_fields"] = set()
        d["_obj_snapshots"] = {}
        obj._obj_take_record(record, None)
        # Only fields of the record are set, so resetting all of them is resetting those.
        obj.obj_reset_changes(recursive=True)
        return obj

    def _obj_fill(self, record: Record, only: Iterable[str] | None = None) -> None:
        """Take the record's values (of all fields, or ``only``) as clean, loaded values."""
        filled = self._obj_take_record(record, None if only is None else set(only))
        self.obj_reset_changes(filled, recursive=True)

    def _obj_take_record(self, record: Record, only: set[str] | None) -> list[str]:
        cls = type(self)
        d = self.__dict__
        context = self._context
        filled = []
        name = ""
        try:
            for name, plain, read in _record_plan(cls):
                if name not in record or (only is not None and name not in only):
                    continue
                value = record[name]
                d[name] = value if type(value) is plain else read(value, context)
                filled.append(name)
        except (ValueError, TypeError) as exc:
            if isinstance(exc, exception.ObjectsError):
                raise
            raise exception.ObjectValueError(
                reason=f"stored {cls.obj_name()}.{name}: {exc}"
            ) from None
        revision = record.get("revision")
        if revision is not None:
            d["obj_revision"] = int(revision)
        return filled

    def _record_values(self, names: Iterable[str]) -> dict[str, Any]:
        fields = self.fields
        d = self.__dict__
        return {
            name: field_to_record(fields[name], d[name])
            for name in names
            if name in d and name not in STORAGE_MANAGED
        }

    @classmethod
    def _db_get(cls: type[P], context: Context, id: int) -> P:
        """Load by id. Raises ``NotFound``; ``ObjectValueError`` for an id the field refuses."""
        return cls._from_record(context, cls._db_get_record(context, id))

    @classmethod
    def _db_get_record(cls, context: Context, id: int) -> Record:
        """The record :meth:`_db_get` loads (for :func:`reads_record` bodies)."""
        id = _coerced(cls, "id", id)
        return context.db.get(cls.obj_name(), id)

    @classmethod
    def _db_get_by(cls: type[P], context: Context, **equals: Any) -> P:
        """Load the first row matching all ``field == value``. Raises ``NotFound``."""
        return cls._from_record(context, cls._db_get_by_record(context, **equals))

    @classmethod
    def _db_get_by_record(cls, context: Context, **equals: Any) -> Record:
        """The record :meth:`_db_get_by` loads (for :func:`reads_record` bodies)."""
        equals = {name: _coerced(cls, name, value) for name, value in equals.items()}
        return context.db.get_by(cls.obj_name(), **equals)

    @classmethod
    def _db_query(
        cls: type[P],
        context: Context,
        filters: Mapping[str, Any] | None = None,
        limit: int | None = None,
        marker: int | None = None,
    ) -> list[P]:
        """Objects for the rows matching ``filters``, ordered by id.

        Filter values (each item of a list) and ``marker`` are validated as their fields
        first (``ObjectValueError``).
        """
        filters = _coerced_filters(cls, filters)
        if marker is not None:
            marker = _coerced(cls, "id", marker)
        records = context.db.query(cls.obj_name(), filters=filters, limit=limit, marker=marker)
        return [cls._from_record(context, record) for record in records]

    def _db_create(self) -> None:
        """Insert this object; afterwards it has ``id``, timestamps, a revision and no changes.

        Raises:
            ObjectActionError: it was already created.
        """
        if "id" in self.__dict__:
            raise exception.ObjectActionError(
                action="create", reason=f"{self.obj_name()} {self.__dict__['id']} already exists"
            )
        record = self._obj_context_db().create(self.obj_name(), self._record_values(self.fields))
        self._obj_fill(record)

    def _db_save(self) -> None:
        """Write the changed fields, if any, based on ``obj_revision``.

        Raises:
            ConcurrentUpdate: the row changed since this copy was read; nothing written.
            ObjectActionError: the object was never created, or never read (it has no
                revision to check against, e.g. ``Instance(ctx, id=7)``); nothing written.
        """
        object_id = self._obj_require_id("save")
        changes = self.obj_what_changed()
        values = self._record_values(changes)
        if not values:
            self.obj_reset_changes(recursive=True)
            return
        if self.obj_revision is None:
            # NOTE: without the revision it was read at, a save could not tell a newer
            # row from the one the caller saw, and would overwrite it silently.
            name = self.obj_name()
            raise exception.ObjectActionError(
                action="save",
                reason=(
                    f"this {name} was never read, so a save could overwrite newer data "
                    f"unseen; load it with {name}.get() (or refresh() it) and change the "
                    "loaded copy"
                ),
            )
        record = self._obj_context_db().update(
            self.obj_name(), object_id, values, expected_revision=self.obj_revision
        )
        self._obj_fill(record, only=self._obj_loaded_or(changes, record))

    def _db_destroy(self) -> None:
        """Delete the row (optimistically, like save)."""
        object_id = self._obj_require_id("destroy")
        self._obj_context_db().delete(
            self.obj_name(), object_id, expected_revision=self.obj_revision
        )

    def _db_refresh(self) -> None:
        """Reload every field that is set (and storage-managed ones) from the row."""
        object_id = self._obj_require_id("refresh")
        record = self._obj_context_db().get(self.obj_name(), object_id)
        self._obj_fill(record)

    def _obj_loaded_or(self, changes: set[str], record: Record) -> list[str]:
        # After a save, refresh what we had plus what the update changed on its own
        # (updated_at); fields this copy never had (an older caller's object, or a save
        # request of only the changed fields: see save_primitive) stay unset, so they
        # are not sent back either.
        d = self.__dict__
        return [
            name
            for name in self.fields
            if name in d or name in changes or (name in UPDATE_MANAGED and name in record)
        ]

    def _obj_require_id(self, action: str) -> int:
        object_id = self.__dict__.get("id")
        if object_id is None:
            raise exception.ObjectActionError(
                action=action, reason=f"this {self.obj_name()} was never created (it has no id)"
            )
        return int(object_id)

    def _obj_context_db(self) -> Storage:
        if self._context is None:
            raise exception.OrphanedObjectError(method="database access", objtype=self.obj_name())
        return self._context.db
