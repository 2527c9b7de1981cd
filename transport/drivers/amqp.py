"""``amqp://`` / ``rabbit://``: RabbitMQ through kombu. The only module importing kombu.

Two connections per driver (that is, per transport):

* the *publisher* connection, used under a lock by whichever thread sends. Publisher
  confirms plus ``mandatory`` tell the sender at once that nobody consumes a topic
  (RabbitMQ sends ``basic.return`` before the ``basic.ack``), and a request that
  :meth:`send` returned for is on the broker;
* the *consumer* connection, owned by one daemon I/O thread that waits in ``select`` on the
  socket and a wake-up pipe. Other threads post commands (consume, cancel) and wake the
  thread; the one exception is a worker acknowledging its delivery, which it does itself
  while the I/O thread sleeps in ``select`` (the I/O thread holds ``_wire`` at all other
  times; when busy, it gets the ack as a command). Replies are acknowledged together,
  every ``_REPLY_ACK_EVERY`` replies or ``_REPLY_ACK_AFTER`` seconds. Heartbeats keep
  flowing while handlers run on workers.

Topology (``<ex>`` is the target's exchange, default ``conductor``)::

    <ex>                direct  <topic>, <topic>.<server>  ->  durable queues of those names
    <ex>_fanout         direct  <topic>                    ->  <topic>_fanout_<id> (one per server)
    <ex>_notifications  direct  <topic>.<priority>         ->  <topic>.<priority>[.<pool>]
    (default)                   reply_<id>                 ->  one reply queue per transport
    (default)                   <topic>.dead               ->  rejected messages with no caller

oslo.messaging's rabbit driver (see ``transport._oslo``): topic queues are also bound on
its control exchange (``config.control_exchange``, topic, not durable, as oslo declares
it) with the same keys, and fanout queues on its ``<topic>_fanout`` fanout exchange, so
oslo.messaging callers reach our servers. A transport of ``wire="oslo"`` sends there::

    <control_exchange>  topic   <topic>, <topic>.<server>  ->  the topic queues above
    <topic>_fanout      fanout                             ->  every fanout queue of <topic>

Bodies are the transport's JSON envelopes, published as ``application/json``; consumers
accept only that, and nothing is ever unpickled.

Topic and notification queues carry the config's queue arguments (``x-queue-type: quorum``,
``x-message-ttl``, ``x-expires``); a queue that exists with other ones raises
``QueueMismatch``. A failover URL (``amqp://n1//;amqp://n2//``) names a cluster's nodes:
every connection of the driver goes to the current node and a failed connect moves on to
the next, so any node that is up is reached. Reply and fanout queues stay classic queues on
the node the process is connected to: a caller whose node goes down loses the replies of
its pending calls (they fail with ``ConnectionLost``; the requests still run once).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import random
import re
import select
import socket
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import amqp as _amqp
import amqp.exceptions as _amqp_exc
import kombu as _kombu
import kombu.exceptions as _kombu_exc
from amqp import spec as _spec
from amqp.exceptions import MessageNacked
from amqp.serialization import dumps as _amqp_dumps

from transport._ratelog import RateLimitedLog, one_line
from transport.config import TransportConfig
from transport.driver import (
    Driver,
    Incoming,
    Listener,
    OnMessage,
    exchange_name,
    notification_queue,
    routing_key,
)
from transport.exceptions import (
    BrokerRefused,
    MessageDeliveryFailure,
    MessageUndeliverable,
    MessagingException,
    QueueMismatch,
    TransportError,
)
from transport.futures import on_io_thread
from transport.target import Target

__all__ = ["TLS_OPTIONS", "AMQPDriver", "broker_error"]

LOG = logging.getLogger(__name__)
_LOG_BAD = RateLimitedLog(LOG)

# kombu is only partly typed; the driver treats it as dynamic rather than sprinkle ignores.
kombu: Any = _kombu
# kombu loads these lazily (~0.2 s): load them with the driver, not in a first call_async.
_ = (kombu.Connection, kombu.Exchange, kombu.Queue, kombu.Producer, kombu.Consumer)

_JSON = "application/json"
_HEARTBEAT = 15  # seconds; the I/O thread checks twice per interval
_COMMAND_TIMEOUT = 30.0
_ROUTABLE_FOR = 5.0  # seconds a confirmed route is trusted for unconfirmed calls
_SERVED_FOR = 1.0  # seconds a queue seen with consumers is trusted to have them for calls
#: A topic served within this many seconds that shows no consumer is probably failing over
#: or restarting: a call waits up to _REJOIN_GRACE for a server to come back before it
#: fails with MessageUndeliverable. A topic not served lately fails at once.
_RECENTLY_SERVED = 60.0
#: Replies are acknowledged together: after this many, or this many seconds after the first.
_REPLY_ACK_EVERY = 128
_REPLY_ACK_AFTER = 0.1
_REJOIN_GRACE = 5.0


_TLS_OPTIONS = ("ca_certs", "certfile", "keyfile")
#: Query options of ``amqps://`` URLs (besides the transport's own, see transport.config).
TLS_OPTIONS = _TLS_OPTIONS


def _kombu_url(url: str) -> tuple[str, dict[str, Any] | bool]:
    """The URL kombu gets, and its ``ssl`` argument.

    ``amqps://user:pass@host:5671/vhost?ca_certs=CA.pem&certfile=C.pem&keyfile=K.pem``
    connects over TLS (port 5671 by default), verifying the broker against ``ca_certs``
    when given and presenting a client certificate when ``certfile``/``keyfile`` are.
    """
    parts = urlsplit(url)
    if parts.scheme == "rabbit":
        parts = parts._replace(scheme="amqp")
    if parts.scheme not in ("amqps", "rabbits"):
        return urlunsplit(parts), False
    query = parse_qs(parts.query)
    unknown = set(query) - set(_TLS_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown TLS option(s) {sorted(unknown)} in the transport URL; "
            f"use {', '.join(_TLS_OPTIONS)}"
        )
    tls: dict[str, Any] = {name: query[name][-1] for name in _TLS_OPTIONS if name in query}
    if "ca_certs" in tls:
        tls["cert_reqs"] = ssl.CERT_REQUIRED
    parts = parts._replace(scheme="amqp", query="", netloc=_with_tls_port(parts))
    return urlunsplit(parts), tls or True


def _kombu_urls(url: str) -> tuple[list[str], dict[str, Any] | bool]:
    """The kombu URL of each node of a failover URL (``amqp://h1//;amqp://h2//``), and the
    ``ssl`` argument they share (TLS options may be written on any of them)."""
    urls: list[str] = []
    tls: dict[str, Any] | bool = False
    schemes = set()
    for one in url.split(";"):
        kombu_url, one_tls = _kombu_url(one.strip())
        urls.append(kombu_url)
        schemes.add(one_tls is not False)
        if isinstance(one_tls, dict):
            if isinstance(tls, dict) and tls != one_tls:
                raise ValueError("the failover URLs give different TLS options; give them once")
            tls = one_tls
        elif one_tls and tls is False:
            tls = True
    if len(schemes) > 1:
        raise ValueError("a failover URL mixes amqp:// and amqps://; use one scheme for all nodes")
    return urls, tls


class _Hosts:
    """The nodes of a transport URL; every connection of a driver goes to the current one.

    A connection that cannot be opened moves the driver on to the next node, so a failover
    URL reaches any node that is up, whichever nodes before it in the list are down.
    """

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self._index = 0
        self._lock = threading.Lock()

    def connect(self, **kwargs: Any) -> Any:
        """An open ``kombu.Connection`` to the current node (one attempt, no sleep inside)."""
        with self._lock:
            index = self._index
        conn = kombu.Connection(self.urls[index], **kwargs)
        try:
            # NOTE: not conn.connect(): that one tries twice with a 2 s sleep between
            # attempts; our callers retry with their own backoff, moving on to the next node.
            conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
        except BaseException:
            with contextlib.suppress(Exception):
                conn.release()
            with self._lock:
                if self._index == index:
                    self._index = (index + 1) % len(self.urls)
            raise
        return conn


_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)' for queue '([^']*)'[^:]*: (.*)")


def _queue_mismatch(exc: BaseException, queue_names: list[str]) -> QueueMismatch | None:
    """The typed error for a broker's refusal to redeclare a queue with other arguments
    (``406 PRECONDITION_FAILED - inequivalent arg ...``); None for any other error."""
    text = str(exc)
    if getattr(exc, "code", None) != 406 and "PRECONDITION_FAILED" not in text:
        return None
    found = _INEQUIVALENT.search(text)
    if found is None:
        return None
    argument, queue_name, detail = found.groups()
    queue_name = queue_name or (queue_names[0] if queue_names else "?")
    hint = ""
    what = f"{argument} {detail}"
    values = re.findall(r"(none|the value '([^']*)')", detail)
    if argument == "x-queue-type":
        hint = (
            " (quorum_queues=true in the transport URL, --quorum-queues for conductor "
            "serve, quorum_queues=True for Conductor/connect)"
        )
        if len(values) == 2:
            declared, current = (v[1] or "classic" for v in values)
            what = (
                f"x-queue-type: it is a {current} queue on the broker, "
                f"this transport declares it {declared}"
            )
    elif len(values) == 2:
        declared, current = (v[1] or "none" for v in values)
        what = f"{argument}: it is {current} on the broker, this transport declares {declared}"
    return QueueMismatch(
        f"queue {queue_name!r} already exists with other arguments: {what}. "
        f"Declare it with the same queue options everywhere{hint}, or delete the queue "
        f"(rabbitmqctl delete_queue {queue_name}) if nothing in it is needed",
        queue=queue_name,
        argument=argument,
        detail=detail,
    )


_EXCHANGE_INEQUIVALENT = re.compile(
    r"inequivalent arg '([^']+)' for exchange '([^']*)'[^:]*: received (.*) but current is (.*)"
)

#: What to do about a channel-level refusal, by AMQP reply code.
_REFUSAL_HINTS = {
    403: "the broker user has no permission for it (a name starting with 'amq.' is reserved "
    "to the broker; otherwise grant the user configure, write and read permissions on the "
    "vhost: rabbitmqctl set_permissions), or use another topic or exchange name",
    404: "something it needs does not exist on the broker (deleted meanwhile?); start again "
    "once it is declared, or use another name",
    405: "a queue is exclusive to another connection: stop whoever declared it exclusively "
    "(or wait for that connection to close), or use another topic",
    406: "an entity exists with other arguments: declare it with the same ones everywhere, "
    "or delete it on the broker if nothing uses it",
}


def broker_error(
    exc: BaseException, what: str, queue_names: list[str]
) -> MessagingException | None:
    """The typed transport error for what kombu, py-amqp or the socket raised while trying
    to ``what`` (words after "cannot"/"refused to"), at the driver's boundary; ``exc``
    itself when it is typed already; None when it is none of theirs (a bug: let it be).

    A channel-level refusal (the broker said no for good) is :class:`QueueMismatch` or
    :class:`BrokerRefused` with what to change; a connection failure is
    :class:`TransportError` (the driver reconnects on its own: a retry may succeed).
    """
    if isinstance(exc, MessagingException):
        return exc
    mismatch = _queue_mismatch(exc, queue_names)
    if mismatch is not None:
        return mismatch
    text = one_line(exc)
    if isinstance(exc, _amqp_exc.ChannelError):
        code = getattr(exc, "code", None)
        found = _EXCHANGE_INEQUIVALENT.search(text)
        if found is not None:
            argument, exchange, declared, current = found.groups()
            hint = (
                f"exchange {exchange!r} exists with another {argument}: {current} on the "
                f"broker, this transport declares {declared}. Use another exchange name "
                f"(Target(exchange=...)), or delete the exchange on the broker if nothing "
                f"uses it"
            )
        else:
            hint = _REFUSAL_HINTS.get(code or 0, "see the broker's reason")
        return BrokerRefused(
            f"the broker refused to {what}: {text}; {hint}", what=what, reason=text, code=code
        )
    if isinstance(exc, (_amqp_exc.AMQPError, _kombu_exc.KombuError, OSError)):
        return TransportError(
            reason=f"the broker connection failed trying to {what} ({text}); the transport "
            "reconnects on its own: retry, and check the broker if it goes on"
        )
    return None


def _with_tls_port(parts: Any) -> str:
    netloc: str = parts.netloc
    if parts.port is None:
        netloc += ":5671"
    return netloc


def _where(url: str) -> str:
    """``host:port`` of the (first) broker in a URL: what errors name, never the password."""
    try:
        parts = urlsplit(url.split(";", 1)[0])
        return f"{parts.hostname or 'localhost'}:{parts.port or 5672}"
    except ValueError:
        return "the broker"


def _login_refused(exc: BaseException) -> bool:
    """The broker refused the credentials (403 ACCESS_REFUSED): retrying cannot help."""
    return getattr(exc, "code", None) == 403 or "ACCESS_REFUSED" in str(exc)


def _backoff(attempt: int, cap: float) -> float:
    """Jittered exponential backoff: a random delay up to min(cap, 0.1 * 2**attempt)."""
    return random.uniform(0.05, min(cap, 0.1 * (2**attempt)))


class _Publisher:
    """The publishing connection; one publish at a time under a lock."""

    def __init__(
        self,
        url: str,
        config: TransportConfig,
        *,
        confirm: bool = True,
        ssl: dict[str, Any] | bool = False,
        hosts: _Hosts | None = None,
        on_reset: Callable[[], None] | None = None,
    ) -> None:
        self._url = url
        self._hosts = hosts if hosts is not None else _Hosts([url])
        self._on_reset = on_reset
        self._ssl = ssl
        self._config = config
        self._confirm = confirm
        self._lock = threading.Lock()
        self._conn: kombu.Connection | None = None
        self._producer: kombu.Producer | None = None
        self._declared: set[str] = set()
        self._check_channel: Any = None  # for passive declares (a 404 closes a channel)
        self._returned = False
        self._closed = False
        # Why the broker could not be reached at the last attempt; None once connected.
        self.unreachable: str | None = None
        # Set when a publish used up its retries: later publishes try once until one works,
        # so a queue of messages for a dead broker fails in milliseconds, not retries each.
        self._down = False

    @property
    def ready(self) -> bool:
        """Connected and not known to be failing: a publish need not (re)connect."""
        return self._producer is not None and not self._down

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self._returned = True

    def _connect(self) -> kombu.Producer:
        if self._producer is None:
            conn = self._hosts.connect(
                ssl=self._ssl,
                heartbeat=_HEARTBEAT,
                connect_timeout=5,
                transport_options={"confirm_publish": self._confirm},
            )
            self._conn = conn
            self.unreachable = None
            self._down = False
            self._producer = kombu.Producer(conn.channel(), on_return=self._on_return)
            self._declared = set()
        return self._producer

    def _reset(self) -> None:
        conn, self._conn, self._producer = self._conn, None, None
        self._check_channel = None
        if conn is not None:
            if self._on_reset is not None:
                self._on_reset()
            with contextlib.suppress(Exception):
                conn.release()

    def publish(
        self,
        exchange: str,
        key: str,
        body: bytes,
        *,
        mandatory: bool = False,
        ttl: float | None = None,
        persistent: bool = False,
        declare: tuple[Any, ...] = (),
        headers: dict[str, Any] | None = None,
        retry: bool = True,
    ) -> bool:
        """Publish and wait for the broker's confirm; False if it was returned unroutable.

        Reconnects up to ``connect_retries`` times with backoff (once, when the last
        publish found the broker unreachable or ``retry`` is False), then raises
        TransportError naming the broker's host and port.
        """

        if not (self._confirm or mandatory or declare):

            def plain(producer: Any) -> bool:
                self._publish_plain(producer.channel, exchange, key, body, ttl, persistent, headers)
                return True

            return bool(self._with_connection(plain, f"publish to {exchange or 'reply'}", retry))

        def go(producer: Any) -> bool:
            for entity in declare:
                if entity.name not in self._declared:
                    entity(producer.channel).declare()
                    self._declared.add(entity.name)
            self._returned = False
            producer.publish(
                body,
                exchange=exchange,
                routing_key=key,
                mandatory=mandatory,
                expiration=ttl,
                delivery_mode=2 if persistent else 1,
                content_type=_JSON,
                content_encoding="binary",
                headers=headers,
                retry=False,
            )
            return not self._returned

        return bool(self._with_connection(go, f"publish to {exchange or 'reply'}", retry))

    @staticmethod
    def _publish_plain(
        channel: Any,
        exchange: str,
        key: str,
        body: bytes,
        ttl: float | None,
        persistent: bool,
        headers: dict[str, Any] | None,
    ) -> None:
        """An unconfirmed publish (replies; calls on a confirmed route) straight on py-amqp.

        NOTE: the same frames as kombu's ``Producer.publish`` sends, without its layers,
        and without py-amqp's read of the socket before every publish (a non-blocking read
        that ends in a timeout exception, for a ``connection.blocked`` that seldom comes):
        what the broker sent (a heartbeat, a channel it closed) is read only when the socket
        has something.
        """
        conn = channel.connection
        # (py-amqp's public ``transport`` would reconnect a closed connection silently)
        sock = getattr(getattr(conn, "_transport", None), "sock", None)
        if sock is None:
            raise ConnectionError("the publisher connection is closed")
        while select.select([sock], [], [], 0)[0]:
            try:
                conn.drain_events(timeout=0)
            except TimeoutError:
                break
        expiration = None if ttl is None else str(int(ttl * 1000))
        if headers:
            properties: dict[str, Any] = {
                "content_type": _JSON,
                "content_encoding": "binary",
                "delivery_mode": 2 if persistent else 1,
                "priority": 0,
                "application_headers": headers,
            }
            if expiration is not None:
                properties["expiration"] = expiration
            channel.send_method(
                _spec.Basic.Publish,
                "Bssbb",
                (0, exchange, key, False, False),
                _amqp.Message(body, **properties),
            )
            return
        # NOTE: what send_method would write, with the method's arguments and the content
        # header's properties serialized once instead of through py-amqp's generic loops
        # (a promise, a Message, and a pass over fourteen properties per message).
        try:
            conn.frame_writer(
                1,
                channel.channel_id,
                _spec.Basic.Publish,
                _publish_arguments(exchange, key),
                _Content(body, _header_properties(persistent, expiration)),
            )
        except StopIteration:  # py-amqp's sign of a closed connection
            raise ConnectionError("the publisher connection is closed") from None

    def queue_state(self, queue: str, *, retry: bool = True) -> tuple[int, int]:
        """(messages ready, consumers) of ``queue`` right now ((0, 0): no such queue).
        One broker round trip."""

        def go(producer: Any) -> tuple[int, int]:
            assert self._conn is not None
            if self._check_channel is None:
                self._check_channel = self._conn.channel()
            try:
                ok = self._check_channel.queue_declare(queue=queue, passive=True)
            except self._conn.channel_errors as exc:
                self._check_channel = None  # the broker closed it
                if getattr(exc, "code", None) == 404:
                    return 0, 0
                raise
            return int(ok.message_count), int(ok.consumer_count)

        result: tuple[int, int] = self._with_connection(go, f"look at {queue}", retry)
        return result

    def _with_connection(self, fn: Callable[[Any], Any], what: str, retry: bool) -> Any:
        """``fn(producer)`` under the lock, reconnecting and retrying on connection errors."""
        attempt = 0
        retries = self._config.connect_retries if retry and not self._down else 0
        while True:
            with self._lock:
                if self._closed:
                    raise TransportError(reason="the transport was cleaned up")
                try:
                    return fn(self._connect())
                except MessageNacked as exc:
                    # The broker could not take the message now: a quorum queue with no
                    # leader (a failover in progress) nacks until one is elected. A fresh
                    # channel looks the leader up again; a channel opened while the old
                    # leader was still listed can go on nacking for ever.
                    self._reset()
                    if attempt >= self._config.connect_retries:
                        raise MessageDeliveryFailure(
                            reason=f"the broker refused the message ({what}, nack) "
                            f"{attempt + 1} times: a queue without a leader or over "
                            "its length limit"
                        ) from exc
                    LOG.info("the broker refused a message (nack); retrying")
                except Exception as exc:
                    conn = self._conn
                    self._reset()
                    if conn is None or not isinstance(exc, conn.connection_errors):
                        if conn is not None and isinstance(exc, conn.channel_errors):
                            raise broker_error(exc, what, []) or MessageDeliveryFailure(
                                reason=str(exc)
                            ) from exc
                        if not isinstance(exc, OSError):
                            typed = broker_error(exc, what, [])
                            if typed is None or typed is exc:
                                raise
                            raise typed from exc
                    if conn is None:
                        self.unreachable = f"cannot reach the broker at {_where(self._url)}: {exc}"
                    if attempt >= retries or _login_refused(exc):
                        if retry:
                            self._down = True
                        raise TransportError(
                            reason=self.unreachable
                            or f"cannot {what} at {_where(self._url)}: {exc}"
                        ) from exc
                    LOG.info("publisher connection failed (%s); retrying", exc)
            time.sleep(_backoff(attempt, self._config.retry_interval_max))
            attempt += 1

    def heartbeat_check(self) -> None:
        if self._lock.acquire(blocking=False):  # busy publishing means alive anyway
            try:
                raw = getattr(self._conn, "_connection", None)
                if raw is not None:
                    raw.heartbeat_tick(rate=2)
            except Exception as exc:
                LOG.info("publisher heartbeat failed (%s); reconnecting on next send", exc)
                self._reset()
            finally:
                self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._reset()


class _Content:
    """A message body for py-amqp's frame writer, its header properties serialized."""

    __slots__ = ("body", "_properties")

    def __init__(self, body: bytes, properties: bytes) -> None:
        self.body = body
        self._properties = properties

    def _serialize_properties(self) -> bytes:
        return self._properties


#: Property flags (AMQP 0-9-1 basic class, highest bit first) of the properties we send.
_FLAG_CONTENT_TYPE = 1 << 15
_FLAG_CONTENT_ENCODING = 1 << 14
_FLAG_DELIVERY_MODE = 1 << 12
_FLAG_PRIORITY = 1 << 11
_FLAG_EXPIRATION = 1 << 8
_BASE_FLAGS = _FLAG_CONTENT_TYPE | _FLAG_CONTENT_ENCODING | _FLAG_DELIVERY_MODE | _FLAG_PRIORITY
_SHORT = struct.Struct(">H")
_CONTENT_PROPERTIES = b"\x10" + _JSON.encode() + b"\x06binary"  # two short strings


def _header_properties(persistent: bool, expiration: str | None) -> bytes:
    """The properties of a plain publish (content type, encoding, delivery mode, priority 0,
    optional expiration) as py-amqp's ``Message._serialize_properties`` writes them."""
    mode = b"\x02\x00" if persistent else b"\x01\x00"  # delivery mode, then priority 0
    if expiration is None:
        return _SHORT.pack(_BASE_FLAGS) + _CONTENT_PROPERTIES + mode
    raw = expiration.encode()
    return (
        _SHORT.pack(_BASE_FLAGS | _FLAG_EXPIRATION)
        + _CONTENT_PROPERTIES
        + mode
        + bytes((len(raw),))
        + raw
    )


@functools.lru_cache(maxsize=1024)
def _publish_arguments(exchange: str, key: str) -> bytes:
    """``basic.publish``'s serialized arguments (not mandatory, not immediate)."""
    args: bytes = _amqp_dumps("Bssbb", (0, exchange, key, False, False))
    return args


def _succeeded(future: Future[Any]) -> bool:
    # NOTE: read without the future's Condition (three times, on every send): a finished
    # future never changes again, and one still running reads as not succeeded.
    return future._state == "FINISHED" and future._exception is None


class _Subscription:
    """Queues consumed on one channel of the consumer connection, re-declared on reconnect."""

    def __init__(
        self,
        queues: list[kombu.Queue],
        on_message: OnMessage,
        prefetch: int,
        dead_letter: str,
        what: str = "consume the reply queue",
    ) -> None:
        self.what = what  # what errors say it could not do
        self.queues = queues
        self.on_message = on_message
        self.prefetch = prefetch
        self.dead_letter_queue = dead_letter
        self.channel: Any = None
        self.consumer: kombu.Consumer | None = None
        self.generation = -1
        self.cancelled = False
        self.is_reply = False
        self.on_lost: Callable[[str], None] | None = None
        # Replies only: takes each reply body straight from py-amqp (see _consume).
        self.on_reply: Callable[[bytes], None] | None = None
        self.control_exchange: str | None = None  # declared before consuming (oslo)
        # Replies received and not acknowledged yet (see AMQPDriver._ack_replies).
        self.unacked = 0
        self.unacked_tag = 0
        self.unacked_since = 0.0


#: Bytes kept of each end of a body over the size limit (the rest is read and dropped).
_EXCERPT = 64 * 1024


class _Cut:
    """A body over the size limit as it streams in: its first and last bytes only."""

    __slots__ = ("size", "left", "head", "tail", "header")

    def __init__(self, size: int, header: bytes) -> None:
        self.size = size
        self.left = size
        self.head = b""
        self.tail = b""
        self.header = header

    def add(self, chunk: bytes) -> None:
        self.left -= len(chunk)
        if len(self.head) < _EXCERPT:
            self.head += chunk[: _EXCERPT - len(self.head)]
        self.tail = (self.tail + chunk)[-_EXCERPT:]


class _BodyLimit:
    """Wraps py-amqp's frame handler on the consumer connection so that a message body over
    ``limit`` bytes is never assembled in memory.

    py-amqp reads a body frame by frame (at most ``frame_max``, 128 KiB) and joins them once
    complete; a 100 MB message cost 200 MB and more. For a delivery on a channel ``cut``
    names, the content header announcing a body over the limit is held back, the body
    frames are consumed keeping only the first and last ``_EXCERPT`` bytes, and then py-amqp
    gets the header with a body size of 0: the message arrives empty, and ``current`` holds
    what was kept while it is delivered (on this same thread).
    """

    def __init__(self, inner: Callable[[Any], Any], limit: int, cut: Callable[[int], bool]) -> None:
        self._inner = inner
        self._limit = limit
        self._cut = cut
        self._cutting: dict[int, _Cut] = {}
        self.current: _Cut | None = None

    def __call__(self, frame: Any) -> Any:
        frame_type, channel, buf = frame
        if frame_type == 3 and channel in self._cutting:
            cut = self._cutting[channel]
            cut.add(bytes(buf))
            if cut.left > 0:
                return False
            del self._cutting[channel]
            return self._deliver(channel, cut)
        if frame_type == 2 and len(buf) >= 12:
            (size,) = struct.unpack_from(">Q", buf, 4)
            if size > self._limit and self._cut(channel):
                header = bytes(buf[:4]) + struct.pack(">Q", 0) + bytes(buf[12:])
                self._cutting[channel] = _Cut(size, header)
                return False
        return self._inner(frame)

    def _deliver(self, channel: int, cut: _Cut) -> Any:
        self.current = cut
        try:
            return self._inner((2, channel, cut.header))
        finally:
            self.current = None


#: Basic.Deliver's (class id, method id), as the first four bytes of its method frame.
_BASIC_DELIVER = struct.pack(">HH", 60, 60)
#: Content encodings whose decoding py-amqp's auto_decode does, and the UTF-8 encoding of
#: _AMQPIncoming undoes, to the same bytes (or fails, keeping them): skipped.
_SAME_BYTES = frozenset({"utf-8", "utf8", "UTF-8", "UTF8", "binary"})


class _Delivery:
    """A delivery as the intake takes it: what the driver reads of py-amqp's and kombu's
    messages (body, content type, redelivered, and acknowledging it on its channel)."""

    __slots__ = (
        "channel",
        "delivery_tag",
        "delivery_info",
        "content_type",
        "body",
        "_encoding",
        "_size",
        "_got",
        "_parts",
    )

    def __init__(self, channel: Any, delivery_tag: int, redelivered: bool) -> None:
        self.channel = channel
        self.delivery_tag = delivery_tag
        self.delivery_info = {"delivery_tag": delivery_tag, "redelivered": redelivered}
        self.content_type: str | None = None
        self.body: bytes | str = b""
        self._encoding: str | None = None
        self._size = -1  # the body's, once its header came
        self._got = 0
        self._parts: list[bytes] = []

    def ack(self) -> None:
        self.channel.basic_ack(self.delivery_tag)

    def reject(self, requeue: bool = False) -> None:
        self.channel.basic_reject(self.delivery_tag, requeue=requeue)

    def requeue(self) -> None:
        self.channel.basic_reject(self.delivery_tag, requeue=True)


class _Watch:
    __slots__ = ("channel", "deliver", "decode", "taking")

    def __init__(self, channel: Any, deliver: Callable[[_Delivery], None], decode: bool) -> None:
        self.channel = channel
        self.deliver = deliver
        self.decode = decode
        self.taking: _Delivery | None = None


class _Intake:
    """Takes the deliveries of the consumers on watched channels straight from the frames.

    NOTE: py-amqp builds each delivery out of its three frames in layers (its frame
    handler's partial message, the content header's fourteen properties decoded, the
    method's arguments loaded by a generic format reader, the channel's dispatch to
    ``_on_basic_deliver``, a ``delivery_info`` dict), and kombu adds its own message on
    top, for a delivery the driver reads four things of: its tag, body, content type and
    redelivered flag. Measured on sequential calls, between the socket read and the
    handler: 63 us of CPU per reply on the client's I/O thread, 69 us per request on the
    conductor's, both on a call's critical path.

    Only a Basic.Deliver on a watched channel, for a consumer tag the channel has a
    callback for (a consumer not cancelled), while the channel is not closing, is taken,
    with the header and body frames that follow it on that channel (AMQP sends a
    content's frames in a row per channel). Every other frame goes to ``inner`` as before,
    so a delivery py-amqp began (its method frame came before the channel was watched)
    ends in py-amqp, and the channel's other methods (a close, a cancel) reach it. Each
    frame taken counts as received for py-amqp's heartbeat check, as its own handler
    counts it. ``decode``: the body decoded by its content encoding as py-amqp's
    ``auto_decode`` does (requests; replies are read as bytes).
    """

    __slots__ = ("_inner", "_connection", "_watched")

    def __init__(self, inner: Callable[[Any], Any], connection: Any) -> None:
        self._inner = inner
        self._connection = connection
        self._watched: dict[int, _Watch] = {}

    def watch(self, channel: Any, deliver: Callable[[_Delivery], None], decode: bool) -> None:
        """Hand ``deliver`` the deliveries of ``channel``'s consumers from now on."""
        self._watched[channel.channel_id] = _Watch(channel, deliver, decode)

    def __call__(self, frame: Any) -> Any:
        frame_type, channel_id, buf = frame
        watch = self._watched.get(channel_id)
        if watch is None:
            return self._inner(frame)
        taking = watch.taking
        if taking is None:
            if frame_type != 1 or buf[:4] != _BASIC_DELIVER:
                return self._inner(frame)
            channel = watch.channel
            # consumer tag (short string), delivery tag (64 bits), redelivered (a bit),
            # exchange and routing key (short strings, not needed).
            size = buf[4]
            tag = bytes(buf[5 : 5 + size]).decode("utf-8", "surrogatepass")
            if channel.is_closing or tag not in channel.callbacks:
                return self._inner(frame)  # py-amqp ignores it, or rejects it to the queue
            (delivery_tag,) = struct.unpack_from(">Q", buf, 5 + size)
            watch.taking = _Delivery(channel, delivery_tag, bool(buf[13 + size] & 1))
            self._connection.bytes_recv += 1
            return False
        self._connection.bytes_recv += 1
        if frame_type == 2 and taking._size < 0:
            _read_header(taking, buf)
        elif frame_type == 3 and taking._size >= 0:
            taking._parts.append(bytes(buf))
            taking._got += len(buf)
        else:
            watch.taking = None
            raise ConnectionError(
                f"frame type {frame_type} on channel {channel_id} in the middle of a delivery"
            )
        if taking._got < taking._size:
            return False
        watch.taking = None
        parts = taking._parts
        body = taking.body = parts[0] if len(parts) == 1 else b"".join(parts)
        taking._parts = []
        encoding = taking._encoding
        if watch.decode and encoding is not None and encoding not in _SAME_BYTES:
            with contextlib.suppress(Exception):  # as py-amqp: kept as it came
                taking.body = body.decode(encoding)
        watch.deliver(taking)
        return True


def _read_header(delivery: _Delivery, buf: Any) -> None:
    """The body size, content type and content encoding of a content header frame's
    payload."""
    # class id, weight, body size, property flags (16-bit words while the lowest bit of
    # one is set), then the properties that are there, in order: content type first,
    # content encoding second (short strings).
    (delivery._size, flags) = struct.unpack_from(">QH", buf, 4)
    at = 14
    word = flags
    while word & 1:
        (word,) = struct.unpack_from(">H", buf, at)
        at += 2
    if flags & 0x8000:
        size = buf[at]
        delivery.content_type = bytes(buf[at + 1 : at + 1 + size]).decode("utf-8", "surrogatepass")
        at += 1 + size
    if flags & 0x4000:
        size = buf[at]
        delivery._encoding = bytes(buf[at + 1 : at + 1 + size]).decode("utf-8", "surrogatepass")


#: Frames read per turn of the I/O loop before queued commands (acks) get a turn.
_FRAMES_PER_TURN = 256
#: Bytes asked of the socket per read at least (py-amqp asks for each part of a frame: three
#: reads a frame). Small: py-amqp copies what is left of its buffer for each part it takes.
_READ_SIZE = 16 * 1024
_FRAME_HEADER = struct.Struct(">BHI")
_FRAME_END = 0xCE


def _missing(buf: bytes) -> int:
    """Bytes still to come for the first frame in ``buf`` (0: it is whole)."""
    if len(buf) < _FRAME_HEADER.size:
        return _FRAME_HEADER.size + 1 - len(buf)
    size: int = _FRAME_HEADER.unpack_from(buf)[2]
    return max(0, _FRAME_HEADER.size + size + 1 - len(buf))


def _buffered_frame(raw: Any) -> bool:
    """Whether py-amqp holds a whole frame read ahead by :func:`_drain`."""
    buf = getattr(raw.transport, "_read_buffer", b"")
    return bool(buf) and not _missing(buf)


def _drain(raw: Any) -> None:
    """Handle the frames the broker has sent, without waiting for more.

    NOTE: py-amqp reads a frame in three ``recv`` calls and its ``drain_events(timeout=0)``
    switches the socket to non-blocking and back around each frame (four ``fcntl`` calls),
    then raises a timeout to say there is nothing left: about 20 system calls and an
    exception per delivery. On a plain TCP socket this reads what is there in one
    non-blocking ``recv`` into py-amqp's own read buffer and lets py-amqp parse whole
    frames from it (no system call at all); TLS sockets keep py-amqp's way.
    """
    transport = raw.transport
    sock = transport.sock
    if (
        not _MSG_DONTWAIT
        or isinstance(sock, ssl.SSLSocket)  # its bytes are not py-amqp's to buffer
        or not isinstance(getattr(transport, "_read_buffer", None), bytes)
    ):
        for _ in range(_FRAMES_PER_TURN):
            try:
                raw.drain_events(timeout=0)
            except TimeoutError:
                return
        return
    on_frame = raw.on_inbound_frame
    emptied = False
    for _ in range(_FRAMES_PER_TURN):
        buf = transport._read_buffer
        missing = _missing(buf)
        if missing:
            if emptied:
                # NOTE: the last read took less than it asked for: the socket had no more
                # then, and what came since makes the loop's select return at once. Asking
                # again would mostly be a system call that finds nothing (and lets go of
                # the GIL to the caller just woken, only to take it back).
                return
            size = max(missing, _READ_SIZE)
            try:
                data = sock.recv(size, _MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                transport.connected = False
                raise ConnectionError("the broker closed the connection")
            emptied = len(data) < size
            buf = transport._read_buffer = buf + data
            if _missing(buf):
                continue  # a frame's first part: its rest is on its way
        # NOTE: the whole frame is in the buffer: taken apart here rather than through
        # py-amqp's blocking_read (a generator context manager and three partial reads,
        # each copying the rest of the buffer, per frame: three frames a message).
        frame_type, channel, size = _FRAME_HEADER.unpack_from(buf)
        end = _FRAME_HEADER.size + size
        if buf[end] != _FRAME_END:
            transport.connected = False
            raise ConnectionError(f"a frame ends with {buf[end]:#04x}, not 0xce")
        transport._read_buffer = buf[end + 1 :]
        on_frame((frame_type, channel, buf[_FRAME_HEADER.size : end]))


_MSG_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)


class _AMQPIncoming(Incoming):
    def __init__(
        self, driver: AMQPDriver, sub: _Subscription, message: Any, cut: _Cut | None = None
    ) -> None:
        body = message.body
        # py-amqp hands bodies with a content_encoding over already decoded.
        self.body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        if cut is not None:
            self.body, self.tail, self._size = cut.head, cut.tail, cut.size
        self.redelivered = bool(message.delivery_info.get("redelivered"))
        self._driver = driver
        self._sub = sub
        self._message = message
        self._generation = sub.generation
        self._settled = False

    def _settle(self, action: str) -> None:
        if self._settled:
            return
        self._settled = True
        driver = self._driver
        if driver._io.is_current():
            # Answered on the I/O thread itself (transport.InlineEndpoint): it holds
            # _wire; settled here, never raised into the delivery (that would park it).
            driver._settle(self._sub, self._generation, self._message, action, here=True)
            return
        # NOTE: while the I/O thread waits in select it holds no lock and touches no state
        # of the connection: the acknowledgement goes out from here, at once, instead of
        # waking that thread (a thread switch each way per message). When it is busy, it
        # gets the command as before.
        if driver._wire.acquire(blocking=False):
            try:
                driver._settle(self._sub, self._generation, self._message, action, here=True)
            finally:
                driver._wire.release()
            return
        driver._io.post(lambda: driver._settle(self._sub, self._generation, self._message, action))

    def ack(self) -> None:
        self._settle("ack")

    def requeue(self) -> None:
        self._settle("requeue")

    def dead_letter(self, reason: str) -> None:
        if self._settled:
            return
        try:
            self._driver._dead_letter(self._sub.dead_letter_queue, self.body, reason)
        except (MessageDeliveryFailure, QueueMismatch) as exc:
            # NOTE: the broker refused to park it for good (a channel error: the dead-letter
            # queue exists with other arguments, access refused): requeued, the message
            # would come straight back and fail again, thousands of times a second.
            _LOG_BAD.error(
                "cannot park a message in %s (%s); dropping it (it was refused: %s)",
                self._sub.dead_letter_queue,
                one_line(exc),
                reason[:200],
            )
            self._settle("reject")
            return
        except Exception as exc:  # the connection: keep the message rather than lose it
            LOG.warning("cannot dead-letter a message (%s); requeueing it", exc)
            self.requeue()
            return
        self.ack()


class _AMQPListener(Listener):
    def __init__(self, driver: AMQPDriver, sub: _Subscription) -> None:
        self._driver = driver
        self._sub = sub

    def stop(self) -> None:
        if not self._sub.cancelled:
            self._driver._io.call(lambda: self._driver._cancel(self._sub, close=False))

    def kill(self) -> None:
        try:
            self._driver._io.call(lambda: self._driver._cancel(self._sub, close=True), timeout=5)
        except Exception as exc:
            LOG.debug("kill of a listener failed: %s", exc)


class _IOThread:
    """Runs commands and broker I/O of the consumer connection on one daemon thread."""

    def __init__(self, name: str, run: Callable[[], None]) -> None:
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any] | None]] = (
            queue.SimpleQueue()
        )
        self.wake_r, self._wake_w = socket.socketpair()
        self.wake_r.setblocking(False)

        def io_loop() -> None:
            on_io_thread()  # a blocking wait for a reply here would wait for itself
            run()

        self._thread = threading.Thread(target=io_loop, name=name, daemon=True)
        self._started = False
        self._lock = threading.Lock()

    def ensure_started(self) -> None:
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()

    def is_current(self) -> bool:
        """Whether the calling thread is this one."""
        return threading.current_thread() is self._thread

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def post(self, fn: Callable[[], Any]) -> None:
        self._commands.put((fn, None))
        self.wake()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on the I/O thread; its future ends with its result or failure."""
        self.ensure_started()
        future: Future[Any] = Future()
        self._commands.put((fn, future))
        self.wake()
        return future

    def call(self, fn: Callable[[], Any], timeout: float = _COMMAND_TIMEOUT) -> Any:
        if threading.current_thread() is self._thread:
            return fn()
        future = self.submit(fn)
        try:
            return future.result(timeout)
        except TimeoutError:
            raise TransportError(reason=f"the broker did not answer within {timeout}s") from None

    def run_commands(self, woken: bool = True) -> None:
        """Run the commands queued so far; ``woken``: the wake socket has bytes to take.

        NOTE: the I/O loop passes whether ``select`` saw the wake socket readable: a
        ``recv`` that finds nothing is a system call that lets go of the GIL, and a caller
        just woken by a reply takes it there, only to hand it back for the loop to reach
        its ``select``. A command is queued before its wake byte is sent, so one queued
        now is run now or, its byte unread, on the next turn.
        """
        if woken:
            with contextlib.suppress(OSError):
                while self.wake_r.recv(4096):
                    pass
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if future is None:
                fn()
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def fail_commands(self, exc: BaseException) -> None:
        while True:
            try:
                _, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if future is not None:
                future.set_exception(exc)

    def close(self) -> None:
        for sock in (self.wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                sock.close()


class AMQPDriver(Driver):
    """Driver for RabbitMQ; see the module docstring for connections and topology."""

    # Deliveries come on the I/O thread. NOTE: it may be held by a request answered
    # there for a bounded while: broker heartbeats are ticked every _HEARTBEAT / 4 and
    # the broker gives up after two missed intervals, so a stall of a second costs nothing.
    consumes_on_own_thread = True

    def __init__(self, url: str, config: TransportConfig) -> None:
        super().__init__(url, config)
        urls, self._ssl = _kombu_urls(url)
        self._kombu_url = urls[0]
        self._hosts = _Hosts(urls)
        self._publisher = _Publisher(
            self._kombu_url, config, ssl=self._ssl, hosts=self._hosts, on_reset=self._untrust_routes
        )
        # NOTE: replies skip publisher confirms. A reply either reaches a live reply
        # queue or has nobody to go to; waiting a broker round trip per reply (under the
        # one publisher lock every worker shares) halved a busy server's throughput.
        self._reply_publisher = _Publisher(
            self._kombu_url,
            config,
            confirm=False,
            ssl=self._ssl,
            hosts=self._hosts,
            on_reset=self._untrust_routes,
        )
        # (exchange, routing key) -> when a confirmed, routed publish last went there.
        self._routable: dict[tuple[str, str], float] = {}
        # queue -> when it was last seen with a consumer (calls fail fast without one).
        self._served: dict[str, float] = {}
        self._io = _IOThread(f"transport-amqp-io-{id(self) % 10000}", self._run)
        # The consumer connection's owner: the I/O thread holds it always except while it
        # sleeps (in select, between reconnect attempts); a worker may take it meanwhile to
        # acknowledge a delivery itself.
        self._wire = threading.Lock()
        self._conn: kombu.Connection | None = None
        self._raw: Any = None  # the py-amqp connection inside _conn
        self._generation = 0
        self._subs: list[_Subscription] = []
        self._reply_sub: _Subscription | None = None
        self._reply_queue: str | None = None
        self._reply_ready: Future[Any] | None = None  # the reply queue's subscription
        self._reply_lock = threading.Lock()
        # Why the consumer connection gave up its retries; None while connected.
        self._consumer_down: str | None = None
        self._consumer_failing: str | None = None  # why the last attempt failed
        self._closing = threading.Event()
        self._connected = threading.Event()
        self._body_limit: _BodyLimit | None = None
        self._intake: _Intake | None = None

    def _untrust_routes(self) -> None:
        # NOTE: after a connection loss (a cluster node went down, say), no route is trusted
        # for unconfirmed sends until a confirmed one went through again: a quorum queue
        # electing a new leader drops unconfirmed messages sent meanwhile, while a confirmed
        # publish is retried until the new leader holds the message.
        self._routable.clear()

    # -- entities -------------------------------------------------------------------
    def _exchange(self, name: str) -> kombu.Exchange:
        return kombu.Exchange(name, type="direct", durable=True, auto_delete=False)

    def _control_exchange(self, name: str, *, passive: bool = False) -> kombu.Exchange:
        # As oslo.messaging declares it by default (amqp_durable_queues off).
        return kombu.Exchange(name, type="topic", durable=False, auto_delete=False, passive=passive)

    @staticmethod
    def _oslo_fanout_exchange(topic: str) -> kombu.Exchange:
        return kombu.Exchange(f"{topic}_fanout", type="fanout", durable=False, auto_delete=True)

    def _declare_control_exchange(self, channel: Any) -> Any:
        """Declare the control exchange as oslo.messaging does; one that exists already
        (durable, if oslo's services run with amqp_durable_queues) is used as it is.
        Returns the channel to go on with (a refused declare closes its channel)."""
        name = self.config.control_exchange
        assert self._conn is not None
        try:
            self._control_exchange(name)(channel).declare()
        except self._conn.channel_errors as exc:
            if "inequivalent" not in str(exc):
                raise
            channel = self._conn.channel()
            self._control_exchange(name, passive=True)(channel).declare()
        return channel

    def _durable_queue(self, name: str, exchange: str, key: str, also: Any = None) -> kombu.Queue:
        arguments: dict[str, Any] = {}
        if self.config.quorum_queues:
            arguments["x-queue-type"] = "quorum"
        if self.config.topic_queue_message_ttl is not None:
            arguments["x-message-ttl"] = int(self.config.topic_queue_message_ttl * 1000)
        if self.config.topic_queue_expires is not None:
            arguments["x-expires"] = int(self.config.topic_queue_expires * 1000)
        if also is not None:
            # NOTE: a kombu queue with bindings has no exchange of its own (copies of it
            # drop it): the main binding is one of them.
            return kombu.Queue(
                name,
                bindings=[
                    kombu.binding(self._exchange(exchange), routing_key=key),
                    kombu.binding(also, routing_key=key),
                ],
                durable=True,
                auto_delete=False,
                queue_arguments=arguments or None,
            )
        return kombu.Queue(
            name,
            self._exchange(exchange),
            routing_key=key,
            durable=True,
            auto_delete=False,
            queue_arguments=arguments or None,
        )

    def _topic_queues(self, target: Target) -> list[kombu.Queue]:
        """The durable queues a server of ``target`` reads: ``<topic>`` [, ``<topic>.<server>``]."""
        exchange = exchange_name(target, self.config)
        topic = target.require_topic()
        names = [topic] + ([routing_key(target)] if target.server else [])
        queues = []
        control = self._control_exchange(self.config.control_exchange, passive=True)
        for name in names:
            # oslo.messaging callers publish to the control exchange with the same keys.
            queues.append(self._durable_queue(name, exchange, name, also=control))
        return queues

    def declare_topic(self, target: Target) -> None:
        queues = self._topic_queues(target)
        attempt = 0
        while True:
            try:
                conn = self._hosts.connect(ssl=self._ssl, connect_timeout=5)
            except Exception as exc:
                if attempt >= self.config.connect_retries:
                    raise TransportError(reason=f"cannot reach the broker: {exc}") from exc
                time.sleep(_backoff(attempt, self.config.retry_interval_max))
                attempt += 1
                continue
            try:
                channel = conn.channel()
                try:
                    self._control_exchange(self.config.control_exchange)(channel).declare()
                except conn.channel_errors:
                    channel = conn.channel()  # it exists, declared otherwise (durable)
                for q in queues:
                    try:
                        q(channel).declare()
                    except Exception as exc:
                        typed = broker_error(exc, f"declare queue {q.name}", [q.name])
                        if typed is None:
                            raise
                        raise typed from None
                return
            finally:
                with contextlib.suppress(Exception):
                    conn.release()

    # -- sending --------------------------------------------------------------------
    def ready(self) -> bool:
        return (
            self._publisher.ready
            and self._consumer_down is None
            and (self._reply_ready is None or _succeeded(self._reply_ready))
        )

    def unreachable(self) -> str | None:
        return self._publisher.unreachable or self._consumer_failing

    def try_send(
        self,
        target: Target,
        body: bytes,
        *,
        ttl: float | None = None,
        call: bool = False,
        transient: bool = False,
    ) -> bool:
        if not self.ready():
            return False
        try:
            self._send(target, body, ttl=ttl, call=call, transient=transient, retry=False)
        except TransportError:
            if self._closing.is_set():
                raise
            return False  # the connection broke: the sender thread reconnects, with retries
        return True

    def send(
        self,
        target: Target,
        body: bytes,
        *,
        ttl: float | None = None,
        call: bool = False,
        transient: bool = False,
    ) -> None:
        self._send(target, body, ttl=ttl, call=call, transient=transient)

    def _await_replies(self) -> None:
        """Wait until the reply queue is consumed (a request sent before would lose its
        reply); start it again if it failed. Runs on the sender thread, never a caller's."""
        with self._reply_lock:
            ready, sub = self._reply_ready, self._reply_sub
            if ready is None or sub is None or _succeeded(ready):
                return
            if ready.done():  # failed: the broker was unreachable; try again
                ready = self._reply_ready = self._io.submit(lambda: self._subscribe(sub))
        if self._consumer_down is not None and not ready.done():
            raise TransportError(reason=self._consumer_down)
        try:
            ready.result(_COMMAND_TIMEOUT)
        except TimeoutError:
            raise TransportError(
                reason=f"the broker at {_where(self._kombu_url)} did not answer "
                f"within {_COMMAND_TIMEOUT}s"
            ) from None

    def _send(
        self,
        target: Target,
        body: bytes,
        *,
        ttl: float | None,
        call: bool,
        transient: bool = False,
        retry: bool = True,
    ) -> None:
        self._await_replies()
        # NOTE: a persistent message costs the broker a write to its message store (in
        # a sequential get, about 8-13% of the round trip: bench/RESULTS.md). A read
        # gains nothing by it: when the broker restarts, its caller's reply queue goes
        # (the call fails with ConnectionLost), and a kept request would be answered to
        # nobody.
        persistent = self.config.persistent and not (transient and call)
        if self.config.wire == "oslo":
            self._send_oslo(target, body, ttl=ttl, call=call, persistent=persistent, retry=retry)
            return
        exchange = exchange_name(target, self.config)
        if target.fanout:
            name = exchange + "_fanout"
            self._publisher.publish(
                name,
                target.require_topic(),
                body,
                ttl=ttl,
                declare=(self._exchange(name),),
                retry=retry,
            )
            return
        key = routing_key(target)
        route = (exchange, key)
        if call:  # someone must serve it now (a cast may wait for a server)
            self._require_consumer(key, retry, ttl)
        if call and time.monotonic() - self._routable.get(route, -1e9) < _ROUTABLE_FOR:
            # NOTE: the driver decides confirms from its route cache: a confirmed publish
            # to this queue succeeded moments ago, and topic queues are durable: it is
            # still there. Skipping the confirm saves a broker round trip per call; a call
            # lost anyway ends in its caller's timeout. Casts are always confirmed.
            self._reply_publisher.publish(
                exchange, key, body, ttl=ttl, persistent=persistent, retry=retry
            )
            return
        delivered = self._publisher.publish(
            exchange,
            key,
            body,
            mandatory=True,
            ttl=ttl,
            persistent=persistent,
            declare=(self._exchange(exchange),),
            retry=retry,
        )
        if not delivered:
            self._routable.pop(route, None)
            raise MessageUndeliverable(target=key)
        self._routable[route] = time.monotonic()

    def _send_oslo(
        self,
        target: Target,
        body: bytes,
        *,
        ttl: float | None,
        call: bool,
        persistent: bool,
        retry: bool,
    ) -> None:
        """Publish as oslo.messaging's rabbit driver does: the control exchange (or the
        target's exchange) with key ``<topic>[.<server>]``, fanout to ``<topic>_fanout``."""
        topic = target.require_topic()
        if target.fanout:
            fanout = self._oslo_fanout_exchange(topic)
            self._publisher.publish(fanout.name, "", body, ttl=ttl, declare=(fanout,), retry=retry)
            return
        key = routing_key(target)
        if call:
            self._require_consumer(key, retry, ttl)
        control = self._control_exchange(target.exchange or self.config.control_exchange)
        delivered = self._publisher.publish(
            control.name,
            key,
            body,
            mandatory=True,
            ttl=ttl,
            persistent=persistent,
            declare=(control,),
            retry=retry,
        )
        if not delivered:
            raise MessageUndeliverable(target=key)

    def _require_consumer(self, queue: str, retry: bool, ttl: float | None) -> None:
        """Raise MessageUndeliverable when nobody consumes ``queue``.

        NOTE: topic queues are durable and outlive their servers, so the mandatory flag
        alone never tells a caller that every server has stopped: it would wait out its
        timeout. A queue seen with a consumer is trusted for _SERVED_FOR seconds, so this
        costs one broker round trip per topic per second, not one per call. A call sent
        within that second after the last server went waits in the queue for the next
        one, as do calls that were queued before it went. A topic served within the last
        minute gets up to _REJOIN_GRACE seconds for a server to come back first.
        """
        now = time.monotonic()
        last = self._served.get(queue, -1e9)
        if now - last < _SERVED_FOR:
            return
        if self._publisher.queue_state(queue, retry=retry)[1]:
            self._served[queue] = now
            return
        if now - last < _RECENTLY_SERVED:
            # NOTE: served moments ago: its servers are most likely reconnecting (a broker
            # node lost, a rolling restart). Waiting a little for one beats failing calls
            # that would have been served a second later.
            deadline = now + min(_REJOIN_GRACE, ttl / 2 if ttl else _REJOIN_GRACE)
            while time.monotonic() < deadline and not self._closing.is_set():
                time.sleep(0.1)
                if self._publisher.queue_state(queue, retry=retry)[1]:
                    self._served[queue] = time.monotonic()
                    return
        self._served.pop(queue, None)  # the next call fails at once
        raise MessageUndeliverable(target=queue)

    def queue_state(self, queue: str) -> tuple[int, int] | None:
        return self._publisher.queue_state(queue, retry=False)

    def send_reply(self, address: str, body: bytes) -> None:
        self._reply_publisher.publish("", address, body)

    def notify(self, target: Target, priority: str, body: bytes) -> None:
        exchange = exchange_name(target, self.config) + "_notifications"
        key = notification_queue(target, priority, None)
        self._publisher.publish(
            exchange,
            key,
            body,
            persistent=self.config.persistent,
            declare=(self._durable_queue(key, exchange, key),),
        )

    def _dead_letter(self, name: str, body: bytes, reason: str) -> None:
        dead = kombu.Queue(name, durable=True, auto_delete=False)
        self._publisher.publish(
            "", name, body, persistent=True, declare=(dead,), headers={"x-reason": reason}
        )

    # -- consuming ------------------------------------------------------------------
    def start_replies(
        self, on_reply: Callable[[bytes], None], on_lost: Callable[[str], None]
    ) -> str:
        with self._reply_lock:
            if self._reply_queue is not None:
                return self._reply_queue
            name = f"reply_{uuid.uuid4().hex}"
            # NOTE: not exclusive: after a reconnect the same queue (and the replies that
            # arrived meanwhile) is consumed again; x-expires removes it once we are gone.
            q = kombu.Queue(
                name,
                exchange=kombu.Exchange(""),
                routing_key=name,
                durable=False,
                auto_delete=False,
                queue_arguments={"x-expires": int(self.config.reply_queue_expires * 1000)},
            )

            def deliver(incoming: Incoming) -> None:
                on_reply(incoming.body)

            sub = _Subscription([q], deliver, prefetch=0, dead_letter=name + ".dead")
            sub.is_reply = True
            sub.on_lost = on_lost
            sub.on_reply = on_reply
            # NOTE: not waited for here: a caller's call_async must return at once even
            # when the broker is unreachable. send() waits for it on the sender thread.
            self._reply_sub, self._reply_queue = sub, name
            self._reply_ready = self._io.submit(lambda: self._subscribe(sub))
            return name

    def listen(self, target: Target, on_message: OnMessage, *, prefetch: int) -> Listener:
        exchange = exchange_name(target, self.config)
        topic = target.require_topic()
        queues = self._topic_queues(target)
        fanout = f"{topic}_fanout_{uuid.uuid4().hex}"
        fanout_queue = kombu.Queue(
            fanout,
            bindings=[
                kombu.binding(self._exchange(exchange + "_fanout"), routing_key=topic),
                kombu.binding(self._oslo_fanout_exchange(topic), routing_key=""),
            ],
            durable=False,
            auto_delete=True,
            queue_arguments={"x-expires": int(self.config.fanout_queue_expires * 1000)},
        )
        queues.append(fanout_queue)
        sub = _Subscription(
            queues, on_message, prefetch, f"{topic}.dead", what=f"start a server of {topic}"
        )
        sub.control_exchange = self.config.control_exchange
        self._io.call(lambda: self._subscribe(sub))
        return _AMQPListener(self, sub)

    def listen_notifications(
        self,
        targets: list[tuple[Target, str]],
        pool: str | None,
        on_message: OnMessage,
        *,
        prefetch: int,
    ) -> Listener:
        queues = []
        for target, priority in targets:
            exchange = exchange_name(target, self.config) + "_notifications"
            name = notification_queue(target, priority, pool)
            queues.append(
                self._durable_queue(name, exchange, notification_queue(target, priority, None))
            )
        dead = f"{targets[0][0].require_topic()}.dead" if targets else "notifications.dead"
        names = ", ".join(q.name for q in queues)
        sub = _Subscription(
            queues, on_message, prefetch, dead, what=f"start a notification listener of {names}"
        )
        self._io.call(lambda: self._subscribe(sub))
        return _AMQPListener(self, sub)

    # -- the I/O thread -------------------------------------------------------------
    def _subscribe(self, sub: _Subscription) -> None:
        if sub in self._subs:  # subscribed again after a failure seen by its caller
            if sub.consumer is not None and sub.generation == self._generation:
                return
        else:
            self._subs.append(sub)
        try:
            self._consume(sub)
        except Exception as exc:
            typed = broker_error(exc, sub.what, [q.name for q in sub.queues])
            if typed is None:
                raise
            if not sub.is_reply:
                # NOTE: never retried on a reconnect: its caller has the error, and a
                # server that failed to start must not consume (it would requeue every
                # message it gets, for ever). The reply queue is tried again on next send.
                self._subs.remove(sub)
                sub.cancelled = True
                channel, sub.channel, sub.consumer = sub.channel, None, None
                if channel is not None:
                    with contextlib.suppress(Exception):
                        channel.close()
            raise typed from None

    def _consume(self, sub: _Subscription) -> None:
        assert self._conn is not None
        channel = self._conn.channel()
        if sub.is_reply and sub.generation >= 0:  # consumed before: did the queue survive?
            try:
                channel.queue_declare(queue=sub.queues[0].name, passive=True)
            except self._conn.channel_errors:
                # The reply queue vanished (broker restart, expiry): replies are lost.
                channel = self._conn.channel()
                if sub.on_lost is not None:
                    sub.on_lost("the reply queue was lost with the connection")
        if sub.control_exchange is not None:
            channel = self._declare_control_exchange(channel)
        if sub.prefetch:
            channel.basic_qos(0, sub.prefetch, False)
        consumer = kombu.Consumer(
            channel,
            queues=sub.queues,
            on_message=lambda message: self._deliver(sub, message),
            accept=[_JSON],
            no_ack=False,
        )
        if sub.is_reply:
            # NOTE: reply bodies stay bytes. py-amqp would decode each by its content
            # encoding: ours, "binary", is no codec (an exception per message, and the bytes
            # kept); an oslo.messaging server's, UTF-8, gives back the same bytes once
            # encoded again. (Requests keep it: a foreign sender may use another codec.)
            channel.auto_decode = False
        # NOTE: set before consume(): deliveries for the first queue can arrive while
        # consume() still waits for the broker's consume-ok of the next one.
        sub.channel, sub.consumer, sub.generation = channel, consumer, self._generation
        sub.unacked = 0  # the broker gave back what the last connection had not acknowledged
        consumer.consume()
        tags = getattr(consumer, "_active_tags", None)
        if sub.on_reply is not None and isinstance(tags, dict):
            # NOTE: replies skip kombu's consumer callback: they need no kombu message
            # (content type, decoding, acknowledgement object), only the body and the
            # delivery tag; a reply a message costs its caller (sequential calls) that
            # layer on every call. (Deliveries that came before this line went through
            # kombu, to _deliver, which handles them alike.)
            for tag in tags.values():
                channel.callbacks[tag] = lambda message: self._deliver_reply(sub, message)
        if self._intake is not None:
            # From the next delivery on, the channel's deliveries skip py-amqp's and
            # kombu's layers too (see _Intake); one py-amqp has begun ends there.
            if sub.on_reply is not None:
                self._intake.watch(
                    channel,
                    lambda delivery: self._take_reply(
                        sub,
                        delivery.delivery_tag,
                        delivery.body,  # type: ignore[arg-type]
                    ),
                    decode=False,
                )
            else:
                self._intake.watch(
                    channel, lambda delivery: self._deliver(sub, delivery), decode=True
                )

    def _cuts_bodies(self, channel_id: int) -> bool:
        """Whether bodies over the size limit arriving on this channel are cut (requests and
        notifications; replies are read whole)."""
        for sub in self._subs:
            if (
                not sub.is_reply
                and sub.channel is not None
                and sub.channel.channel_id == channel_id
            ):
                return True
        return False

    def _deliver(self, sub: _Subscription, message: Any) -> None:
        # NOTE: nothing raised here may reach the I/O loop: it would take it for a lost
        # connection, reconnect, and fail every pending call of the process.
        try:
            cut = self._body_limit.current if self._body_limit is not None else None
            incoming = _AMQPIncoming(self, sub, message, cut)
        except Exception as exc:
            _LOG_BAD.error(
                "cannot read a message on %s (%s); dropping it",
                sub.dead_letter_queue,
                one_line(exc),
            )
            with contextlib.suppress(Exception):
                message.reject(requeue=False)
            return
        if sub.is_reply:  # one kombu delivered before the reply callbacks were set
            self._take_reply(sub, message.delivery_tag, incoming.body)
            return
        if message.content_type != _JSON:
            # Never decode foreign content types (pickle!): park the message instead.
            _LOG_BAD.warning(
                "rejecting a %s message on %s", message.content_type, sub.dead_letter_queue
            )
            self._park(incoming, f"content type {message.content_type}")
            return
        try:
            sub.on_message(incoming)
        except Exception as exc:
            _LOG_BAD.error(
                "the consumer of %s failed (%s); message dead-lettered",
                sub.dead_letter_queue,
                one_line(exc),
            )
            self._park(incoming, f"the consumer failed: {one_line(exc)}")

    def _deliver_reply(self, sub: _Subscription, message: Any) -> None:
        """A reply as py-amqp hands it over: its body to the reply waiter (see _deliver)."""
        try:
            body = message.body
            body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
            tag = message.delivery_info["delivery_tag"]
        except Exception as exc:
            _LOG_BAD.error("cannot read a reply (%s); dropping it", one_line(exc))
            return  # acknowledged with the next one (multiple=True)
        self._take_reply(sub, tag, body)

    def _take_reply(self, sub: _Subscription, tag: int, body: bytes) -> None:
        """A reply's body to the reply waiter, its delivery acknowledged soon (together
        with others: see _ack_replies). Raises nothing (see _deliver)."""
        if not sub.unacked:
            sub.unacked_since = time.monotonic()
        sub.unacked += 1
        sub.unacked_tag = tag
        if sub.unacked >= _REPLY_ACK_EVERY:
            with contextlib.suppress(Exception):  # a broken connection: the loop sees it
                self._ack_replies(sub)
        try:
            sub.on_reply(body)  # type: ignore[misc]  # set for reply subscriptions
        except Exception as exc:
            _LOG_BAD.error("dropping a reply that failed to be handled: %s", one_line(exc))

    def _ack_replies(self, sub: _Subscription) -> None:
        """Acknowledge every reply received so far, in one frame.

        NOTE: replies are acknowledged together, every _REPLY_ACK_EVERY replies or
        _REPLY_ACK_AFTER seconds, not one by one: an acknowledgement is a frame to write
        and a broker operation per call. Replies not acknowledged yet when the connection
        drops come again after the reconnect, and those of calls already answered are
        dropped as any unknown reply is.
        """
        count, sub.unacked = sub.unacked, 0
        if count and sub.channel is not None and sub.generation == self._generation:
            sub.channel.basic_ack(sub.unacked_tag, multiple=True)

    def _reply_ack_due(self) -> float | None:
        """Seconds until the replies received must be acknowledged (None: none are)."""
        sub = self._reply_sub
        if sub is None or not sub.unacked:
            return None
        return sub.unacked_since + _REPLY_ACK_AFTER - time.monotonic()

    def _park(self, incoming: _AMQPIncoming, reason: str) -> None:
        # Off the I/O thread: dead-lettering publishes and waits for the broker's confirm.
        threading.Thread(target=incoming.dead_letter, args=(reason,), daemon=True).start()

    def _settle(
        self, sub: _Subscription, generation: int, message: Any, action: str, here: bool = False
    ) -> None:
        """Acknowledge, requeue or reject a delivery: on the I/O thread, or ``here`` on a
        worker holding ``_wire`` while the I/O thread waits (see _AMQPIncoming._settle)."""
        if (
            generation != self._generation
            or sub.channel is None
            or generation != sub.generation
            or self._conn is None
        ):
            return  # the broker already gave this message back when the connection dropped
        try:
            if action == "ack":
                message.ack()
            elif action == "reject":
                message.reject(requeue=False)
            else:
                message.requeue()
        except Exception as exc:
            if self._conn is not None and isinstance(exc, self._conn.connection_errors):
                if here:
                    # The I/O thread finds the broken socket readable and reconnects; the
                    # broker gives the message back.
                    LOG.debug("cannot %s a message: %s", action, exc)
                    self._io.wake()
                    return
                raise  # the I/O loop reconnects
            LOG.debug("cannot %s a message: %s", action, exc)  # closed channel: requeued already

    def _cancel(self, sub: _Subscription, *, close: bool) -> None:
        sub.cancelled = True
        if sub.consumer is not None and sub.generation == self._generation:
            with contextlib.suppress(Exception):
                sub.consumer.cancel()
        if close:
            if sub in self._subs:
                self._subs.remove(sub)
            channel, sub.channel, sub.consumer = sub.channel, None, None
            if channel is not None:
                with contextlib.suppress(Exception):
                    channel.close()  # the broker requeues what was not acknowledged

    def _connect(self) -> None:
        attempt = 0
        while not self._closing.is_set():
            try:
                conn = self._hosts.connect(ssl=self._ssl, heartbeat=_HEARTBEAT, connect_timeout=5)
                self._conn, self._raw = conn, conn.connection
                # NOTE: the intake inside the body limit: a request's body over the limit
                # is cut before the intake sees its (rewritten) header.
                self._intake = _Intake(self._raw.on_inbound_frame, self._raw)
                self._body_limit = _BodyLimit(
                    self._intake, self.config.max_message_size, self._cuts_bodies
                )
                self._raw.on_inbound_frame = self._body_limit
                self._consumer_down = self._consumer_failing = None
                for sub in list(self._subs):
                    if sub.cancelled:
                        self._subs.remove(sub)
                    else:
                        self._consume(sub)
                self._connected.set()
                if attempt or self._generation:
                    LOG.info("reconnected to the broker; %d consumers restored", len(self._subs))
                return
            except Exception as exc:
                self._drop(exc)
                self._consumer_failing = (
                    f"cannot reach the broker at {_where(self._kombu_url)}: {exc}"
                )
                delay = _backoff(attempt, self.config.retry_interval_max)
                LOG.info("broker connection failed (%s); retrying in %.2fs", exc, delay)
                attempt += 1
                # A refused login will not pass on retry: whoever waits hears of it now
                # (the loop still retries, for a password fixed on the broker meanwhile).
                if attempt > self.config.connect_retries or _login_refused(exc):
                    self._consumer_down = self._consumer_failing
                    self._io.fail_commands(TransportError(reason=self._consumer_down))
                self._sleep(delay)

    def _drop(self, exc: BaseException) -> None:
        self._connected.clear()
        self._generation += 1
        self._untrust_routes()
        conn, self._conn = self._conn, None
        for sub in self._subs:
            sub.channel, sub.consumer = None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.collect()

    def _run(self) -> None:
        with self._wire:
            self._run_holding()

    def _sleep(self, seconds: float) -> bool:
        """``_closing.wait`` on the I/O thread, letting go of the connection meanwhile."""
        self._wire.release()
        try:
            return self._closing.wait(seconds)
        finally:
            self._wire.acquire()

    def _run_holding(self) -> None:
        # The I/O thread must outlive anything: without it no message arrives, no
        # acknowledgement leaves, and every caller of this process waits for its timeout.
        while True:
            try:
                self._loop()
                return
            except BaseException as exc:
                LOG.critical(
                    "the broker I/O thread failed (%s); restarting it", one_line(exc), exc_info=True
                )
                with contextlib.suppress(Exception):
                    self._drop(exc)
                if self._sleep(0.5):
                    self._io.fail_commands(TransportError(reason="the transport was cleaned up"))
                    return

    def _loop(self) -> None:
        last_beat = time.monotonic()
        woken = True
        while not self._closing.is_set():
            if self._conn is None:
                self._connect()
                woken = True
                continue
            # NOTE: the py-amqp connection captured at connect time, never kombu's
            # ``conn.connection`` property here: that one silently opens a fresh
            # connection (without our consumers) once the old one is marked dead.
            raw = self._raw
            try:
                self._io.run_commands(woken)
                woken = False
                sock = raw.sock
                if sock is None or not raw.connected:
                    raise ConnectionError("the connection was closed")
                readable: list[Any] = [sock]
                wait = _HEARTBEAT / 4
                due = self._reply_ack_due()
                if due is not None:
                    if due <= 0:
                        assert self._reply_sub is not None
                        self._ack_replies(self._reply_sub)
                    else:
                        wait = min(wait, due)
                if not _buffered_frame(raw):
                    self._wire.release()
                    try:
                        readable, _, _ = select.select([sock, self._io.wake_r], [], [], wait)
                    finally:
                        self._wire.acquire()
                    woken = self._io.wake_r in readable
                    if sock not in readable:
                        readable = []
                if readable:
                    _drain(raw)
                now = time.monotonic()
                if now - last_beat > _HEARTBEAT / 4:
                    last_beat = now
                    raw.heartbeat_tick(rate=2)
                    self._publisher.heartbeat_check()
                    self._reply_publisher.heartbeat_check()
            except Exception as exc:
                if self._closing.is_set():
                    break
                LOG.warning("broker connection lost (%s); reconnecting", exc)
                self._drop(exc)
        self._io.run_commands()
        self._io.fail_commands(TransportError(reason="the transport was cleaned up"))

    def is_connected(self) -> bool:
        return self._connected.is_set() and not self._closing.is_set()

    def close(self) -> None:
        if self._closing.is_set():
            return
        reply_queue = self._reply_queue

        def shutdown() -> None:
            for sub in list(self._subs):
                self._cancel(sub, close=True)
            if reply_queue is not None and self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.default_channel.queue_delete(reply_queue)

        if self._io._started and self._connected.is_set():  # (else nothing to shut down)
            with contextlib.suppress(Exception):
                self._io.call(shutdown, timeout=5)
        self._closing.set()
        self._io.wake()
        if self._io._started and threading.current_thread() is not self._io._thread:
            self._io._thread.join(5)
        # (a worker may be acknowledging on it: wait for that; not for a stuck I/O thread)
        owned = self._wire.acquire(timeout=5)
        try:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.release()
        finally:
            if owned:
                self._wire.release()
        self._publisher.close()
        self._reply_publisher.close()
        self._io.close()

    # -- for tests --------------------------------------------------------------------
    def _sockets(self) -> list[socket.socket]:
        """The live sockets of both connections (tests drop them to simulate a failure)."""
        return list(self._iter_sockets())

    def _iter_sockets(self) -> Iterator[socket.socket]:
        for conn in (self._conn, self._publisher._conn, self._reply_publisher._conn):
            # kombu's private _connection: the public property would reconnect.
            sock = getattr(getattr(conn, "_connection", None), "sock", None)
            if sock is not None:
                yield sock
