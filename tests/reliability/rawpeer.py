"""A caller that writes raw bytes to a conductor's queue, bypassing the RPC client.

Bad input has to reach the conductor exactly as written, so these peers do not use
``RPCClient``: :class:`RabbitPeer` publishes with kombu (any body, any content type) and
reads replies and dead letters off the broker; :class:`MemoryPeer` does the same through the
``memory://`` driver (the driver contract: ``send``, ``start_replies``) and the in-process
broker's dead-letter list.
"""

from __future__ import annotations

import abc
import json
import threading
import time
import uuid
from typing import Any

import kombu as _kombu

from transport import Target, _oslo, _wire, get_transport
from transport.drivers.memory import get_broker

JSON = "application/json"

# kombu is untyped; treat it as dynamic (as transport/drivers/amqp.py does).
kombu: Any = _kombu


def envelope(
    method: str,
    args: dict[str, Any],
    *,
    ctxt: dict[str, Any] | None = None,
    version: str | None = "1.0",
    **extra: Any,
) -> dict[str, Any]:
    """A well-formed request envelope (the wire format of transport/_wire.py)."""
    return {
        "id": uuid.uuid4().hex,
        "method": method,
        "args": args,
        "ctxt": {"user_id": "raw"} if ctxt is None else ctxt,
        "ns": None,
        "ver": version,
        **extra,
    }


class RawPeer(abc.ABC):
    """Sends raw requests to ``topic`` and collects what comes back."""

    reply_address: str

    def __init__(self) -> None:
        self._replies: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()

    def _on_reply_body(self, body: bytes) -> None:
        message = json.loads(body)
        if _oslo.VERSION_KEY in message:  # the answer to an oslo.messaging envelope
            message = _oslo.reply_to_native(message)
        replies = message["batch"] if set(message) == {"batch"} else [message]
        with self._cond:
            for reply in replies:
                if reply.get("t") != "hb":
                    self._replies[reply["id"]] = reply
            self._cond.notify_all()

    def reply(self, request_id: str, timeout: float = 15.0) -> dict[str, Any]:
        """The final reply to ``request_id`` (heartbeats skipped)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while request_id not in self._replies:
                self._poll()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no reply to {request_id} within {timeout}s")
                self._cond.wait(min(left, 0.05))
            return self._replies.pop(request_id)

    def has_reply(self, request_id: str) -> bool:
        with self._cond:
            self._poll()
            return request_id in self._replies

    @abc.abstractmethod
    def _poll(self) -> None:
        """Fetch replies that wait on the broker (peers that pull instead of push)."""

    @abc.abstractmethod
    def send(self, body: bytes, content_type: str = JSON) -> None: ...

    @abc.abstractmethod
    def dead_letters(self) -> list[tuple[bytes, str]]:
        """Bodies and reasons parked in ``<topic>.dead`` so far (consumed from the broker)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def send_json(self, value: Any) -> None:
        self.send(json.dumps(value).encode())


class MemoryPeer(RawPeer):
    """Raw access to a conductor on ``memory://NAME`` in this process."""

    def __init__(self, url: str, topic: str) -> None:
        super().__init__()
        self.topic = topic
        self._transport = get_transport(url)
        self._driver = self._transport._driver
        self._broker = get_broker(url.split("://", 1)[1])
        self._seen_dead = len(self._broker.dead_letters)
        self.reply_address = self._driver.start_replies(self._on_reply_body, lambda reason: None)

    def _poll(self) -> None:
        return  # replies are pushed by the driver

    def send(self, body: bytes, content_type: str = JSON) -> None:
        assert content_type == JSON, "memory:// carries no content type"
        self._driver.send(Target(topic=self.topic), body)

    def dead_letters(self) -> list[tuple[bytes, str]]:
        new = self._broker.dead_letters[self._seen_dead :]
        self._seen_dead += len(new)
        return [(body, reason) for queue, reason, body in new]

    def close(self) -> None:
        self._transport.cleanup()


class RabbitPeer(RawPeer):
    """Raw kombu access to a conductor's queue on RabbitMQ."""

    def __init__(self, url: str, topic: str, exchange: str = "conductor") -> None:
        super().__init__()
        self.topic = topic
        self._exchange = kombu.Exchange(exchange, type="direct", durable=True)
        self._conn = kombu.Connection(url)
        self._channel = self._conn.channel()
        self.reply_address = f"rel-raw-reply-{uuid.uuid4().hex[:10]}"
        kombu.Queue(self.reply_address, exclusive=True, auto_delete=True)(self._channel).declare()
        self._dead = kombu.Queue(f"{topic}.dead", durable=True, auto_delete=False)
        self._producer = kombu.Producer(self._channel, exchange=self._exchange)

    def send(self, body: bytes, content_type: str = JSON) -> None:
        self._producer.publish(
            body,
            routing_key=self.topic,
            content_type=content_type,
            content_encoding="binary",
            mandatory=True,
            retry=False,
        )

    def _poll(self) -> None:
        while True:
            message = self._channel.basic_get(self.reply_address, no_ack=True)
            if message is None:
                return
            body = message.body
            self._on_reply_body(body.encode() if isinstance(body, str) else bytes(body))

    def dead_letters(self) -> list[tuple[bytes, str]]:
        self._dead(self._channel).declare()
        found: list[tuple[bytes, str]] = []
        while True:
            message = self._channel.basic_get(self._dead.name, no_ack=True)
            if message is None:
                return found
            body = message.body
            reason = str((message.headers or {}).get("x-reason", ""))
            found.append((body.encode() if isinstance(body, str) else bytes(body), reason))

    def close(self) -> None:
        try:
            self._channel.queue_delete(f"{self.topic}.dead")
        finally:
            self._conn.release()


def rebuild_error(reply: dict[str, Any]) -> Exception:
    """The exception a real caller would raise for this error reply."""
    assert reply["t"] == "e", reply
    return _wire.deserialize_exception(reply["exc"], _wire.DEFAULT_ALLOWED_EXMODS)
