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

Records hold scalar fields as Python values and list, dict and nested-object fields as
JSON-compatible values (a nested object as the dict of its field primitives). The
record's ``"revision"`` becomes ``obj_revision``, used for optimistic saves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from objects import exception
from objects.fields import Reader, fast_reader
from objects.registry import VersionedObjectRegistry

if TYPE_CHECKING:
    from objects.context import Context
    from objects.fields import Field
    from objects.storage import Record, Storage
    from objects.versioned import VersionedObject

    _Base = VersionedObject
else:
    _Base = object

__all__ = ["PersistentObject", "field_from_record", "field_to_record"]

P = TypeVar("P", bound="PersistentObject")

#: Columns the storage owns: never written from an object.
STORAGE_MANAGED = frozenset({"id", "created_at", "updated_at"})


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
        id = _coerced(cls, "id", id)
        return cls._from_record(context, context.db.get(cls.obj_name(), id))

    @classmethod
    def _db_get_by(cls: type[P], context: Context, **equals: Any) -> P:
        """Load the first row matching all ``field == value``. Raises ``NotFound``."""
        equals = {name: _coerced(cls, name, value) for name, value in equals.items()}
        return cls._from_record(context, context.db.get_by(cls.obj_name(), **equals))

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
        # After a save, refresh what we had plus what the storage manages; fields this
        # copy never had (an older caller's object) stay unset.
        d = self.__dict__
        return [
            name
            for name in self.fields
            if name in d or name in changes or (name in STORAGE_MANAGED and name in record)
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
