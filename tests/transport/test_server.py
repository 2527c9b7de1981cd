"""Server contract: lifecycle, at-least-once redelivery, call monitor, bad input, serializers."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import transport
from transport import RPCClient, RPCServer, ServerState, Target, TransportConfig, current_request_id
from transport.exceptions import (
    CallMonitorTimeout,
    MessageDeliveryFailure,
    MessageTooLarge,
    MessagingTimeout,
)
from transport.serializer import Serializer

from .conftest import RABBIT_URL, MakeTransport, Servers


class Blocking:
    """Records what it runs; ``block`` waits until the test releases it."""

    def __init__(self, name: str = "b") -> None:
        self.name = name
        self.started = threading.Event()
        self.release = threading.Event()
        self.seen: list[tuple[str | None, str]] = []

    def block(self, ctxt: Any, tag: str) -> str:
        self.seen.append((current_request_id(), tag))
        self.started.set()
        assert self.release.wait(30)
        return f"{self.name}:{tag}"

    def sleep(self, ctxt: Any, seconds: float) -> float:
        self.seen.append((current_request_id(), "sleep"))
        time.sleep(seconds)
        return seconds

    def echo(self, ctxt: Any, value: Any) -> Any:
        return value

    def big(self, ctxt: Any, size: int) -> str:
        return "x" * size

    def not_json(self, ctxt: Any) -> Any:
        return {1, 2}


def test_start_returns_once_consuming_and_stop_changes_state(
    tp: transport.Transport, topic: str
) -> None:
    server = RPCServer(tp, Target(topic=topic), [Blocking()])
    # (each state read into its own name: mypy would keep the first narrowing of
    # ``server.state`` across start() and stop())
    new = server.state
    assert new is ServerState.NEW
    server.start()
    running = server.state
    assert running is ServerState.RUNNING
    assert RPCClient(tp, Target(topic=topic), timeout=10).call({}, "echo", value=[1]) == [1]
    server.stop()
    stopped = server.state
    assert stopped is ServerState.STOPPED
    assert server.wait(0)


def test_stop_drains_in_flight_requests_before_returning(
    tp: transport.Transport, topic: str
) -> None:
    endpoint = Blocking()
    server = RPCServer(tp, Target(topic=topic), [endpoint], max_workers=4)
    server.start()
    client = RPCClient(tp, Target(topic=topic), timeout=10)
    futures = [client.call_async({}, "sleep", seconds=0.3) for _ in range(4)]
    while len(endpoint.seen) < 4:
        time.sleep(0.01)
    server.stop()
    assert all(f.done() or f.wait(5) for f in futures)
    assert [f.wait(5) for f in futures] == [0.3] * 4


def test_killed_server_request_is_redelivered_with_the_same_request_id(
    make_transport: MakeTransport, topic: str, servers: Servers
) -> None:
    # Given a server that dies while running a call
    dying, survivor = Blocking("dying"), Blocking("survivor")
    server = RPCServer(make_transport(), Target(topic=topic), [dying])
    server.start()
    client = RPCClient(
        make_transport(), Target(topic=topic), timeout=20, call_monitor_interval=None
    )
    future = client.call_async({}, "block", tag="t1")
    assert dying.started.wait(10)
    server.kill()
    # When the next server of the topic starts
    survivor.release.set()
    servers.start(make_transport(), Target(topic=topic), [survivor])
    # Then it runs the request under the same id and the caller gets its reply
    assert future.wait(20) == "survivor:t1"
    assert survivor.seen == [(future.request_id, "t1")]
    assert dying.seen == [(future.request_id, "t1")]
    dying.release.set()


def test_call_monitor_reports_a_dead_server_long_before_the_timeout(
    make_transport: MakeTransport, topic: str
) -> None:
    endpoint = Blocking()
    server = RPCServer(make_transport(), Target(topic=topic), [endpoint])
    server.start()
    client = RPCClient(make_transport(), Target(topic=topic), timeout=30, call_monitor_interval=0.2)
    future = client.call_async({}, "block", tag="t")
    assert endpoint.started.wait(10)
    time.sleep(0.5)  # a heartbeat or two arrive
    assert not future.done()
    killed_at = time.monotonic()
    server.kill()
    with pytest.raises(CallMonitorTimeout):
        future.wait(10)
    assert time.monotonic() - killed_at < 3
    endpoint.release.set()


def test_heartbeats_keep_a_long_call_alive_but_never_extend_its_deadline(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic), [Blocking()])
    client = RPCClient(tp, Target(topic=topic), timeout=5, call_monitor_interval=0.1)
    assert client.call({}, "sleep", seconds=0.8) == 0.8
    started = time.monotonic()
    with pytest.raises(MessagingTimeout) as info:
        client.prepare(timeout=0.5).call({}, "sleep", seconds=1.5)
    assert not isinstance(info.value, CallMonitorTimeout)
    assert time.monotonic() - started < 1.3


def test_a_request_its_caller_gave_up_on_never_runs(
    make_transport: MakeTransport, topic: str, servers: Servers
) -> None:
    # A request waits behind a busy server's one worker until its caller gives up, and
    # the server dies holding it: the next server must not run it.
    busy = Blocking("busy")
    first = RPCServer(make_transport(), Target(topic=topic), [busy], max_workers=1)
    first.start()
    client = RPCClient(
        make_transport(), Target(topic=topic), timeout=0.3, call_monitor_interval=None
    )
    blocker = client.prepare(timeout=30).call_async({}, "block", tag="t")
    assert busy.started.wait(10)
    with pytest.raises(MessagingTimeout):
        client.call({}, "sleep", seconds=0)
    time.sleep(0.2)
    first.kill()
    busy.release.set()
    late = Blocking("late")
    late.release.set()
    servers.start(make_transport(), Target(topic=topic), [late])
    assert client.prepare(timeout=10).call({}, "echo", value=1) == 1
    assert blocker.wait(10) == "late:t"
    assert [tag for _, tag in late.seen] == ["t"]


def test_sender_refuses_a_message_over_the_size_limit(
    make_transport: MakeTransport, topic: str, servers: Servers
) -> None:
    tp = make_transport(TransportConfig(max_message_size=2000))
    servers.start(tp, Target(topic=topic), [Blocking()])
    client = RPCClient(tp, Target(topic=topic), timeout=10)
    with pytest.raises(MessageTooLarge) as info:
        client.call({}, "echo", value="y" * 5000)
    assert info.value.kwargs["limit"] == 2000
    assert client.call({}, "echo", value="small") == "small"


def test_oversized_incoming_requests_and_replies_become_typed_errors(
    make_transport: MakeTransport, topic: str, servers: Servers
) -> None:
    server_tp = make_transport(TransportConfig(max_message_size=4000))
    servers.start(server_tp, Target(topic=topic), [Blocking()])
    client = RPCClient(make_transport(), Target(topic=topic), timeout=10)
    with pytest.raises(MessageTooLarge):
        client.call({}, "echo", value="z" * 5000)
    with pytest.raises(MessageTooLarge):
        client.call({}, "big", size=5000)
    assert client.call({}, "echo", value="still serving") == "still serving"


def test_a_result_that_is_not_json_fails_the_call_with_type_error(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic), [Blocking()])
    client = RPCClient(tp, Target(topic=topic), timeout=10)
    with pytest.raises(TypeError):
        client.call({}, "not_json")
    with pytest.raises(TypeError):
        client.call({}, "echo", value=object())  # refused on the caller already


class BadContextSerializer(Serializer):
    def serialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return entity

    def deserialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return entity

    def serialize_context(self, ctxt: Any) -> Any:
        return "not a dict"

    def deserialize_context(self, ctxt: dict[str, Any]) -> Any:
        return ctxt


def test_malformed_request_with_a_caller_gets_a_typed_error_reply(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic), [Blocking()])
    bad = RPCClient(tp, Target(topic=topic), timeout=10, serializer=BadContextSerializer())
    with pytest.raises(MessageDeliveryFailure, match="ctxt"):
        bad.call({}, "echo", value=1)
    assert RPCClient(tp, Target(topic=topic), timeout=10).call({}, "echo", value=2) == 2


def test_undecodable_message_without_a_caller_is_dead_lettered_and_serving_goes_on(
    tp: transport.Transport, topic: str, servers: Servers, is_rabbit: bool
) -> None:
    servers.start(tp, Target(topic=topic), [Blocking()])
    tp._driver.send(Target(topic=topic), b"\xff not json")
    client = RPCClient(tp, Target(topic=topic), timeout=10)
    assert client.call({}, "echo", value="ok") == "ok"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        parked = _dead_letters(tp, f"{topic}.dead", is_rabbit)
        if parked:
            break
        time.sleep(0.05)
    assert parked == [b"\xff not json"]


def _dead_letters(tp: transport.Transport, queue: str, is_rabbit: bool) -> list[bytes]:
    if not is_rabbit:
        return [body for _, _, body in tp._driver.broker.dead_letters]  # type: ignore[attr-defined]
    from kombu.connection import Connection

    assert RABBIT_URL
    bodies = []
    with Connection(RABBIT_URL) as conn:
        channel = conn.channel()
        try:
            while (message := channel.basic_get(queue, no_ack=True)) is not None:
                body = message.body
                bodies.append(body.encode() if isinstance(body, str) else bytes(body))
        except conn.channel_errors:
            pass
    return bodies


class Wrapped:
    def __init__(self, value: Any) -> None:
        self.value = value


class Ctx:
    def __init__(self, user: str) -> None:
        self.user = user


class WrappingSerializer(Serializer):
    def serialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return {"wrapped": entity.value} if isinstance(entity, Wrapped) else entity

    def deserialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return (
            Wrapped(entity["wrapped"])
            if isinstance(entity, dict) and "wrapped" in entity
            else entity
        )

    def serialize_context(self, ctxt: Any) -> dict[str, Any]:
        return {"user": ctxt.user}

    def deserialize_context(self, ctxt: dict[str, Any]) -> Any:
        return Ctx(ctxt["user"])


class Doubler:
    def double(self, ctxt: Ctx, item: Wrapped) -> Wrapped:
        assert isinstance(ctxt, Ctx) and isinstance(item, Wrapped)
        return Wrapped(f"{ctxt.user}:{item.value * 2}")


def test_serializer_hooks_apply_to_context_arguments_and_results(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic), [Doubler()], serializer=WrappingSerializer())
    client = RPCClient(tp, Target(topic=topic), timeout=10, serializer=WrappingSerializer())
    result = client.call_async(Ctx("alice"), "double", item=Wrapped(21)).wait()
    assert isinstance(result, Wrapped)
    assert result.value == "alice:42"


@pytest.mark.parametrize(
    ("value", "interval"),
    [
        (2.5, 2.5),
        (3, 3.0),
        (True, 1.0),
        (0.0, None),
        (-1.0, None),
        (float("inf"), None),
        (float("nan"), None),
        (10**400, None),
        ("1", None),
        (None, None),
    ],
)
def test_a_callers_heartbeat_interval_is_a_finite_positive_number(
    value: Any, interval: float | None
) -> None:
    from transport.server import _heartbeat_interval

    got = _heartbeat_interval(value)
    assert got == interval and type(got) is type(interval)


def test_the_requests_of_a_batch_are_watched_at_their_own_intervals(
    tp: transport.Transport, topic: str
) -> None:
    server = RPCServer(tp, Target(topic=topic), [Blocking()])
    hbs: list[Any] = [5.0, 5.0, 5, float("nan"), float("nan"), None, 7.5, 5.0, "5", 0.5]
    envelopes = [
        {"id": f"r{i}", "reply_to": "caller" if i % 3 else "other", "hb": hb}
        for i, hb in enumerate(hbs)
    ]
    watched = server._watch_batch(envelopes)
    try:
        running = server._running
        assert watched == ["r0", "r1", "r2", "r6", "r7", "r9"]
        for rid, hb in [("r0", 5.0), ("r1", 5.0), ("r2", 5.0), ("r6", 7.5), ("r7", 5.0)]:
            assert running[rid].interval == hb
        assert running["r9"].interval == 0.5
        # one record per reply address and interval
        assert (
            running["r1"] is running["r2"] is running["r7"] and running["r0"] is not running["r1"]
        )
    finally:
        server._unwatch_batch(watched)
    assert not server._running
