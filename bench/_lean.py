"""The floor: the least work a Python conductor can do for our ``Instance.get``.

The same components and envelope shape as ours, nothing else: kombu + RabbitMQ and
psycopg + PostgreSQL, one JSON encode and one decode per message, no objects layer.

Client (``lean`` worker): keeps N gets in flight on one thread. Each get is an
oslo-style request (``msg_id``, the caller's context, ``object_class_action_versions``
with object name, method, version manifest and args); requests go out in batches of up
to 256 per message (a batch is sent when it holds ``min(256, ceil(N / 2))`` requests,
so two batches overlap, or when the window is full). A reply message carries one reply
per request: an OVO primitive of the Instance (nested Flavor primitive, timestamps as
ISO strings); the client sets plain attributes from it (timestamps parsed, the flavor
a plain object too).

Server (``lean-server`` worker): consumes one queue on one thread; per message: decode,
one ``SELECT ... WHERE id = ANY(%s)`` on the ``instances`` table ours reads (autocommit:
no BEGIN/COMMIT), the three JSON columns decoded by psycopg with the same codec, one
primitive per request, one batched reply to ``reply_to``, ack.

``codec`` selects the JSON module on both sides: ``json`` (the standard library) or
``orjson``.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.messaging import Consumer, Producer

from bench import _common, _procs

#: Columns of ``instances`` that make Instance 1.2's fields (``revision`` is not a field).
COLUMNS = (
    "id",
    "uuid",
    "host",
    "state",
    "vcpus",
    "memory_mb",
    "flavor",
    "task_state",
    "created_at",
    "updated_at",
    "tags",
    "metadata",
)
SELECT = f"SELECT {', '.join(COLUMNS)} FROM instances WHERE id = ANY(%s)"
MANIFEST = {"Instance": "1.2", "Flavor": "1.0"}
NAMESPACE = "versionedobjects"
MAX_BATCH = 256


def codec(name: str) -> tuple[Callable[[Any], bytes], Callable[[str | bytes], Any]]:
    """(dumps to bytes, loads from bytes) of the named JSON module."""
    if name == "orjson":
        import orjson

        return orjson.dumps, orjson.loads
    if name == "json":
        encoder = json.JSONEncoder(separators=(",", ":")).encode
        return (lambda obj: encoder(obj).encode()), json.loads
    raise ValueError(f"unknown codec {name!r}: json or orjson")


# -- server ---------------------------------------------------------------------------


def _primitive(row: tuple[Any, ...]) -> dict[str, Any]:
    data = dict(zip(COLUMNS, row, strict=True))
    created, updated = data["created_at"], data["updated_at"]
    data["created_at"] = created.isoformat() if created is not None else None
    data["updated_at"] = updated.isoformat() if updated is not None else None
    flavor = data["flavor"]
    if flavor is not None:
        data["flavor"] = {
            "versioned_object.name": "Flavor",
            "versioned_object.namespace": NAMESPACE,
            "versioned_object.version": "1.0",
            "versioned_object.data": flavor,
        }
    return {
        "versioned_object.name": "Instance",
        "versioned_object.namespace": NAMESPACE,
        "versioned_object.version": "1.2",
        "versioned_object.data": data,
    }


def _answer(cursor: Any, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = []
    for request in requests:
        call = request["args"]
        if (
            request["method"] != "object_class_action_versions"
            or call["objname"] != "Instance"
            or call["objmethod"] != "get"
            or call["object_versions"] != MANIFEST
        ):
            raise ValueError(f"the lean server only serves Instance.get at {MANIFEST}")
        ids.append(call["args"][0])
    cursor.execute(SELECT, (ids,))
    rows = {row[0]: _primitive(row) for row in cursor.fetchall()}
    replies = []
    for request, id_ in zip(requests, ids, strict=True):
        found = rows.get(id_)
        replies.append(
            {
                "msg_id": request["msg_id"],
                "result": found,
                "failure": None if found is not None else f"InstanceNotFound: {id_}",
            }
        )
    return replies


def serve(config: dict[str, Any]) -> None:
    """Answer every batch on ``config['queue']`` until stdin closes or says quit."""
    dumps, loads = codec(config["codec"])
    stop = threading.Event()

    def watch_stdin() -> None:
        for line in sys.stdin:
            if "quit" in line:
                break
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    from psycopg.types.json import set_json_loads

    db = _procs.connect_pg(config["database_url"])
    db.execute("SET TIME ZONE 'UTC'")  # timestamps as ours gives them: ISO with +00:00
    set_json_loads(loads, db)
    cursor = db.cursor()
    with Connection(config["url"]) as conn:
        channel = conn.channel()
        channel.basic_qos(0, 8, False)
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
        # The callback only collects: py-amqp may deliver re-entrantly inside a publish.
        inbox: collections.deque[Any] = collections.deque()
        consumer = Consumer(channel, queues=[queue], on_message=inbox.append, no_ack=False)
        consumer.consume()
        print(json.dumps({"ready": True}), flush=True)
        while not stop.is_set():
            try:
                conn.drain_events(timeout=0.5)
            except TimeoutError:
                continue
            while inbox:
                message = inbox.popleft()
                replies = _answer(cursor, loads(message.body)["requests"])
                props = message.properties
                producer.publish(
                    dumps({"replies": replies}),
                    routing_key=props["reply_to"],
                    correlation_id=props["correlation_id"],
                    content_type="application/json",
                    content_encoding="binary",
                    delivery_mode=1,
                )
                message.ack()
        consumer.cancel()
    db.close()


# -- client ---------------------------------------------------------------------------


class LeanFlavor:
    """Plain attributes, set from a primitive's data."""


class LeanInstance:
    """Plain attributes, set from a primitive's data."""


def _build(primitive: dict[str, Any]) -> LeanInstance:
    inst = LeanInstance()
    parse = dt.datetime.fromisoformat
    for name, value in primitive["versioned_object.data"].items():
        if name == "flavor" and value is not None:
            flavor = LeanFlavor()
            for key, item in value["versioned_object.data"].items():
                setattr(flavor, key, item)
            value = flavor
        elif (name == "created_at" or name == "updated_at") and value is not None:
            value = parse(value)
        setattr(inst, name, value)
    return inst


class LeanClient:
    """Batched request/reply over one connection; one thread does everything."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.dumps, self.loads = codec(config["codec"])
        self.conn = Connection(config["url"])
        self.conn.connect()
        self.channel = self.conn.channel()
        self.queue_name: str = config["queue"]
        self.ids: list[int] = list(config["ids"])
        self.cursor = 0
        self.context = {
            "user_id": "bench",
            "project_id": "bench",
            "request_id": f"req-{uuid.uuid4()}",
            "roles": [],
            "is_admin": False,
        }
        self.reply_queue = Queue(
            f"{self.queue_name}.reply-{uuid.uuid4().hex[:8]}",
            exchange=Exchange(""),
            exclusive=True,
            auto_delete=True,
            channel=self.channel,
        )
        self.reply_queue.declare()
        self.producer = Producer(self.channel, exchange=Exchange(""), auto_declare=False)
        self.started: dict[int, float] = {}
        self.next_id = 0
        self.result: _common.Result | None = None
        self.sample: Any = None
        self.consumer = Consumer(
            self.channel, queues=[self.reply_queue], on_message=self._on_reply, no_ack=True
        )
        self.consumer.consume()

    def _id(self) -> int:
        self.cursor = (self.cursor + 7919) % len(self.ids)
        return self.ids[self.cursor]

    def _request(self) -> dict[str, Any]:
        msg_id = self.next_id
        self.next_id += 1
        self.started[msg_id] = time.perf_counter()
        return {
            "msg_id": msg_id,
            "context": self.context,
            "method": "object_class_action_versions",
            "args": {
                "objname": "Instance",
                "objmethod": "get",
                "object_versions": MANIFEST,
                "args": [self._id()],
                "kwargs": {},
            },
        }

    def _publish(self, batch: list[dict[str, Any]]) -> None:
        self.producer.publish(
            self.dumps({"requests": batch}),
            routing_key=self.queue_name,
            reply_to=self.reply_queue.name,
            correlation_id=str(batch[0]["msg_id"]),
            content_type="application/json",
            content_encoding="binary",
            delivery_mode=1,
        )

    def _on_reply(self, message: Any) -> None:
        if self.result is None:  # the ``sample`` command
            self.sample = self.loads(message.body)["replies"][0]
            return
        result = self.result
        started = self.started
        for reply in self.loads(message.body)["replies"]:
            t0 = started.pop(reply["msg_id"])
            if reply["failure"] is not None:
                result.error(LookupError(reply["failure"]))
                continue
            _build(reply["result"])
            result.record(t0)

    def run(self, window: int, ops: int, seconds: float | None) -> dict[str, Any]:
        self.result = result = _common.Result()
        deadline = float("inf") if not seconds else time.perf_counter() + seconds
        cap = min(MAX_BATCH, max(1, (window + 1) // 2))
        batch: list[dict[str, Any]] = []
        sent = 0
        while True:
            while sent < ops and len(self.started) < window:
                if time.perf_counter() >= deadline:
                    ops = sent
                    break
                batch.append(self._request())
                sent += 1
                if len(batch) >= cap:
                    self._publish(batch)
                    batch = []
            if batch:
                self._publish(batch)
                batch = []
            if not self.started:
                break
            self.conn.drain_events(timeout=30)
        self.result = None
        return result.finish()

    def get_primitive(self, id_: int) -> Any:
        """The primitive the server sends for Instance ``id_`` (checked against ours')."""
        self.sample = None
        request = self._request()
        request["args"]["args"] = [id_]
        self._publish([request])
        while self.sample is None:
            self.conn.drain_events(timeout=30)
        self.started.clear()
        return self.sample

    def handle(self, command: dict[str, Any]) -> Any:
        if command["cmd"] == "sample":
            return self.get_primitive(int(command["id"]))
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
    client = LeanClient(config)
    try:
        _common.serve_commands(client.handle)
    finally:
        client.close()
