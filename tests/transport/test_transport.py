"""Transport-level contract: URLs, memory broker isolation, cleanup, process exit, failures."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

import transport
from tests.brokers import no_service
from transport import RPCClient, RPCServer, Target
from transport.exceptions import ConnectionLost, MessageUndeliverable, MessagingException

from .conftest import RABBIT_URL, Servers


class Echo:
    def echo(self, ctxt: Any, value: Any, seconds: float = 0.0) -> Any:
        time.sleep(seconds)
        return value

    def hang(self, ctxt: Any) -> None:
        time.sleep(3600)


def test_public_names_match_all() -> None:
    assert sorted(transport.__all__) == sorted(set(transport.__all__))
    for name in transport.__all__:
        assert hasattr(transport, name), name
    for name in transport.exceptions.__all__:
        assert issubclass(
            getattr(transport.exceptions, name), transport.exceptions.MessagingException
        )


def test_unknown_url_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported transport URL"):
        transport.get_transport("kafka://localhost")


def test_memory_transports_share_a_broker_by_name_only(topic: str) -> None:
    same_a = transport.get_transport("memory://shared-" + topic)
    same_b = transport.get_transport("memory://shared-" + topic)
    other = transport.get_transport("memory://other-" + topic)
    server = RPCServer(same_a, Target(topic=topic), [Echo()])
    server.start()
    try:
        assert RPCClient(same_b, Target(topic=topic), timeout=10).call({}, "echo", value=1) == 1
        with pytest.raises(MessageUndeliverable):
            RPCClient(other, Target(topic=topic), timeout=10).call({}, "echo", value=1)
    finally:
        server.stop()
        for t in (same_a, same_b, other):
            t.cleanup()


def test_memory_broker_state_lives_on_instances_not_classes() -> None:
    from transport.drivers import memory

    assert memory.get_broker("a") is memory.get_broker("a")
    assert memory.get_broker("a") is not memory.get_broker("b")
    for cls in (memory.MemoryBroker, memory.MemoryDriver):
        mutable = [k for k, v in vars(cls).items() if isinstance(v, (dict, list, set))]
        assert mutable == []


def test_cleanup_fails_pending_calls_and_is_safe_twice(
    make_transport: Any, topic: str, servers: Servers
) -> None:
    servers.start(make_transport(), Target(topic=topic), [Echo()])
    client_tp = make_transport()
    future = RPCClient(client_tp, Target(topic=topic), timeout=30).call_async(
        {}, "echo", value=1, seconds=2
    )
    client_tp.cleanup()
    client_tp.cleanup()
    with pytest.raises(ConnectionLost):
        future.wait(5)


def test_transport_threads_never_keep_a_process_alive(transport_url: str, topic: str) -> None:
    script = textwrap.dedent(
        f"""
        import transport
        from transport import RPCClient, RPCServer, Target

        class Hang:
            def hang(self, ctxt):
                import time
                time.sleep(3600)

        tp = transport.get_transport({transport_url!r})
        RPCServer(tp, Target(topic={topic!r}), [Hang()]).start()
        RPCClient(tp, Target(topic={topic!r}), timeout=600).call_async({{}}, "hang")
        print("started", flush=True)
        """
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "started"
    assert time.monotonic() - started < 15


@pytest.mark.rabbit
def test_rabbit_queues_are_named_after_the_topic(topic: str, queues: list[str]) -> None:
    if not RABBIT_URL:
        no_service("CONDUCTOR_TEST_TRANSPORT_URL")
    from kombu.connection import Connection

    tp = transport.get_transport(RABBIT_URL)
    server = RPCServer(tp, Target(topic=topic, server="host"), [Echo()])
    server.start()
    try:
        with Connection(RABBIT_URL) as conn:
            for name in (topic, f"{topic}.host"):
                _, _, consumers = conn.channel().queue_declare(queue=name, passive=True)
                assert consumers == 1
    finally:
        server.stop()
        tp.cleanup()


@pytest.mark.rabbit
def test_dropped_broker_connections_end_every_pending_call_and_the_transport_recovers(
    topic: str, queues: list[str]
) -> None:
    if not RABBIT_URL:
        no_service("CONDUCTOR_TEST_TRANSPORT_URL")
    client_tp = transport.get_transport(RABBIT_URL)
    server_tp = transport.get_transport(RABBIT_URL)
    server = RPCServer(server_tp, Target(topic=topic), [Echo()], max_workers=8)
    server.start()
    try:
        client = RPCClient(client_tp, Target(topic=topic), timeout=15)
        futures = [client.call_async({}, "echo", value=i, seconds=0.02) for i in range(200)]
        time.sleep(0.15)  # some done, some running, most queued
        # When both processes' broker connections drop under them
        dropped_at = time.monotonic()
        for tp in (client_tp, server_tp):
            for sock in tp._driver._sockets():  # type: ignore[attr-defined]
                sock.shutdown(socket.SHUT_RDWR)
        # Then every pending call ends within its timeout: a result or a typed error
        results, errors = 0, 0
        for i, future in enumerate(futures):
            try:
                assert future.wait(20) == i
                results += 1
            except MessagingException:
                errors += 1
        assert results + errors == 200
        assert time.monotonic() - dropped_at < 16
        # And the transports recover on their own
        assert client.call({}, "echo", value="after") == "after"
        assert results > 0
    finally:
        server.stop(timeout=10)
        client_tp.cleanup()
        server_tp.cleanup()
