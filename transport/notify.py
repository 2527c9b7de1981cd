"""Notifications: :class:`Notifier` publishes events, :class:`NotificationListener` consumes them.

A notification goes to ``<topic>.<priority>`` for each of the notifier's topics and waits
there until a listener takes it. Listeners in one pool share the messages; each pool (the
default pool is ``None``) gets every message.

A notification never holds up its caller for more than :data:`NOTIFY_WAIT` seconds: it is
published by the transport's sender thread, and the caller waits for the broker to have
it only while the broker is reachable. When the broker is slow or unreachable the
notification stays queued (at most :data:`NOTIFY_BACKLOG` per transport) and goes out
once the broker answers, or is dropped when the transport's reconnect retries run out;
drops are logged in one line per :data:`_LOG_EVERY` seconds, never one per notification.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from transport import _wire
from transport._consumer import Consumer
from transport._ratelog import one_line
from transport.driver import Incoming, Listener
from transport.exceptions import MessageTooLarge
from transport.serializer import NoOpSerializer, Serializer
from transport.target import Target

if TYPE_CHECKING:
    from transport._transport import Transport

__all__ = ["PRIORITIES", "NotificationListener", "Notifier"]

LOG = logging.getLogger(__name__)

PRIORITIES = ("audit", "debug", "info", "warn", "error", "critical", "sample")

#: Seconds one notification may hold up its caller at most (waiting for the broker).
NOTIFY_WAIT = 1.0
#: Notifications waiting to be sent per transport at most; further ones are dropped.
NOTIFY_BACKLOG = 1000
#: Seconds between two log lines about notifications that could not be sent.
_LOG_EVERY = 10.0


class _DropLog:
    """One warning per ``_LOG_EVERY`` seconds about lost notifications, with a count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0.0
        self._dropped = 0

    def dropped(self, event_type: str, priority: str, why: object) -> None:
        with self._lock:
            self._dropped += 1
            now = time.monotonic()
            if now < self._next:
                return
            count, self._dropped, self._next = self._dropped, 0, now + _LOG_EVERY
        LOG.warning(
            "dropped %d notification(s) in the last %ds, latest %s (%s): %s",
            count,
            int(_LOG_EVERY),
            event_type,
            priority,
            why,
        )


_DROPS = _DropLog()


class Notifier:
    """Publishes notifications; a failure to publish is logged, never raised.

    Args:
        transport: from :func:`transport.get_transport`.
        publisher_id: who sends, e.g. ``"compute.host1"``.
        topics: each notification goes to ``<topic>.<priority>`` of every topic.
        serializer: turns the context and payload into primitives.
    """

    def __init__(
        self,
        transport: Transport,
        publisher_id: str,
        topics: Sequence[str] = ("notifications",),
        serializer: Serializer | None = None,
    ) -> None:
        self.transport = transport
        self.publisher_id = publisher_id
        self.topics = tuple(topics)
        self.serializer = serializer or NoOpSerializer()

    def prepare(self, publisher_id: str | None = None) -> Notifier:
        """A notifier like this one with another publisher id."""
        return Notifier(
            self.transport, publisher_id or self.publisher_id, self.topics, self.serializer
        )

    def audit(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send an ``audit`` notification."""
        self._notify(ctxt, event_type, payload, "audit")

    def debug(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send a ``debug`` notification."""
        self._notify(ctxt, event_type, payload, "debug")

    def info(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send an ``info`` notification."""
        self._notify(ctxt, event_type, payload, "info")

    def warn(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send a ``warn`` notification."""
        self._notify(ctxt, event_type, payload, "warn")

    warning = warn

    def error(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send an ``error`` notification."""
        self._notify(ctxt, event_type, payload, "error")

    def critical(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send a ``critical`` notification."""
        self._notify(ctxt, event_type, payload, "critical")

    def sample(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send a ``sample`` notification (metering data)."""
        self._notify(ctxt, event_type, payload, "sample")

    def _notify(self, ctxt: Any, event_type: str, payload: Any, priority: str) -> None:
        # NOTE: deliberate: a notification must never break (or stall) the operation it
        # reports on: failures are logged, never raised; see NOTIFY_WAIT.
        try:
            message = {
                "message_id": str(uuid.uuid4()),
                "publisher_id": self.publisher_id,
                "event_type": event_type,
                "priority": priority.upper(),
                "payload": self.serializer.serialize_entity(ctxt, payload),
                "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
                "ctxt": self.serializer.serialize_context(ctxt),
            }
            body = _wire.encode(message, self.transport.config.max_message_size)
        except Exception:
            LOG.exception("could not send notification %s (%s)", event_type, priority)
            return
        try:
            sent = [
                self._queue(Target(topic=topic), priority, event_type, body)
                for topic in self.topics
            ]
        except Exception as exc:  # the transport was cleaned up
            _DROPS.dropped(event_type, priority, exc)
            return
        deadline = time.monotonic() + NOTIFY_WAIT
        for done in sent:
            while done is not None and not done.is_set():
                left = deadline - time.monotonic()
                if left <= 0 or self.transport.unreachable() is not None:
                    return  # it stays queued; the caller goes on
                done.wait(min(left, 0.05))

    def _queue(
        self, target: Target, priority: str, event_type: str, body: bytes
    ) -> threading.Event | None:
        done = threading.Event()

        def on_sent(error: BaseException | None) -> None:
            if error is not None:
                _DROPS.dropped(event_type, priority, error)
            done.set()

        if not self.transport.send_notification(
            target, priority, body, on_sent, backlog=NOTIFY_BACKLOG
        ):
            _DROPS.dropped(
                event_type, priority, f"{NOTIFY_BACKLOG} notifications wait for the broker already"
            )
            return None
        return done


class NotificationListener(Consumer):
    """Calls endpoint methods named after the priority for each notification.

    ``endpoint.info(ctxt, publisher_id, event_type, payload, metadata)``, where metadata
    holds ``message_id`` and ``timestamp``. Only priorities some endpoint implements are
    consumed. A message is acknowledged after its endpoints ran.

    Args:
        transport: from :func:`transport.get_transport`.
        targets: topics to consume (``Target(topic="notifications")``).
        endpoints: objects with priority-named methods.
        pool: listeners of one pool share messages; each pool gets every message.
        serializer: rebuilds the context and payload.
        max_workers: endpoint calls running at once.
    """

    _log = LOG
    _what = "a notification"
    _role = "listener"

    def __init__(
        self,
        transport: Transport,
        targets: Sequence[Target],
        endpoints: Sequence[object],
        pool: str | None = None,
        serializer: Serializer | None = None,
        executor: str = "threading",
        max_workers: int = 8,
    ) -> None:
        super().__init__(transport, executor, max_workers, "notify")
        self.targets = list(targets)
        self.endpoints = list(endpoints)
        self.pool = pool
        self.serializer = serializer or NoOpSerializer()

    # -- lifecycle (transport._consumer.Consumer: start, stop, kill, wait) ------------
    def _listen(self, prefetch: int) -> Listener:
        priorities = [
            p for p in PRIORITIES if any(callable(getattr(e, p, None)) for e in self.endpoints)
        ]
        pairs = [(target, priority) for target in self.targets for priority in priorities]
        return self.transport.listen_notifications(
            pairs, self.pool, self._on_message, prefetch=prefetch
        )

    def _handle_message(self, incoming: Incoming, decoded: Any = None) -> None:
        limit = self.transport.config.max_message_size
        try:
            if incoming.size > limit:
                raise MessageTooLarge(size=incoming.size, limit=limit)
            message = _wire.decode(incoming.body)
            priority = str(message["priority"]).lower()
            ctxt = self.serializer.deserialize_context(message.get("ctxt") or {})
            payload = self.serializer.deserialize_entity(ctxt, message.get("payload"))
            metadata = {
                "message_id": message.get("message_id"),
                "timestamp": message.get("timestamp"),
            }
            args = (ctxt, message.get("publisher_id"), message.get("event_type"), payload, metadata)
        except Exception as exc:
            self._bad.warning("rejecting a malformed notification: %s", one_line(exc))
            incoming.dead_letter(f"malformed notification: {one_line(exc)}")
            return
        for endpoint in self.endpoints:
            method = getattr(endpoint, priority, None)
            if not callable(method):
                continue
            try:
                method(*args)
            except BaseException as exc:  # SystemExit too: one notification cannot stop us
                if isinstance(exc, RecursionError):
                    self._failed.error(
                        "notification endpoint %s.%s failed: %s",
                        type(endpoint).__name__,
                        priority,
                        one_line(exc),
                    )
                else:
                    self._failed.error(
                        "notification endpoint %s.%s failed",
                        type(endpoint).__name__,
                        priority,
                        exc_info=exc,
                    )
        incoming.ack()
