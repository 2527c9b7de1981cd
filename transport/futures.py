"""The future a call returns, and how the transport resolves futures.

Thread model (see ARCHITECTURE.md): replies are decoded and futures resolved on the
thread that receives them (the AMQP I/O thread, or the thread that published the reply
on ``memory://``). Waiters blocked in ``result()`` wake at once. Done-callbacks never run
there: :func:`resolve` hands them to one ``transport-callbacks`` thread per process, so a
callback that blocks, or calls the conductor again and waits, cannot stop replies from
arriving. A callback that only schedules work elsewhere and never blocks (the asyncio
bridge's ``call_soon_threadsafe``) may carry ``__transport_inline__ = True`` to run on the
resolving thread without the hop.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable, Generator
from concurrent.futures import Future
from typing import Any

__all__ = ["RPCFuture", "on_io_thread", "resolve"]

LOG = logging.getLogger(__name__)

_FINISHED = "FINISHED"
_CANCELLED = ("CANCELLED", "CANCELLED_AND_NOTIFIED")


class RPCFuture(concurrent.futures.Future[Any]):
    """A ``concurrent.futures.Future`` that resolves on its own when the reply arrives.

    The result is already deserialized; a failure is set as the typed exception. Works with
    ``concurrent.futures.as_completed``, ``asyncio.wrap_future`` and ``await``.

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

    def result(self, timeout: float | None = None) -> Any:
        if self._state != _FINISHED and _io.active:
            _refuse_io_wait()
        return super().result(timeout)

    def __await__(self) -> Generator[Any, None, Any]:
        if self.done():
            # As asyncio.sleep(0): other tasks run once even when the answer came before
            # the await (see objects.futures._let_the_loop_run).
            if _asyncio_running():
                yield
        else:
            import asyncio

            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()

            def wake(_: Future[Any]) -> None:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(_set_waiter, waiter)

            wake.__transport_inline__ = True  # type: ignore[attr-defined]  # never blocks
            self.add_done_callback(wake)
            # Cancelling the awaiting task stops this wait only; the call goes on.
            yield from waiter.__await__()
        if self.cancelled():  # asyncio's own cancellation, as asyncio.wrap_future gives
            import asyncio

            raise asyncio.CancelledError()
        return self.result()


def _asyncio_running() -> bool:
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and asyncio._get_running_loop() is not None


def _set_waiter(waiter: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)


def resolve(future: Future[Any], value: Any = None, exc: BaseException | None = None) -> None:
    """Settle ``future`` with ``value`` (or ``exc``) here; run its done-callbacks elsewhere.

    A future its caller cancelled stays cancelled: the outcome is dropped quietly (a
    request that was already sent may still have run; its effects are the caller's to
    look up).
    """
    kind = type(future)
    if kind.set_result is not _SET_RESULT or kind.set_exception is not _SET_EXCEPTION:
        _resolve_through_setters(future, value, exc)
        return
    # NOTE: what Future.set_result/set_exception do, without their Condition method calls
    # when nobody waits yet (the usual case: the reply arrives before anyone waits): the
    # future's lock is taken once, and notify_all only runs for blocked waiters (measured:
    # a third of the CPU of settling a future). Waiters register under this same lock
    # (Condition.wait, concurrent.futures.wait), so none can slip in between.
    condition = future._condition
    with condition._lock:  # type: ignore[attr-defined]
        state = future._state
        if state in _CANCELLED or state == _FINISHED:
            return
        callbacks = future._done_callbacks  # type: ignore[attr-defined]
        future._done_callbacks = []  # type: ignore[attr-defined]
        if exc is None:
            future._result = value
        else:
            future._exception = exc
        future._state = _FINISHED
        for waiter in future._waiters:  # wait(), as_completed()
            if exc is None:
                waiter.add_result(future)
            else:
                waiter.add_exception(future)
        if condition._waiters:  # type: ignore[attr-defined]  # threads blocked in result()
            condition.notify_all()
    if callbacks:
        _run_callbacks(future, callbacks)


_SET_RESULT = concurrent.futures.Future.set_result
_SET_EXCEPTION = concurrent.futures.Future.set_exception


def _resolve_through_setters(
    future: Future[Any], value: Any = None, exc: BaseException | None = None
) -> None:
    """``resolve`` for a future class with its own ``set_result``/``set_exception``."""
    with future._condition:
        # NOTE: the Condition's lock is re-entrant: set_result() below takes it again and
        # finds no callbacks to run on this thread; one added after the state changes runs
        # on the thread adding it, as concurrent.futures always does.
        if future._state in _CANCELLED or future._state == _FINISHED:
            return
        callbacks = future._done_callbacks  # type: ignore[attr-defined]
        future._done_callbacks = []  # type: ignore[attr-defined]
        if exc is None:
            future.set_result(value)
        else:
            future.set_exception(exc)
    if callbacks:
        _run_callbacks(future, callbacks)


def _run_callbacks(future: Future[Any], callbacks: list[Callable[[Future[Any]], Any]]) -> None:
    later: list[Callable[[Future[Any]], Any]] = []
    for callback in callbacks:
        if getattr(callback, "__transport_inline__", False):
            _call(callback, future)
        else:
            later.append(callback)
    if later:
        _callbacks.submit(future, later)


def _call(callback: Callable[[Future[Any]], Any], future: Future[Any]) -> None:
    try:
        callback(future)
    except Exception:
        LOG.exception("exception calling callback for %r", future)


class _CallbackThread:
    """Runs done-callbacks in the order their futures resolved, on one daemon thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], list[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, future: Future[Any], callbacks: list[Any]) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    thread = threading.Thread(
                        target=self._run, name="transport-callbacks", daemon=True
                    )
                    thread.start()
                    self._thread = thread
        self._queue.put((future, callbacks))

    def _run(self) -> None:
        while True:
            future, callbacks = self._queue.get()
            for callback in callbacks:
                _call(callback, future)

    def reset_after_fork(self) -> None:
        self.__init__()  # type: ignore[misc]


_callbacks = _CallbackThread()
os.register_at_fork(after_in_child=_callbacks.reset_after_fork)


class _IOFlag(threading.local):
    active = False


_io = _IOFlag()


def on_io_thread() -> None:
    """Mark the calling thread as a transport I/O thread: blocking waits there fail fast."""
    _io.active = True


def _refuse_io_wait() -> None:
    from transport.exceptions import TransportError

    raise TransportError(
        reason="a blocking wait for a reply on the transport's I/O thread would wait for "
        "itself; wait on another thread, or add a done-callback (callbacks run on the "
        "transport-callbacks thread, where waiting works)"
    )
