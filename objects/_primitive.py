"""The keys of an object primitive (oslo.versionedobjects' wire form), in one place for the
modules that build or read one (``versioned``, ``persistent``, ``futures``, ``serializer``).
Imports nothing of ``objects``."""

from __future__ import annotations

from typing import Any

_KEY_NAME = "versioned_object.name"
_KEY_NAMESPACE = "versioned_object.namespace"
_KEY_VERSION = "versioned_object.version"
_KEY_DATA = "versioned_object.data"
_KEY_CHANGES = "versioned_object.changes"
_KEY_REVISION = "versioned_object.revision"


def primitive_head(cls: Any, version: str, data: dict[str, Any]) -> dict[str, Any]:
    """A primitive of ``cls`` at ``version`` around ``data``: its four required keys, in
    oslo's order (changes and revision, when there are any, are added after them)."""
    return {
        _KEY_NAME: cls.obj_name(),
        _KEY_NAMESPACE: cls.OBJ_PROJECT_NAMESPACE,
        _KEY_VERSION: version,
        _KEY_DATA: data,
    }
