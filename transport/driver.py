"""The driver contract: move opaque envelopes between targets. Knows nothing about objects.

A driver owns the broker connections and any I/O thread. Everything above it (client,
server, dispatcher, notifier) works on ``bytes`` envelopes built by :mod:`transport._wire`.
The interface deliberately passes one envelope per call but never promises one envelope per
broker message, so a driver may batch several envelopes into one broker message later.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transport.config import TransportConfig
    from transport.target import Target

__all__ = ["DirectAnswer", "Driver", "Incoming", "Listener", "OnMessage"]


class Incoming(abc.ABC):
    """One delivered message. Exactly one of ``ack``/``requeue``/``dead_letter`` settles it.

    Settling is thread-safe and may happen on any thread; settling a message whose
    connection has since been lost is a no-op (the broker redelivers it).

    Attributes:
        body: the envelope bytes (for a message over the size limit, maybe only its first
            bytes: see ``size``).
        redelivered: the broker delivered this message before (a server died holding it).
        size: the body's size on the wire. A driver may keep only the first and last bytes
            of a body over ``config.max_message_size`` (``body`` and ``tail``) instead of
            reading all of it into memory; ``size`` then exceeds ``len(body)``.
        tail: the body's last bytes when only part of it was kept, else empty.
    """

    body: bytes
    redelivered: bool
    tail: bytes = b""

    @property
    def size(self) -> int:
        return getattr(self, "_size", None) or len(self.body)

    @abc.abstractmethod
    def ack(self) -> None:
        """The message was handled (and its reply sent); the broker forgets it."""

    @abc.abstractmethod
    def requeue(self) -> None:
        """Give the message back to the queue for another consumer."""

    @abc.abstractmethod
    def dead_letter(self, reason: str) -> None:
        """Remove the message and park it in the driver's dead-letter place for inspection."""


OnMessage = Callable[[Incoming], None]


#: A server's offer to answer a decoded request envelope on its caller's thread:
#: ``(True, serialized result)``, ``(False, exception)``, or None when it leaves the request
#: to the broker (the ordinary way). It answers only what it answers at once and bounded
#: (``transport.InlineEndpoint``), and never raises.
DirectAnswer = Callable[[dict[str, Any]], "tuple[bool, Any] | None"]


class Listener(abc.ABC):
    """A running consumption started by :meth:`Driver.listen`."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop consuming. No ``on_message`` call starts after this returns; unsettled
        messages stay with the caller to settle. Safe to call twice."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Stop consuming and hand unsettled messages back to the broker at once, as if the
        process had died; settling them later is a no-op. Never raises."""


class Driver(abc.ABC):
    """Moves opaque envelopes to a :class:`~transport.target.Target`.

    ``on_message`` callbacks run on the driver's I/O side and must not block: hand the
    message to a worker and return (or, where ``consumes_on_own_thread``, answer a
    request that is known cheap and bounded there: see ``transport.InlineEndpoint``).
    """

    #: Whether ``on_message`` runs on a thread of the driver's own that only consumes
    #: (a request answered there delays the next delivery, not a caller's send).
    consumes_on_own_thread = False
    #: Whether its messages stay in this process (their receiver may take the value an
    #: encoding read back: ``transport._wire.Encoded``).
    in_process = False

    def __init__(self, url: str, config: TransportConfig) -> None:
        self.url = url
        self.config = config

    def offer_direct(self, target: Target, answer: DirectAnswer) -> Callable[[], None] | None:
        """Let callers in this process have ``target``'s requests answered by ``answer``
        on their own thread, without the broker (see :data:`DirectAnswer`); returns how
        to withdraw it, or None where the driver has no such path (every driver but
        ``memory://``: its servers are in other processes)."""
        return None

    def direct_answerer(self, target: Target) -> DirectAnswer | None:
        """What :meth:`offer_direct` offers for ``target`` (a plain call to its topic, on
        this broker), if anything."""
        return None

    @abc.abstractmethod
    def send(
        self,
        target: Target,
        body: bytes,
        *,
        ttl: float | None = None,
        call: bool = False,
        transient: bool = False,
    ) -> None:
        """Hand a request or cast to the broker; returns once the broker holds it.

        ``call=True`` marks a call: one needs a server now, so a driver raises
        MessageUndeliverable when nobody consumes the queue (a cast waits there instead).
        Whether to wait for the broker's confirm is the driver's to decide: a cast is
        always confirmed (it must not be lost); a call, whose caller learns of a loss
        from its timeout anyway, may skip it when the driver knows the route is sound.

        ``target.topic`` is set; ``target.server`` picks the ``<topic>.<server>`` queue;
        ``target.fanout`` copies it to every fanout queue of the topic (none is fine).
        ``ttl`` (seconds) drops the message if no server took it by then.
        ``transient``: a call that changes nothing (a read): it need not be kept on the
        broker's disk (see :meth:`RPCClient.start_call`); a driver may ignore it.

        Raises:
            MessageUndeliverable: no queue is bound for a non-fanout target, or (a call)
                the queue has no consumer.
            TransportError: the broker stayed unreachable through the retries.
        """

    def try_send(
        self,
        target: Target,
        body: bytes,
        *,
        ttl: float | None = None,
        call: bool = False,
        transient: bool = False,
    ) -> bool:
        """Like :meth:`send` when that needs no wait for a (re)connect; otherwise send
        nothing and return False (the caller hands the message to a thread that may wait).
        """
        self.send(target, body, ttl=ttl, call=call, transient=transient)
        return True

    def ready(self) -> bool:
        """Connected and not known to be failing: a send would not wait for a connection."""
        return True

    def queue_state(self, queue: str) -> tuple[int, int] | None:
        """(messages waiting, consumers) of a request queue right now; (0, 0) if there is
        no such queue; None if the driver cannot tell. One broker round trip."""
        return None

    def unreachable(self) -> str | None:
        """Why the broker could not be reached at the last attempt (None: it could)."""
        return None

    @abc.abstractmethod
    def send_reply(self, address: str, body: bytes) -> None:
        """Send a reply envelope to a reply address from :meth:`start_replies`. A vanished
        address drops the reply silently (its caller is gone)."""

    @abc.abstractmethod
    def start_replies(
        self, on_reply: Callable[[bytes], None], on_lost: Callable[[str], None]
    ) -> str:
        """Start consuming this process's reply queue (once) and return its address.

        ``on_reply`` gets every reply body. ``on_lost(reason)`` is called when replies
        may have been lost (the connection dropped); the caller fails its pending calls.
        """

    @abc.abstractmethod
    def listen(self, target: Target, on_message: OnMessage, *, prefetch: int) -> Listener:
        """Declare and consume the queues a server of ``target`` reads: ``<topic>`` and
        ``<topic>.<server>`` (durable) and a fanout queue of its own. Returns once consuming."""

    def declare_topic(self, target: Target) -> None:
        """Declare the durable queues a server of ``target`` will read (``<topic>`` and,
        with ``target.server``, ``<topic>.<server>``), so requests and casts sent before any
        server starts wait in them. Idempotent.

        Raises:
            QueueMismatch: a queue exists with other arguments than this transport's.
            TransportError: the broker stayed unreachable through the retries.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot declare topics ahead")

    @abc.abstractmethod
    def notify(self, target: Target, priority: str, body: bytes) -> None:
        """Publish a notification to ``<topic>.<priority>``; declares that (default pool)
        queue first so notifications wait for a listener that is not up yet."""

    @abc.abstractmethod
    def listen_notifications(
        self,
        targets: list[tuple[Target, str]],
        pool: str | None,
        on_message: OnMessage,
        *,
        prefetch: int,
    ) -> Listener:
        """Consume notifications for each ``(target, priority)``. Listeners of one pool share
        messages; each pool (None is the default pool) gets its own copy of each."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and threads. Safe to call twice."""

    def is_connected(self) -> bool:
        """Whether the broker connection is up now (in-process drivers always are)."""
        return True


def exchange_name(target: Target, config: TransportConfig) -> str:
    """The exchange a target's messages go through."""
    return target.exchange or config.default_exchange


def routing_key(target: Target) -> str:
    """``<topic>`` or ``<topic>.<server>``: also the name of the queue bound to it."""
    topic = target.require_topic()
    return f"{topic}.{target.server}" if target.server else topic


def notification_queue(target: Target, priority: str, pool: str | None) -> str:
    """``<topic>.<priority>`` for the default pool, ``<topic>.<priority>.<pool>`` otherwise."""
    key = f"{target.require_topic()}.{priority}"
    return f"{key}.{pool}" if pool else key
