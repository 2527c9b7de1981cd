"""Whatever kombu or py-amqp raise reaches the caller of a public transport call as a typed
transport exception naming what to do, never as a raw ``amqp.exceptions`` error.

The broker's refusals are real ones (RabbitMQ); the connection failures in the middle of a
start are injected at the kombu layer; the translation itself is checked on every kind of
broker error without a broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import amqp.exceptions as amqp_exc
import pytest

import transport
from tests.brokers import no_service
from transport import NotificationListener, RPCClient, RPCServer, Target
from transport import exceptions as texc

from .conftest import RABBIT_URL


class Echo:
    def echo(self, ctxt: Any, value: Any) -> Any:
        return value


class Sink:
    def info(self, *args: Any) -> None:
        pass


@pytest.fixture
def rabbit() -> Iterator[transport.Transport]:
    if not RABBIT_URL:
        no_service("CONDUCTOR_TEST_TRANSPORT_URL")
    tp = transport.get_transport(RABBIT_URL)
    yield tp
    tp.cleanup()


@pytest.fixture
def topic_exchange(queues: list[str]) -> Iterator[str]:
    """A name that exists on the broker as a *topic* exchange (for ``<name>`` and
    ``<name>_notifications``), where the transport declares direct ones."""
    from kombu.connection import Connection
    from kombu.entity import Exchange

    assert RABBIT_URL
    name = f"test_ex_{uuid.uuid4().hex[:10]}"
    with Connection(RABBIT_URL) as conn:
        for each in (name, f"{name}_notifications"):
            Exchange(each, type="topic", durable=False)(conn.channel()).declare()
    yield name
    with Connection(RABBIT_URL) as conn:
        channel = conn.channel()
        for each in (name, f"{name}_notifications"):
            channel.exchange_delete(each)


def _no_raw_amqp(exc: BaseException) -> None:
    assert not type(exc).__module__.startswith(("amqp", "kombu")), type(exc)


# -- the broker refuses (RabbitMQ) ---------------------------------------------------------


@pytest.mark.rabbit
def test_server_on_an_exchange_of_another_type_gets_a_typed_error_naming_the_fix(
    rabbit: transport.Transport, topic: str, topic_exchange: str
) -> None:
    server = RPCServer(rabbit, Target(topic=topic, exchange=topic_exchange), [Echo()])
    with pytest.raises(texc.BrokerRefused) as info:
        server.start()
    text = str(info.value)
    assert topic_exchange in text and "type" in text and "exchange" in text
    assert info.value.kwargs["code"] == 406
    assert server.state is transport.ServerState.STOPPED
    # The transport stays usable: a server of another topic starts and answers.
    other = Target(topic=f"{topic}_ok")
    ok = RPCServer(rabbit, other, [Echo()])
    ok.start()
    try:
        assert RPCClient(rabbit, other, timeout=20).call({}, "echo", value=5) == 5
    finally:
        ok.stop()
        from tests.brokers import delete_queues

        delete_queues(RABBIT_URL or "", [other.topic or ""])


@pytest.mark.rabbit
def test_listener_on_an_exchange_of_another_type_gets_a_typed_error(
    rabbit: transport.Transport, topic: str, topic_exchange: str
) -> None:
    target = Target(topic=topic, exchange=topic_exchange)
    listener = NotificationListener(rabbit, [target], [Sink()])
    with pytest.raises(texc.BrokerRefused, match="exchange"):
        listener.start()


@pytest.mark.rabbit
def test_server_on_a_reserved_queue_name_gets_a_typed_error(rabbit: transport.Transport) -> None:
    with pytest.raises(texc.BrokerRefused) as info:
        RPCServer(rabbit, Target(topic=f"amq.test_{uuid.uuid4().hex[:8]}"), [Echo()]).start()
    assert info.value.kwargs["code"] == 403
    assert "permission" in str(info.value) and "amq." in str(info.value)


@pytest.mark.rabbit
def test_listener_on_a_reserved_queue_name_gets_a_typed_error(
    rabbit: transport.Transport,
) -> None:
    topic = f"amq.test_{uuid.uuid4().hex[:8]}"
    with pytest.raises(texc.BrokerRefused, match="amq"):
        NotificationListener(rabbit, [Target(topic=topic)], [Sink()]).start()


@pytest.mark.rabbit
def test_server_on_a_queue_held_exclusively_elsewhere_gets_a_typed_error(
    rabbit: transport.Transport, topic: str
) -> None:
    from kombu.connection import Connection

    assert RABBIT_URL
    with Connection(RABBIT_URL) as holder:
        holder.channel().queue_declare(queue=topic, exclusive=True)
        with pytest.raises(texc.BrokerRefused) as info:
            RPCServer(rabbit, Target(topic=topic), [Echo()]).start()
        assert info.value.kwargs["code"] == 405 and "exclusive" in str(info.value)
        with pytest.raises(texc.BrokerRefused):
            transport.declare_topic(rabbit, topic)


@pytest.mark.rabbit
def test_declare_topic_and_cast_on_an_exchange_of_another_type_are_typed(
    rabbit: transport.Transport, topic: str, topic_exchange: str
) -> None:
    with pytest.raises(texc.BrokerRefused, match=topic_exchange):
        transport.declare_topic(rabbit, topic, exchange=topic_exchange)
    client = RPCClient(rabbit, Target(topic=topic, exchange=topic_exchange))
    with pytest.raises(texc.BrokerRefused, match=topic_exchange):
        client.cast({}, "echo", value=1)


# -- the connection fails in the middle of a start (injected at the kombu layer) ----------


@pytest.mark.rabbit
@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError(104, "Connection reset by peer"),
        amqp_exc.RecoverableConnectionError("connection already closed"),
        amqp_exc.ConnectionForced("(320) CONNECTION_FORCED - broker forced connection closure"),
        TimeoutError("timed out"),
    ],
    ids=["reset", "recoverable", "forced", "timeout"],
)
@pytest.mark.parametrize("kind", ["server", "listener"])
def test_a_connection_lost_during_start_is_a_transport_error(
    rabbit: transport.Transport,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    kind: str,
) -> None:
    from transport.drivers import amqp as driver_module

    real_consumer = driver_module.kombu.Consumer
    failing = [True]

    def consumer(*args: Any, **kwargs: Any) -> Any:
        made = real_consumer(*args, **kwargs)
        if failing:
            failing.clear()

            def consume(*a: Any, **k: Any) -> None:
                raise error

            made.consume = consume
        return made

    monkeypatch.setattr(driver_module.kombu, "Consumer", consumer)
    made: RPCServer | NotificationListener = (
        RPCServer(rabbit, Target(topic=topic), [Echo()])
        if kind == "server"
        else NotificationListener(rabbit, [Target(topic=topic)], [Sink()])
    )
    with pytest.raises(texc.TransportError) as info:
        made.start()
    _no_raw_amqp(info.value)
    assert "retry" in str(info.value) or "reconnect" in str(info.value)
    # Nothing half-started is left consuming: a server started now serves alone.
    again = RPCServer(rabbit, Target(topic=topic), [Echo()])
    again.start()
    try:
        assert RPCClient(rabbit, Target(topic=topic), timeout=20).call({}, "echo", value=2) == 2
    finally:
        again.stop()


# -- the translation, for every kind of broker error (no broker) ------------------------


@pytest.mark.parametrize(
    ("error", "expected", "words"),
    [
        (
            amqp_exc.PreconditionFailed(
                "Queue.declare: (406) PRECONDITION_FAILED - inequivalent arg 'x-queue-type' "
                "for queue 'q1' in vhost '/': received none but current is the value "
                "'quorum' of type 'longstr'"
            ),
            texc.QueueMismatch,
            ["q1", "quorum_queues"],
        ),
        (
            amqp_exc.PreconditionFailed(
                "Exchange.declare: (406) PRECONDITION_FAILED - inequivalent arg 'type' for "
                "exchange 'ex1' in vhost '/': received 'direct' but current is 'topic'"
            ),
            texc.BrokerRefused,
            ["ex1", "topic", "direct", "exchange"],
        ),
        (
            amqp_exc.AccessRefused(
                "Queue.declare: (403) ACCESS_REFUSED - queue name 'amq.q' contains reserved "
                "prefix 'amq.*'"
            ),
            texc.BrokerRefused,
            ["permission", "amq."],
        ),
        (
            amqp_exc.ResourceLocked(
                "Queue.declare: (405) RESOURCE_LOCKED - cannot obtain exclusive access to "
                "locked queue 'q2' in vhost '/'"
            ),
            texc.BrokerRefused,
            ["exclusive", "q2"],
        ),
        (
            amqp_exc.NotFound("Queue.declare: (404) NOT_FOUND - no queue 'q3' in vhost '/'"),
            texc.BrokerRefused,
            ["q3"],
        ),
        (ConnectionResetError(104, "reset"), texc.TransportError, ["reconnect"]),
        (amqp_exc.ConnectionForced("forced"), texc.TransportError, ["reconnect"]),
        (amqp_exc.RecoverableConnectionError("closed"), texc.TransportError, ["reconnect"]),
        (amqp_exc.UnexpectedFrame("bad frame"), texc.TransportError, ["reconnect"]),
    ],
    ids=[
        "queue-args",
        "exchange-type",
        "access",
        "locked",
        "not-found",
        "reset",
        "forced",
        "recoverable",
        "frame",
    ],
)
def test_broker_errors_translate_to_typed_transport_errors(
    error: BaseException, expected: type[texc.MessagingException], words: list[str]
) -> None:
    from transport.drivers.amqp import broker_error

    got = broker_error(error, "start a server of q1", ["q1"])
    assert type(got) is expected
    for word in words:
        assert word in str(got)


def test_other_exceptions_are_not_translated() -> None:
    from transport.drivers.amqp import broker_error

    assert broker_error(KeyError("x"), "start a server", []) is None
    typed = texc.MessageUndeliverable(target="t")
    assert broker_error(typed, "send", []) is typed
