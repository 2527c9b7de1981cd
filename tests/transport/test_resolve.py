"""``transport.futures.resolve``: settles a future like ``set_result``/``set_exception``
(every kind of waiter wakes), keeps a cancelled future cancelled, and runs done-callbacks
off the resolving thread unless they are marked inline."""

from __future__ import annotations

import concurrent.futures
import threading
from concurrent.futures import Future
from typing import Any

import pytest

from transport.futures import RPCFuture, resolve


def _blocked_in(target: Any) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_a_thread_blocked_in_result_wakes_with_the_value() -> None:
    future: Future[Any] = Future()
    got: list[Any] = []
    thread = _blocked_in(lambda: got.append(future.result(10)))
    while not future._condition._waiters:  # type: ignore[attr-defined]
        threading.Event().wait(0.001)
    resolve(future, 42)
    thread.join(10)
    assert got == [42]


def test_wait_and_as_completed_wake_with_the_outcome() -> None:
    futures: list[Future[Any]] = [Future(), Future()]
    done: list[Any] = []
    waiter = _blocked_in(lambda: done.append(concurrent.futures.wait(futures)))
    completed: list[Any] = []
    walker = _blocked_in(
        lambda: completed.extend(concurrent.futures.as_completed(futures, timeout=10))
    )
    while not all(len(f._waiters) == 2 for f in futures):
        threading.Event().wait(0.001)
    resolve(futures[0], "one")
    resolve(futures[1], exc=KeyError("two"))
    waiter.join(10)
    walker.join(10)
    assert len(done[0].done) == 2 and not done[0].not_done
    assert set(completed) == set(futures)
    assert futures[0].result() == "one"
    with pytest.raises(KeyError):
        futures[1].result()


def test_a_settled_or_cancelled_future_keeps_its_outcome() -> None:
    done: Future[Any] = Future()
    resolve(done, 1)
    resolve(done, 2)
    resolve(done, exc=ValueError())
    assert done.result() == 1
    cancelled: Future[Any] = Future()
    assert cancelled.cancel()
    resolve(cancelled, 1)
    assert cancelled.cancelled()


def test_callbacks_run_once_with_the_outcome_inline_ones_on_this_thread() -> None:
    future = RPCFuture("id", "method")
    here = threading.get_ident()
    seen: list[Any] = []
    ran = threading.Event()

    def inline(f: Future[Any]) -> None:
        seen.append(("inline", f.exception(), threading.get_ident() == here))

    inline.__transport_inline__ = True  # type: ignore[attr-defined]

    def later(f: Future[Any]) -> None:
        seen.append(("later", f.exception(), threading.get_ident() == here))
        ran.set()

    future.add_done_callback(inline)
    future.add_done_callback(later)
    error = RuntimeError("boom")
    resolve(future, exc=error)
    assert ran.wait(10)
    assert seen == [("inline", error, True), ("later", error, False)]


def test_a_future_class_with_its_own_setters_is_settled_through_them() -> None:
    class Recording(Future[Any]):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[Any] = []

        def set_result(self, result: Any) -> None:
            self.calls.append(("result", result))
            super().set_result(result)

        def set_exception(self, exception: BaseException | None) -> None:
            self.calls.append(("exception", exception))
            super().set_exception(exception)

    ok, failed = Recording(), Recording()
    error = OSError("x")
    resolve(ok, 7)
    resolve(failed, exc=error)
    assert ok.calls == [("result", 7)] and ok.result() == 7
    assert failed.calls == [("exception", error)] and failed.exception() is error
