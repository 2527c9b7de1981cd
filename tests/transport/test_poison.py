"""Poison messages: whatever arrives, every delivery is settled (reply, ack, dead letter) and
the server keeps serving; background threads survive any single bad message."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest

import transport
from transport import NotificationListener, RPCClient, RPCServer, Target
from transport.exceptions import CallMonitorTimeout, RemoteError

from .conftest import MakeTransport, Servers
from .test_server import _dead_letters

DEEP = 200_000  # far deeper than any recursion limit


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def echo(self, ctxt: Any, value: Any) -> Any:
        self.calls.append(value)
        return value

    def block(self, ctxt: Any) -> str:
        self.started.set()
        assert self.release.wait(30)
        return "released"

    def sleep(self, ctxt: Any, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


def _request(
    method: str = "echo", args: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "method": method,
        "args": args or {"value": 1},
        "ctxt": {},
        **extra,
    }


def _deep_body(reply_to: str | None) -> bytes:
    head = json.dumps({"id": uuid.uuid4().hex, "reply_to": reply_to, "method": "echo", "ctxt": {}})
    return head[:-1].encode() + b',"args":{"value":' + b"[" * DEEP + b"]" * DEEP + b"}}"


def _collect_dead(
    tp: transport.Transport,
    queue: str,
    is_rabbit: bool,
    count: int,
    seen: list[bytes],
    timeout: float = 20,
) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _dead_letters(tp, queue, is_rabbit)
        if is_rabbit:
            seen.extend(found)
        else:
            seen[:] = found
        if len(seen) >= count:
            break
        time.sleep(0.1)
    return seen


def test_poison_messages_are_dead_lettered_and_never_fill_the_prefetch_window(
    tp: transport.Transport, topic: str, servers: Servers, is_rabbit: bool
) -> None:
    # Given a server whose prefetch window holds 8 messages
    endpoint = Recorder()
    servers.start(tp, Target(topic=topic), [endpoint], max_workers=2)
    # When it gets three windows full of poison: JSON nested deeper than the decoder's
    # recursion limit (with and without a reply address) and reply addresses no broker takes
    poison = []
    for i in range(24):
        if i % 3 == 0:
            body = _deep_body(None)
        elif i % 3 == 1:
            body = _deep_body("reply_nobody")
        else:
            body = json.dumps(
                _request(args={"value": "never run"}, reply_to="r" * 300, hb=0.5)
            ).encode()
        poison.append(body)
        tp._driver.send(Target(topic=topic), body)
    # Then a normal call still succeeds at once
    started = time.monotonic()
    assert RPCClient(tp, Target(topic=topic), timeout=10).call({}, "echo", value="ok") == "ok"
    assert time.monotonic() - started < 5
    # And every poison message is parked, none is run
    parked = _collect_dead(tp, f"{topic}.dead", is_rabbit, len(poison), [])
    assert sorted(parked) == sorted(poison)
    assert endpoint.calls == ["ok"]


@pytest.mark.parametrize(
    "reply_to", ["x" * 256, "", "bad address with spaces", "r\u00e9ply", "a\x00b"]
)
def test_a_request_with_an_invalid_reply_address_is_refused_before_it_runs(
    tp: transport.Transport, topic: str, servers: Servers, is_rabbit: bool, reply_to: str
) -> None:
    endpoint = Recorder()
    servers.start(tp, Target(topic=topic), [endpoint])
    body = json.dumps(_request(reply_to=reply_to)).encode()
    tp._driver.send(Target(topic=topic), body)
    batch = json.dumps(
        {"batch": [_request(reply_to=reply_to), _request(args={"value": 2})]}
    ).encode()
    tp._driver.send(Target(topic=topic), batch)
    assert _collect_dead(tp, f"{topic}.dead", is_rabbit, 1, []) == [body]
    deadline = time.monotonic() + 10
    while endpoint.calls != [2] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert endpoint.calls == [2]  # the batch's valid request ran, the other did not
    assert RPCClient(tp, Target(topic=topic), timeout=10).call({}, "echo", value="ok") == "ok"


def test_a_failing_reply_settles_the_request_and_keeps_the_heartbeat_thread_alive(
    make_transport: MakeTransport, topic: str, is_rabbit: bool
) -> None:
    # Given a server whose replies to one address fail with an unexpected error (as kombu's
    # struct.error did for an over-long address)
    server_tp = make_transport()
    endpoint = Recorder()
    server = RPCServer(server_tp, Target(topic=topic), [endpoint], max_workers=2)
    real_send_reply = server_tp._driver.send_reply

    def send_reply(address: str, body: bytes) -> None:
        if address == "reply_poisoned":
            raise RuntimeError("boom")
        real_send_reply(address, body)

    server_tp._driver.send_reply = send_reply  # type: ignore[method-assign]
    server.start()
    try:
        # When requests to that address run (heartbeats and replies fail)
        for _ in range(10):
            request = _request("sleep", {"seconds": 0.3}, reply_to="reply_poisoned", hb=0.1)
            server_tp._driver.send(Target(topic=topic), json.dumps(request).encode())
        time.sleep(0.5)
        # Then ordinary calls are still served and the call monitor still works
        client = RPCClient(
            make_transport(), Target(topic=topic), timeout=30, call_monitor_interval=0.2
        )
        assert client.call({}, "echo", value="ok") == "ok"
        future = client.call_async({}, "block")
        assert endpoint.started.wait(10)
        time.sleep(0.6)  # a heartbeat or two arrive
        killed_at = time.monotonic()
        server.kill()
        with pytest.raises(CallMonitorTimeout):
            future.wait(10)
        assert time.monotonic() - killed_at < 3
    finally:
        endpoint.release.set()
        server.kill()


class Notes:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def info(
        self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, metadata: Any
    ) -> None:
        self.seen.append(payload)


def test_a_poison_notification_is_dead_lettered_and_the_listener_goes_on(
    tp: transport.Transport, topic: str, is_rabbit: bool
) -> None:
    endpoint = Notes()
    listener = NotificationListener(tp, [Target(topic=topic)], [endpoint], max_workers=1)
    listener.start()
    try:
        bodies = [
            b'{"priority":"info","payload":' + b"[" * DEEP + b"]" * DEEP + b"}" for _ in range(6)
        ]
        for body in bodies:
            tp._driver.notify(Target(topic=topic), "info", body)
        transport.Notifier(tp, "p", topics=[topic]).info({}, "e", "after")
        deadline = time.monotonic() + 10
        while endpoint.seen != ["after"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert endpoint.seen == ["after"]
        assert len(_collect_dead(tp, f"{topic}.dead", is_rabbit, len(bodies), [])) == len(bodies)
    finally:
        listener.stop(timeout=5)


class Quitter:
    def quit(self, ctxt: Any, kind: str) -> None:
        if kind == "exit":
            raise SystemExit(3)
        if kind == "interrupt":
            raise KeyboardInterrupt
        raise GeneratorExit("base")

    def echo(self, ctxt: Any, value: Any) -> Any:
        return value


@pytest.mark.parametrize("kind", ["exit", "interrupt", "base"])
def test_an_endpoint_raising_a_base_exception_fails_only_its_own_call_at_once(
    tp: transport.Transport, topic: str, servers: Servers, kind: str
) -> None:
    # Given a server with two workers whose endpoint raises SystemExit, KeyboardInterrupt or
    # another BaseException
    servers.start(tp, Target(topic=topic), [Quitter()], max_workers=2)
    client = RPCClient(tp, Target(topic=topic), timeout=20)
    name = {"exit": "SystemExit", "interrupt": "KeyboardInterrupt", "base": "GeneratorExit"}[kind]
    # When it is called, alone and many at once (batched)
    started = time.monotonic()
    with pytest.raises(RemoteError) as info:
        client.call({}, "quit", kind=kind)
    assert info.value.exc_type == name
    futures = [client.call_async({}, "quit", kind=kind) for _ in range(20)]
    for future in futures:
        with pytest.raises(RemoteError):
            future.wait(20)
    # Then every caller got a typed error at once, and the server still serves
    assert time.monotonic() - started < 5
    assert client.call({}, "echo", value="alive") == "alive"


# -- fuzzing the envelope paths -----------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_addresses = (
    st.sampled_from(
        ["reply_fuzz", "", " ", "a b", "x" * 255, "x" * 256, "é" * 200, "\x00", "amq.gen"]
    )
    | st.text(max_size=300)
    | _values
)
_methods = st.sampled_from(["echo", "fail", "quit", "stream", "nap", "_private", "nope"]) | _values
_hb = st.sampled_from([1e-9, 0.0, -1.0, float("nan"), float("inf"), 1e300, 0.05]) | _values


class Fuzzed:
    def echo(self, ctxt: Any, value: Any = None) -> Any:
        return value

    def fail(self, ctxt: Any, **kwargs: Any) -> None:
        raise ValueError("on purpose")

    def quit(self, ctxt: Any, **kwargs: Any) -> None:
        raise SystemExit(1)

    def stream(self, ctxt: Any, value: Any = None) -> Any:
        yield value
        raise RuntimeError("mid-stream")

    def nap(self, ctxt: Any, **kwargs: Any) -> None:
        time.sleep(0.01)


@st.composite
def _envelopes(draw: st.DrawFn) -> Any:
    envelope: dict[str, Any] = {
        "id": draw(st.text(min_size=1, max_size=40) | st.sampled_from(["i" * 300]) | _values),
        "method": draw(_methods),
        "args": draw(st.fixed_dictionaries({}, optional={"value": _values}) | _values),
        "ctxt": draw(st.dictionaries(st.text(max_size=4), _values, max_size=2) | _values),
        "ns": draw(st.none() | _values),
        "ver": draw(st.none() | st.sampled_from(["1.0", "2.0", "x"]) | _values),
        "reply_to": draw(_addresses),
        "hb": draw(_hb),
        "multi": draw(_values),
    }
    for key in draw(st.lists(st.sampled_from(sorted(envelope)), max_size=3)):
        envelope.pop(key, None)
    return envelope


def _deepen(body: bytes, depth: int) -> bytes:
    return b'{"batch":' + b"[" * depth + body + b"]" * depth + b"}" if depth else body


@st.composite
def _messages(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["single", "batch", "raw", "deep"]))
    if kind == "raw":
        return draw(st.binary(max_size=64))
    if kind == "single":
        value: Any = draw(_envelopes())
    else:
        value = {"batch": draw(st.lists(_envelopes() | _values, max_size=6))}
    body = json.dumps(value).encode()  # NaN and Infinity included: Python's JSON takes them
    if kind == "deep":
        body = _deepen(body, draw(st.sampled_from([1, 50, 900, 5000, DEEP])))
    return body


def _unsettled(tp: transport.Transport, topic: str) -> int:
    broker = tp._driver.broker  # type: ignore[attr-defined]
    with broker._lock:
        return sum(
            len(c.unacked)
            for name, q in broker._queues.items()
            if name.startswith(topic)
            for c in q.consumers
        )


def test_fuzzed_envelopes_never_stall_the_server(
    make_transport: MakeTransport, topic: str, is_rabbit: bool
) -> None:
    # Given a server with a small prefetch window (2 workers: 8 messages)
    server_tp = make_transport()
    servers_tp = Servers()
    servers_tp.start(server_tp, Target(topic=topic), [Fuzzed()], max_workers=2)
    client = RPCClient(make_transport(), Target(topic=topic), timeout=10, call_monitor_interval=0.2)
    tried = {"messages": 0}
    try:

        @settings(
            max_examples=100 if is_rabbit else 400,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.lists(_messages(), min_size=1, max_size=12))
        def check(bodies: list[bytes]) -> None:
            # When a window's worth of fuzzed messages arrives
            for body in bodies:
                server_tp._driver.send(Target(topic=topic), body)
            tried["messages"] += len(bodies)
            # Then a normal call right after still succeeds quickly
            started = time.monotonic()
            assert client.call({}, "echo", value="alive") == "alive"
            assert time.monotonic() - started < 5

        check()
        if not is_rabbit:  # and nothing stays unsettled
            deadline = time.monotonic() + 10
            while _unsettled(server_tp, topic) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _unsettled(server_tp, topic) == 0
    finally:
        for server in servers_tp.started:
            server.stop(timeout=5)
    assert tried["messages"] >= 100
    print(f"figures: fuzzed messages {tried['messages']}")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


_tricky_text = st.text(alphabet='[]{}"\\\\ab', max_size=8)
_nested = st.recursive(
    st.none() | st.integers() | _tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_tricky_text, inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=500, deadline=None)
@given(_nested, st.integers(min_value=0, max_value=12))
def test_the_depth_check_agrees_with_the_decoded_value(value: Any, limit: int) -> None:
    from transport import _wire

    body = json.dumps(value).encode()
    assert _wire.too_deep(body, limit) == (_depth(value) > limit)


def test_the_heartbeat_thread_comes_back_after_it_failed(
    make_transport: MakeTransport, topic: str
) -> None:
    server_tp = make_transport()
    endpoint = Recorder()
    server = RPCServer(server_tp, Target(topic=topic), [endpoint], max_workers=2)
    real_reply = server._reply
    failures = {"left": 3}

    def flaky_reply(reply_to: str, reply: dict[str, Any]) -> None:
        if reply.get("t") == "hb" and failures["left"] > 0:
            failures["left"] -= 1
            raise KeyboardInterrupt  # whatever it is, the thread must not stay dead
        real_reply(reply_to, reply)

    server._reply = flaky_reply  # type: ignore[method-assign]
    server.start()
    try:
        client = RPCClient(
            make_transport(), Target(topic=topic), timeout=30, call_monitor_interval=0.2
        )
        assert client.call({}, "sleep", seconds=1.0) == 1.0  # heartbeats failed, then flowed
        assert failures["left"] == 0
        future = client.call_async({}, "block")
        assert endpoint.started.wait(10)
        time.sleep(0.6)
        killed_at = time.monotonic()
        server.kill()
        with pytest.raises(CallMonitorTimeout):
            future.wait(10)
        assert time.monotonic() - killed_at < 3
    finally:
        endpoint.release.set()
        server.kill()


def test_a_bad_reply_and_a_failing_io_command_fail_no_pending_call(
    make_transport: MakeTransport, topic: str, servers: Servers, is_rabbit: bool
) -> None:
    server_tp, client_tp = make_transport(), make_transport()
    endpoint = Recorder()
    servers.start(server_tp, Target(topic=topic), [endpoint])
    client = RPCClient(client_tp, Target(topic=topic), timeout=10)
    assert client.call({}, "echo", value=1) == 1
    driver: Any = client_tp._driver
    generation = getattr(driver, "_generation", 0)
    # A reply its handler fails on (an unhashable id) while a call is pending
    future = client.call_async({}, "block")
    assert endpoint.started.wait(10)
    server_tp._driver.send_reply(client_tp.reply_address, b'{"id": [1], "t": "r"}')
    time.sleep(0.5)
    assert getattr(driver, "_generation", 0) == generation  # not taken for a lost connection
    endpoint.release.set()
    assert future.wait(10) == "released"  # the pending call was not failed
    if is_rabbit:
        # And the AMQP I/O thread restarts (and reconnects, to be safe) after a command
        # raising SystemExit
        def fail() -> None:
            raise SystemExit("a command that fails")

        driver._io.post(fail)
    assert client.call({}, "echo", value=2) == 2


# -- log floods and client-chosen intervals -----------------------------------------------
import logging  # noqa: E402

from transport.serializer import Serializer  # noqa: E402


def _server_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name.startswith("transport") and r.levelno >= logging.INFO
    ]


def test_a_flood_of_bad_messages_is_logged_one_line_each_and_rate_limited(
    tp: transport.Transport,
    topic: str,
    servers: Servers,
    is_rabbit: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    servers.start(tp, Target(topic=topic), [Recorder()])
    started = time.monotonic()
    for i in range(300):
        tp._driver.send(Target(topic=topic), b"\xff not json %d" % i)
    assert len(_collect_dead(tp, f"{topic}.dead", is_rabbit, 300, [], timeout=30)) == 300
    elapsed = time.monotonic() - started
    records = _server_records(caplog)
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in records)
    assert len(records) <= 50 + 10 * elapsed + 2, (len(records), elapsed)
    if len(records) < 300:
        time.sleep(0.2)
        tp._driver.send(Target(topic=topic), b"\xff one more")
        _collect_dead(tp, f"{topic}.dead", is_rabbit, 301 if not is_rabbit else 1, [], timeout=10)
        assert any("suppressed" in r.getMessage() for r in _server_records(caplog))


def test_a_huge_batch_is_refused_in_one_line(
    tp: transport.Transport,
    topic: str,
    servers: Servers,
    is_rabbit: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    endpoint = Recorder()
    servers.start(tp, Target(topic=topic), [endpoint])
    huge = json.dumps({"batch": [{"bad": i} for i in range(85_000)]}).encode()
    bad = json.dumps(
        {"batch": [{"bad": i} for i in range(1000)] + [_request(args={"value": 7})]}
    ).encode()
    for body in (huge, bad):
        tp._driver.send(Target(topic=topic), body)
    assert _collect_dead(tp, f"{topic}.dead", is_rabbit, 1, []) == [huge]
    deadline = time.monotonic() + 10
    while endpoint.calls != [7] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert endpoint.calls == [7]
    time.sleep(0.2)
    assert len(_server_records(caplog)) == 2, [
        r.getMessage()[:200] for r in _server_records(caplog)
    ]


class RefusingSerializer(Serializer):
    def serialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return entity

    def deserialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return entity

    def serialize_context(self, ctxt: Any) -> Any:
        return ctxt

    def deserialize_context(self, ctxt: dict[str, Any]) -> Any:
        if ctxt.get("is_admin"):
            raise PermissionError("the request context claims admin")
        return ctxt


def test_a_refused_context_is_logged_in_one_line_without_a_traceback(
    tp: transport.Transport, topic: str, servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    servers.start(tp, Target(topic=topic), [Recorder()], serializer=RefusingSerializer())
    client = RPCClient(tp, Target(topic=topic), timeout=10)
    with pytest.raises(PermissionError):
        client.call({"is_admin": True}, "echo", value=1)
    futures = [client.call_async({"is_admin": True}, "echo", value=i) for i in range(10)]  # batched
    for future in futures:
        with pytest.raises(PermissionError):
            future.wait(10)
    records = [r for r in _server_records(caplog) if "admin" in r.getMessage()]
    assert len(records) == 11
    assert all(r.exc_info is None for r in records)


def test_heartbeats_come_no_more_often_than_every_tenth_of_a_second(
    make_transport: MakeTransport, topic: str, servers: Servers
) -> None:
    servers.start(make_transport(), Target(topic=topic), [Recorder()])
    raw = make_transport()
    beats: list[str] = []
    done = threading.Event()

    def on_reply(body: bytes) -> None:
        reply = json.loads(body)
        for one in reply["batch"] if "batch" in reply else [reply]:
            (beats.append if one["t"] == "hb" else lambda _: done.set())(one["t"])

    address = raw._driver.start_replies(on_reply, lambda reason: None)
    for hb in (1e-9, float("nan"), "fast"):
        beats.clear()
        done.clear()
        request = _request("sleep", {"seconds": 1.0}, reply_to=address, hb=hb)
        raw._driver.send(Target(topic=topic), json.dumps(request).encode())
        assert done.wait(10)
        assert len(beats) <= 11, (hb, len(beats))


def test_a_notification_over_the_size_limit_is_parked_not_read(
    make_transport: MakeTransport, topic: str, is_rabbit: bool
) -> None:
    tp = make_transport(transport.TransportConfig(max_message_size=100_000))
    endpoint = Notes()
    listener = NotificationListener(tp, [Target(topic=topic)], [endpoint], max_workers=1)
    listener.start()
    try:
        big = json.dumps({"priority": "info", "payload": "x" * 1_000_000}).encode()
        tp._driver.notify(Target(topic=topic), "info", big)
        transport.Notifier(tp, "p", topics=[topic]).info({}, "e", "after")
        deadline = time.monotonic() + 10
        while endpoint.seen != ["after"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert endpoint.seen == ["after"]
        parked = _collect_dead(tp, f"{topic}.dead", is_rabbit, 1, [])
        assert len(parked) == 1 and big.startswith(parked[0])
        if is_rabbit:
            assert len(parked[0]) == 64 * 1024  # only its head was ever kept
    finally:
        listener.stop(timeout=5)


@pytest.mark.rabbit
def test_a_message_that_cannot_be_parked_is_dropped_not_redelivered_forever(topic: str) -> None:
    # (RabbitMQ only: memory:// parks in a list, which cannot refuse.)
    from kombu.connection import Connection
    from kombu.entity import Queue

    from tests.brokers import no_service

    from .conftest import RABBIT_URL

    if not RABBIT_URL:
        no_service("CONDUCTOR_TEST_TRANSPORT_URL")
    # Given a dead-letter queue declared with other arguments than the server's, so that
    # parking fails with a channel error (PRECONDITION_FAILED) every time
    with Connection(RABBIT_URL) as conn:
        Queue(f"{topic}.dead", durable=True, queue_arguments={"x-max-length": 5})(
            conn.channel()
        ).declare()
    tp = transport.get_transport(RABBIT_URL)
    server = RPCServer(tp, Target(topic=topic), [Recorder()])
    seen = {"n": 0}
    real = server._handle_message

    def counting(incoming: Any, decoded: Any = None) -> None:
        if incoming.body.startswith(b"\xff"):
            seen["n"] += 1
        real(incoming, decoded)

    server._handle_message = counting  # type: ignore[method-assign]
    server.start()
    try:
        tp._driver.send(Target(topic=topic), b"\xff poison")
        time.sleep(2)
        # Then it was handled once and dropped (logged), not requeued in a hot loop
        assert seen["n"] == 1
        assert RPCClient(tp, Target(topic=topic), timeout=10).call({}, "echo", value="ok") == "ok"
    finally:
        server.stop(timeout=5)
        tp.cleanup()
