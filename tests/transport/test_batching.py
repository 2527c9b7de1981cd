"""Requests waiting to be sent together travel as one message and are answered one by one."""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Sequence
from typing import Any

import pytest

import transport
from tests.transport import conftest as transport_conftest
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


class EchoEndpoint:
    """Answers with what it was sent."""

    def echo(self, ctxt: dict[str, Any], v: Any) -> Any:
        return v


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def test_an_envelope_at_the_depth_limit_travels_in_a_batch_with_others(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    # A request (and a reply) the codec takes alone, at exactly MAX_DEPTH levels, must not
    # make the batch around it (two levels more) undecodable: that dead-lettered every
    # request packed with it, and its batchmates' callers waited out their timeouts.
    servers.start(tp, Target(topic=topic), [EchoEndpoint()])
    from transport._replies import PendingCall

    calls = [
        PendingCall(f"req-{i}", "echo", 10, None, lambda v: v, _wire.DEFAULT_ALLOWED_EXMODS)
        for i in range(3)
    ]
    for call in calls:
        tp.register_call(call)
    # envelope {} -> args {} -> MAX_DEPTH - 2 lists: MAX_DEPTH levels
    deep = _nested(_wire.MAX_DEPTH - 2)
    envelopes = [
        {
            "id": f"req-{i}",
            "method": "echo",
            "args": {"v": deep if i == 1 else i},
            "ctxt": {},
            "reply_to": tp.reply_address,
        }
        for i in range(3)
    ]
    bodies = [_wire.encode(envelope) for envelope in envelopes]  # each one is fine alone
    tp._driver.send(Target(topic=topic), _wire.pack_batch(bodies), ttl=20)

    results = [call.future.result(10) for call in calls if call.future is not None]
    # The deep reply ({"id", "t", "v"}: MAX_DEPTH levels as well) came back with the others.
    assert results == [0, deep, 2]


def test_a_lone_envelope_deeper_than_the_limit_is_still_refused() -> None:
    envelope = {"id": "r", "v": _nested(_wire.MAX_DEPTH)}  # MAX_DEPTH + 1 levels
    body = json.dumps(envelope, separators=(",", ":")).encode()
    with pytest.raises(transport.exceptions.MessageDeliveryFailure, match="nested deeper"):
        _wire.decode(body)
    # Wrapped like a batch, the same envelope is still one level too deep.
    with pytest.raises(transport.exceptions.MessageDeliveryFailure, match="nested deeper"):
        _wire.decode(_wire.pack_batch([body]))
    # One level less is an envelope at the limit: read alone and in a batch.
    envelope["v"] = _nested(_wire.MAX_DEPTH - 1)
    body = json.dumps(envelope, separators=(",", ":")).encode()
    assert _wire.decode(body) == envelope
    assert _wire.decode(_wire.pack_batch([body])) == {"batch": [envelope]}


class ValuesEndpoint:
    """Answers with values the wire takes as they are, changes, or refuses."""

    VALUES: dict[str, Any] = {
        "plain": {"a": [1, 2.5, None, "x"]},
        "tuple": (1, 2),  # a list on the wire
        "big": 2**70,  # beyond 64 bits: exact through the stdlib codec
        "set": {1},  # not JSON: TypeError
        "nan": float("nan"),  # refused too: TypeError
        "large": "y" * 5000,  # over the server's limit: MessageTooLarge
    }

    def value(self, ctxt: dict[str, Any], kind: str) -> Any:
        return self.VALUES[kind]


def test_replies_packed_together_each_keep_their_own_outcome(
    make_transport: transport_conftest.MakeTransport, topic: str, servers: Servers
) -> None:
    # The replies to one caller are encoded together; one that cannot go as JSON (or is
    # too large) still fails only its own call, and the others arrive as they would alone.
    server_tp = make_transport(transport.TransportConfig(max_message_size=4000))
    servers.start(server_tp, Target(topic=topic), [ValuesEndpoint()])
    tp = make_transport()
    from transport._replies import PendingCall

    kinds = ["plain", "tuple", "big", "set", "plain", "nan", "large", "plain"]
    calls = [
        PendingCall(f"req-{i}", "value", 10, None, lambda v: v, _wire.DEFAULT_ALLOWED_EXMODS)
        for i in range(len(kinds))
    ]
    for call in calls:
        tp.register_call(call)
    envelopes = [
        {
            "id": f"req-{i}",
            "method": "value",
            "args": {"kind": kind},
            "ctxt": {},
            "reply_to": tp.reply_address,
        }
        for i, kind in enumerate(kinds)
    ]
    tp._driver.send(
        Target(topic=topic), _wire.pack_batch([_wire.encode(e) for e in envelopes]), ttl=10
    )

    outcomes: list[Any] = []
    for call in calls:
        assert call.future is not None
        exc = call.future.exception(10)
        outcomes.append(type(exc) if exc is not None else call.future.result())
    assert outcomes == [
        ValuesEndpoint.VALUES["plain"],
        [1, 2],
        2**70,
        TypeError,
        ValuesEndpoint.VALUES["plain"],
        TypeError,
        transport.exceptions.MessageTooLarge,
        ValuesEndpoint.VALUES["plain"],
    ]
    assert type(outcomes[2]) is int


@pytest.mark.parametrize(
    "interval",
    [10**400, -1, 0, "1", None, float("inf")],
    ids=["huge-int", "negative", "zero", "string", "none", "infinity"],
)
def test_a_heartbeat_interval_no_float_can_hold_gets_no_heartbeats_and_fails_nothing(
    tp: transport.Transport, topic: str, servers: Servers, interval: Any
) -> None:
    # NOTE: an integer beyond any float made the call monitor raise OverflowError, which
    # dead-lettered the whole batch: its batchmates' callers waited out their timeouts.
    servers.start(tp, Target(topic=topic), [EchoEndpoint()])
    from transport._replies import PendingCall

    calls = [
        PendingCall(f"req-{i}", "echo", 10, None, lambda v: v, _wire.DEFAULT_ALLOWED_EXMODS)
        for i in range(2)
    ]
    for call in calls:
        tp.register_call(call)
    envelopes = [
        {
            "id": f"req-{i}",
            "method": "echo",
            "args": {"v": i},
            "ctxt": {},
            "reply_to": tp.reply_address,
            "hb": interval if i == 0 else 1.0,
        }
        for i in range(2)
    ]
    body = json.dumps({"batch": envelopes}).encode()  # the stdlib writes inf as Infinity
    tp._driver.send(Target(topic=topic), body, ttl=10)

    assert [call.future.result(10) for call in calls if call.future is not None] == [0, 1]


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


class AnswersReadsNow(BatchingEndpoint):
    """Answers ``add`` with ``b == 0`` (the "reads") in its raw hook and sends those
    answers at once (``transport.answer_now``); the rest of a message (the "writes")
    waits for ``gate`` before it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.mixed = 0

    def serve_raw(
        self, requests: Sequence[transport.RawRequest], serializer: transport.Serializer
    ) -> list[tuple[bool, Any] | None]:
        out: list[tuple[bool, Any] | None] = [
            (True, args["a"]) if method == "add" and args.get("b") == 0 else None
            for _, _, method, args in requests
        ]
        answered = [(r[0], o) for r, o in zip(requests, out, strict=True) if o is not None]
        if len(answered) < len(requests):
            if answered:
                with self.lock:
                    self.mixed += 1
                transport.answer_now(answered)
            assert self.gate.wait(timeout=30)
        return out


def test_answers_sent_now_reach_their_callers_before_the_rest_of_the_message_runs(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    endpoint = AnswersReadsNow()
    transport.answer_now([("r0", (True, 1))])  # outside a message's dispatch: ignored
    replies: list[str] = []
    send_reply = tp.send_reply

    def counted(address: str, body: Any) -> None:
        message = _wire.decode(body)
        replies.extend(r["id"] for r in _wire.unpack(message) or [message] if r["t"] == "r")
        send_reply(address, body)

    tp.send_reply = counted  # type: ignore[method-assign]
    # More workers than messages: no message waits for a worker another one holds.
    servers.start(tp, Target(topic=topic), [endpoint], max_workers=32)
    client = RPCClient(tp, Target(topic=topic), timeout=30)

    # Reads and writes interleaved: every message of several requests holds both.
    calls = [client.call_async({}, "add", a=i, b=i % 2) for i in range(60)]
    reads, writes = calls[0::2], calls[1::2]

    try:
        assert [f.wait(timeout=10) for f in reads] == list(range(0, 60, 2))
        assert endpoint.mixed >= 1
        assert not any(f.done() for f in writes)
    finally:
        endpoint.gate.set()
    assert [f.wait(timeout=20) for f in writes] == [i + 1 for i in range(1, 60, 2)]
    # Each answer went once: the ones sent early are not sent again with the rest.
    assert sorted(replies) == sorted(f.request_id for f in calls)
