"""The oslo.versionedobjects names, in one place: ``from objects import base``.

A facade: every name is defined in a module of its own and only re-exported here, so
nothing inside ``objects`` imports this module (users and the built-in domain do)::

    versioned.py   VersionedObject (fields, changes, primitives, backports)
    lists.py       ObjectListBase
    registry.py    VersionedObjectRegistry, obj_tree_get_versions
    remoting.py    remotable, remotable_classmethod, the indirection API hook
    serializer.py  VersionedObjectSerializer
"""

from __future__ import annotations

from objects.lists import ObjectListBase
from objects.registry import VersionedObjectRegistry, obj_tree_get_versions
from objects.remoting import (
    get_indirection_api,
    local_execution,
    remotable,
    remotable_classmethod,
    set_indirection_api,
)
from objects.serializer import VersionedObjectSerializer
from objects.versioned import VersionedObject

__all__ = [
    "ObjectListBase",
    "VersionedObject",
    "VersionedObjectRegistry",
    "VersionedObjectSerializer",
    "get_indirection_api",
    "local_execution",
    "obj_tree_get_versions",
    "remotable",
    "remotable_classmethod",
    "set_indirection_api",
]
