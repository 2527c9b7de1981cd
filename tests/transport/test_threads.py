"""What runs where (ARCHITECTURE.md): done-callbacks never run on a transport I/O thread,
so a callback may block, or call again and wait; a blocking wait on the I/O thread itself
fails at once instead of waiting out its timeout."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from typing import Any

import pytest

import transport
from tests.brokers import no_service
from tests.transport.conftest import RABBIT_URL, Servers
from transport import Target
from transport.exceptions import TransportError


class Adder:
    def add(self, ctxt: dict[str, Any], a: int, b: int) -> int:
        return a + b


def test_a_callback_may_call_again_and_wait(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic, server="s1"), [Adder()])
    client = transport.RPCClient(tp, Target(topic=topic), timeout=10)
    seen: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def again(done: Any) -> None:
        seen.put(threading.current_thread().name)
        try:
            seen.put(client.call({}, "add", a=done.result(), b=100))  # blocks in the callback
        except Exception as exc:  # noqa: BLE001 - reported to the test
            seen.put(exc)

    started = time.monotonic()
    client.call_async({}, "add", a=1, b=2).add_done_callback(again)
    thread = seen.get(timeout=10)
    assert seen.get(timeout=10) == 103
    assert time.monotonic() - started < 5
    assert "-io-" not in thread, f"a user callback ran on the I/O thread {thread}"


def test_callbacks_run_in_the_order_their_calls_resolved(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic, server="s1"), [Adder()])
    client = transport.RPCClient(tp, Target(topic=topic), timeout=10)
    order: list[int] = []
    done = threading.Event()
    futures = [client.call_async({}, "add", a=i, b=0) for i in range(50)]

    def record(f: Future[Any]) -> None:
        order.append(f.result())
        if len(order) == 50:
            done.set()

    for future in futures:
        future.add_done_callback(record)
    assert done.wait(10)
    assert sorted(order) == list(range(50))


@pytest.mark.rabbit
def test_a_blocking_wait_on_the_io_thread_fails_at_once(
    queues: list[str], servers: Servers
) -> None:
    if not RABBIT_URL:
        no_service("CONDUCTOR_TEST_TRANSPORT_URL")
    topic = f"test_{uuid.uuid4().hex[:12]}"
    queues.extend([topic, f"{topic}.s1", f"{topic}.dead"])
    tp = transport.get_transport(RABBIT_URL)
    servers.start(tp, Target(topic=topic, server="s1"), [Adder()])
    client: transport.RPCClient

    class CallingSerializer(transport.Serializer):
        """Misuse: deserializing a reply (on the I/O thread) calls the server and waits."""

        def serialize_entity(self, ctxt: Any, entity: Any) -> Any:
            return entity

        def deserialize_entity(self, ctxt: Any, entity: Any) -> Any:
            if entity == 3:
                return client.call({}, "add", a=entity, b=1)
            return entity

        def serialize_context(self, ctxt: Any) -> dict[str, Any]:
            return dict(ctxt)

        def deserialize_context(self, ctxt: dict[str, Any]) -> Any:
            return ctxt

    client = transport.RPCClient(
        tp, Target(topic=topic), timeout=20, serializer=CallingSerializer()
    )
    started = time.monotonic()
    with pytest.raises(TransportError, match="I/O thread"):
        client.call({}, "add", a=1, b=2)
    assert time.monotonic() - started < 5
    assert client.call({}, "add", a=2, b=2) == 4  # and the transport still works
    servers.stop_all()
    tp.cleanup()


class Failing:
    def fail(self, ctxt: dict[str, Any]) -> None:
        raise KeyError("nope")


def test_rpc_futures_are_awaitable_and_raise_typed_errors_at_the_await(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic, server="s1"), [Adder(), Failing()])
    client = transport.RPCClient(tp, Target(topic=topic), timeout=10)

    async def main() -> list[int]:
        with pytest.raises(KeyError):
            await client.call_async({}, "fail")
        return list(
            await asyncio.gather(*(client.call_async({}, "add", a=i, b=1) for i in range(200)))
        )

    assert asyncio.run(main()) == [i + 1 for i in range(200)]
