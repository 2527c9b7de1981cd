"""The transport's ceiling: a bare kombu request/reply loop with our payload sizes.

Server (``kombu-server`` worker): consumes one queue, decodes each JSON request and
publishes a fixed JSON reply (the size of our ``get`` reply) to the message's
``reply_to`` with its ``correlation_id``; ack after the reply, prefetch 256.

Client (``kombu`` worker): publishes requests (the size of our ``get`` request) with a
private reply queue, one after the other or keeping N in flight, all on one thread:
publish until the window is full, then ``drain_events`` and refill as replies arrive.
No confirms, no retries, no serializer layers: what one message per call costs on
this broker.
"""

from __future__ import annotations

import collections
import json
import sys
import time
import uuid
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.messaging import Consumer, Producer

from bench import _common


def serve(config: dict[str, Any]) -> None:
    """Reply to every request on ``config['queue']`` until stdin closes or says quit."""
    import threading

    reply_body: bytes = config["reply_body"].encode()
    stop = threading.Event()

    def watch_stdin() -> None:
        for line in sys.stdin:
            if "quit" in line:
                break
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    with Connection(config["url"]) as conn:
        channel = conn.channel()
        channel.basic_qos(0, 256, False)
        queue = Queue(
            config["queue"],
            exchange=Exchange(""),
            routing_key=config["queue"],
            durable=False,
            auto_delete=False,
            channel=channel,
        )
        queue.declare()
        producer = Producer(channel, exchange=Exchange(""), auto_declare=False)

        # NOTE: py-amqp drains the socket inside basic_publish (to notice connection.blocked),
        # which would deliver the next request re-entrantly; so the callback only collects
        # and the loop below replies.
        inbox: collections.deque[Any] = collections.deque()

        def reply_all() -> None:
            while inbox:
                message = inbox.popleft()
                json.loads(message.body)  # a real server decodes what it gets
                props = message.properties
                producer.publish(
                    reply_body,
                    routing_key=props["reply_to"],
                    correlation_id=props["correlation_id"],
                    content_type="application/json",
                    content_encoding="utf-8",
                    delivery_mode=1,
                )
                message.ack()

        consumer = Consumer(channel, queues=[queue], on_message=inbox.append, no_ack=False)
        consumer.consume()
        print(json.dumps({"ready": True}), flush=True)
        while not stop.is_set():
            try:
                conn.drain_events(timeout=0.5)
            except TimeoutError:
                continue
            reply_all()
        consumer.cancel()


class KombuClient:
    """Request/reply over one connection; one thread does everything."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.conn = Connection(config["url"])
        self.conn.connect()
        self.channel = self.conn.channel()
        self.queue_name: str = config["queue"]
        self.request_body: bytes = config["request_body"].encode()
        self.reply_queue = Queue(
            f"{self.queue_name}.reply-{uuid.uuid4().hex[:8]}",
            exchange=Exchange(""),
            exclusive=True,
            auto_delete=True,
            channel=self.channel,
        )
        self.reply_queue.declare()
        self.producer = Producer(self.channel, exchange=Exchange(""), auto_declare=False)
        self.started: dict[str, float] = {}
        self.result: _common.Result | None = None
        self.consumer = Consumer(
            self.channel, queues=[self.reply_queue], on_message=self._on_reply, no_ack=True
        )
        self.consumer.consume()

    def _on_reply(self, message: Any) -> None:
        json.loads(message.body)  # a real client decodes the reply
        t0 = self.started.pop(message.properties["correlation_id"])
        assert self.result is not None
        self.result.record(t0)

    def _send(self) -> None:
        corr = uuid.uuid4().hex
        self.started[corr] = time.perf_counter()
        self.producer.publish(
            self.request_body,
            routing_key=self.queue_name,
            reply_to=self.reply_queue.name,
            correlation_id=corr,
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=1,
        )

    def run(self, window: int, ops: int, seconds: float | None) -> dict[str, Any]:
        self.result = result = _common.Result()
        deadline = float("inf") if not seconds else time.perf_counter() + seconds
        sent = 0
        while True:
            while sent < ops and len(self.started) < window:
                if time.perf_counter() >= deadline:
                    ops = sent
                    break
                self._send()
                sent += 1
            if not self.started:
                break
            self.conn.drain_events(timeout=30)
        self.result = None
        return result.finish()

    def handle(self, command: dict[str, Any]) -> Any:
        if command["cmd"] == "run":
            window = 1 if command["workload"] == "get" else int(command.get("window", 1))
            return self.run(window, int(command["ops"]), command.get("seconds"))
        raise ValueError(f"unknown command {command['cmd']!r}")

    def close(self) -> None:
        try:
            self.consumer.cancel()
        finally:
            self.conn.release()


def main(config: dict[str, Any]) -> None:
    client = KombuClient(config)
    try:
        _common.serve_commands(client.handle)
    finally:
        client.close()
