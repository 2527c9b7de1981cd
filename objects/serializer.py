"""``VersionedObjectSerializer``: objects to RPC primitives and back (re-exported by base)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from objects import exception
from objects._primitive import _KEY_NAME
from objects.context import RequestContext
from objects.registry import VersionedObjectRegistry, obj_tree_get_versions
from objects.remoting import active_api
from objects.versioned import VersionedObject

if TYPE_CHECKING:
    from objects.context import Context

__all__ = ["VersionedObjectSerializer"]

# Values that are their own primitive. Containers holding only these (or, when sending,
# lists of them) are passed on as they are rather than copied: the transport encodes them
# right away and keeps no copy.
_SCALARS = frozenset((str, int, float, bool, type(None)))


def _all_scalars(values: Iterable[Any]) -> bool:
    scalars = _SCALARS
    for value in values:
        if type(value) not in scalars:
            return False
    return True


def json_scalars(values: Iterable[Any]) -> bool:
    """Whether every value is a ``str``, ``int``, ``bool``, ``None`` or finite ``float``
    (exactly those types): what every JSON encoder writes alike and reads back equal."""
    for value in values:
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            continue
        if kind is float and value - value == 0.0:  # NaN and the infinities are not
            continue
        return False
    return True


def _all_plain(values: Iterable[Any]) -> bool:
    """Whether every value is a scalar or a list of scalars: nothing in them to turn (an
    ``object_action``'s updates, its change list included, are such a dict)."""
    scalars = _SCALARS
    for value in values:
        kind = type(value)
        if kind not in scalars and (kind is not list or not _all_scalars(value)):
            return False
    return True


class VersionedObjectSerializer:
    """Turns versioned objects into primitives for RPC and back.

    Has the four methods of ``transport.serializer.Serializer`` (duck typing: objects
    never imports transport). Lists, tuples and dicts are walked, so objects nested in
    arguments and results travel too. An object too new for this process is sent back
    through the indirection API's ``object_backport_versions`` (oslo's behaviour).
    """

    OBJ_BASE_CLASS: ClassVar[type[VersionedObject]] = VersionedObject

    #: Ask the indirection API to backport an object too new for this process. A
    #: conductor, the end of the line, turns it off: it must never call out (in a process
    #: that also ``connect()``-ed, that would be calling itself).
    BACKPORT_THROUGH_INDIRECTION: ClassVar[bool] = True

    def serialize_entity(self, context: Context | None, entity: Any) -> Any:
        kind = type(entity)
        if kind in _SCALARS:
            return entity
        if isinstance(entity, VersionedObject):
            return entity.obj_to_primitive()
        if isinstance(entity, dict):
            if _KEY_NAME in entity:
                # Already an object primitive (the conductor replies with primitives
                # backported to the caller's versions): nothing inside needs turning.
                return entity
            if kind is dict and _all_plain(entity.values()):
                return entity  # a manifest, plain kwargs, updates: nothing to turn
            return {key: self.serialize_entity(context, value) for key, value in entity.items()}
        if isinstance(entity, (list, tuple, set, frozenset)):
            if kind is list and _all_plain(entity):
                return entity
            return [self.serialize_entity(context, value) for value in entity]
        return entity

    def deserialize_entity(self, context: Context | None, entity: Any) -> Any:
        kind = type(entity)
        if kind in _SCALARS:
            return entity
        if isinstance(entity, dict):
            if _KEY_NAME in entity:
                return self._process_object(context, entity)
            if kind is dict and _all_scalars(entity.values()):
                return entity
            return {key: self.deserialize_entity(context, value) for key, value in entity.items()}
        if isinstance(entity, (list, tuple)):
            if kind is list and _all_scalars(entity):
                return entity
            return [self.deserialize_entity(context, value) for value in entity]
        return entity

    def _process_object(self, context: Context | None, primitive: dict[str, Any]) -> Any:
        try:
            return self.OBJ_BASE_CLASS.obj_from_primitive(primitive, context)
        except exception.IncompatibleObjectVersion:
            if not self.BACKPORT_THROUGH_INDIRECTION:
                raise
            api = active_api()
            name = primitive.get(_KEY_NAME)
            if api is None or not isinstance(name, str):
                raise
            if not VersionedObjectRegistry.is_registered(name):
                raise
            manifest = obj_tree_get_versions(name)
        result = api.object_backport_versions(context, primitive, manifest)
        if isinstance(result, dict) and _KEY_NAME in result:
            result = self.OBJ_BASE_CLASS.obj_from_primitive(result, context)
        return result

    def serialize_context(self, context: Context | dict[str, Any] | None) -> dict[str, Any]:
        if context is None:
            return {}
        if isinstance(context, dict):
            return context
        return context.to_dict()

    def deserialize_context(self, context: dict[str, Any]) -> RequestContext:
        return RequestContext.from_dict(context)
