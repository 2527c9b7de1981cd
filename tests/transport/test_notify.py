"""Notification contract: priorities, message fields, pools, waiting queues, failures."""

from __future__ import annotations

import datetime
import threading
import time
from typing import Any

import pytest

import transport
from transport import NotificationListener, Notifier, Target

from .conftest import MakeTransport


class Collector:
    def __init__(self) -> None:
        self.received: list[tuple[str, Any, str, str, Any, dict[str, Any]]] = []
        self.event = threading.Event()

    def _record(self, priority: str, *args: Any) -> None:
        self.received.append((priority, *args))
        self.event.set()

    def info(
        self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, metadata: dict[str, Any]
    ) -> None:
        self._record("info", ctxt, publisher_id, event_type, payload, metadata)

    def error(
        self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, metadata: dict[str, Any]
    ) -> None:
        self._record("error", ctxt, publisher_id, event_type, payload, metadata)


def _wait_for(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def listeners() -> Any:
    started: list[NotificationListener] = []
    yield started
    for listener in started:
        listener.stop(timeout=5)


def _listen(
    tp: transport.Transport,
    topic: str,
    endpoints: list[object],
    listeners: list[Any],
    pool: str | None = None,
) -> NotificationListener:
    listener = NotificationListener(tp, [Target(topic=topic)], endpoints, pool=pool)
    listener.start()
    listeners.append(listener)
    return listener


def test_listener_calls_the_priority_method_with_the_message_fields(
    tp: transport.Transport, topic: str, listeners: list[Any]
) -> None:
    collector = Collector()
    _listen(tp, topic, [collector], listeners)
    notifier = Notifier(tp, "compute.host1", topics=[topic])
    notifier.info({"user_id": "u"}, "instance.create", {"id": 42})
    notifier.error({}, "instance.fail", {"id": 43})
    _wait_for(lambda: len(collector.received) == 2)
    by_priority = {r[0]: r for r in collector.received}
    _, ctxt, publisher, event, payload, metadata = by_priority["info"]
    assert (ctxt, publisher, event, payload) == (
        {"user_id": "u"},
        "compute.host1",
        "instance.create",
        {"id": 42},
    )
    assert metadata["message_id"]
    assert datetime.datetime.fromisoformat(metadata["timestamp"]).tzinfo is not None
    assert by_priority["error"][3] == "instance.fail"


def test_every_priority_method_sends(
    tp: transport.Transport, topic: str, listeners: list[Any]
) -> None:
    class All:
        def __init__(self) -> None:
            self.seen: list[str] = []

    endpoint = All()
    for priority in transport.notify.PRIORITIES:
        setattr(endpoint, priority, lambda *a, _p=priority: endpoint.seen.append(_p))
    _listen(tp, topic, [endpoint], listeners)
    notifier = Notifier(tp, "p", topics=[topic])
    for priority in transport.notify.PRIORITIES:
        getattr(notifier, priority)({}, "evt", {})
    _wait_for(lambda: len(endpoint.seen) == len(transport.notify.PRIORITIES))
    assert sorted(endpoint.seen) == sorted(transport.notify.PRIORITIES)


def test_listener_has_the_server_lifecycle_and_cannot_start_twice(
    tp: transport.Transport, topic: str
) -> None:
    # (a second start() used to consume the queues again, and stop() left the first
    # consumption running: it took notifications and gave them back for ever)
    listener = NotificationListener(tp, [Target(topic=topic)], [Collector()])
    states = [listener.state]
    listener.start()
    states.append(listener.state)
    with pytest.raises(RuntimeError, match="running"):
        listener.start()
    listener.stop(timeout=5)
    states.append(listener.state)
    state = transport.ServerState
    assert states == [state.NEW, state.RUNNING, state.STOPPED] and listener.wait(0)
    # The next listener gets every notification: nothing of the first one consumes.
    collector = Collector()
    after = NotificationListener(tp, [Target(topic=topic)], [collector])
    after.start()
    try:
        notifier = Notifier(tp, "p", topics=[topic])
        for n in range(5):
            notifier.info({}, "evt", {"n": n})
        _wait_for(lambda: len(collector.received) == 5)
    finally:
        after.stop(timeout=5)


def test_notifications_wait_in_their_queue_until_a_listener_starts(
    tp: transport.Transport, topic: str, listeners: list[Any]
) -> None:
    Notifier(tp, "early", topics=[topic]).info({}, "before.listener", {"n": 1})
    collector = Collector()
    _listen(tp, topic, [collector], listeners)
    _wait_for(lambda: len(collector.received) == 1)
    assert collector.received[0][3] == "before.listener"


def test_one_pool_shares_messages_and_each_pool_gets_every_message(
    make_transport: MakeTransport, topic: str, listeners: list[Any]
) -> None:
    a1, a2, b = Collector(), Collector(), Collector()
    _listen(make_transport(), topic, [a1], listeners, pool="pool1")
    _listen(make_transport(), topic, [a2], listeners, pool="pool1")
    _listen(make_transport(), topic, [b], listeners, pool="pool2")
    notifier = Notifier(make_transport(), "p", topics=[topic])
    for i in range(20):
        notifier.info({}, "evt", {"i": i})
    _wait_for(lambda: len(a1.received) + len(a2.received) == 20 and len(b.received) == 20)
    pool1 = sorted(r[4]["i"] for r in a1.received + a2.received)
    assert pool1 == list(range(20))
    assert a1.received and a2.received  # shared, not copied
    assert sorted(r[4]["i"] for r in b.received) == list(range(20))


def test_a_notify_that_fails_never_raises_into_the_caller(
    tp: transport.Transport, topic: str
) -> None:
    notifier = Notifier(tp, "p", topics=[topic])
    notifier.info({}, "evt", {"unserialisable": object()})
    tp.cleanup()
    notifier.info({}, "evt", {"after": "cleanup"})


def test_a_failing_endpoint_does_not_stop_the_listener(
    tp: transport.Transport, topic: str, listeners: list[Any]
) -> None:
    class Flaky(Collector):
        def info(
            self,
            ctxt: Any,
            publisher_id: str,
            event_type: str,
            payload: Any,
            metadata: dict[str, Any],
        ) -> None:
            super().info(ctxt, publisher_id, event_type, payload, metadata)
            if payload["fail"]:
                raise RuntimeError("endpoint bug")

    flaky = Flaky()
    _listen(tp, topic, [flaky], listeners)
    notifier = Notifier(tp, "p", topics=[topic])
    notifier.info({}, "evt", {"fail": True})
    notifier.info({}, "evt", {"fail": False})
    _wait_for(lambda: len(flaky.received) == 2)
