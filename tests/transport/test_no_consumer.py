"""A call to a topic whose servers have all stopped fails fast (the queue outlives them).

Casts still wait in the queue for the next server, and a call already queued when its
server dies is answered by the server that takes over (DESIGN: queues outlive consumers).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import transport
from transport import RPCClient, Target
from transport.exceptions import MessageUndeliverable

from .conftest import MakeTransport, Servers


class Echo:
    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.release = threading.Event()
        self.started = threading.Event()

    def echo(self, ctxt: Any, value: Any) -> Any:
        self.seen.append(value)
        return value

    def block(self, ctxt: Any, value: Any) -> Any:
        self.started.set()
        self.release.wait(30)
        return value


def test_a_call_after_every_server_stopped_fails_fast_and_a_cast_still_waits(
    tp: transport.Transport, topic: str, servers: Servers, make_transport: MakeTransport
) -> None:
    client = RPCClient(tp, Target(topic=topic), timeout=20)
    server = servers.start(make_transport(), Target(topic=topic), [Echo()])
    assert client.call({}, "echo", value=1) == 1
    server.stop(timeout=5)
    # A queue seen with a consumer is trusted for a second (no broker round trip per
    # call): a call in that second queues for the next server, like calls queued before.
    time.sleep(1.2)
    # Warm: the transport saw the topic served moments ago, so on RabbitMQ the call first
    # gives a server a few seconds to come back (a failover or restart looks the same
    # for a moment); then it fails, and the next call fails at once.
    start = time.monotonic()
    with pytest.raises(MessageUndeliverable, match=topic):
        client.call({}, "echo", value=2)
    assert time.monotonic() - start < 8.0
    start = time.monotonic()
    with pytest.raises(MessageUndeliverable, match=topic):
        client.call({}, "echo", value=2)
    assert time.monotonic() - start < 3.0
    # Cold: a fresh transport that never saw the topic.
    fresh = RPCClient(make_transport(), Target(topic=topic), timeout=20)
    start = time.monotonic()
    with pytest.raises(MessageUndeliverable):
        fresh.call_async({}, "echo", value=3).result(30)
    assert time.monotonic() - start < 3.0
    # A cast is accepted into the queue and waits there for the next server.
    client.cast({}, "echo", value="queued")
    echo = Echo()
    servers.start(make_transport(), Target(topic=topic), [echo])
    deadline = time.monotonic() + 10
    while "queued" not in echo.seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "queued" in echo.seen
    assert client.call({}, "echo", value=4) == 4


def test_a_call_queued_when_its_server_dies_is_answered_by_the_next(
    tp: transport.Transport, topic: str, servers: Servers, make_transport: MakeTransport
) -> None:
    first = Echo()
    server = servers.start(make_transport(), Target(topic=topic), [first], max_workers=1)
    client = RPCClient(tp, Target(topic=topic), timeout=20, call_monitor_interval=None)
    running = client.call_async({}, "block", value="running")
    assert first.started.wait(10)
    queued = client.call_async({}, "echo", value="queued")  # waits for the one worker
    time.sleep(0.3)
    server.kill()  # both go back to the queue
    first.release.set()
    second = Echo()
    second.release.set()
    servers.start(make_transport(), Target(topic=topic), [second])
    assert queued.result(15) == "queued"
    assert running.result(15) == "running"
