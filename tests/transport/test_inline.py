"""Lone requests answered on the consuming thread (``transport.InlineEndpoint``).

On RabbitMQ a server asks an inline endpoint first when no worker is busy; on memory://
(whose deliveries run on the sender's thread) it never does on the consuming thread: there
the endpoint answers on the caller's own thread instead (``tests/transport/test_direct.py``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import transport
from transport import RPCClient, Target
from transport.exceptions import NoSuchMethod, TransportError

from .conftest import MakeTransport, Servers


class Inline:
    """``get`` keys starting with ``fast`` are answered inline, ``fail`` inline with an
    error, ``slow`` inline after ``delay`` seconds; the rest go to a worker."""

    def __init__(self) -> None:
        self.asked: list[str] = []  # the keys serve_inline was asked about
        self.inline_threads: set[str] = set()
        self.started = threading.Event()
        self.release = threading.Event()
        self.delay = 0.0

    def serve_inline(
        self, request: transport.RawRequest, serializer: transport.Serializer
    ) -> tuple[bool, Any] | None:
        assert transport.current_request_id() is None
        _, _, method, args = request
        if method != "get":
            return None
        key = args["key"]
        self.asked.append(key)
        self.inline_threads.add(threading.current_thread().name)
        if key.startswith("fast"):
            return True, ["inline", key]
        if key.startswith("fail"):
            return False, ValueError(f"no {key}")
        if key.startswith("slow"):
            time.sleep(self.delay)
            return True, ["inline", key]
        if key.startswith("forms"):
            return True, TwoForms(key)
        return None

    def get(self, ctxt: Any, key: str) -> list[str]:
        return ["worker", key]

    def block(self, ctxt: Any) -> str:
        self.started.set()
        assert self.release.wait(30)
        return "done"


class TwoForms(transport.InProcessResult):
    """An answer in two forms; ``forms-none`` has no wire form (a worker answers)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def local(self, limit: int | None) -> Any:
        return ("local", self.key)

    def wire(self) -> Any:
        return None if self.key == "forms-none" else ["wire", self.key]


def test_a_result_in_two_forms_reaches_an_ordinary_caller_in_its_wire_form(
    tp: transport.Transport, topic: str, servers: Servers, is_rabbit: bool
) -> None:
    """An inline answer that is a ``transport.InProcessResult`` goes as its wire form to a
    caller across the broker (RabbitMQ: answered on the consuming thread) and to one in
    this process that does not take local forms; with no wire form, a worker answers."""
    endpoint = Inline()
    servers.start(tp, Target(topic=topic), [endpoint])
    client = RPCClient(tp, Target(topic=topic), timeout=10)

    assert client.call({}, "get", key="forms-1") == ["wire", "forms-1"]
    assert client.call({}, "get", key="forms-none") == ["worker", "forms-none"]
    assert endpoint.asked == ["forms-1", "forms-none"]


def _call_once_idle(client: RPCClient, key: str) -> Any:
    """``get(key)`` answered inline once the worker of the call before has counted itself
    done: it replies first and leaves the pool after, and until then the server leaves
    lone requests to workers (seen under load: the worker's answer came back instead)."""
    deadline = time.monotonic() + 5
    while True:
        answer = client.call({}, "get", key=key)
        if answer[0] == "inline" or time.monotonic() > deadline:
            return answer
        time.sleep(0.01)


def test_a_lone_request_the_endpoint_answers_skips_the_worker(
    tp: transport.Transport, topic: str, servers: Servers, is_rabbit: bool
) -> None:
    endpoint = Inline()
    assert isinstance(endpoint, transport.InlineEndpoint)
    servers.start(tp, Target(topic=topic), [endpoint])
    client = RPCClient(tp, Target(topic=topic), timeout=10)

    answers = [client.call({}, "get", key=key) for key in ("fast1", "other")]
    answers.append(_call_once_idle(client, "fast2"))
    assert answers == [["inline", "fast1"], ["worker", "other"], ["inline", "fast2"]]
    large = "fast" + "x" * 20_000
    if is_rabbit:
        # never decoded on the consuming thread
        assert client.call({}, "get", key=large) == ["worker", large]
        assert endpoint.asked == ["fast1", "other", "fast2"]
        # the consuming thread, not a worker of the server's pool
        assert all(not name.startswith("rpc-") for name in endpoint.inline_threads)
    else:
        # the caller's own thread: no broker, no consuming thread in between
        assert client.call({}, "get", key=large) == ["inline", large]
        assert endpoint.asked == ["fast1", "other", "fast2", large]
        assert endpoint.inline_threads == {threading.current_thread().name}


@pytest.mark.rabbit
@pytest.mark.parametrize("transport_url", ["rabbit"], indirect=True)  # memory://: test_direct
def test_inline_answers_only_while_no_worker_is_busy(
    tp: transport.Transport, topic: str, servers: Servers, is_rabbit: bool
) -> None:
    endpoint = Inline()
    servers.start(tp, Target(topic=topic), [endpoint], max_workers=2)
    client = RPCClient(tp, Target(topic=topic), timeout=10)
    blocked = client.call_async({}, "block")
    assert endpoint.started.wait(10)

    # While a worker runs, the endpoint is not asked: the request goes to the pool
    assert client.call({}, "get", key="fast-busy") == ["worker", "fast-busy"]
    assert endpoint.asked == []

    endpoint.release.set()
    assert blocked.wait(10) == "done"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if client.call({}, "get", key="fast-idle") == ["inline", "fast-idle"]:
            break
        time.sleep(0.01)  # the worker may not have counted itself done yet
    else:
        pytest.fail("never answered inline once the pool was idle")


@pytest.mark.rabbit
@pytest.mark.parametrize("transport_url", ["rabbit"], indirect=True)  # memory://: test_direct
def test_an_inline_error_is_the_callers_and_the_request_is_acknowledged(
    tp: transport.Transport, topic: str, servers: Servers, is_rabbit: bool
) -> None:
    endpoint = Inline()
    servers.start(tp, Target(topic=topic), [endpoint])
    client = RPCClient(tp, Target(topic=topic), timeout=10)

    with pytest.raises(Exception, match="no fail1"):
        client.call({}, "get", key="fail1")
    assert client.call({}, "get", key="fast1") == ["inline", "fast1"]

    # Acknowledged: nothing is left on the queue (and nothing is redelivered)
    time.sleep(0.3)
    state = tp._driver.queue_state(topic)
    assert state is not None and state[0] == 0
    assert endpoint.asked == ["fail1", "fast1"]


@pytest.mark.rabbit
@pytest.mark.parametrize("transport_url", ["rabbit"], indirect=True)  # memory://: test_direct
def test_an_inline_reply_that_cannot_be_sent_requeues_the_request(
    tp: transport.Transport,
    topic: str,
    servers: Servers,
    is_rabbit: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = Inline()
    server = servers.start(tp, Target(topic=topic), [endpoint])
    real = server.transport.send_reply
    failures = {"left": 1}

    def flaky(address: str, body: bytes) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise TransportError(reason="the reply connection dropped")
        real(address, body)

    monkeypatch.setattr(server.transport, "send_reply", flaky)
    client = RPCClient(tp, Target(topic=topic), timeout=10, call_monitor_interval=None)

    # The first reply is not sent: the request comes back and is answered again
    assert client.call({}, "get", key="fast1") == ["inline", "fast1"]
    assert endpoint.asked == ["fast1", "fast1"]


@pytest.mark.rabbit
@pytest.mark.parametrize("transport_url", ["rabbit"], indirect=True)  # memory://: test_direct
def test_a_slow_inline_answer_holds_consumption_but_keeps_the_connection(
    make_transport: MakeTransport, topic: str, servers: Servers, is_rabbit: bool
) -> None:
    endpoint = Inline()
    endpoint.delay = 2.0
    server_tp = make_transport()
    servers.start(server_tp, Target(topic=topic), [endpoint])
    driver = server_tp._driver
    generation = driver._generation  # type: ignore[attr-defined]
    client = RPCClient(make_transport(), Target(topic=topic), timeout=20)

    slow = client.call_async({}, "get", key="slow1")
    time.sleep(0.2)
    queued = client.call_async({}, "get", key="other")

    # The request sent meanwhile waits for the consuming thread, then is served
    assert queued.wait(10) == ["worker", "other"]
    assert slow.wait(10) == ["inline", "slow1"]
    # The broker connection survived the stall (no reconnect), and serving goes on
    assert driver._generation == generation  # type: ignore[attr-defined]
    assert driver.is_connected()
    assert client.call({}, "get", key="fast1") == ["inline", "fast1"]


def test_inline_dispatch_leaves_what_it_cannot_answer() -> None:
    endpoint = Inline()
    dispatcher = transport.RPCDispatcher([endpoint])
    assert dispatcher.answers_inline

    assert dispatcher.dispatch_inline("r0", {}, "get", {"key": "fast"}) == (
        True,
        ["inline", "fast"],
    )
    assert dispatcher.dispatch_inline("r1", {}, "get", {"key": "other"}) is None
    assert dispatcher.dispatch_inline("r2", {}, "nope", {}) is None  # the worker refuses it
    assert dispatcher.dispatch_inline("r3", {}, "get", {}) is not None  # KeyError: its own
    with pytest.raises(NoSuchMethod):
        dispatcher.dispatch("r4", {}, "serve_inline", {"request": [], "serializer": None})
    assert not transport.RPCDispatcher([object()]).answers_inline


@pytest.mark.rabbit
@pytest.mark.parametrize("transport_url", ["rabbit"], indirect=True)  # memory://: test_direct
def test_a_stop_waits_for_an_inline_answer_in_progress(
    make_transport: MakeTransport, topic: str, servers: Servers, is_rabbit: bool
) -> None:
    endpoint = Inline()
    endpoint.delay = 1.0
    server = servers.start(make_transport(), Target(topic=topic), [endpoint])
    client = RPCClient(make_transport(), Target(topic=topic), timeout=20)
    slow = client.call_async({}, "get", key="slow1")
    deadline = time.monotonic() + 5
    while not endpoint.asked and time.monotonic() < deadline:
        time.sleep(0.01)

    server.stop(timeout=10)

    assert slow.wait(10) == ["inline", "slow1"]
