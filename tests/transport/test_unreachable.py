"""A broker that cannot be reached never blocks a caller past a bound.

The transport URL points at a local port that was bound and closed (connections are
refused at once), so these tests need no broker and run everywhere kombu is installed.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

import transport
from transport import Notifier, RPCClient, Target
from transport.exceptions import MessagingTimeout, TransportError

#: How long an ``_async`` call may take to return, whatever the broker does.
RETURNS_WITHIN = 0.5
#: The Notifier's documented bound on one notification (transport.notify.NOTIFY_WAIT).
NOTIFY_BOUND = 1.0


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
def dead_url() -> str:
    return f"amqp://guest:s3cr3t-pw@127.0.0.1:{closed_port()}//"


@pytest.fixture
def dead_transport(dead_url: str) -> Iterator[transport.Transport]:
    tp = transport.get_transport(dead_url)
    yield tp
    tp.cleanup()


@pytest.mark.parametrize("timeout", [1.0, 5.0, 60.0])
def test_call_async_returns_at_once_and_fails_typed_within_its_timeout(
    dead_transport: transport.Transport, dead_url: str, timeout: float
) -> None:
    client = RPCClient(dead_transport, Target(topic="nobody-home"), timeout=timeout)
    for _ in range(2):  # the first call starts the reply queue; the second finds it failing
        start = time.monotonic()
        future = client.call_async({}, "echo", value=1)
        assert time.monotonic() - start < RETURNS_WITHIN
        with pytest.raises((MessagingTimeout, TransportError)) as info:
            future.result(timeout + 5)
        took = time.monotonic() - start
        # Within its timeout, and never the old ~24 s when the timeout is longer.
        assert took < min(timeout, 15.0) + 1.0, took
        exc = info.value
        assert "s3cr3t" not in str(exc)
        port = dead_url.rsplit(":", 1)[1].strip("/")
        assert f"cannot reach the broker at 127.0.0.1:{port}" in str(exc), str(exc)


def test_a_call_after_the_broker_was_found_unreachable_fails_at_once(
    dead_transport: transport.Transport,
) -> None:
    client = RPCClient(dead_transport, Target(topic="nobody-home"), timeout=60)
    with pytest.raises(TransportError):
        client.call_async({}, "echo").result(30)
    start = time.monotonic()
    with pytest.raises(TransportError, match="cannot reach the broker at 127.0.0.1:"):
        client.call_async({}, "echo").result(30)
    assert time.monotonic() - start < 2.0


def test_notifications_never_stall_the_caller_past_the_bound(
    dead_transport: transport.Transport,
) -> None:
    notifier = Notifier(dead_transport, "compute.host1", topics=["nobody-listens"])
    start = time.monotonic()
    for i in range(20):
        one = time.monotonic()
        notifier.info({}, "instance.update", {"i": i})
        assert time.monotonic() - one <= NOTIFY_BOUND + 0.25
    # Once the broker is known to be down, notifications do not wait at all.
    assert time.monotonic() - start < 2 * NOTIFY_BOUND + 1.0


def test_get_async_through_connect_returns_at_once(dead_url: str) -> None:
    import conductor
    import objects
    from objects import base
    from objects import exception as oexc
    from objects.context import RequestContext

    objects.register_all()
    api = conductor.connect(dead_url, topic="nobody-home", timeout=2)
    try:
        start = time.monotonic()
        pending = objects.Instance.get_async(RequestContext(user_id="u"), 1)
        assert time.monotonic() - start < RETURNS_WITHIN
        with pytest.raises((MessagingTimeout, TransportError, oexc.ObjectsError)):
            pending.wait(10)
        assert time.monotonic() - start < 3.5
    finally:
        api.close()
        base.set_indirection_api(None)


class _Proxy:
    """Forwards a local port to the test broker once started (refuses before)."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self._server: socket.socket | None = None
        self._socks: list[socket.socket] = []

    def start(self) -> None:
        import threading

        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self._server = server

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        def accept() -> None:
            while True:
                try:
                    client, _ = server.accept()
                except OSError:
                    return
                upstream = socket.create_connection(self.target)
                self._socks += [client, upstream]
                threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
                threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()

    def stop(self) -> None:
        for sock in [*self._socks, *([self._server] if self._server else [])]:
            with contextlib.suppress(OSError):
                sock.close()


def test_calls_work_again_once_the_broker_is_reachable(topic: str, queues: list[str]) -> None:
    from urllib.parse import urlsplit

    from tests.brokers import no_service

    from .conftest import RABBIT_URL

    if not RABBIT_URL:
        no_service("CONDUCTOR_TEST_TRANSPORT_URL")
    broker = urlsplit(RABBIT_URL)
    port = closed_port()
    proxied = RABBIT_URL.replace(broker.netloc.split("@")[-1], f"127.0.0.1:{port}")
    caller = transport.get_transport(proxied)
    server_side = transport.get_transport(RABBIT_URL)
    proxy = _Proxy(port, (broker.hostname or "127.0.0.1", broker.port or 5672))
    server = transport.RPCServer(server_side, Target(topic=topic), [Echo()])
    try:
        server.start()
        client = RPCClient(caller, Target(topic=topic), timeout=30)
        with pytest.raises(TransportError):
            client.call_async({}, "echo", value=1).result(30)
        proxy.start()
        deadline = time.monotonic() + 20
        while True:  # the reply queue's consumer reconnects with backoff (<= 2 s)
            try:
                assert client.call({}, "echo", value=2) == 2
                break
            except TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert client.call({}, "echo", value=3) == 3
    finally:
        server.stop(timeout=5)
        caller.cleanup()
        server_side.cleanup()
        proxy.stop()


class Echo:
    def echo(self, ctxt: object, value: object) -> object:
        return value


def test_cleanup_does_not_wait_for_an_unreachable_broker(dead_url: str) -> None:
    tp = transport.get_transport(dead_url)
    client = RPCClient(tp, Target(topic="nobody-home"), timeout=0.5)
    with pytest.raises(MessagingTimeout):
        client.call({}, "echo")
    start = time.monotonic()
    tp.cleanup()
    assert time.monotonic() - start < 1.0
