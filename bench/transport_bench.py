"""Call rates of our transport against a raw kombu request/reply loop, in one run.

Measures, each for a fixed time slice with the same JSON payload:

* our transport on ``memory://`` and on RabbitMQ: sequential ``call`` and pipelined
  ``call_async`` (a window of calls in flight);
* a raw kombu loop on RabbitMQ: a server thread consuming a queue and replying to
  ``reply_to`` by correlation id; sequential and pipelined the same way.

Prints a table, the ratios ours/raw, and one JSON line at the end. RabbitMQ parts are
skipped (and reported as null) when the broker is unreachable.

    .venv/bin/python bench/transport_bench.py [--url amqp://...] [--seconds 3] [--window 200]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from kombu.connection import Connection
from kombu.entity import Queue
from kombu.messaging import Consumer, Producer

import transport
from transport import RPCClient, RPCServer, Target

PAYLOAD = {
    "objname": "Instance",
    "objmethod": "get",
    "args": [42],
    "kwargs": {"expected_attrs": ["flavor"]},
    "object_versions": {"Instance": "1.2", "Flavor": "1.0"},
    "pad": "x" * 120,
}


class Echo:
    def echo(self, ctxt: Any, payload: Any) -> Any:
        return payload


def _timed(seconds: float, run_batch: Callable[[], int]) -> float:
    """Run batches until ``seconds`` passed; return completed calls per second."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        done += run_batch()
    return done / (time.perf_counter() - started)


def bench_ours(url: str, seconds: float, window: int) -> dict[str, float]:
    tp = transport.get_transport(url)
    topic = f"bench_{uuid.uuid4().hex[:8]}"
    server = RPCServer(tp, Target(topic=topic), [Echo()], max_workers=8)
    server.start()
    client = RPCClient(tp, Target(topic=topic), timeout=30)
    try:
        client.call({}, "echo", payload=PAYLOAD)  # warm up connections and reply queue

        def sequential() -> int:
            for _ in range(20):
                client.call({}, "echo", payload=PAYLOAD)
            return 20

        def pipelined() -> int:
            futures = [client.call_async({}, "echo", payload=PAYLOAD) for _ in range(window)]
            for future in futures:
                future.wait()
            return window

        return {"sequential": _timed(seconds, sequential), "pipelined": _timed(seconds, pipelined)}
    finally:
        server.stop()
        if not url.startswith("memory"):
            _delete_queues(url, [topic])
        tp.cleanup()


def _delete_queues(url: str, names: list[str]) -> None:

    with Connection(url) as conn:
        channel = conn.channel()
        for name in names:
            channel.queue_delete(name)


def bench_raw_kombu(url: str, seconds: float, window: int) -> dict[str, float]:

    queue_name = f"bench_raw_{uuid.uuid4().hex[:8]}"
    reply_name = f"{queue_name}_reply"
    stop = threading.Event()
    ready = threading.Event()

    def serve() -> None:
        with Connection(url) as conn:
            channel = conn.channel()
            channel.basic_qos(0, 64, False)
            producer = Producer(channel, serializer="json")
            queue = Queue(queue_name, routing_key=queue_name, durable=False, auto_delete=False)

            def on_message(body: Any, message: Any) -> None:
                producer.publish(
                    {"result": body["payload"]},
                    routing_key=message.properties["reply_to"],
                    correlation_id=message.properties["correlation_id"],
                )
                message.ack()

            with Consumer(channel, [queue], callbacks=[on_message], accept=["json"]):
                ready.set()
                while not stop.is_set():
                    try:
                        conn.drain_events(timeout=0.2)
                    except TimeoutError:
                        pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        with Connection(url) as conn:
            channel = conn.channel()
            producer = Producer(channel, serializer="json")
            reply_queue = Queue(reply_name, routing_key=reply_name, durable=False, auto_delete=True)
            pending: set[str] = set()

            def on_reply(body: Any, message: Any) -> None:
                pending.discard(message.properties["correlation_id"])

            with Consumer(
                channel, [reply_queue], callbacks=[on_reply], accept=["json"], no_ack=True
            ):

                def send() -> None:
                    cid = uuid.uuid4().hex
                    pending.add(cid)
                    producer.publish(
                        {"payload": PAYLOAD},
                        routing_key=queue_name,
                        reply_to=reply_name,
                        correlation_id=cid,
                    )

                def sequential() -> int:
                    for _ in range(20):
                        send()
                        while pending:
                            conn.drain_events(timeout=10)
                    return 20

                def pipelined() -> int:
                    for _ in range(window):
                        send()
                    while pending:
                        conn.drain_events(timeout=10)
                    return window

                return {
                    "sequential": _timed(seconds, sequential),
                    "pipelined": _timed(seconds, pipelined),
                }
    finally:
        stop.set()
        thread.join(5)
        _delete_queues(url, [queue_name])


def _reachable(url: str) -> bool:

    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.connect()
        return True
    except Exception:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("CONDUCTOR_TEST_TRANSPORT_URL")
        or "amqp://guest:guest@127.0.0.1:5672//",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="time slice per measurement")
    parser.add_argument("--window", type=int, default=200, help="calls in flight when pipelining")
    args = parser.parse_args()

    results: dict[str, dict[str, float] | None] = {
        "ours_memory": bench_ours("memory://bench", args.seconds, args.window)
    }
    rabbit = _reachable(args.url)
    results["ours_rabbit"] = bench_ours(args.url, args.seconds, args.window) if rabbit else None
    results["raw_kombu_rabbit"] = (
        bench_raw_kombu(args.url, args.seconds, args.window) if rabbit else None
    )

    print(f"{'variant':<18}{'sequential/s':>14}{'pipelined/s':>14}")
    for name, rates in results.items():
        if rates is None:
            print(f"{name:<18}{'skipped (no broker)':>28}")
        else:
            print(f"{name:<18}{rates['sequential']:>14.0f}{rates['pipelined']:>14.0f}")
    ratios: dict[str, float] | None = None
    ours, raw = results["ours_rabbit"], results["raw_kombu_rabbit"]
    if ours and raw:
        ratios = {k: round(ours[k] / raw[k], 3) for k in ("sequential", "pipelined")}
        print(
            f"ours/raw kombu on RabbitMQ: sequential {ratios['sequential']:.2f}x, "
            f"pipelined {ratios['pipelined']:.2f}x"
        )
    summary = {
        "payload_bytes": len(json.dumps(PAYLOAD)),
        "window": args.window,
        **{k: ({m: round(v, 1) for m, v in r.items()} if r else None) for k, r in results.items()},
        "ratio_ours_to_raw": ratios,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
