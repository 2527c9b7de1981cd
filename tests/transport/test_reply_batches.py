"""A reply message holding a batch: every reply in it reaches its call, whatever its kind."""

from __future__ import annotations

from typing import Any

import orjson

from transport import _wire
from transport._replies import PendingCall, ReplyWaiter
from transport.exceptions import RemoteError


class _NoDriver:
    def unreachable(self) -> None:
        return None


def _call(waiter: ReplyWaiter, request_id: str, multi: bool = False) -> PendingCall:
    call = PendingCall(request_id, "m", 60.0, None, lambda value: value, (), multi=multi)
    waiter._pending[request_id] = call  # as register(), without the monitor thread
    return call


def _batch(*replies: Any) -> bytes:
    return orjson.dumps({"batch": list(replies)})


def test_every_kind_of_reply_in_a_batch_reaches_its_call_and_results_leave_the_pending():
    waiter = ReplyWaiter(_NoDriver(), monitor_misses=3)  # type: ignore[arg-type]
    first, second, failing, streamed = (
        _call(waiter, "a"),
        _call(waiter, "b"),
        _call(waiter, "c"),
        _call(waiter, "d", multi=True),
    )
    _call(waiter, "e")  # heard from (a heartbeat), not answered yet
    error = _wire.error_reply("c", ValueError("bad value"))
    waiter._on_reply(
        _batch(
            {"id": "a", "t": "r", "v": 1},
            {"id": "e", "t": "hb"},
            error,
            {"id": "d", "t": "i", "v": "x"},
            {"id": "unknown", "t": "r", "v": 3},  # a call given up: dropped
            ["not", "a", "reply"],  # malformed: dropped alone
            {"id": ["unhashable"], "t": "r", "v": 4},  # malformed: dropped alone
            {"id": "b", "t": "r", "v": {"k": [2]}},
            {"id": "d", "t": "end"},
        )
    )
    assert first.future is not None and first.future.result(timeout=1) == 1
    assert second.future is not None and second.future.result(timeout=1) == {"k": [2]}
    assert failing.future is not None
    exc = failing.future.exception(timeout=1)
    assert isinstance(exc, (ValueError, RemoteError)) and "bad value" in str(exc)
    assert streamed.items is not None
    assert streamed.items.get(timeout=1) == "x"
    assert streamed.items.get(timeout=1) is not None  # its end, after its item
    assert list(waiter._pending) == ["e"]  # results, errors and a stream's end popped


def test_a_result_for_a_call_answered_already_in_the_same_batch_is_dropped():
    waiter = ReplyWaiter(_NoDriver(), monitor_misses=3)  # type: ignore[arg-type]
    call = _call(waiter, "a")
    waiter._on_reply(_batch({"id": "a", "t": "r", "v": 1}, {"id": "a", "t": "r", "v": 2}))
    assert call.future is not None and call.future.result(timeout=1) == 1
    assert waiter._pending == {}
