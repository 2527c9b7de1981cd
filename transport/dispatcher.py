"""Chooses the endpoint method for a request and runs it.

Endpoints are chosen by namespace and version: an endpoint declares
``target = Target(namespace=..., version=...)`` (default: no namespace, "1.0") and serves
requests of the same namespace whose version has the same major and a minor not above its
own. A request without a version is "1.0".
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Iterator, Sequence
from typing import Any

from transport.exceptions import NoSuchMethod, UnsupportedVersion
from transport.serializer import NoOpSerializer, Serializer
from transport.target import Target, version_is_compatible

__all__ = ["RPCDispatcher", "current_request_id"]

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "transport_request_id", default=None
)


def current_request_id() -> str | None:
    """The unique id of the request being dispatched, or None outside dispatch.

    The client generates it; it travels in the message and stays the same when the broker
    redelivers the message, so a server can recognise a replay.
    """
    return _request_id.get()


class RPCDispatcher:
    """Finds and invokes endpoint methods for decoded requests.

    Args:
        endpoints: objects whose public methods are callable remotely.
        serializer: rebuilds the context and arguments; serializes results.
    """

    def __init__(self, endpoints: Sequence[object], serializer: Serializer | None = None) -> None:
        self.endpoints = list(endpoints)
        self.serializer = serializer or NoOpSerializer()

    def _find(self, method: str, namespace: str | None, version: str | None) -> Any:
        version_matched = False
        for endpoint in self.endpoints:
            target = getattr(endpoint, "target", None) or Target()
            if target.namespace != namespace:
                continue
            if not version_is_compatible(target.version, version):
                continue
            version_matched = True
            if method.startswith("_"):
                continue
            func = getattr(endpoint, method, None)
            if callable(func):
                return func
        if version_matched:
            raise NoSuchMethod(method=method)
        raise UnsupportedVersion(version=version or "1.0", namespace=namespace)

    def dispatch(
        self,
        request_id: str,
        ctxt: dict[str, Any],
        method: str,
        args: dict[str, Any],
        namespace: str | None = None,
        version: str | None = None,
    ) -> tuple[bool, Any]:
        """Run the method; return ``(streaming, value)``.

        For an ordinary method ``value`` is the serialized result. For a method returning a
        generator ``value`` is an iterator of serialized items; ``current_request_id()``
        stays set while each item is produced.

        Raises:
            NoSuchMethod, UnsupportedVersion: no method to run.
            Exception: whatever the endpoint raised.
        """
        func = self._find(method, namespace, version)
        token = _request_id.set(request_id)
        try:
            context = self.serializer.deserialize_context(ctxt)
            kwargs = {k: self.serializer.deserialize_entity(context, v) for k, v in args.items()}
            result = func(context, **kwargs)
            if inspect.isgenerator(result):
                return True, self._stream(request_id, context, result)
            return False, self.serializer.serialize_entity(context, result)
        finally:
            _request_id.reset(token)

    def _stream(self, request_id: str, context: Any, items: Iterator[Any]) -> Iterator[Any]:
        while True:
            token = _request_id.set(request_id)
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                _request_id.reset(token)
            yield self.serializer.serialize_entity(context, item)
