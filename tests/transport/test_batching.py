"""Requests waiting to be sent together travel as one message and are answered one by one."""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Sequence
from typing import Any

import pytest

import transport
from tests.transport.conftest import Servers
from transport import RPCClient, Target, _wire


class BatchingEndpoint:
    """Records how requests reached it: together (through the hook) or one by one.

    A ``transport.BatchEndpoint`` by its shape (the protocol needs no base class)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.lock = threading.Lock()

    def serve_batch(self, calls: Sequence[transport.BatchCall]) -> None:
        with self.lock:
            self.batches.append([c.request_id for c in calls])
        for call in calls:
            try:
                call.set_result(call.run())
            except Exception as exc:
                call.set_exception(exc)

    def add(self, ctxt: dict[str, Any], a: int, b: int) -> int:
        assert transport.current_request_id() is not None
        if a == -1:
            raise ValueError("negative")
        return a + b


def test_calls_in_flight_are_packed_and_each_keeps_its_result_or_error(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    endpoint = BatchingEndpoint()
    servers.start(tp, Target(topic=topic), [endpoint], max_workers=2)
    client = RPCClient(tp, Target(topic=topic), timeout=20)

    futures = [client.call_async({}, "add", a=-1 if i % 50 == 7 else i, b=1) for i in range(400)]

    for i, future in enumerate(futures):
        if i % 50 == 7:
            assert isinstance(future.exception(timeout=20), ValueError)
        else:
            assert future.wait(timeout=20) == i + 1
    assert max(len(b) for b in endpoint.batches) > 1
    ids = [rid for batch in endpoint.batches for rid in batch]
    assert len(ids) == len(set(ids))


def test_a_bad_item_in_a_batch_fails_alone(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic), [BatchingEndpoint()])
    client = RPCClient(tp, Target(topic=topic), timeout=20)
    from transport._replies import PendingCall

    calls = [
        PendingCall(f"req-{i}", "add", 20, None, lambda v: v, _wire.DEFAULT_ALLOWED_EXMODS)
        for i in range(2)
    ]
    for call in calls:
        tp.register_call(call)
    good = {
        "id": "req-0",
        "method": "add",
        "args": {"a": 1, "b": 2},
        "ctxt": {},
        "ns": None,
        "ver": None,
        "reply_to": tp.reply_address,
    }
    bad = {"id": "req-1", "method": 5, "args": [], "ctxt": {}, "reply_to": tp.reply_address}
    body = json.dumps({"batch": [good, bad, "not an envelope"]}).encode()
    tp._driver.send(Target(topic=topic), body, ttl=20)

    assert calls[0].future is not None and calls[0].future.result(20) == 3
    assert calls[1].future is not None
    assert isinstance(calls[1].future.exception(20), transport.exceptions.MessageDeliveryFailure)
    # and the server still serves
    assert client.call({}, "add", a=2, b=2) == 4


def test_an_endpoint_with_the_batch_hook_is_a_batch_endpoint_and_gets_its_calls_together() -> None:
    endpoint = BatchingEndpoint()
    assert isinstance(endpoint, transport.BatchEndpoint)
    dispatcher = transport.RPCDispatcher([endpoint])

    outcomes = dispatcher.dispatch_batch(
        [(f"r{i}", {}, "add", {"a": i, "b": 1}, None, None) for i in range(3)], redelivered=False
    )

    assert outcomes == [(True, 1), (True, 2), (True, 3)]
    assert endpoint.batches == [["r0", "r1", "r2"]]


def test_the_batch_hook_is_not_an_rpc_method() -> None:
    dispatcher = transport.RPCDispatcher([BatchingEndpoint()])

    with pytest.raises(transport.exceptions.NoSuchMethod):
        dispatcher.dispatch("r", {}, "serve_batch", {"calls": []})


# -- the raw hook (transport.RawEndpoint) ----------------------------------------------------

_seen_by_hook: contextvars.ContextVar[str] = contextvars.ContextVar("seen_by_hook", default="")


class RawEndpoint(BatchingEndpoint):
    """Answers ``add`` requests with ``b == 0`` itself, from the wire form; leaves word
    for the rest in a context variable."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: list[list[str]] = []
        self.word: list[str] = []

    def serve_raw(
        self, requests: Sequence[transport.RawRequest], serializer: transport.Serializer
    ) -> list[tuple[bool, Any] | None]:
        assert transport.current_request_id() is None
        self.raw.append([request_id for request_id, *_ in requests])
        _seen_by_hook.set(f"hook saw {len(requests)}")
        out: list[tuple[bool, Any] | None] = []
        for _, _, method, args in requests:
            if method == "add" and args.get("b") == 0:
                a = args["a"]
                out.append((True, a) if a >= 0 else (False, ValueError("negative")))
            else:
                out.append(None)
        return out

    def add(self, ctxt: dict[str, Any], a: int, b: int) -> int:
        self.word.append(_seen_by_hook.get())
        return super().add(ctxt, a, b)


def test_a_raw_endpoint_answers_what_it_can_and_the_rest_runs_in_order() -> None:
    endpoint = RawEndpoint()
    assert isinstance(endpoint, transport.RawEndpoint)
    dispatcher = transport.RPCDispatcher([endpoint])
    requests: list[tuple[str, dict[str, Any], str, dict[str, Any], str | None, str | None]] = [
        ("r0", {}, "add", {"a": 5, "b": 0}, None, None),
        ("r1", {}, "add", {"a": 1, "b": 1}, None, None),
        ("r2", {}, "nope", {}, None, None),
        ("r3", {}, "add", {"a": -1, "b": 0}, None, None),
        ("r4", {}, "add", {"a": 2, "b": 1}, None, None),
        ("r5", {}, "add", {"a": 3, "b": 1}, None, None),
    ]

    outcomes = dispatcher.dispatch_batch(requests, redelivered=False)

    assert outcomes[0] == (True, 5) and outcomes[1] == (True, 2)
    assert isinstance(outcomes[2][1], transport.exceptions.NoSuchMethod)
    assert isinstance(outcomes[3][1], ValueError)
    assert outcomes[4:] == [(True, 3), (True, 4)]
    assert endpoint.raw == [["r0", "r1", "r3", "r4", "r5"]]  # every request it serves
    assert endpoint.batches == [["r1", "r4", "r5"]]  # the ones it left, together
    assert endpoint.word == ["hook saw 5"] * 3  # in the message's own context...
    assert _seen_by_hook.get() == ""  # ...which is not the caller's


def test_a_raw_endpoint_sees_a_lone_request_too() -> None:
    endpoint = RawEndpoint()
    dispatcher = transport.RPCDispatcher([endpoint])

    assert dispatcher.dispatch("r0", {}, "add", {"a": 7, "b": 0}) == (False, 7)
    with pytest.raises(ValueError, match="negative"):
        dispatcher.dispatch("r1", {}, "add", {"a": -1, "b": 0})
    assert dispatcher.dispatch("r2", {}, "add", {"a": 7, "b": 1}) == (False, 8)
    assert endpoint.raw == [["r0"], ["r1"], ["r2"]]
    assert endpoint.batches == []


def test_a_raw_hook_that_raises_fails_its_requests_only() -> None:
    class Failing(RawEndpoint):
        def serve_raw(self, requests: Any, serializer: Any) -> Any:
            raise RuntimeError("hook broke")

    other = BatchingEndpoint()
    other.target = Target(namespace="other")  # type: ignore[attr-defined]
    dispatcher = transport.RPCDispatcher([Failing(), other])

    outcomes = dispatcher.dispatch_batch(
        [
            ("r0", {}, "add", {"a": 1, "b": 0}, None, None),
            ("r1", {}, "add", {"a": 1, "b": 1}, "other", None),
        ]
    )

    assert isinstance(outcomes[0][1], RuntimeError)
    assert outcomes[1] == (True, 2)


def test_the_raw_hook_is_not_an_rpc_method() -> None:
    dispatcher = transport.RPCDispatcher([RawEndpoint()])

    with pytest.raises(transport.exceptions.NoSuchMethod):
        dispatcher.dispatch("r", {}, "serve_raw", {"requests": [], "serializer": None})


def test_a_raw_endpoint_over_the_memory_transport_answers_each_caller(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    endpoint = RawEndpoint()
    servers.start(tp, Target(topic=topic), [endpoint], max_workers=2)
    client = RPCClient(tp, Target(topic=topic), timeout=20)

    futures = [client.call_async({}, "add", a=i, b=i % 2) for i in range(200)]

    assert [f.wait(timeout=20) for f in futures] == [i + i % 2 for i in range(200)]
    assert client.call({}, "add", a=3, b=0) == 3
