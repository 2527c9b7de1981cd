"""Versioned objects: declarative fields, change tracking, wire primitives, backports.

A class declares ``VERSION`` and ``fields`` and registers with
:class:`VersionedObjectRegistry`; framework methods live under ``obj_`` so field names
stay free (oslo.versionedobjects' conventions and wire keys)::

    @VersionedObjectRegistry.register
    class Flavor(VersionedObject):
        VERSION = "1.0"
        fields = {"id": fields.IntegerField(read_only=True), "name": fields.StringField()}

Field values live in the instance ``__dict__`` under the field's name, so reading a set
field is a plain attribute read. ``__getattr__`` only runs for unset fields: it waits
for a pending load, then lazy-loads through ``obj_load_attr``. Assignment goes through
``__setattr__``, which coerces and records the change.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from objects import exception
from objects import fields as obj_fields
from objects._primitive import (
    _KEY_CHANGES,
    _KEY_DATA,
    _KEY_NAME,
    _KEY_NAMESPACE,
    _KEY_REVISION,
    _KEY_VERSION,
    primitive_head,
)
from objects.futures import PendingObjectMixin, PendingState
from objects.registry import VersionedObjectRegistry, version_tuple
from objects.remoting import add_async_twins, get_indirection_api

if TYPE_CHECKING:
    from objects.context import Context

__all__ = ["VersionedObject"]

_REQUIRED_KEYS = (_KEY_NAME, _KEY_NAMESPACE, _KEY_VERSION, _KEY_DATA)

#: The field an oslo.versionedobjects class declares (``IntegerField(nullable=True)``) to
#: carry the revision its copy was read at, for optimistic saves through our conductor:
#: OVO keeps no ``versioned_object.revision`` key, only declared fields. The conductor
#: writes it into the data of the objects it returns (see
#: ``conductor.service.ConductorSerializer``) and reads it back from a primitive that has
#: no revision key.
OVO_REVISION_FIELD = "obj_revision"
_ALLOWED_KEYS = frozenset((*_REQUIRED_KEYS, _KEY_CHANGES, _KEY_REVISION))

_MISSING: Any = object()
_DROP: Any = object()  # a nested object that did not exist yet at the target version

VO = TypeVar("VO", bound="VersionedObject")

# Fields whose wire form is the value itself and whose ``from_primitive`` accepts a value
# of exactly this type unchanged: the hot paths skip the method calls for them.
_PLAIN_TYPES: dict[type[obj_fields.Field], type] = {
    obj_fields.IntegerField: int,
    obj_fields.StringField: str,
    obj_fields.BooleanField: bool,
    obj_fields.FloatField: float,
}


class _IndirectionAPIAttribute:
    """``VersionedObject.indirection_api``, readable like oslo's.

    Set it with ``set_indirection_api``.
    """

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        return get_indirection_api()


class VersionedObject(PendingObjectMixin):
    """Base of every versioned object.

    Args:
        context: the request context remotable methods use (``None``: orphaned).
        **values: initial field values; they count as changes.

    Class attributes:
        VERSION: ``"X.Y"``; bump Y for compatible changes (and backport them in
            ``obj_make_compatible``), X for incompatible ones.
        fields: ``{name: Field}``.
        obj_relationships: ``{field: [(my_version, child_version), ...]}`` for nested
            objects, used when a backport has no version manifest.
    """

    VERSION: ClassVar[str] = "1.0"
    OBJ_PROJECT_NAMESPACE: ClassVar[str] = "versionedobjects"
    OBJ_SERIAL_NAMESPACE: ClassVar[str] = "versioned_object"
    fields: ClassVar[dict[str, obj_fields.Field]] = {}
    obj_relationships: ClassVar[dict[str, list[tuple[str, str]]]] = {}
    indirection_api: ClassVar[Any] = _IndirectionAPIAttribute()

    # Per-instance state, with class-level defaults so reading it never reaches __getattr__.
    _context: Context | None = None
    obj_revision: int | None = None
    _obj_pending: PendingState | None = None

    # Per-class plans, computed by _obj_prepare_class().
    _obj_prepared_for: ClassVar[Any] = None
    _obj_to_plan: ClassVar[tuple[tuple[str, obj_fields.Field, obj_fields.Writer | None], ...]] = ()
    _obj_from_plan: ClassVar[dict[str, tuple[obj_fields.Field, Any, obj_fields.Reader]]] = {}
    _obj_mutable: ClassVar[tuple[tuple[str, obj_fields.Field], ...]] = ()
    _obj_nested: ClassVar[tuple[tuple[str, obj_fields.Field], ...]] = ()
    _obj_mutable_names: ClassVar[frozenset[str]] = frozenset()
    _obj_mutable_plan: ClassVar[tuple[tuple[str, obj_fields.Field, bool], ...]] = ()
    # lists and dicts of plain values: their sent copy becomes the snapshot
    _obj_snapshotted_names: ClassVar[frozenset[str]] = frozenset()
    # fields that change in place (lists, dicts, objects), not only by assignment
    _obj_tracked_names: ClassVar[frozenset[str]] = frozenset()
    # (registry state, VERSION, manifest) of _obj_manifest(), set on each class itself.
    _obj_manifest_kept: ClassVar[tuple[object, str, dict[str, str]] | None] = None

    # NOTE: == compares field values, but an object hashes by identity: pending objects
    # must be usable where asyncio puts awaitables in a dict (asyncio.gather) and as keys
    # of the caller's own bookkeeping. Two distinct equal objects are two dict keys.
    __hash__ = object.__hash__

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        version_tuple(cls.VERSION)
        add_async_twins(cls)
        cls._obj_prepare_class()

    @classmethod
    def _obj_prepare_class(cls) -> None:
        """Precompute the per-class plans the hot paths use (again if ``fields`` changed)."""
        if cls.__dict__.get("_obj_prepared_for") is cls.fields:
            return
        for name, field in cls.fields.items():
            if not isinstance(field, obj_fields.Field):
                raise TypeError(f"{cls.__name__}.fields[{name!r}] is not a Field: {field!r}")
        # to: (name, field, writer or None when the primitive is the value itself)
        cls._obj_to_plan = tuple(
            (name, field, obj_fields.fast_writer(field)) for name, field in cls.fields.items()
        )
        # from: name -> (field, the type taken as is, reader for anything else)
        cls._obj_from_plan = {
            name: (
                field,
                _PLAIN_TYPES.get(type(field)),
                obj_fields.fast_reader(field, field.from_primitive),
            )
            for name, field in cls.fields.items()
        }
        cls._obj_mutable = tuple((n, f) for n, f in cls.fields.items() if f.mutable)
        cls._obj_nested = tuple((n, f) for n, f in cls.fields.items() if f.is_object)
        cls._obj_mutable_names = frozenset(n for n, f in cls._obj_mutable)
        # (name, field, compared by value: the field's changed_since is Field's own)
        cls._obj_mutable_plan = tuple(
            (n, f, type(f).changed_since is obj_fields.Field.changed_since)
            for n, f in cls._obj_mutable
        )
        cls._obj_snapshotted_names = frozenset(n for n, f in cls._obj_mutable if not f.is_object)
        cls._obj_tracked_names = frozenset(
            n for n, f in cls.fields.items() if f.mutable or f.is_object
        )
        cls._obj_prepared_for = cls.fields

    def __init__(self, context: Context | None = None, **values: Any) -> None:
        d = self.__dict__
        d["_context"] = context
        d["_changed_fields"] = set()
        d["_obj_snapshots"] = {}
        fields = type(self).fields
        for name, value in values.items():
            if name not in fields:
                raise TypeError(f"{type(self).__name__} has no field {name!r}")
            setattr(self, name, value)

    @classmethod
    def obj_name(cls) -> str:
        """The name objects of this class travel under (the class name by default)."""
        return cls.__name__

    # -- attribute access ---------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup failed: an unset field, or no such attribute.
        cls = type(self)
        if name not in cls.fields or "_changed_fields" not in self.__dict__:
            raise AttributeError(f"{cls.__name__!r} object has no attribute {name!r}")
        d = self.__dict__
        state = d.get("_obj_pending")
        if state is not None and state.load is not None:
            state.wait_load(objname=cls.obj_name())
            if name in d:
                return d[name]
        if self._context is None and cls.obj_load_attr is not VersionedObject.obj_load_attr:
            raise exception.OrphanedObjectError(
                f"Cannot lazy-load {cls.obj_name()}.{name}: the object has no context",
                method="obj_load_attr",
                objtype=cls.obj_name(),
            )
        self.obj_load_attr(name)
        if name not in d:
            raise exception.AttributeNotLoadable(objtype=cls.obj_name(), attr=name)
        return d[name]

    def __setattr__(self, name: str, value: Any) -> None:
        field = self.fields.get(name)
        if field is None:
            object.__setattr__(self, name, value)
            return
        state = self._obj_pending
        if state is not None:
            self._obj_wait_load()
        d = self.__dict__
        try:
            value = field.coerce(value)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"{type(self).__name__}.{name}: {exc}") from None
        if field.read_only and name in d:
            if d[name] == value:
                return  # its own value again: accepted, and not a change (as oslo does)
            raise exception.ReadOnlyFieldError(
                f"Cannot modify read-only field {type(self).__name__}.{name}", field=name
            )
        if state is None:
            d[name] = value
            self._changed_fields.add(name)
        else:
            with state.lock:  # a reply being applied on another thread sees all or nothing
                d[name] = value
                self._changed_fields.add(name)

    def __delattr__(self, name: str) -> None:
        if name in self.fields:
            self.__dict__.pop(name, None)
            self._changed_fields.discard(name)
            self._obj_snapshots.pop(name, None)
            return
        object.__delattr__(self, name)

    def obj_attr_is_set(self, attrname: str) -> bool:
        """Whether the field has a value (never loads it)."""
        if self._obj_pending is not None:
            self._obj_wait_load()
        return attrname in self.__dict__ and attrname in self.fields

    def obj_load_attr(self, attrname: str) -> None:
        """Load an unset field; override to lazy-load (needs ``self._context``).

        Raises:
            AttributeNotLoadable: always, in the base class.
        """
        raise exception.AttributeNotLoadable(objtype=self.obj_name(), attr=attrname)

    def obj_set_defaults(self, *attrs: str) -> None:
        """Give unset fields (all, or ``attrs``) their defaults; set fields keep their value."""
        fields = self.fields
        names = attrs or tuple(n for n, f in fields.items() if f.has_default)
        for name in names:
            field = fields.get(name)
            if field is None or not field.has_default:
                raise exception.ObjectActionError(
                    action="obj_set_defaults", reason=f"field {name!r} has no default"
                )
            if name not in self.__dict__:
                setattr(self, name, field.get_default())

    # -- change tracking ----------------------------------------------------------------

    def obj_what_changed(self) -> set[str]:
        """Names of fields changed since the last reset, including in-place and nested changes."""
        if self._obj_pending is not None:
            self._obj_wait_load()
        changed = set(self._changed_fields)
        cls = type(self)
        d = self.__dict__
        if cls._obj_mutable:
            snapshots = self._obj_snapshots
            for name, field, by_value in cls._obj_mutable_plan:
                if name in changed:
                    continue
                value = d.get(name, _MISSING)
                if value is _MISSING:
                    continue
                snap = snapshots.get(name, _MISSING)
                if snap is not _MISSING and (
                    value != snap if by_value else field.changed_since(value, snap)
                ):
                    changed.add(name)
        for name, _field in cls._obj_nested:
            if name in changed:
                continue
            value = d.get(name)
            if value is None:
                continue
            if isinstance(value, VersionedObject):
                if value.obj_what_changed():
                    changed.add(name)
            elif any(child.obj_what_changed() for child in value):
                changed.add(name)
        return changed

    def _obj_field_changed(self, name: str) -> bool:
        """``name in self.obj_what_changed()``, for one field."""
        if name in self._changed_fields:
            return True
        value = self.__dict__.get(name)
        if value is None:
            return False
        field = type(self).fields[name]
        if field.mutable:
            snap = self._obj_snapshots.get(name, _MISSING)
            if snap is not _MISSING and field.changed_since(value, snap):
                return True
        if field.is_object:
            if isinstance(value, VersionedObject):
                return bool(value.obj_what_changed())
            return any(child.obj_what_changed() for child in value)
        return False

    def obj_get_changes(self) -> dict[str, Any]:
        """``{field: value}`` for every changed field."""
        d = self.__dict__
        return {name: d[name] for name in self.obj_what_changed() if name in d}

    def obj_reset_changes(
        self, fields: Iterable[str] | None = None, recursive: bool = False
    ) -> None:
        """Forget changes (of all fields, or of ``fields``); ``recursive`` also resets children."""
        if self._obj_pending is not None:
            self._obj_wait_load()
        cls = type(self)
        d = self.__dict__
        names = None if fields is None else set(fields)
        if names is None:
            self._changed_fields.clear()
        else:
            self._changed_fields.difference_update(names)
        if cls._obj_mutable:
            snapshots = self._obj_snapshots
            for name, field in cls._obj_mutable:
                if names is not None and name not in names:
                    continue
                if name in d:
                    snapshots[name] = field.snapshot(d[name])
                else:
                    snapshots.pop(name, None)
        if recursive:
            for name, _ in cls._obj_nested:
                if names is not None and name not in names:
                    continue
                value = d.get(name)
                if value is None:
                    continue
                children = [value] if isinstance(value, VersionedObject) else value
                for child in children:
                    child.obj_reset_changes(recursive=True)

    # -- wire primitives ----------------------------------------------------------------

    def obj_to_primitive(
        self, target_version: str | None = None, version_manifest: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """This object as a JSON-compatible primitive (oslo's keys).

        Only set fields travel; ``versioned_object.changes`` only when there are changes.

        Args:
            target_version: the version to backport to (default: ``VERSION``).
            version_manifest: ``{objname: version}`` the receiver reads; nested objects are
                backported to it (else to ``obj_relationships``).

        Raises:
            InvalidTargetVersion: ``target_version`` is above ``VERSION``.
        """
        if self._obj_pending is not None:
            self._obj_wait_load()
        cls = type(self)
        d = self.__dict__
        backport = version_manifest is not None
        if target_version is None:
            target_version = cls.VERSION
        elif target_version != cls.VERSION:
            if version_tuple(target_version) > version_tuple(cls.VERSION):
                raise exception.InvalidTargetVersion(
                    objname=cls.obj_name(), version=target_version, supported=cls.VERSION
                )
            backport = True
        data: dict[str, Any] = {}
        for name, field, writer in cls._obj_to_plan:
            value = d.get(name, _MISSING)
            if value is _MISSING:
                continue
            if writer is None:
                data[name] = value
            elif backport and field.is_object and value is not None:
                child = self._obj_child_primitive(
                    name, field, value, target_version, version_manifest
                )
                if child is not _DROP:
                    data[name] = child
            else:
                data[name] = writer(value)
        if target_version != cls.VERSION:
            self.obj_make_compatible(data, target_version)
        primitive = primitive_head(cls, target_version, data)
        if self._changed_fields or cls._obj_mutable or cls._obj_nested:
            changes = self.obj_what_changed()
            if changes:
                primitive[_KEY_CHANGES] = sorted(n for n in changes if n in data)
        if self.obj_revision is not None:
            primitive[_KEY_REVISION] = self.obj_revision
        return primitive

    def obj_make_compatible(self, primitive: dict[str, Any], target_version: str) -> None:
        """Make ``primitive`` (the ``data`` dict) readable at ``target_version``, in place.

        Override to drop or convert fields older versions do not know; call super first.
        Nested objects are already backported by ``obj_to_primitive`` (to the version
        manifest, else ``obj_relationships``), so the base implementation does nothing.
        """

    def _obj_child_target(
        self,
        name: str,
        field: obj_fields.Field,
        target_version: str,
        manifest: dict[str, str] | None,
    ) -> str | None:
        """The version a nested object goes out at; ``None``: its own; ``_DROP``: omit it."""
        if manifest is not None:
            return manifest.get(field.objname)  # type: ignore[attr-defined]
        rules = self.obj_relationships.get(name) or self._obj_default_relationship(name)
        if not rules:
            return None
        target = version_tuple(target_version)
        chosen: Any = _DROP
        for parent_version, child_version in sorted(rules, key=lambda r: version_tuple(r[0])):
            if version_tuple(parent_version) <= target:
                chosen = child_version
        return chosen  # type: ignore[no-any-return]

    def _obj_default_relationship(self, name: str) -> list[tuple[str, str]] | None:
        return None

    def _obj_child_primitive(
        self,
        name: str,
        field: obj_fields.Field,
        value: Any,
        target_version: str,
        manifest: dict[str, str] | None,
    ) -> Any:
        child_version = self._obj_child_target(name, field, target_version, manifest)
        if child_version is _DROP:
            return _DROP
        if isinstance(value, VersionedObject):
            return _child_to_primitive(value, child_version, manifest)
        return [_child_to_primitive(child, child_version, manifest) for child in value]

    @classmethod
    def obj_from_primitive(
        cls, primitive: dict[str, Any], context: Context | None = None
    ) -> VersionedObject:
        """Rebuild an object from a primitive, whatever class this is called on.

        The class comes from the registry by the primitive's name and version.

        Raises:
            ObjectValueError: the primitive is malformed (the reason says how).
            UnsupportedObjectError: unknown name or foreign namespace.
            IncompatibleObjectVersion: no registered class reads that version.
        """
        objcls, data, changes, revision = _read_primitive(primitive)
        return objcls._obj_from_data(data, context, changes, revision)

    @classmethod
    def _obj_from_data(
        cls: type[VO],
        data: dict[str, Any],
        context: Context | None,
        changes: list[str] | None = None,
        revision: int | None = None,
    ) -> VO:
        obj = cls.__new__(cls)
        cls._obj_read_into(obj.__dict__, data, context, changes, revision)
        return obj

    @classmethod
    def _obj_read_into(
        cls,
        d: dict[str, Any],
        data: dict[str, Any],
        context: Context | None,
        changes: list[str] | None,
        revision: int | None,
    ) -> None:
        """Put the state an object of this class has when read from ``data`` into ``d``."""
        d["_context"] = context
        plan = cls._obj_from_plan
        key = None
        try:
            for key, value in data.items():
                entry = plan.get(key)
                if entry is None:
                    continue  # a field of a compatible newer minor: ignored, as oslo does
                if type(value) is entry[1]:
                    d[key] = value
                else:
                    d[key] = entry[2](value, context)
        except (ValueError, TypeError) as exc:
            if isinstance(exc, exception.ObjectsError):
                raise
            raise exception.ObjectValueError(reason=f"{cls.obj_name()}.{key}: {exc}") from None
        d["_changed_fields"] = set(changes).intersection(cls.fields) if changes else set()
        snapshots: dict[str, Any] = {}
        d["_obj_snapshots"] = snapshots
        for name, field in cls._obj_mutable:
            if name in d:
                snapshots[name] = field.snapshot(d[name])
        if revision is not None:
            d["obj_revision"] = revision

    def _obj_load_primitive(self, primitive: dict[str, Any]) -> None:
        """Take the state of ``primitive`` (a load's reply) into this pending object.

        Read straight into this object when the primitive is of its own class (the usual
        case): no second object is built and copied in. Another class that reads it (a
        registered older version) builds one, which is absorbed as before.

        Raises:
            IncompatibleObjectVersion: no class of this process reads it; the caller
                rebuilds it the general way (``VersionedObjectSerializer`` backports it
                through the indirection API) and hands over the object instead.
            ObjectValueError, UnsupportedObjectError: as ``obj_from_primitive``.
        """
        cls = type(self)
        context = self._context
        objcls, data, changes, revision = _read_primitive(primitive)
        if objcls is not cls or cls._obj_from_data.__func__ is not _OBJ_FROM_DATA:  # type: ignore[attr-defined]
            # Another class, or one that builds its objects its own way: built, then taken.
            self._obj_absorb_loaded(objcls._obj_from_data(data, context, changes, revision))
            return
        # The whole state is built first, then published with one dict update, so a
        # reader on another thread never sees half of it.
        values: dict[str, Any] = {}
        cls._obj_read_into(values, data, context, changes, revision)
        self.__dict__.update(values)

    # -- remotable support --------------------------------------------------------------

    @classmethod
    def _obj_manifest(cls) -> dict[str, str]:
        """Version manifest remotable calls carry: this class's tree, at this class's version."""
        # NOTE: kept per class while the registry and VERSION stay the same (every
        # remotable call asks; callers never mutate it, as with the registry's own cache).
        state = VersionedObjectRegistry._state
        version = cls.VERSION
        kept: tuple[object, str, dict[str, str]] | None = cls.__dict__.get("_obj_manifest_kept")
        if kept is not None and kept[0] is state and kept[1] == version:
            return kept[2]
        name = cls.obj_name()
        manifest = VersionedObjectRegistry._manifest(name)
        if manifest.get(name) != version:
            manifest = {**manifest, name: version}
        cls._obj_manifest_kept = (state, version, manifest)
        return manifest

    def _obj_apply_updates(
        self, updates: Any, sent: tuple[set[str], dict[str, Any]] | None = None
    ) -> None:
        """Apply an ``object_action`` reply: field values, then its change list and revision.

        ``sent``: ``_obj_sent_state()`` taken when the request left; changes made since
        then are kept (without it, every change is reset).
        """
        if not isinstance(updates, dict):
            raise exception.ObjectValueError(reason="object_action updates must be a dict")
        cls = type(self)
        fields = cls.fields
        plan = cls._obj_from_plan
        d = self.__dict__
        context = self._context
        new: dict[str, Any] = {}
        for key, value in updates.items():
            entry = plan.get(key)
            if entry is None:
                continue  # obj_what_changed, obj_revision, or a field we do not know
            field, plain, read = entry
            try:
                if type(value) is plain:
                    new[key] = value
                elif isinstance(value, VersionedObject) or (
                    field.is_object
                    and isinstance(value, list)
                    and all(isinstance(v, VersionedObject) for v in value)
                ):
                    new[key] = field.coerce(value)
                else:
                    new[key] = read(value, context)
            except (ValueError, TypeError) as exc:
                raise exception.ObjectValueError(reason=f"{cls.obj_name()}.{key}: {exc}") from None
        changed = updates.get("obj_what_changed")
        if sent is None:
            d.update(new)  # read-only fields included: the conductor's word is final
            self.obj_reset_changes(recursive=True)
        else:
            state = d.get("_obj_pending")
            if state is None:
                self._obj_settle(new, sent)
            else:
                with state.lock:  # __setattr__ takes it too: no assignment slips in between
                    self._obj_settle(new, sent)
        if changed:
            self._changed_fields.update(n for n in changed if n in fields)
        if "obj_revision" in updates:
            d["obj_revision"] = updates["obj_revision"]

    def _obj_sent_state(self) -> tuple[set[str], dict[str, Any]]:
        """What a remotable call is about to send: the changed fields and their values.

        ``_obj_apply_updates`` compares the object against it when the reply arrives, to
        tell the changes the call wrote from those made while it was in flight.
        """
        changed = self.obj_what_changed()
        d = self.__dict__
        cls = type(self)
        tracked = cls._obj_tracked_names
        tokens: dict[str, Any] = {}
        for name in changed:
            value = d.get(name, _MISSING)
            if value is _MISSING:
                continue
            # a field changed by assignment only is its own token (see _sent_token)
            tokens[name] = _sent_token(cls.fields[name], value) if name in tracked else value
        return changed, tokens

    def _obj_settle(self, new: dict[str, Any], sent: tuple[set[str], dict[str, Any]]) -> None:
        # NOTE: the reply of a call describes the row as the call left it; the object may
        # have changed since the request left (another assignment, an in-place change).
        # Such a change wins over the reply's value and stays changed, so the next save
        # writes it. Everything else takes the row's state: values from the reply, and
        # no change flag for what the call wrote. Snapshots of list/dict fields become
        # what the row holds, so an in-place change made meanwhile is still seen.
        sent_changed, tokens = sent
        cls = type(self)
        fields = cls.fields
        d = self.__dict__
        snapshots = self._obj_snapshots
        changed_fields = self._changed_fields
        tracked = cls._obj_tracked_names
        settled = sent_changed | new.keys()
        kept: set[str] = set()
        for name in settled:
            if name in tracked:  # a list, dict or object: changed in place too
                if not self._obj_field_changed(name):
                    continue
                token = tokens.get(name, _MISSING)
                if token is _MISSING or _differs_from_sent(
                    fields[name], d.get(name, _MISSING), token
                ):
                    kept.add(name)
                continue
            # Any other field changes by assignment only: _obj_field_changed and
            # _differs_from_sent, inline.
            if name not in changed_fields:
                continue
            token = tokens.get(name, _MISSING)
            if token is not _MISSING:
                value = d.get(name, _MISSING)
                if value is token or (
                    value is not _MISSING
                    and value is not None
                    and token is not None
                    and not value != token
                ):
                    continue
            kept.add(name)
        if tokens:
            snapshotted = cls._obj_snapshotted_names
            for name, token in tokens.items():
                if name in snapshotted:
                    snapshots[name] = token
        mutable = cls._obj_mutable_names
        for name, value in new.items():
            if name in mutable:
                snapshots[name] = fields[name].snapshot(value)
            if name not in kept:
                d[name] = value  # read-only fields included: the conductor's word is final
        if kept:
            settled -= kept
        changed_fields.difference_update(settled)
        for name, field in cls._obj_nested:
            if name not in settled:
                continue
            value = d.get(name)
            if value is None:
                continue
            for child in [value] if isinstance(value, VersionedObject) else value:
                child.obj_reset_changes(recursive=True)
            if field.mutable:
                snapshots[name] = field.snapshot(value)

    def _obj_set_loaded(self, name: str, value: Any) -> None:
        """Store a value that came from the database (not a change)."""
        self.__dict__[name] = value
        self._changed_fields.discard(name)
        field = self.fields[name]
        if field.mutable:
            self._obj_snapshots[name] = field.snapshot(value)

    # -- copies, equality, repr ----------------------------------------------------------

    def obj_clone(self: VO) -> VO:
        """A deep copy sharing the context (and nothing pending)."""
        return copy.deepcopy(self)

    def __deepcopy__(self: VO, memo: dict[int, Any]) -> VO:
        if self._obj_pending is not None:
            self._obj_wait_load()
        cls = type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        nd = new.__dict__
        for key, value in self.__dict__.items():
            if key == "_context":
                nd[key] = value
            elif key != "_obj_pending":
                nd[key] = copy.deepcopy(value, memo)
        return new

    def __copy__(self: VO) -> VO:
        cls = type(self)
        new = cls.__new__(cls)
        nd = new.__dict__
        nd.update((k, v) for k, v in self.__dict__.items() if k != "_obj_pending")
        nd["_changed_fields"] = set(self._changed_fields)
        nd["_obj_snapshots"] = dict(self._obj_snapshots)
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VersionedObject):
            return NotImplemented
        if self.obj_name() != other.obj_name():
            return False
        self._obj_wait_load()
        other._obj_wait_load()
        mine, theirs = self.__dict__, other.__dict__
        for name in self.fields:
            a = mine.get(name, _MISSING)
            b = theirs.get(name, _MISSING)
            if (a is _MISSING) != (b is _MISSING) or (a is not _MISSING and a != b):
                return False
        return True

    def __repr__(self) -> str:
        d = self.__dict__
        parts = [
            f"{name}={d[name]!r}" if name in d else f"{name}=<?>" for name in sorted(self.fields)
        ]
        state = d.get("_obj_pending")
        pending = "pending," if state is not None and state.load and not state.load.done() else ""
        return f"{self.obj_name()}({pending}{','.join(parts)})"


_OBJ_FROM_DATA = VersionedObject._obj_from_data.__func__  # type: ignore[attr-defined]


def _read_primitive(
    primitive: Any,
) -> tuple[type[VersionedObject], dict[str, Any], list[str] | None, int | None]:
    """Check an object primitive; return the class that reads it, its data, its change
    list and its revision.

    Raises:
        ObjectValueError: the primitive is malformed (the reason says how).
        UnsupportedObjectError: unknown name or foreign namespace.
        IncompatibleObjectVersion: no registered class reads that version.
    """
    if type(primitive) is not dict:
        raise exception.ObjectValueError(
            reason=f"an object primitive must be a dict, got {type(primitive).__name__}"
        )
    try:
        name = primitive[_KEY_NAME]
        namespace = primitive[_KEY_NAMESPACE]
        version = primitive[_KEY_VERSION]
        data = primitive[_KEY_DATA]
    except KeyError as missing:
        raise exception.ObjectValueError(
            reason=f"object primitive lacks the key {missing.args[0]!r}"
        ) from None
    changes = primitive.get(_KEY_CHANGES)
    revision = primitive.get(_KEY_REVISION)
    if revision is None and type(data) is dict:
        # An oslo.versionedobjects caller carries the revision as a field of its own
        # (see OVO_REVISION_FIELD): its primitives have no versioned_object.revision.
        revision = data.get(OVO_REVISION_FIELD)
    if len(primitive) > 4 and not _ALLOWED_KEYS.issuperset(primitive):
        # NOTE: issuperset walks the keys without building the set of extra keys (a
        # primitive with its revision has five: every reply of a get).
        extra = primitive.keys() - _ALLOWED_KEYS
        raise exception.ObjectValueError(
            reason=f"object primitive has unknown key(s) {sorted(extra)}"
        )
    if type(name) is not str or type(namespace) is not str or type(version) is not str:
        raise exception.ObjectValueError(
            reason="versioned_object.name, .namespace and .version must be strings"
        )
    if type(data) is not dict:
        raise exception.ObjectValueError(reason=f"{name}: versioned_object.data must be a dict")
    if changes is not None and (
        type(changes) is not list or not all(type(c) is str for c in changes)
    ):
        raise exception.ObjectValueError(
            reason=f"{name}: versioned_object.changes must be a list of field names"
        )
    if revision is not None and (type(revision) is not int):
        raise exception.ObjectValueError(
            reason=f"{name}: versioned_object.revision must be an integer"
        )
    objcls = VersionedObjectRegistry.lookup(name, version)
    if namespace != objcls.OBJ_PROJECT_NAMESPACE:
        raise exception.UnsupportedObjectError(
            f"Unsupported object {name!r} of namespace {namespace!r}; this process reads "
            f"namespace {objcls.OBJ_PROJECT_NAMESPACE!r}",
            objtype=f"{namespace}.{name}",
        )
    return objcls, data, changes, revision


def _sent_token(field: obj_fields.Field, value: Any) -> Any:
    """A copy of ``value`` as sent, for ``_differs_from_sent`` (and, for lists and dicts,
    the snapshot of what the row holds once the call succeeded)."""
    if value is None:
        return None
    if field.is_object:
        return field.to_primitive(value)
    if field.mutable:
        return field.snapshot(value)
    return value


def _differs_from_sent(field: obj_fields.Field, value: Any, token: Any) -> bool:
    if value is _MISSING:
        return True
    if value is None or token is None:
        return value is not token
    if field.is_object:
        return bool(field.to_primitive(value) != token)
    if field.mutable:
        return field.changed_since(value, token)
    return value is not token and bool(value != token)


def _child_to_primitive(child: Any, version: str | None, manifest: dict[str, str] | None) -> Any:
    if version is None or version_tuple(version) >= version_tuple(child.VERSION):
        version = None  # never ask a child for a version above its own
    return child.obj_to_primitive(target_version=version, version_manifest=manifest)
