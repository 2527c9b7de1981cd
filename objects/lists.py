"""``ObjectListBase``: a versioned object that is a list of objects (re-exported by base)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from objects import fields as obj_fields
from objects.versioned import VersionedObject

if TYPE_CHECKING:
    from objects.context import Context

__all__ = ["ObjectListBase"]


class ObjectListBase(VersionedObject):
    """A versioned list of objects in the field ``objects``.

    Subclasses set ``fields = {"objects": ListOfObjectsField("Name")}``. Behaves like a
    sequence: ``len``, iteration, indexing, ``in``; slicing returns the same list type,
    and ``+`` of two lists of the same type makes a new one.

    ``child_versions`` (``{list_version: child_version}``) is oslo's older way to name
    child versions; it is used when ``obj_relationships`` has no rule for ``objects``.
    """

    fields: ClassVar[dict[str, obj_fields.Field]] = {
        "objects": obj_fields.ListOfObjectsField("VersionedObject")
    }
    child_versions: ClassVar[dict[str, str]] = {}

    def __init__(self, context: Context | None = None, **values: Any) -> None:
        super().__init__(context, **values)
        if "objects" not in values:
            self.__dict__["objects"] = []
            self._obj_snapshots["objects"] = []

    def _obj_default_relationship(self, name: str) -> list[tuple[str, str]] | None:
        if name == "objects" and self.child_versions:
            return list(self.child_versions.items())
        return None

    def __len__(self) -> int:
        return len(self.objects)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.objects)

    def __contains__(self, value: object) -> bool:
        return value in self.objects

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            new = type(self)(self._context)
            new._obj_set_loaded("objects", self.objects[index])
            return new
        return self.objects[index]

    def __add__(self, other: Any) -> Any:
        if type(other) is type(self):
            return type(self)(self._context, objects=self.objects + other.objects)
        if isinstance(other, list):
            return self.objects + other
        return NotImplemented

    def __radd__(self, other: Any) -> Any:
        if isinstance(other, list):
            return other + self.objects
        return NotImplemented

    def count(self, value: Any) -> int:
        return self.objects.count(value)  # type: ignore[no-any-return]

    def index(self, value: Any) -> int:
        return self.objects.index(value)  # type: ignore[no-any-return]

    # NOTE: VersionedObject sets __hash__ = None; a list with __eq__ stays unhashable too.
