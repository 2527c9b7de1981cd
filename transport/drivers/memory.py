"""``memory://``: an in-process broker, a first-class driver rather than a mock.

Transports created with the same ``memory://NAME`` in one process share one
:class:`MemoryBroker`; different names are isolated; other processes never share (the
registry is an ordinary module-level dict). All state lives on broker instances.

Semantics follow RabbitMQ's where the transport relies on them: durable topic queues outlive
their consumers, a send to a routing key nobody ever bound is undeliverable, unacked
messages go back to the queue when their consumer is abandoned, messages expire.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from transport._ratelog import RateLimitedLog, one_line
from transport.config import TransportConfig
from transport.driver import (
    DirectAnswer,
    Driver,
    Incoming,
    Listener,
    OnMessage,
    exchange_name,
    notification_queue,
    routing_key,
)
from transport.exceptions import MessageUndeliverable, TransportError
from transport.target import Target

__all__ = ["MemoryBroker", "MemoryDriver", "get_broker"]

LOG = logging.getLogger(__name__)
_LOG_FAILED = RateLimitedLog(LOG)

_registry: dict[str, MemoryBroker] = {}
_registry_lock = threading.Lock()


def get_broker(name: str = "") -> MemoryBroker:
    """The process's broker for ``memory://NAME`` (created on first use)."""
    with _registry_lock:
        broker = _registry.get(name)
        if broker is None:
            broker = _registry[name] = MemoryBroker(name)
        return broker


@dataclass
class _Message:
    body: bytes
    expires_at: float | None
    redelivered: bool = False


@dataclass
class _Consumer:
    queue: str
    on_message: OnMessage
    prefetch: int
    tag: int
    unacked: dict[int, _Message] = field(default_factory=dict)


@dataclass
class _Queue:
    name: str
    auto_delete: bool = False
    message_ttl: float | None = None
    messages: collections.deque[_Message] = field(default_factory=collections.deque)
    consumers: list[_Consumer] = field(default_factory=list)
    next_consumer: int = 0


class MemoryBroker:
    """Queues, bindings and dead letters of one ``memory://NAME``.

    Attributes:
        name: the URL's name ("" for ``memory://``).
        dead_letters: ``(queue, reason, body)`` of rejected messages, oldest first.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.dead_letters: list[tuple[str, str, bytes]] = []
        self._lock = threading.RLock()
        self._queues: dict[str, _Queue] = {}
        self._bindings: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
        self._tags = itertools.count(1)
        # (exchange, routing key) -> the answers servers of that topic offer in-process
        self._direct: dict[tuple[str, str], list[DirectAnswer]] = {}

    # -- topology ---------------------------------------------------------------
    def declare(
        self,
        queue: str,
        exchange: str,
        key: str,
        *,
        auto_delete: bool = False,
        message_ttl: float | None = None,
    ) -> None:
        """Create ``queue`` if missing and bind it to ``(exchange, key)``. Messages wait in
        it ``message_ttl`` seconds at most (fixed when the queue is created)."""
        with self._lock:
            self._queues.setdefault(queue, _Queue(queue, auto_delete, message_ttl))
            self._bindings[(exchange, key)].add(queue)

    def delete(self, queue: str) -> None:
        """Remove a queue, its bindings and its messages."""
        with self._lock:
            self._queues.pop(queue, None)
            for bound in self._bindings.values():
                bound.discard(queue)

    def queue_depth(self, queue: str) -> int:
        """Messages waiting (not delivered) in ``queue``; 0 if it does not exist."""
        with self._lock:
            q = self._queues.get(queue)
            return len(q.messages) if q else 0

    def consumed(self, exchange: str, key: str) -> bool:
        """Whether a queue bound to ``(exchange, key)`` has a consumer."""
        with self._lock:
            return any(
                self._queues[n].consumers
                for n in self._bindings.get((exchange, key), ())
                if n in self._queues
            )

    # -- answers on the caller's thread (Driver.offer_direct) -----------------------
    def offer_direct(self, exchange: str, key: str, answer: DirectAnswer) -> Callable[[], None]:
        # NOTE: the lists are replaced, never changed in place: callers read them unlocked.
        with self._lock:
            self._direct[(exchange, key)] = [*self._direct.get((exchange, key), ()), answer]

        def withdraw() -> None:
            with self._lock:
                offers = [a for a in self._direct.get((exchange, key), ()) if a is not answer]
                if offers:
                    self._direct[(exchange, key)] = offers
                else:
                    self._direct.pop((exchange, key), None)

        return withdraw

    def direct_answerer(self, exchange: str, key: str) -> DirectAnswer | None:
        offers = self._direct.get((exchange, key))  # unlocked: see offer_direct
        return offers[0] if offers else None

    # -- publishing ---------------------------------------------------------------
    def publish(
        self, exchange: str, key: str, body: bytes, *, ttl: float | None, mandatory: bool
    ) -> bool:
        """Copy ``body`` into every queue bound to ``(exchange, key)``; False if none is."""
        now = time.monotonic()
        with self._lock:
            names = [n for n in self._bindings.get((exchange, key), ()) if n in self._queues]
            if not names:
                if mandatory:
                    return False
                return True
            deliveries = []
            for name in names:
                q = self._queues[name]
                ttls = [t for t in (ttl, q.message_ttl) if t is not None]
                expires_at = now + min(ttls) if ttls else None
                q.messages.append(_Message(body, expires_at))
                deliveries.extend(self._take(self._queues[name]))
        self._deliver(deliveries)
        return True

    # -- consuming ----------------------------------------------------------------
    def consume(self, queue: str, on_message: OnMessage, prefetch: int) -> _Consumer:
        with self._lock:
            q = self._queues[queue]
            consumer = _Consumer(queue, on_message, max(1, prefetch), next(self._tags))
            q.consumers.append(consumer)
            deliveries = self._take(q)
        self._deliver(deliveries)
        return consumer

    def cancel(self, consumer: _Consumer, *, requeue_unacked: bool = False) -> None:
        """Stop delivering to ``consumer``; optionally give its unacked messages back (as a
        dying server's connection would)."""
        with self._lock:
            q = self._queues.get(consumer.queue)
            if q is not None and consumer in q.consumers:
                q.consumers.remove(consumer)
            deliveries = []
            if requeue_unacked and q is not None:
                for message in reversed(list(consumer.unacked.values())):
                    message.redelivered = True
                    q.messages.appendleft(message)
                consumer.unacked.clear()
                deliveries = self._take(q)
            if q is not None and q.auto_delete and not q.consumers:
                self.delete(q.name)
        self._deliver(deliveries)

    def settle(self, consumer: _Consumer, tag: int, *, requeue: bool = False) -> None:
        with self._lock:
            message = consumer.unacked.pop(tag, None)
            q = self._queues.get(consumer.queue)
            if message is None or q is None:
                return
            if requeue:
                message.redelivered = True
                q.messages.appendleft(message)
            deliveries = self._take(q)
        self._deliver(deliveries)

    def _take(self, q: _Queue) -> list[tuple[_Consumer, int, _Message]]:
        """Assign waiting messages to consumers with free prefetch, round robin (locked)."""
        out: list[tuple[_Consumer, int, _Message]] = []
        now = time.monotonic()
        while q.messages and q.consumers:
            n = len(q.consumers)
            for i in range(n):
                consumer = q.consumers[(q.next_consumer + i) % n]
                if len(consumer.unacked) < consumer.prefetch:
                    q.next_consumer = (q.next_consumer + i + 1) % n
                    break
            else:
                break
            message = q.messages.popleft()
            if message.expires_at is not None and message.expires_at < now:
                continue  # the caller gave up on it: never run it
            tag = next(self._tags)
            consumer.unacked[tag] = message
            out.append((consumer, tag, message))
        return out

    def _deliver(self, deliveries: list[tuple[_Consumer, int, _Message]]) -> None:
        # Called without the lock: callbacks may publish (a server's reply) right away.
        for consumer, tag, message in deliveries:
            incoming = _MemoryIncoming(self, consumer, tag, message)
            try:
                consumer.on_message(incoming)
            except Exception as exc:
                # NOTE: parked, not requeued: a message its consumer fails on would come
                # straight back to it, forever.
                _LOG_FAILED.error(
                    "memory consumer of %s failed (%s); message dead-lettered",
                    consumer.queue,
                    one_line(exc),
                )
                incoming.dead_letter(f"the consumer failed: {one_line(exc)}")


class _MemoryIncoming(Incoming):
    def __init__(
        self, broker: MemoryBroker, consumer: _Consumer, tag: int, message: _Message
    ) -> None:
        self.body = message.body
        self.redelivered = message.redelivered
        self._broker = broker
        self._consumer = consumer
        self._tag = tag

    def ack(self) -> None:
        self._broker.settle(self._consumer, self._tag)

    def requeue(self) -> None:
        self._broker.settle(self._consumer, self._tag, requeue=True)

    def dead_letter(self, reason: str) -> None:
        with self._broker._lock:
            if self._tag in self._consumer.unacked:
                self._broker.dead_letters.append((self._consumer.queue, reason, self.body))
        self._broker.settle(self._consumer, self._tag)


class _MemoryListener(Listener):
    def __init__(self, broker: MemoryBroker, consumers: list[_Consumer], owned: list[str]) -> None:
        self._broker = broker
        self._consumers = consumers
        self._owned = owned  # per-listener queues (fanout), deleted on stop
        self._stopped = False

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for consumer in self._consumers:
            self._broker.cancel(consumer)
        for name in self._owned:
            self._broker.delete(name)

    def kill(self) -> None:
        self._stopped = True
        for consumer in self._consumers:
            self._broker.cancel(consumer, requeue_unacked=True)
        for name in self._owned:
            self._broker.delete(name)


class MemoryDriver(Driver):
    """Driver for ``memory://NAME``; see the module docstring."""

    in_process = True

    def __init__(self, url: str, config: TransportConfig) -> None:
        super().__init__(url, config)
        parts = urlsplit(url)
        self.broker = get_broker(parts.netloc + parts.path.strip("/"))
        self._reply_queue: str | None = None
        self._reply_consumer: _Consumer | None = None
        self._listeners: list[_MemoryListener] = []
        self._lock = threading.Lock()
        self._closed = False
        #: The last target asked about by direct_answerer and its (exchange, routing key):
        #: a client asks for its one target call after call.
        self._direct_names: tuple[Target, str, str] | None = None

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(reason="the transport was cleaned up")

    def send(
        self,
        target: Target,
        body: bytes,
        *,
        ttl: float | None = None,
        call: bool = False,
        transient: bool = False,  # nothing of this broker outlives the process anyway
    ) -> None:
        self._check_open()
        exchange = exchange_name(target, self.config)
        if target.fanout:
            self.broker.publish(
                exchange + "_fanout", target.require_topic(), body, ttl=ttl, mandatory=False
            )
            return
        key = routing_key(target)
        # A call needs a server now; a cast may wait in the queue for one.
        if call and not self.broker.consumed(exchange, key):
            raise MessageUndeliverable(target=key)
        if not self.broker.publish(exchange, key, body, ttl=ttl, mandatory=True):
            raise MessageUndeliverable(target=key)

    def offer_direct(self, target: Target, answer: DirectAnswer) -> Callable[[], None] | None:
        # The queues a server of the target consumes (see listen): its topic's, its own.
        exchange = exchange_name(target, self.config)
        keys = [target.require_topic()] + ([routing_key(target)] if target.server else [])
        withdraws = [self.broker.offer_direct(exchange, key, answer) for key in keys]

        def withdraw() -> None:
            for one in withdraws:
                one()

        return withdraw

    def direct_answerer(self, target: Target) -> DirectAnswer | None:
        if self._closed or target.fanout:
            return None
        names = self._direct_names
        if names is None or names[0] is not target:
            # NOTE: the names depend on the target and this driver's config alone; a
            # Target is frozen, so the same object names the same queue.
            names = self._direct_names = (
                target,
                exchange_name(target, self.config),
                routing_key(target),
            )
        return self.broker.direct_answerer(names[1], names[2])

    def send_reply(self, address: str, body: bytes) -> None:
        self._check_open()
        self.broker.publish("", address, body, ttl=None, mandatory=False)

    def start_replies(
        self, on_reply: Callable[[bytes], None], on_lost: Callable[[str], None]
    ) -> str:
        with self._lock:
            self._check_open()
            if self._reply_queue is None:
                name = f"reply_{uuid.uuid4().hex}"
                self.broker.declare(name, "", name)

                def deliver(incoming: Incoming) -> None:
                    incoming.ack()
                    on_reply(incoming.body)

                self._reply_consumer = self.broker.consume(name, deliver, prefetch=1 << 30)
                self._reply_queue = name
            return self._reply_queue

    def listen(self, target: Target, on_message: OnMessage, *, prefetch: int) -> Listener:
        self._check_open()
        exchange = exchange_name(target, self.config)
        topic = target.require_topic()
        names = [topic] + ([routing_key(target)] if target.server else [])
        for name in names:
            self.broker.declare(
                name, exchange, name, message_ttl=self.config.topic_queue_message_ttl
            )
        fanout = f"{topic}_fanout_{uuid.uuid4().hex}"
        self.broker.declare(fanout, exchange + "_fanout", topic, auto_delete=True)
        consumers = [self.broker.consume(n, on_message, prefetch) for n in [*names, fanout]]
        return self._track(_MemoryListener(self.broker, consumers, [fanout]))

    def declare_topic(self, target: Target) -> None:
        self._check_open()
        exchange = exchange_name(target, self.config)
        names = [target.require_topic()] + ([routing_key(target)] if target.server else [])
        for name in names:
            self.broker.declare(
                name, exchange, name, message_ttl=self.config.topic_queue_message_ttl
            )

    def notify(self, target: Target, priority: str, body: bytes) -> None:
        self._check_open()
        exchange = exchange_name(target, self.config) + "_notifications"
        key = notification_queue(target, priority, None)
        self.broker.declare(key, exchange, key)
        self.broker.publish(exchange, key, body, ttl=None, mandatory=False)

    def listen_notifications(
        self,
        targets: list[tuple[Target, str]],
        pool: str | None,
        on_message: OnMessage,
        *,
        prefetch: int,
    ) -> Listener:
        self._check_open()
        consumers = []
        for target, priority in targets:
            exchange = exchange_name(target, self.config) + "_notifications"
            name = notification_queue(target, priority, pool)
            self.broker.declare(name, exchange, notification_queue(target, priority, None))
            consumers.append(self.broker.consume(name, on_message, prefetch))
        return self._track(_MemoryListener(self.broker, consumers, []))

    def _track(self, listener: _MemoryListener) -> _MemoryListener:
        with self._lock:
            self._listeners.append(listener)
        return listener

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            listeners, self._listeners = self._listeners, []
            reply_queue, self._reply_queue = self._reply_queue, None
        for listener in listeners:
            listener.stop()
        if reply_queue is not None:
            self.broker.delete(reply_queue)
