"""Queue options of topic queues: quorum queues, TTLs, declaring a topic ahead, failover URLs.

The options are URL query options (``amqp://...//?quorum_queues=true``) as well as
:class:`~transport.TransportConfig` fields. A server whose topic queue already exists with
other arguments gets :class:`~transport.exceptions.QueueMismatch`, not a raw broker error.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import transport
from tests.brokers import no_service
from transport import RPCClient, RPCServer, Target, TransportConfig
from transport import exceptions as texc

from .conftest import RABBIT_URL, MakeTransport, Servers


class Echo:
    def echo(self, ctxt: Any, value: Any) -> Any:
        return value


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def order(self, ctxt: Any, n: int) -> None:
        self.seen.append(n)


def with_query(url: str, query: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=query))


@pytest.fixture
def rabbit() -> str:
    if not RABBIT_URL:
        no_service("CONDUCTOR_TEST_TRANSPORT_URL")
    return RABBIT_URL


@pytest.fixture
def rmake(rabbit: str, queues: list[str]) -> Iterator[MakeTransport]:
    """Like ``make_transport``, on RabbitMQ only (for tests of broker-side queue arguments)."""
    made: list[transport.Transport] = []

    def make(config: TransportConfig | None = None, url: str | None = None) -> transport.Transport:
        t = transport.get_transport(url or rabbit, config)
        made.append(t)
        return t

    yield make
    for t in made:
        t.cleanup()


@pytest.fixture
def rservers(rmake: MakeTransport) -> Iterator[Servers]:
    s = Servers()
    yield s
    for server in s.started:
        server.stop(timeout=5)


def queue_type(url: str, name: str) -> str | None:
    """``"quorum"`` or ``"classic"`` for an existing queue, None when it does not exist."""
    import amqp
    from kombu.connection import Connection

    with Connection(url) as conn:
        try:
            conn.channel().queue_declare(queue=name, passive=True)
        except amqp.exceptions.NotFound:
            return None
        try:
            conn.channel().queue_declare(
                queue=name, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"}
            )
        except amqp.exceptions.PreconditionFailed:
            return "classic"
        return "quorum"


def queue_depth(url: str, name: str) -> int:
    from kombu.connection import Connection

    with Connection(url) as conn:
        _, messages, _ = conn.channel().queue_declare(queue=name, passive=True)
        return int(messages)


# -- URL options -----------------------------------------------------------------------


def test_url_options_set_the_transport_config() -> None:
    tp = transport.get_transport(
        "memory://opts?quorum_queues=true&cast_ttl=30&topic_queue_message_ttl=60"
        "&topic_queue_expires=3600"
    )
    try:
        assert tp.config.quorum_queues is True
        assert tp.config.cast_ttl == 30.0
        assert tp.config.topic_queue_message_ttl == 60.0
        assert tp.config.topic_queue_expires == 3600.0
        assert tp.url.startswith("memory://opts?")
    finally:
        tp.cleanup()


def test_call_monitor_misses_url_option_sets_the_silence_a_caller_tolerates() -> None:
    # (a cluster's failover can hold heartbeats up longer than the default 4 misses)
    tp = transport.get_transport("memory://opts?call_monitor_misses=10")
    try:
        assert tp.config.call_monitor_misses == 10
        assert type(tp.config.call_monitor_misses) is int
    finally:
        tp.cleanup()


def test_url_options_override_the_config_passed_in() -> None:
    tp = transport.get_transport(
        "memory://opts?quorum_queues=false", TransportConfig(quorum_queues=True, cast_ttl=5)
    )
    try:
        assert tp.config.quorum_queues is False
        assert tp.config.cast_ttl == 5
    finally:
        tp.cleanup()


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ("quorum_queues=maybe", "quorum_queues"),
        ("cast_ttl=-1", "cast_ttl"),
        ("topic_queue_expires=soon", "topic_queue_expires"),
        ("call_monitor_misses=0", "call_monitor_misses=.*whole number"),
        ("call_monitor_misses=2.5", "call_monitor_misses=.*whole number"),
        ("call_monitor_misses=many", "call_monitor_misses=.*whole number"),
        ("quorum=true", "unknown transport URL option"),
    ],
)
def test_bad_url_options_are_refused_with_the_option_named(query: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        transport.get_transport(f"memory://opts?{query}")


def test_amqp_url_refuses_unknown_options_at_once() -> None:
    with pytest.raises(ValueError, match="unknown transport URL option"):
        transport.get_transport("amqp://guest:guest@127.0.0.1:1//?frobnicate=1")


# -- quorum queues -----------------------------------------------------------------------


@pytest.mark.rabbit
def test_quorum_queues_url_option_declares_quorum_topic_queues(
    rabbit: str, topic: str, rmake: MakeTransport, rservers: Servers
) -> None:
    tp = rmake(url=with_query(rabbit, "quorum_queues=true"))
    rservers.start(tp, Target(topic=topic, server="s1"), [Echo()])
    assert queue_type(rabbit, topic) == "quorum"
    assert queue_type(rabbit, f"{topic}.s1") == "quorum"
    client = RPCClient(rmake(), Target(topic=topic), timeout=20)
    assert client.call({}, "echo", value=7) == 7


@pytest.mark.rabbit
def test_classic_server_on_a_quorum_topic_gets_a_typed_error_naming_queue_and_fix(
    rabbit: str, topic: str, rmake: MakeTransport, rservers: Servers
) -> None:
    quorum = rmake(TransportConfig(quorum_queues=True))
    rservers.start(quorum, Target(topic=topic), [Echo()])
    classic = rmake()
    with pytest.raises(texc.QueueMismatch) as info:
        RPCServer(classic, Target(topic=topic), [Echo()]).start()
    err = info.value
    assert err.kwargs["queue"] == topic
    text = str(err)
    assert topic in text and "x-queue-type" in text and "quorum_queues" in text
    # The transport stays usable: the failed subscription is not retried on reconnects,
    # and calls through it still reach the quorum server.
    assert RPCClient(classic, Target(topic=topic), timeout=20).call({}, "echo", value=3) == 3


@pytest.mark.rabbit
def test_quorum_server_on_a_classic_topic_gets_a_typed_error(
    rabbit: str, topic: str, rmake: MakeTransport, rservers: Servers
) -> None:
    rservers.start(rmake(), Target(topic=topic), [Echo()])
    with pytest.raises(texc.QueueMismatch, match="classic"):
        RPCServer(rmake(TransportConfig(quorum_queues=True)), Target(topic=topic), [Echo()]).start()


@pytest.mark.rabbit
def test_ttl_mismatch_is_a_typed_error_too(rabbit: str, topic: str, rmake: MakeTransport) -> None:
    transport.declare_topic(rmake(TransportConfig(topic_queue_message_ttl=60)), topic)
    with pytest.raises(texc.QueueMismatch, match="x-message-ttl"):
        transport.declare_topic(rmake(), topic)


# -- declaring ahead, TTLs -------------------------------------------------------------------


def test_casts_sent_after_declare_topic_wait_for_the_first_server(
    topic: str, make_transport: MakeTransport, servers: Servers
) -> None:
    tp = make_transport()
    client = RPCClient(tp, Target(topic=topic), timeout=20)
    with pytest.raises(texc.MessageUndeliverable):
        client.cast({}, "order", n=0)
    transport.declare_topic(tp, topic)
    for n in range(1, 4):
        client.cast({}, "order", n=n)
    recorder = Recorder()
    servers.start(make_transport(), Target(topic=topic), [recorder])
    deadline = time.monotonic() + 20
    while len(recorder.seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(recorder.seen) == [1, 2, 3]


def test_declare_topic_with_a_server_declares_its_own_queue(
    topic: str, make_transport: MakeTransport, servers: Servers
) -> None:
    tp = make_transport()
    transport.declare_topic(tp, topic, server="s1")
    RPCClient(tp, Target(topic=topic, server="s1"), timeout=20).cast({}, "order", n=5)
    recorder = Recorder()
    servers.start(make_transport(), Target(topic=topic, server="s1"), [recorder])
    deadline = time.monotonic() + 20
    while not recorder.seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert recorder.seen == [5]


def test_cast_ttl_drops_orders_nobody_took_in_time(
    topic: str, make_transport: MakeTransport, servers: Servers
) -> None:
    tp = make_transport(TransportConfig(cast_ttl=0.5))
    transport.declare_topic(tp, topic)
    client = RPCClient(tp, Target(topic=topic), timeout=20)
    client.cast({}, "order", n=1)
    time.sleep(1.5)
    client.cast({}, "order", n=2)
    recorder = Recorder()
    servers.start(make_transport(), Target(topic=topic), [recorder])
    deadline = time.monotonic() + 20
    while not recorder.seen and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert recorder.seen == [2]


def test_topic_queue_message_ttl_drops_old_messages(
    topic: str, make_transport: MakeTransport, servers: Servers
) -> None:
    config = TransportConfig(topic_queue_message_ttl=0.5)
    tp = make_transport(config)
    transport.declare_topic(tp, topic)
    client = RPCClient(tp, Target(topic=topic), timeout=20)
    client.cast({}, "order", n=1)
    time.sleep(1.5)
    client.cast({}, "order", n=2)
    recorder = Recorder()
    servers.start(make_transport(config), Target(topic=topic), [recorder])
    deadline = time.monotonic() + 20
    while not recorder.seen and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert recorder.seen == [2]


@pytest.mark.rabbit
def test_declared_quorum_queue_holds_messages_until_a_server_comes(
    rabbit: str, topic: str, rmake: MakeTransport, rservers: Servers
) -> None:
    tp = rmake(TransportConfig(quorum_queues=True))
    transport.declare_topic(tp, topic)
    assert queue_type(rabbit, topic) == "quorum"
    client = RPCClient(rmake(), Target(topic=topic), timeout=20)
    for n in range(5):
        client.cast({}, "order", n=n)
    assert queue_depth(rabbit, topic) == 5
    recorder = Recorder()
    rservers.start(rmake(TransportConfig(quorum_queues=True)), Target(topic=topic), [recorder])
    deadline = time.monotonic() + 20
    while len(recorder.seen) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(recorder.seen) == [0, 1, 2, 3, 4]


@pytest.mark.rabbit
def test_topic_queue_expires_removes_an_unused_declared_queue(
    rabbit: str, topic: str, rmake: MakeTransport
) -> None:
    transport.declare_topic(rmake(TransportConfig(topic_queue_expires=1.0)), topic)
    assert queue_type(rabbit, topic) == "classic"
    time.sleep(3.0)  # untouched: any declaration, even a passive one, counts as a use
    assert queue_type(rabbit, topic) is None


# -- failover URLs -------------------------------------------------------------------------


@pytest.fixture
def dead_ports() -> Iterator[list[int]]:
    """Two local ports nothing listens on."""
    socks = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    yield ports


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@pytest.mark.rabbit
def test_failover_url_reaches_the_broker_whichever_hosts_before_it_are_down(
    rabbit: str, topic: str, dead_ports: list[int], rmake: MakeTransport, rservers: Servers
) -> None:
    url = ";".join([with_port(rabbit, dead_ports[0]), with_port(rabbit, dead_ports[1]), rabbit])
    tp = rmake(TransportConfig(connect_retries=4), url=url)
    rservers.start(tp, Target(topic=topic), [Echo()])
    assert RPCClient(tp, Target(topic=topic), timeout=20).call({}, "echo", value=9) == 9


@pytest.mark.rabbit
def test_failover_url_options_apply_to_every_host(rabbit: str, dead_ports: list[int]) -> None:
    url = with_port(rabbit, dead_ports[0]) + ";" + with_query(rabbit, "quorum_queues=true")
    tp = transport.get_transport(url)
    try:
        assert tp.config.quorum_queues is True
    finally:
        tp.cleanup()


@pytest.mark.rabbit
def test_a_publish_the_broker_nacks_ends_in_a_typed_error(
    rabbit: str, topic: str, rmake: MakeTransport
) -> None:
    # A queue that refuses every message with basic.nack (what a quorum queue does while
    # it has no leader, for a moment during a failover).
    from kombu.connection import Connection
    from kombu.entity import Exchange, Queue

    with Connection(rabbit) as conn:
        exchange = Exchange("conductor", type="direct", durable=True)
        Queue(
            topic,
            exchange,
            routing_key=topic,
            durable=True,
            queue_arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
        )(conn.channel()).declare()
    tp = rmake(TransportConfig(connect_retries=2))
    started = time.monotonic()
    with pytest.raises(texc.MessageDeliveryFailure, match="refused"):
        RPCClient(tp, Target(topic=topic), timeout=20).cast({}, "order", n=1)
    assert time.monotonic() - started < 10
