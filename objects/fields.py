"""Typed fields of versioned objects.

A field coerces values at assignment (a bad value raises ``ValueError`` or ``TypeError``
and the object keeps its old value), turns values into JSON-compatible primitives for
the wire and back, and describes itself for the version fingerprint.

Every field takes ``nullable=`` (``None`` is allowed), ``default=`` (applied by
``obj_set_defaults``, never over a set value) and ``read_only=`` (the value can be set
once; only the conductor's reply may change it afterwards).

List and dict fields are *mutable*: the object snapshots them when its changes are
reset, so ``inst.tags.append("x")`` shows up in ``obj_what_changed()``.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from objects.registry import VersionedObjectRegistry

if TYPE_CHECKING:
    from objects.context import Context

__all__ = [
    "UNSET",
    "BooleanField",
    "DateTimeField",
    "DictOfStringsField",
    "EnumField",
    "Field",
    "FloatField",
    "IntegerField",
    "ListOfObjectsField",
    "ListOfStringsField",
    "ObjectField",
    "StringField",
    "UUIDField",
]


class _Unset:
    """Marker for "no default" (``None`` is a legitimate default of nullable fields)."""

    _instance: ClassVar[_Unset | None] = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __copy__(self) -> _Unset:
        return self

    def __deepcopy__(self, memo: Any) -> _Unset:
        return self


UNSET: Any = _Unset()


class Field:
    """Base of all fields.

    Args:
        nullable: ``None`` is a valid value.
        default: value ``obj_set_defaults`` gives an unset field (copied for lists/dicts).
        read_only: the field may be set once; assigning it again raises
            ``objects.exception.ReadOnlyFieldError``.

    Subclasses implement ``_coerce`` (Python value in, canonical value out) and, when the
    wire form differs, ``_to_primitive``/``_from_primitive``.
    """

    __slots__ = ("nullable", "default", "read_only")

    #: Stable name used in fingerprints (never ``repr``: that is not stable).
    type_name: ClassVar[str] = "Field"
    #: Value is a container changed in place; the object tracks it by snapshot.
    mutable: ClassVar[bool] = False
    #: Holds versioned objects (nested backports apply).
    is_object: ClassVar[bool] = False

    def __init__(self, nullable: bool = False, default: Any = UNSET, read_only: bool = False):
        self.nullable = bool(nullable)
        self.read_only = bool(read_only)
        if default is not UNSET and default is not None:
            default = self._coerce(default)
        elif default is None and not nullable:
            raise ValueError(f"{type(self).__name__}: default None needs nullable=True")
        self.default = default

    @property
    def has_default(self) -> bool:
        return self.default is not UNSET

    def get_default(self) -> Any:
        """A fresh copy of the default (mutable defaults are never shared)."""
        if self.default is UNSET:
            raise ValueError(f"{type(self).__name__} has no default")
        return self.copy_value(self.default)

    def copy_value(self, value: Any) -> Any:
        return value

    # -- assignment ---------------------------------------------------------------

    def coerce(self, value: Any) -> Any:
        """The canonical value for ``value``. Raises ValueError/TypeError."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError("None is not allowed (the field is not nullable)")
        return self._coerce(value)

    def _coerce(self, value: Any) -> Any:
        return value

    # -- wire -----------------------------------------------------------------------

    def to_primitive(self, value: Any) -> Any:
        """JSON-compatible form of a (coerced) value."""
        if value is None:
            return None
        return self._to_primitive(value)

    def _to_primitive(self, value: Any) -> Any:
        return value

    def from_primitive(self, value: Any, context: Context | None = None) -> Any:
        """Value from its wire form; malformed input raises ValueError/TypeError."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError("None is not allowed (the field is not nullable)")
        return self._from_primitive(value, context)

    def _from_primitive(self, value: Any, context: Context | None) -> Any:
        return self._coerce(value)

    # -- change tracking of mutable values ---------------------------------------------

    def snapshot(self, value: Any) -> Any:
        """What ``changed_since`` compares against (only called for mutable fields)."""
        return value

    def changed_since(self, value: Any, snapshot: Any) -> bool:
        return bool(value != snapshot)

    # -- fingerprint ------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """A JSON-compatible, Python-version independent description of this field."""
        if self.default is UNSET:
            default: Any = "<unset>"
        else:
            default = {"value": self.to_primitive(self.default)}
        return {
            "type": self.type_name,
            "nullable": self.nullable,
            "default": default,
            "read_only": self.read_only,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(nullable={self.nullable}, default={self.default!r}, "
            f"read_only={self.read_only})"
        )


class IntegerField(Field):
    """An ``int``. Accepts integral floats and numeric strings; refuses bools."""

    __slots__ = ()
    type_name = "Integer"

    def _coerce(self, value: Any) -> Any:
        if type(value) is int:
            return value
        if isinstance(value, bool):
            raise TypeError(f"expected an integer, got bool {value!r}")
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"expected an integer, got {value!r}")
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise ValueError(f"expected an integer, got {value!r}") from None
        raise TypeError(f"expected an integer, got {type(value).__name__}")


class FloatField(Field):
    """A ``float``. Accepts ints and numeric strings; refuses bools."""

    __slots__ = ()
    type_name = "Float"

    def _coerce(self, value: Any) -> Any:
        if type(value) is float:
            return value
        if isinstance(value, bool):
            raise TypeError(f"expected a number, got bool {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"expected a number, got {value!r}") from None
        raise TypeError(f"expected a number, got {type(value).__name__}")


def _coerce_string(value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"expected a string, got {type(value).__name__}")


class StringField(Field):
    """A ``str``. Numbers are converted; bytes, bools and other types are refused."""

    __slots__ = ()
    type_name = "String"

    def _coerce(self, value: Any) -> Any:
        return _coerce_string(value)


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


class BooleanField(Field):
    """A ``bool``. Accepts 0/1 and the strings true/false, yes/no, on/off, 1/0."""

    __slots__ = ()
    type_name = "Boolean"

    def _coerce(self, value: Any) -> Any:
        if value is True or value is False:
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            low = value.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(f"expected a boolean, got {value!r}")
        raise TypeError(f"expected a boolean, got {type(value).__name__}")


_UTC = dt.UTC


def utc_text(value: dt.datetime) -> str:
    """The wire text of a datetime: ``isoformat(timespec="microseconds")``.

    NOTE: for an aware UTC datetime with microseconds orjson writes the same text (RFC
    3339, ``+00:00``) in a third of isoformat's time; a get's two or three timestamps were
    a twentieth of its row's way to a primitive."""
    if value.microsecond and type(value) is dt.datetime and value.tzinfo is _UTC:
        return orjson.dumps(value)[1:-1].decode()
    return value.isoformat(timespec="microseconds")


class DateTimeField(Field):
    """A timezone-aware ``datetime`` in UTC.

    Naive values are taken as UTC; aware ones are converted to UTC. The wire form is
    ISO 8601 with microseconds and offset (``2026-11-22T02:03:25.123456+00:00``); the
    ``...Z`` form oslo sends is read too.
    """

    __slots__ = ()
    type_name = "DateTime"

    def _coerce(self, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            tz = value.tzinfo
            if tz is None:
                return value.replace(tzinfo=_UTC)
            if tz is _UTC:
                return value
            return value.astimezone(_UTC)
        if isinstance(value, str):
            return self._parse(value)
        raise TypeError(f"expected a datetime or ISO 8601 string, got {type(value).__name__}")

    @staticmethod
    def _parse(value: str) -> dt.datetime:
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"expected an ISO 8601 datetime, got {value!r}") from None
        tz = parsed.tzinfo
        if tz is _UTC:  # what our own primitives and oslo's "Z" parse to
            return parsed
        if tz is None:
            return parsed.replace(tzinfo=_UTC)
        if parsed.utcoffset() == dt.timedelta(0):
            return parsed.replace(tzinfo=_UTC)
        return parsed.astimezone(_UTC)

    def _to_primitive(self, value: Any) -> Any:
        return utc_text(value)

    def _from_primitive(self, value: Any, context: Context | None) -> Any:
        if not isinstance(value, str):
            raise TypeError(f"expected an ISO 8601 string, got {type(value).__name__}")
        return self._parse(value)


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class UUIDField(Field):
    """A UUID, stored as its canonical lower-case string. Invalid strings are refused."""

    __slots__ = ()
    type_name = "UUID"

    def _coerce(self, value: Any) -> Any:
        if isinstance(value, uuid.UUID):
            return str(value)
        if not isinstance(value, str):
            raise TypeError(f"expected a UUID, got {type(value).__name__}")
        if _CANONICAL_UUID.fullmatch(value):
            return value
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"expected a UUID, got {value!r}") from None


class EnumField(Field):
    """A string out of ``valid_values``.

    Args:
        valid_values: the allowed strings, in a stable order (it is part of the fingerprint).
    """

    __slots__ = ("valid_values", "_valid")
    type_name = "Enum"

    def __init__(
        self,
        valid_values: Iterable[str],
        nullable: bool = False,
        default: Any = UNSET,
        read_only: bool = False,
    ):
        self.valid_values: tuple[str, ...] = tuple(valid_values)
        if not self.valid_values or not all(isinstance(v, str) for v in self.valid_values):
            raise ValueError("EnumField needs a non-empty list of strings")
        self._valid = frozenset(self.valid_values)
        super().__init__(nullable=nullable, default=default, read_only=read_only)

    def _coerce(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise TypeError(
                f"expected one of {list(self.valid_values)}, got {type(value).__name__}"
            )
        if value not in self._valid:
            raise ValueError(f"{value!r} is not one of {list(self.valid_values)}")
        return str(value)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "valid_values": list(self.valid_values)}


class ListOfStringsField(Field):
    """A list of strings; a new list is made at assignment, in-place changes are tracked."""

    __slots__ = ()
    type_name = "ListOfStrings"
    mutable = True

    def _coerce(self, value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list of strings, got {type(value).__name__}")
        return [_coerce_string(item) for item in value]

    def _to_primitive(self, value: Any) -> Any:
        return list(value)

    def copy_value(self, value: Any) -> Any:
        return list(value)

    def snapshot(self, value: Any) -> Any:
        return list(value) if value is not None else None


class DictOfStringsField(Field):
    """A dict of string keys to string values; in-place changes are tracked."""

    __slots__ = ()
    type_name = "DictOfStrings"
    mutable = True

    def _coerce(self, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a dict of strings, got {type(value).__name__}")
        out: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"dict keys must be strings, got {type(key).__name__}")
            out[key] = _coerce_string(item)
        return out

    def _to_primitive(self, value: Any) -> Any:
        return dict(value)

    def copy_value(self, value: Any) -> Any:
        return dict(value)

    def snapshot(self, value: Any) -> Any:
        return dict(value) if value is not None else None


def _is_object(value: Any) -> bool:
    # Duck-typed: fields cannot import the VersionedObject class (it imports fields).
    return callable(getattr(value, "obj_name", None)) and hasattr(value, "obj_to_primitive")


def _check_object(value: Any, objname: str) -> Any:
    if not _is_object(value) or value.obj_name() != objname:
        got = value.obj_name() if _is_object(value) else type(value).__name__
        raise TypeError(f"expected a {objname} object, got {got}")
    return value


def _object_from_primitive(value: Any, objname: str, context: Context | None) -> Any:
    if _is_object(value):
        return _check_object(value, objname)
    if not isinstance(value, dict):
        raise TypeError(f"expected a {objname} primitive, got {type(value).__name__}")
    # Any registered class reads a primitive: it resolves the class the primitive names
    # (name, namespace, version) through the registry.
    obj = VersionedObjectRegistry.newest(objname).obj_from_primitive(value, context)
    if obj.obj_name() != objname:
        raise ValueError(f"expected a {objname} primitive, got {obj.obj_name()}")
    return obj


class ObjectField(Field):
    """A nested versioned object named ``objname`` (resolved through the registry).

    Args:
        objname: the ``obj_name()`` of the nested object's class.
    """

    __slots__ = ("objname",)
    type_name = "Object"
    is_object = True

    def __init__(
        self, objname: str, nullable: bool = False, default: Any = UNSET, read_only: bool = False
    ):
        self.objname = objname
        super().__init__(nullable=nullable, default=default, read_only=read_only)

    def _coerce(self, value: Any) -> Any:
        return _check_object(value, self.objname)

    def _to_primitive(self, value: Any) -> Any:
        return value.obj_to_primitive()

    def _from_primitive(self, value: Any, context: Context | None) -> Any:
        return _object_from_primitive(value, self.objname, context)

    def copy_value(self, value: Any) -> Any:
        return value.obj_clone() if value is not None else None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "objname": self.objname}


class ListOfObjectsField(Field):
    """A list of versioned objects named ``objname``; membership changes are tracked."""

    __slots__ = ("objname",)
    type_name = "ListOfObjects"
    mutable = True
    is_object = True

    def __init__(
        self, objname: str, nullable: bool = False, default: Any = UNSET, read_only: bool = False
    ):
        self.objname = objname
        super().__init__(nullable=nullable, default=default, read_only=read_only)

    def _coerce(self, value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise TypeError(
                f"expected a list of {self.objname} objects, got {type(value).__name__}"
            )
        objname = self.objname
        return [_check_object(item, objname) for item in value]

    def _to_primitive(self, value: Any) -> Any:
        return [item.obj_to_primitive() for item in value]

    def _from_primitive(self, value: Any, context: Context | None) -> Any:
        if not isinstance(value, list):
            raise TypeError(
                f"expected a list of {self.objname} primitives, got {type(value).__name__}"
            )
        objname = self.objname
        return [_object_from_primitive(item, objname, context) for item in value]

    def copy_value(self, value: Any) -> Any:
        return [item.obj_clone() for item in value]

    def snapshot(self, value: Any) -> Any:
        return list(value) if value is not None else None

    def changed_since(self, value: Any, snapshot: Any) -> bool:
        # Identity, not equality: comparing objects field by field would cost a deep walk,
        # and changes inside the children are reported by the children themselves.
        if value is None or snapshot is None:
            return value is not snapshot
        if len(value) != len(snapshot):
            return True
        return any(a is not b for a, b in zip(value, snapshot, strict=True))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "objname": self.objname}


# -- one-call conversions for the hot paths ----------------------------------------------
#
# Reading a primitive through ``field.from_primitive`` costs three or four method calls per
# field. Objects precompile, per class, one function per field instead: for the built-in
# field types (exactly those types: a subclass may override any step) it accepts the
# common, already canonical value in one step and hands anything else to the generic path,
# so errors and conversions stay those of ``from_primitive``/``coerce``.

Reader = Callable[[Any, "Context | None"], Any]
Writer = Callable[[Any], Any]

_match_uuid = _CANONICAL_UUID.fullmatch


def plain_strings(value: Any) -> bool:
    """Whether ``value`` is a list of plain ``str`` (a ListOfStringsField's canonical value)."""
    if type(value) is not list:
        return False
    for item in value:
        if type(item) is not str:
            return False
    return True


def plain_string_dict(value: Any) -> bool:
    """Whether ``value`` is a dict of plain ``str`` to ``str`` (a DictOfStringsField's
    canonical value)."""
    if type(value) is not dict:
        return False
    for key, item in value.items():
        if type(key) is not str or type(item) is not str:
            return False
    return True


def fast_reader(field: Field, fallback: Reader, source: str = "wire") -> Reader:
    """``fallback`` (``(value, context) -> value``) with a shortcut for canonical values.

    Args:
        field: the field the values belong to.
        fallback: the generic conversion (``field.from_primitive`` or a record reader).
        source: ``"wire"`` (JSON values: datetimes are strings) or ``"record"`` (values
            a storage typed: datetimes are ``datetime``).
    """
    kind = type(field)
    if kind is UUIDField:

        def read_uuid(value: Any, context: Context | None) -> Any:
            if type(value) is str and _match_uuid(value):
                return value
            return fallback(value, context)

        return read_uuid
    if kind is EnumField:
        valid = field._valid  # type: ignore[attr-defined]

        def read_enum(value: Any, context: Context | None) -> Any:
            if type(value) is str and value in valid:
                return value
            return fallback(value, context)

        return read_enum
    if kind is DateTimeField:
        if source == "wire":
            parse = DateTimeField._parse

            def read_iso(value: Any, context: Context | None) -> Any:
                if type(value) is str:
                    return parse(value)
                return fallback(value, context)

            return read_iso

        def read_datetime(value: Any, context: Context | None) -> Any:
            if type(value) is dt.datetime and value.tzinfo is _UTC:
                return value
            return fallback(value, context)

        return read_datetime
    if kind is ObjectField and source == "wire":
        objname = field.objname  # type: ignore[attr-defined]
        newest = VersionedObjectRegistry.newest

        def read_object(value: Any, context: Context | None) -> Any:
            # NOTE: what from_primitive does for a plain dict (never an object: a dict has
            # no obj_name), without its four calls in between (a nested Flavor per get).
            if type(value) is dict:
                obj = newest(objname).obj_from_primitive(value, context)
                if obj.obj_name() != objname:
                    raise ValueError(f"expected a {objname} primitive, got {obj.obj_name()}")
                return obj
            return fallback(value, context)

        return read_object
    if kind is ListOfStringsField:

        def read_strings(value: Any, context: Context | None) -> Any:
            if plain_strings(value):
                return value.copy()  # never share the caller's list
            return fallback(value, context)

        return read_strings
    if kind is DictOfStringsField:

        def read_string_dict(value: Any, context: Context | None) -> Any:
            if plain_string_dict(value):
                return value.copy()
            return fallback(value, context)

        return read_string_dict
    return fallback


def _iso(value: Any) -> Any:
    return None if value is None else value.isoformat(timespec="microseconds")


def _copy_list(value: Any) -> Any:
    return None if value is None else list(value)


def _copy_dict(value: Any) -> Any:
    return None if value is None else dict(value)


#: Built-in fields whose primitive is the value itself.
_IDENTITY_ON_WIRE = frozenset(
    (IntegerField, StringField, BooleanField, FloatField, UUIDField, EnumField)
)
_WRITERS: dict[type[Field], Writer] = {
    DateTimeField: _iso,
    ListOfStringsField: _copy_list,
    DictOfStringsField: _copy_dict,
}


def fast_writer(field: Field) -> Writer | None:
    """``field.to_primitive`` as one call; ``None`` when the primitive is the value itself."""
    kind = type(field)
    if kind in _IDENTITY_ON_WIRE:
        return None
    writer = _WRITERS.get(kind)
    return field.to_primitive if writer is None else writer
