"""The :class:`Transport` handle and :func:`get_transport`."""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from transport import _wire
from transport._replies import ReplyWaiter
from transport._sender import OnSent, Sender
from transport.config import DEFAULT_CONFIG, TransportConfig, apply_url_options
from transport.driver import DirectAnswer, Driver, Listener, OnMessage
from transport.exceptions import ConnectionLost
from transport.target import Target

if TYPE_CHECKING:
    from transport._replies import PendingCall

__all__ = ["Transport", "declare_topic", "get_transport"]

_live: weakref.WeakSet[Transport] = weakref.WeakSet()


class Transport:
    """A connection to a broker shared by clients, servers, notifiers and listeners.

    Create it with :func:`get_transport`; call :meth:`cleanup` when done.

    Attributes:
        url: the URL it was created from.
        config: its :class:`~transport.config.TransportConfig`.

    Besides ``is_connected`` and ``cleanup`` it has a small internal interface, the only
    way the client, server and notification modules reach the broker (its driver, the
    reply waiter and the sender thread stay private): :attr:`reply_address`,
    :meth:`register_call` / :meth:`forget_call`, :meth:`send_request`,
    :meth:`send_notification`, :meth:`unreachable`, :meth:`listen`,
    :meth:`listen_notifications`, :meth:`send_reply` and :meth:`declare_queues`. It moves
    encoded envelopes (:mod:`transport._wire`) and is not part of the public API.
    """

    def __init__(self, driver: Driver, config: TransportConfig) -> None:
        self.url = driver.url
        self.config = config
        self._driver = driver
        self._lock = threading.Lock()
        self._reply_waiter: ReplyWaiter | None = None
        self._sender_: Sender | None = None
        self._cleaned = False
        _live.add(self)

    @property
    def _replies(self) -> ReplyWaiter:
        waiter = self._reply_waiter
        if waiter is None:
            with self._lock:
                if self._reply_waiter is None:
                    self._reply_waiter = ReplyWaiter(self._driver, self.config.call_monitor_misses)
                waiter = self._reply_waiter
        return waiter

    @property
    def _sender(self) -> Sender:
        sender = self._sender_
        if sender is None:
            with self._lock:
                if self._cleaned:
                    raise ConnectionLost(reason="the transport was cleaned up")
                if self._sender_ is None:
                    self._sender_ = Sender(
                        self._driver,
                        self.config.batch_max_messages,
                        self.config.max_message_size,
                        in_flight=self._in_flight,
                    )
                sender = self._sender_
        return sender

    def _in_flight(self) -> int:
        waiter = self._reply_waiter
        return 0 if waiter is None else waiter.in_flight

    # -- internal interface: calls ------------------------------------------------------
    @property
    def reply_address(self) -> str:
        """This process's reply address (its reply queue is consumed from the first use)."""
        waiter = self._reply_waiter
        if waiter is not None:
            address = waiter._address
            if address is not None:  # NOTE: set once; the properties' hops, per call
                return address
        return self._replies.address

    def direct_answerer(self, target: Target) -> DirectAnswer | None:
        """A server's offer to answer ``target``'s calls on the caller's thread
        (``Driver.offer_direct``: a server in this process), or None."""
        return None if self._cleaned else self._driver.direct_answerer(target)

    def offer_direct(self, target: Target, answer: DirectAnswer) -> Callable[[], None] | None:
        """Offer ``answer`` for ``target``'s calls made in this process (see
        ``Driver.offer_direct``); how to withdraw it, or None where there is no such path."""
        return self._driver.offer_direct(target, answer)

    def register_call(self, call: PendingCall) -> None:
        """Match replies to ``call`` and watch its deadline and heartbeats from now.

        Raises:
            ConnectionLost: the transport was cleaned up.
        """
        waiter = self._reply_waiter
        (waiter if waiter is not None else self._replies).register(call)

    def forget_call(self, request_id: str) -> None:
        """Stop waiting for replies to a call (sent or not). Safe for unknown ids."""
        self._replies.forget(request_id)

    @property
    def calls_in_flight(self) -> int:
        """Calls registered and not answered yet."""
        return self._in_flight()

    def send_request(
        self,
        target: Target,
        body: bytes | _wire.Deferred,
        ttl: float | None,
        on_sent: OnSent,
        *,
        call: bool = False,
        batchable: bool = True,
        transient: bool = False,
    ) -> None:
        """Queue an encoded request (or a :class:`~transport._wire.Deferred` one, which
        the sender encodes; ``call``: its caller waits for a reply) or cast for
        ``target``; ``on_sent(None)`` once the broker has it, ``on_sent(exc)`` with the
        typed error when it could not be sent. Requests queued meanwhile for one target
        leave packed in one message (``batchable``). A call is published on the caller's
        thread when nothing else is in flight and the broker is connected.
        ``transient``: a call that changes nothing (see ``Driver.send``).

        Raises:
            ConnectionLost: the transport was cleaned up.
        """
        sender = self._sender_
        if sender is None:
            sender = self._sender
        waiter = self._reply_waiter
        sender.submit(
            target,
            body,
            ttl,
            on_sent,
            batchable=batchable,
            inline=call and (waiter is None or len(waiter._pending) <= 1),
            call=call,
            transient=transient,
        )

    def send_notification(
        self, target: Target, priority: str, body: bytes, on_sent: OnSent, *, backlog: int
    ) -> bool:
        """Queue an encoded notification for ``<topic>.<priority>`` behind what waits to be
        sent; ``on_sent`` as for :meth:`send_request`. False (nothing queued) when
        ``backlog`` notifications wait already.

        Raises:
            ConnectionLost: the transport was cleaned up.
        """
        sender = self._sender
        if sender.tasks >= backlog:
            return False
        driver = self._driver

        def publish() -> None:
            driver.notify(target, priority, body)

        sender.publish_later(target, publish, on_sent)
        return True

    def unreachable(self) -> str | None:
        """Why the broker could not be reached at the last attempt (None: it could)."""
        return self._driver.unreachable()

    # -- internal interface: servers and listeners ----------------------------------------
    def listen(self, target: Target, on_message: OnMessage, *, prefetch: int) -> Listener:
        """Declare and consume the queues of a server of ``target``; returns once consuming.

        Raises:
            QueueMismatch: a queue exists with other arguments than this transport's.
            BrokerRefused: the broker refused a queue or exchange (permissions, type).
            TransportError: the broker stayed unreachable through the retries.
        """
        return self._driver.listen(target, on_message, prefetch=prefetch)

    def listen_notifications(
        self,
        targets: list[tuple[Target, str]],
        pool: str | None,
        on_message: OnMessage,
        *,
        prefetch: int,
    ) -> Listener:
        """Consume the notifications of each ``(target, priority)`` in ``pool``; raises
        as :meth:`listen`."""
        return self._driver.listen_notifications(targets, pool, on_message, prefetch=prefetch)

    @property
    def in_process(self) -> bool:
        """Whether messages stay in this process (``Driver.in_process``)."""
        return self._driver.in_process

    @property
    def consumes_on_own_thread(self) -> bool:
        """Whether deliveries reach servers on a thread that only consumes (see
        ``Driver.consumes_on_own_thread``)."""
        return self._driver.consumes_on_own_thread

    def send_reply(self, address: str, body: bytes) -> None:
        """Send an encoded reply to a caller's reply address.

        Raises:
            TransportError: not sent for now (the connection); the request may be retried.
            MessagingException: this address never takes a reply.
        """
        self._driver.send_reply(address, body)

    def declare_queues(self, target: Target) -> None:
        """:func:`declare_topic` for ``target``."""
        self._driver.declare_topic(target)

    def is_connected(self) -> bool:
        """Whether the broker connection is up now (what a health check asks)."""
        return not self._cleaned and self._driver.is_connected()

    def cleanup(self) -> None:
        """Fail pending calls, close connections and stop threads. Safe to call twice."""
        with self._lock:
            if self._cleaned:
                return
            self._cleaned = True
            waiter = self._reply_waiter
            sender = self._sender_
        if sender is not None:
            sender.close()
        if waiter is not None:
            waiter.close()
        self._driver.close()
        _live.discard(self)

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"<Transport {self.url}>"


def get_transport(url: str = "memory://", config: TransportConfig | None = None) -> Transport:
    """Create a transport for ``url``.

    ``memory://`` and ``memory://NAME`` are in-process brokers (same name, same broker);
    ``amqp://`` and ``rabbit://`` reach RabbitMQ through kombu. ``amqp://h1//;amqp://h2//``
    lists the nodes of a cluster: connections go to the first that answers, and move on
    to the next when it fails.

    Query options set :class:`TransportConfig` fields, winning over ``config``:
    ``quorum_queues=true``, ``topic_queue_message_ttl=S``, ``topic_queue_expires=S``,
    ``cast_ttl=S`` (seconds), ``control_exchange=NAME`` (oslo.messaging's, default
    ``openstack``), ``wire=oslo`` (clients send oslo.messaging envelopes, to reach
    oslo.messaging servers); ``amqps://`` also takes ``ca_certs``, ``certfile``, ``keyfile``.

    Raises:
        ValueError: an unknown URL scheme or query option, or a bad option value.
    """
    config = config or DEFAULT_CONFIG
    scheme = urlsplit(url).scheme
    driver: Driver
    if scheme == "memory":
        from transport.drivers.memory import MemoryDriver

        driver_url, config = apply_url_options(url, config)
        driver = MemoryDriver(driver_url, config)
    elif scheme in ("amqp", "rabbit", "pyamqp", "amqps", "rabbits"):
        # Imported here so kombu loads only for RabbitMQ transports.
        from transport.drivers.amqp import TLS_OPTIONS, AMQPDriver

        tls = scheme in ("amqps", "rabbits")
        driver_url, config = apply_url_options(url, config, allowed=TLS_OPTIONS if tls else ())
        driver = AMQPDriver(driver_url, config)
    else:
        raise ValueError(
            f"unsupported transport URL scheme {scheme!r}; use memory://, amqp://, amqps:// "
            "or rabbit://"
        )
    made = Transport(driver, config)
    made.url = url
    return made


def declare_topic(
    transport: Transport, topic: str, *, server: str | None = None, exchange: str | None = None
) -> None:
    """Declare ``topic``'s durable queue (and ``<topic>.<server>``'s with ``server``) ahead
    of any server, so casts and calls sent before the first server starts wait for it
    instead of failing with ``MessageUndeliverable``.

    The queues get ``transport``'s queue options (quorum, message TTL, expiry): use the
    same as the servers of the topic will. Idempotent; ``conductor declare-queues`` is the
    command-line twin.

    Raises:
        QueueMismatch: a queue exists with other arguments than this transport's.
        TransportError: the broker stayed unreachable through the retries.
    """
    transport.declare_queues(Target(topic=topic, server=server, exchange=exchange))


@atexit.register
def _cleanup_at_exit() -> None:
    # Close broker connections politely at exit; the threads are daemons either way.
    for transport in list(_live):
        try:
            transport.cleanup()
        except Exception:  # never let one transport's failure hide another's cleanup
            pass
