"""The future a call returns."""

from __future__ import annotations

import concurrent.futures
from typing import Any

__all__ = ["RPCFuture"]


class RPCFuture(concurrent.futures.Future[Any]):
    """A ``concurrent.futures.Future`` that resolves on its own when the reply arrives.

    The result is already deserialized; a failure is set as the typed exception. Works with
    ``concurrent.futures.as_completed`` and ``asyncio.wrap_future``.

    Attributes:
        request_id: the unique id of the request (what ``current_request_id()`` returns
            on the server).
        method: the remote method's name.
    """

    def __init__(self, request_id: str, method: str) -> None:
        super().__init__()
        self.request_id = request_id
        self.method = method

    def wait(self, timeout: float | None = None) -> Any:
        """Return the result, raising the call's failure.

        Raises:
            TimeoutError: ``timeout`` passed first (the call itself stays pending).
        """
        return self.result(timeout)
