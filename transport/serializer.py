"""Hooks that turn entities and request contexts into JSON-compatible primitives and back.

The objects package ships ``objects.base.VersionedObjectSerializer`` with the same four
methods by duck typing; the transport only ever calls them.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["NoOpSerializer", "Serializer", "context_to_dict"]


def context_to_dict(ctxt: object) -> dict[str, Any]:
    """A request context as a dict: dicts pass through, other objects use ``to_dict()``.

    A context may also offer ``wire_dict()``: its ``to_dict()`` as plain JSON (``str``
    keys; ``str``, ``int``, ``bool``, ``None``, finite ``float`` and lists and dicts of
    these) that nobody changes afterwards, or None. A call whose arguments are vouched
    plain (``RPCClient.start_call``'s ``plain``) then sends that dict as it is, without
    a copy, and leaves the request's encoding to the sender thread.
    """
    if ctxt is None:
        return {}
    if isinstance(ctxt, dict):
        return ctxt
    to_dict = getattr(ctxt, "to_dict", None)
    if to_dict is None:
        raise TypeError(f"context {type(ctxt).__name__} is neither a dict nor has to_dict()")
    result = to_dict()
    if not isinstance(result, dict):
        raise TypeError(f"{type(ctxt).__name__}.to_dict() returned {type(result).__name__}")
    return result


class Serializer(Protocol):
    """Converts entities and contexts to primitives for the wire, and back.

    A protocol: any object with these four methods serves (``objects`` ships one without
    importing the transport); subclassing it is optional. ``ctxt`` is the caller's context
    as given (hence ``Any``): with a serializer it can be of any class that serializer
    reads, not only a dict or an object with ``to_dict()``.
    """

    def serialize_entity(self, ctxt: Any, entity: Any) -> Any:
        """Return ``entity`` as JSON-compatible primitives."""
        ...

    def deserialize_entity(self, ctxt: Any, entity: Any) -> Any:
        """Rebuild an entity from the primitives ``serialize_entity`` produced."""
        ...

    def serialize_context(self, ctxt: Any) -> dict[str, Any]:
        """Return the request context as a JSON-compatible dict."""
        ...

    def deserialize_context(self, ctxt: dict[str, Any]) -> Any:
        """Rebuild the request context the server hands to endpoints."""
        ...


class NoOpSerializer(Serializer):
    """Passes entities through untouched; contexts travel as dicts."""

    def serialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return entity

    def deserialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return entity

    def serialize_context(self, ctxt: Any) -> dict[str, Any]:
        return context_to_dict(ctxt)

    def deserialize_context(self, ctxt: dict[str, Any]) -> Any:
        return ctxt
