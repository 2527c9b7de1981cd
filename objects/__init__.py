"""Versioned domain objects persisted through a conductor.

Typical use in a compute process::

    import conductor, objects
    from objects.context import RequestContext

    objects.register_all()
    conductor.connect("amqp://guest:guest@127.0.0.1:5672//")
    ctx = RequestContext(user_id="u1")
    inst = objects.Instance.get_async(ctx, 42)   # a pending Instance, returns at once
    inst.wait()
    inst.host = "node-7"
    inst.save_async()
    objects.wait_all([inst])

After :func:`register_all`, every registered object class is an attribute of this
package under its ``obj_name()`` (the newest registered version): ``objects.Instance``,
``objects.InstanceList``, ``objects.Flavor``, ``objects.ComputeNode``.
"""

from __future__ import annotations

from typing import Any

from objects import base, exception, fields
from objects.base import (
    ObjectListBase,
    VersionedObject,
    VersionedObjectRegistry,
    VersionedObjectSerializer,
    get_indirection_api,
    local_execution,
    obj_tree_get_versions,
    remotable,
    remotable_classmethod,
    set_indirection_api,
)
from objects.context import RequestContext
from objects.futures import ObjectFuture, wait_all

__all__ = [
    "ObjectFuture",
    "ObjectListBase",
    "RequestContext",
    "VersionedObject",
    "VersionedObjectRegistry",
    "VersionedObjectSerializer",
    "base",
    "exception",
    "fields",
    "get_indirection_api",
    "local_execution",
    "obj_tree_get_versions",
    "register_all",
    "remotable",
    "remotable_classmethod",
    "set_indirection_api",
    "wait_all",
]


def register_all() -> None:
    """Register the built-in domain: Flavor, Instance, InstanceList, ComputeNode.

    Idempotent. Importing ``objects`` registers nothing; call this once at start-up.
    """
    from objects.compute_node import ComputeNode
    from objects.flavor import Flavor
    from objects.instance import Instance, InstanceList

    for cls in (Flavor, Instance, InstanceList, ComputeNode):
        VersionedObjectRegistry.register(cls)


def __getattr__(name: str) -> Any:
    # objects.Instance & co: the newest registered class of that name.
    found = VersionedObjectRegistry.find_newest(name)
    if found is not None:
        return found
    raise AttributeError(
        f"module 'objects' has no attribute {name!r}"
        + ("; call objects.register_all() first" if name[:1].isupper() else "")
    )
