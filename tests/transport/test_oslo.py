"""oslo interop over RabbitMQ with the real oslo.messaging (rabbit driver).

Our servers answer oslo.messaging callers with no configuration; our clients of
``?wire=oslo`` call oslo.messaging servers. Poison oslo envelopes are settled like native
ones: dead-lettered with one log line, the server keeps serving.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import transport
from tests.openstack import Oslo, om
from transport import RPCClient, Target
from transport.exceptions import MessagingTimeout, RemoteError

from .conftest import RABBIT_URL, Servers
from .test_server import _dead_letters

pytestmark = pytest.mark.rabbit


class Calc:
    def __init__(self, name: str = "ours") -> None:
        self.name = name
        self.seen: list[Any] = []
        self.got = threading.Event()

    def add(self, ctxt: Any, a: int, b: int) -> int:
        return a + b

    def whoami(self, ctxt: Any) -> str:
        return self.name

    def context(self, ctxt: Any) -> Any:
        return dict(ctxt) if isinstance(ctxt, dict) else ctxt.to_dict()

    def record(self, ctxt: Any, value: Any) -> None:
        self.seen.append(value)
        self.got.set()

    def fail(self, ctxt: Any, text: str) -> None:
        raise ValueError(text)

    def sleep(self, ctxt: Any, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


@pytest.fixture
def transport_url() -> str:
    """RabbitMQ only: oslo.messaging's rabbit driver is what these tests talk to."""
    if not RABBIT_URL:
        from tests.brokers import no_service

        no_service("CONDUCTOR_TEST_TRANSPORT_URL")
    return RABBIT_URL


@pytest.fixture
def url(transport_url: str) -> str:
    return transport_url


@pytest.fixture
def oslo(url: str, queues: list[str]) -> Iterator[Oslo]:
    # After ``queues``: its servers stop before the test's queues are deleted (a running
    # oslo.messaging server declares a deleted queue again).
    made = Oslo(url)
    yield made
    made.close()


@pytest.fixture
def ours(url: str, queues: list[str]) -> Iterator[transport.Transport]:
    tp = transport.get_transport(url)
    yield tp
    tp.cleanup()


@pytest.fixture
def oslo_wire(url: str) -> Iterator[transport.Transport]:
    sep = "&" if "?" in url else "?"
    tp = transport.get_transport(url + sep + "wire=oslo")
    yield tp
    tp.cleanup()


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- an oslo.messaging caller, our server -----------------------------------------------


def test_oslo_client_calls_casts_and_targets_our_server(
    oslo: Oslo, ours: transport.Transport, servers: Servers, topic: str
) -> None:
    calc, other = Calc("s1"), Calc("s2")
    servers.start(ours, Target(topic=topic, server="s1"), [calc])
    servers.start(ours, Target(topic=topic, server="s2"), [other])
    client = oslo.client(topic)

    assert client.call({"user_id": "u1", "project_id": "p1"}, "add", a=2, b=3) == 5
    ctxt = client.call({"user_id": "u1", "request_id": "req-1"}, "context")
    assert ctxt == {"user_id": "u1", "request_id": "req-1"}
    assert client.prepare(server="s2").call({}, "whoami") == "s2"
    assert client.prepare(server="s1").call({}, "whoami") == "s1"

    client.cast({}, "record", value="cast")
    _wait_for(lambda: calc.seen + other.seen == ["cast"])
    client.prepare(fanout=True).cast({}, "record", value="fan")
    _wait_for(lambda: calc.seen.count("fan") == 1 and other.seen.count("fan") == 1)


def test_oslo_client_gets_our_failures_as_oslo_expects_them(
    oslo: Oslo, ours: transport.Transport, servers: Servers, topic: str
) -> None:
    servers.start(ours, Target(topic=topic), [Calc()])
    client = oslo.client(topic)

    # builtins come back as themselves, without a traceback in the message.
    with pytest.raises(ValueError) as err:
        client.call({}, "fail", text="no such thing")
    assert str(err.value).strip() == "no such thing"
    assert "Traceback" not in str(err.value)
    # Not allowed by the caller: oslo's RemoteError naming our type.
    with pytest.raises(om.RemoteError) as remote:
        client.call({}, "nope")
    assert remote.value.exc_type == "NoSuchMethod"
    assert "nope" in remote.value.value
    # Allowed by the caller: our own type.
    allowing = Oslo(ours.url, allowed_remote_exmods=["transport.exceptions"])
    try:
        with pytest.raises(transport.exceptions.NoSuchMethod):
            allowing.client(topic).call({}, "nope")
    finally:
        allowing.close()


def test_oslo_client_call_monitor_gets_heartbeats_from_our_server(
    oslo: Oslo, ours: transport.Transport, servers: Servers, topic: str
) -> None:
    servers.start(ours, Target(topic=topic), [Calc()])
    # Beats every second; a call running 3.5 s outlives two monitor periods.
    client = oslo.client(topic, call_monitor_timeout=2, timeout=20)
    assert client.call({}, "sleep", seconds=3.5) == 3.5


def test_oslo_client_reaches_our_server_on_its_control_exchange(
    url: str, servers: Servers, topic: str
) -> None:
    exchange = f"test_ctl_{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in url else "?"
    tp = transport.get_transport(f"{url}{sep}control_exchange={exchange}")
    oslo = Oslo(url, control_exchange=exchange)
    try:
        servers.start(tp, Target(topic=topic), [Calc()])
        assert oslo.client(topic).call({}, "add", a=1, b=1) == 2
    finally:
        servers.stop_all()
        oslo.close()
        tp.cleanup()
        _delete_exchange(url, exchange)


# -- our wire=oslo caller, an oslo.messaging server ---------------------------------------


def test_our_oslo_wire_client_calls_an_oslo_server(
    oslo: Oslo, oslo_wire: transport.Transport, topic: str, queues: list[str]
) -> None:
    calc, other = Calc("s1"), Calc("s2")
    oslo.server(topic, [calc], server="s1")
    oslo.server(topic, [other], server="s2")
    client = RPCClient(oslo_wire, Target(topic=topic), timeout=10)

    assert client.call({"user_id": "u"}, "add", a=20, b=22) == 42
    assert client.call_async({}, "add", a=1, b=2).wait() == 3
    assert client.call({"user_id": "u", "request_id": "r"}, "context")["user_id"] == "u"
    assert client.prepare(server="s2").call({}, "whoami") == "s2"
    assert client.prepare(server="s1").call({}, "whoami") == "s1"

    client.cast({}, "record", value="cast")
    _wait_for(lambda: calc.seen + other.seen == ["cast"])
    client.prepare(fanout=True).cast({}, "record", value="fan")
    _wait_for(lambda: calc.seen.count("fan") == 1 and other.seen.count("fan") == 1)


def test_our_oslo_wire_client_maps_oslo_failures_and_times_out(
    oslo: Oslo, oslo_wire: transport.Transport, topic: str
) -> None:
    oslo.server(topic, [Calc()])
    client = RPCClient(oslo_wire, Target(topic=topic), timeout=10)

    with pytest.raises(ValueError, match="bad value"):
        client.call({}, "fail", text="bad value")
    # oslo's own exception types are not on our allow-list: RemoteError names them.
    with pytest.raises(RemoteError) as remote:
        client.call({}, "nope")
    assert remote.value.exc_type == "oslo_messaging.rpc.dispatcher.NoSuchMethod"
    # ... unless the caller allows their module.
    allowing = client.prepare(allowed_remote_exmods=["oslo_messaging.rpc.dispatcher"])
    with pytest.raises(om.rpc.dispatcher.NoSuchMethod):
        allowing.call({}, "nope")

    started = time.monotonic()
    with pytest.raises(MessagingTimeout):
        client.prepare(timeout=1.0, call_monitor_interval=None).call({}, "sleep", seconds=3)
    assert time.monotonic() - started < 2.5
    # A long call kept alive by oslo's call-monitor heartbeats.
    assert client.prepare(timeout=20).call({}, "sleep", seconds=3) == 3


# -- bad input on the oslo paths --------------------------------------------------------


def _publish_oslo(url: str, topic: str, body: Any, *, reply_to: str | None = None) -> None:
    from kombu.connection import Connection
    from kombu.entity import Exchange
    from kombu.messaging import Producer

    with Connection(url) as conn:
        exchange = Exchange("openstack", type="topic", durable=False, auto_delete=False)
        producer = Producer(conn.channel(), exchange=exchange)
        producer.publish(
            body if isinstance(body, bytes) else json.dumps(body).encode(),
            routing_key=topic,
            content_type="application/json",
            content_encoding="binary",
        )


def _oslo_envelope(message: Any) -> dict[str, Any]:
    text = message if isinstance(message, str) else json.dumps(message)
    return {"oslo.version": "2.0", "oslo.message": text}


POISON = [
    {"oslo.version": "2.0"},
    {"oslo.version": "9.0", "oslo.message": "{}"},
    {"oslo.version": "2.0", "oslo.message": 42},
    _oslo_envelope("{not json"),
    _oslo_envelope("[1, 2]"),
    _oslo_envelope({"args": {}, "_unique_id": "x"}),
    _oslo_envelope({"method": "add", "args": [1], "_unique_id": "x"}),
    _oslo_envelope({"method": "add", "args": {"a": 1, "b": 2}}),  # no id at all
    _oslo_envelope({"method": "add", "args": {}, "_msg_id": "m", "_reply_q": "bad queue"}),
    _oslo_envelope("[" * 5000 + "]" * 5000),
]


def test_poison_oslo_envelopes_are_dead_lettered_and_the_server_keeps_serving(
    oslo: Oslo,
    ours: transport.Transport,
    servers: Servers,
    topic: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    servers.start(ours, Target(topic=topic), [Calc()])
    client = oslo.client(topic)
    with caplog.at_level(logging.WARNING, logger="transport.server"):
        for body in POISON:
            _publish_oslo(RABBIT_URL or "", topic, body)
        assert client.call({}, "add", a=1, b=2) == 3
        _wait_for(lambda: len(_dead_letters_seen(caplog)) >= len(POISON))
    lines = _dead_letters_seen(caplog)
    assert len(lines) == len(POISON), lines
    parked = _dead_letters(ours, f"{topic}.dead", True)
    assert len(parked) == len(POISON)
    assert client.call({}, "add", a=2, b=2) == 4


def _dead_letters_seen(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "dead-letter" in r.getMessage()]


def test_a_bad_oslo_call_with_a_reply_queue_gets_a_typed_error(
    oslo: Oslo, ours: transport.Transport, servers: Servers, topic: str
) -> None:
    # Given an oslo call whose 'args' is not a mapping, sent through oslo's own driver
    servers.start(ours, Target(topic=topic), [Calc()])
    allowing = Oslo(ours.url, allowed_remote_exmods=["transport.exceptions"])
    client = allowing.client(topic)
    driver = client.transport._driver
    real_send = driver.send

    def send_bad(target: Any, ctxt: Any, message: Any, *args: Any, **kwargs: Any) -> Any:
        message["args"] = ["not", "a", "dict"]
        return real_send(target, ctxt, message, *args, **kwargs)

    driver.send = send_bad
    try:
        with pytest.raises(transport.exceptions.MessageDeliveryFailure, match="args"):
            client.call({}, "add", a=1, b=2)
        driver.send = real_send
        assert client.call({}, "add", a=1, b=2) == 3
    finally:
        allowing.close()


def _delete_exchange(url: str, name: str) -> None:
    from kombu.connection import Connection

    with Connection(url) as conn:
        try:
            conn.channel().exchange_delete(name)
        except conn.channel_errors:
            pass
