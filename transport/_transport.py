"""The :class:`Transport` handle and :func:`get_transport`."""

from __future__ import annotations

import atexit
import threading
import weakref
from urllib.parse import urlsplit

from transport._replies import ReplyWaiter
from transport._sender import Sender
from transport.config import DEFAULT_CONFIG, TransportConfig, apply_url_options
from transport.driver import Driver
from transport.exceptions import ConnectionLost
from transport.target import Target

__all__ = ["Transport", "declare_topic", "get_transport"]

_live: weakref.WeakSet[Transport] = weakref.WeakSet()


class Transport:
    """A connection to a broker shared by clients, servers, notifiers and listeners.

    Create it with :func:`get_transport`; call :meth:`cleanup` when done.

    Attributes:
        url: the URL it was created from.
        config: its :class:`~transport.config.TransportConfig`.
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
    transport._driver.declare_topic(Target(topic=topic, server=server, exchange=exchange))


@atexit.register
def _cleanup_at_exit() -> None:
    # Close broker connections politely at exit; the threads are daemons either way.
    for transport in list(_live):
        try:
            transport.cleanup()
        except Exception:  # never let one transport's failure hide another's cleanup
            pass
