"""The registry of versioned object classes, by name and version.

Several versions of one name can be registered (a process may keep an old class
around to read old primitives). Lookup of ``(name, version)`` gives the exact version
if registered, else the highest registered minor of the same major that is at least
the requested one. The third part of an ``X.Y.Z`` version never affects compatibility.

The registry is process-wide (``VersionedObjectRegistry.register`` is a classmethod, as
in oslo.versionedobjects); tests take a :meth:`~VersionedObjectRegistry.snapshot` and
:meth:`~VersionedObjectRegistry.restore` it.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from objects import exception

if TYPE_CHECKING:
    from objects.versioned import VersionedObject

__all__ = ["RegistryMemo", "VersionedObjectRegistry", "obj_tree_get_versions", "version_tuple"]

_VERSION_RE = re.compile(r"\d+\.\d+(\.\d+)?")

T = TypeVar("T", bound=type)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@functools.lru_cache(maxsize=1024)
def version_tuple(version: str) -> tuple[int, int]:
    """``"1.2"`` or ``"1.2.7"`` as ``(1, 2)``: the part that decides compatibility.

    Raises:
        ObjectValueError: not a version string.
    """
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise exception.ObjectValueError(
            reason=f"invalid object version {version!r}; expected 'X.Y' or 'X.Y.Z'"
        )
    parts = version.split(".")
    return int(parts[0]), int(parts[1])


class _State:
    """Everything the registry knows; copied whole by snapshot()."""

    __slots__ = ("classes", "lookups", "manifests")

    def __init__(self, classes: dict[str, list[type[VersionedObject]]]) -> None:
        # name -> classes, newest first
        self.classes = classes
        # caches, rebuilt lazily after every change
        self.lookups: dict[tuple[str, str], type[VersionedObject]] = {}
        self.manifests: dict[str, dict[str, str]] = {}


class VersionedObjectRegistry:
    """Registers versioned object classes and finds the class for a wire primitive.

    Use as a decorator::

        @VersionedObjectRegistry.register
        class Instance(VersionedObject):
            VERSION = "1.2"
            ...

    Registering a class again is a no-op; registering another class with the same name
    and version replaces the earlier one.
    """

    _state = _State({})
    _lock = threading.RLock()

    @classmethod
    def register(cls, obj_cls: T) -> T:
        """Register ``obj_cls`` (usable as a class decorator). Returns it unchanged."""
        # Duck-typed, so the registry needs nothing of the class's module (no import cycle).
        if not (
            isinstance(obj_cls, type)
            and all(hasattr(obj_cls, a) for a in ("obj_name", "VERSION", "_obj_prepare_class"))
        ):
            raise TypeError(f"only VersionedObject subclasses can be registered, got {obj_cls!r}")
        klass: Any = obj_cls
        name = klass.obj_name()
        version = klass.VERSION
        version_tuple(version)  # refuse a malformed VERSION at registration
        klass._obj_prepare_class()
        with cls._lock:
            state = cls._state
            current = state.classes.get(name, [])
            if any(c is obj_cls for c in current):
                return obj_cls
            kept = [c for c in current if c.VERSION != version]
            kept.append(obj_cls)
            kept.sort(key=lambda c: (version_tuple(c.VERSION), c.VERSION), reverse=True)
            classes = dict(state.classes)
            classes[name] = kept
            # A fresh state object keeps readers lock-free: they see the old or the new one.
            cls._state = _State(classes)
        return obj_cls

    @classmethod
    def unregister(cls, obj_cls: type[VersionedObject]) -> None:
        """Forget ``obj_cls`` (tests and plugins); unknown classes are ignored."""
        with cls._lock:
            name = obj_cls.obj_name()
            current = cls._state.classes.get(name, [])
            kept = [c for c in current if c is not obj_cls]
            classes = dict(cls._state.classes)
            if kept:
                classes[name] = kept
            else:
                classes.pop(name, None)
            cls._state = _State(classes)

    @classmethod
    def obj_classes(cls) -> dict[str, list[type[VersionedObject]]]:
        """A copy of ``{name: [classes, newest first]}``."""
        return {name: list(classes) for name, classes in cls._state.classes.items()}

    @classmethod
    def is_registered(cls, objname: str) -> bool:
        """Whether any class is registered under ``objname``."""
        return bool(cls._state.classes.get(objname))

    @classmethod
    def find_newest(cls, objname: str) -> type[VersionedObject] | None:
        """The newest registered class of ``objname``, or None."""
        classes = cls._state.classes.get(objname)
        return classes[0] if classes else None

    @classmethod
    def newest(cls, objname: str) -> type[VersionedObject]:
        """The newest registered class of ``objname``.

        Raises:
            UnsupportedObjectError: nothing registered under that name.
        """
        classes = cls._state.classes.get(objname)
        if not classes:
            raise exception.UnsupportedObjectError(
                f"Unsupported object type {objname!r}: no class is registered under that name",
                objtype=objname,
            )
        return classes[0]

    @classmethod
    def lookup(cls, objname: str, version: str) -> type[VersionedObject]:
        """The class that reads ``objname`` at ``version``.

        Raises:
            UnsupportedObjectError: nothing registered under that name.
            IncompatibleObjectVersion: the version is newer than ours or of another major.
            ObjectValueError: ``version`` is not a version string.
        """
        state = cls._state
        found = state.lookups.get((objname, version))
        if found is not None:
            return found
        classes = state.classes.get(objname)
        if not classes:
            raise exception.UnsupportedObjectError(
                f"Unsupported object type {objname!r}: no class is registered under that name",
                objtype=objname,
            )
        major, minor = version_tuple(version)
        match: type[VersionedObject] | None = None
        for candidate in classes:  # newest first
            if candidate.VERSION == version:
                match = candidate
                break
            c_major, c_minor = version_tuple(candidate.VERSION)
            if match is None and c_major == major and c_minor >= minor:
                match = candidate
        if match is None:
            supported = classes[0].VERSION
            raise exception.IncompatibleObjectVersion(
                f"Version {version} of {objname} is not supported, supported version is "
                f"{supported}",
                objname=objname,
                objver=version,
                supported=supported,
            )
        state.lookups[(objname, version)] = match
        return match

    @classmethod
    def state(cls) -> object:
        """An opaque token that is replaced (never changed) whenever a class is registered
        or unregistered: a cache of what was found in the registry holds while it is the
        same object."""
        return cls._state

    @classmethod
    def snapshot(cls) -> Any:
        """An opaque copy of the registry's contents, for :meth:`restore`."""
        return {name: list(classes) for name, classes in cls._state.classes.items()}

    @classmethod
    def restore(cls, snapshot: Any) -> None:
        """Put back the contents a :meth:`snapshot` saw."""
        with cls._lock:
            cls._state = _State({name: list(classes) for name, classes in snapshot.items()})

    @classmethod
    def _manifest(cls, objname: str) -> dict[str, str]:
        """Cached version manifest of ``objname``'s tree; callers must not mutate it."""
        state = cls._state
        found = state.manifests.get(objname)
        if found is None:
            found = _tree_versions(state.classes, objname, {})
            state.manifests[objname] = found
        return found


def _tree_versions(
    classes: dict[str, list[type[VersionedObject]]], objname: str, tree: dict[str, str]
) -> dict[str, str]:
    if objname in tree:
        return tree
    found = classes.get(objname)
    if not found:
        raise exception.UnsupportedObjectError(
            f"Unsupported object type {objname!r}: it is used as a nested object but no class "
            "is registered under that name",
            objtype=objname,
        )
    obj_cls = found[0]
    tree[objname] = obj_cls.VERSION
    for field in obj_cls.fields.values():
        child = getattr(field, "objname", None)
        if child is not None:
            _tree_versions(classes, child, tree)
    return tree


def obj_tree_get_versions(objname: str) -> dict[str, str]:
    """``{name: version}`` of ``objname`` and every object nested in it (newest classes).

    This is the version manifest a caller sends so the other side answers at versions
    it can read.
    """
    return dict(VersionedObjectRegistry._manifest(objname))


class RegistryMemo(Generic[K, V]):
    """What the registry says of something (a class check by object name, or by name,
    method and version), kept while the registry stays in one state and asked again once
    it changed.

    NOTE: like ``record_to_primitive``'s plans, this holds while the classes' methods do:
    a method replaced on a registered class, rather than a class registered in its place,
    is not seen.
    """

    def __init__(self) -> None:
        self._memo: tuple[object, dict[K, V]] = (None, {})

    def current(self) -> dict[K, V]:
        """The answers so far for the registry's present state (callers add to it)."""
        state = VersionedObjectRegistry.state()
        known, found = self._memo
        if known is not state:
            found = {}
            self._memo = (state, found)
        return found
