"""Typed transport configuration, passed in explicitly (never read from the environment)."""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["DEFAULT_CONFIG", "URL_OPTIONS", "TransportConfig", "apply_url_options"]


@dataclasses.dataclass(frozen=True)
class TransportConfig:
    """Knobs of a :class:`transport.Transport`; every field has a production default.

    Attributes:
        default_timeout: seconds a call waits when neither client nor call gives a timeout.
        max_message_size: envelopes over this many bytes raise MessageTooLarge on the sender
            and are rejected by receivers.
        call_monitor_interval: servers send a heartbeat this often while a call runs; None
            switches the call monitor off.
        call_monitor_misses: heartbeats a caller may miss before it gives up on the server
            (URL option ``call_monitor_misses``: a cluster whose failover takes longer).
        default_exchange: exchange used when a Target names none.
        quorum_queues: declare durable topic queues as RabbitMQ quorum queues (replicated
            across a cluster's nodes). Every server and declarer of a topic must agree.
        persistent: publish requests and notifications persistent (survive a broker restart).
        reply_queue_expires: seconds an unused reply queue lives on the broker.
        fanout_queue_expires: seconds an unused fanout queue lives on the broker.
        connect_retries: attempts to (re)connect before an operation fails with TransportError.
        retry_interval_max: cap of the jittered exponential reconnect backoff, seconds.
        prefetch_multiplier: a server prefetches ``max_workers * prefetch_multiplier`` messages.
        batch_max_messages: requests (or replies) packed into one broker message at most
            when several are waiting to be sent at once; 1 switches packing off.
        topic_queue_message_ttl: seconds a message may wait in a topic queue before the
            broker drops it (``x-message-ttl``); None keeps messages until consumed.
        topic_queue_expires: seconds a topic queue may go unused (no consumer, no
            declaration) before the broker deletes it with its messages (``x-expires``);
            None keeps topic queues for ever.
        cast_ttl: seconds a cast may wait for a server before the broker drops it; None
            (the default) keeps casts until a server takes them.
        control_exchange: oslo.messaging's control exchange (RabbitMQ): servers also bind
            their topic queues on it so oslo.messaging callers reach them, and clients of
            ``wire="oslo"`` send to it.
        wire: ``"native"`` (this transport's envelopes) or ``"oslo"``: clients send
            oslo.messaging's envelopes to ``control_exchange`` (they reach oslo.messaging
            servers, and ours). Servers answer both whatever this says.

    Topic queue arguments (``quorum_queues``, ``topic_queue_message_ttl``,
    ``topic_queue_expires``) are fixed when a queue is first declared: a server or
    :func:`transport.declare_topic` asking for other ones gets ``QueueMismatch``.
    """

    default_timeout: float = 60.0
    max_message_size: int = 4 * 1024 * 1024
    call_monitor_interval: float | None = 1.0
    call_monitor_misses: int = 4
    default_exchange: str = "conductor"
    quorum_queues: bool = False
    persistent: bool = True
    reply_queue_expires: float = 60.0
    fanout_queue_expires: float = 600.0
    connect_retries: int = 8
    retry_interval_max: float = 2.0
    prefetch_multiplier: int = 4
    batch_max_messages: int = 256
    topic_queue_message_ttl: float | None = None
    topic_queue_expires: float | None = None
    cast_ttl: float | None = None
    control_exchange: str = "openstack"
    wire: str = "native"


DEFAULT_CONFIG = TransportConfig()

#: TransportConfig fields a transport URL may set as query options
#: (``amqp://host//?quorum_queues=true&cast_ttl=600``).
URL_OPTIONS = (
    "quorum_queues",
    "topic_queue_message_ttl",
    "topic_queue_expires",
    "cast_ttl",
    "call_monitor_misses",
    "control_exchange",
    "wire",
)

_WIRES = ("native", "oslo")
_EXCHANGE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,255}")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _parse_option(name: str, text: str) -> bool | float | int | str | None:
    if name == "wire":
        if text not in _WIRES:
            raise ValueError(f"transport URL option wire={text!r}: use native or oslo")
        return text
    if name == "control_exchange":
        if not _EXCHANGE_NAME.fullmatch(text):
            raise ValueError(
                f"transport URL option control_exchange={text!r}: use 1 to 255 letters, "
                "digits, '_', '.', ':' or '-'"
            )
        return text
    if name == "quorum_queues":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"transport URL option {name}={text!r}: use true or false")
    if name == "call_monitor_misses":
        if not (text.isascii() and text.isdigit()) or int(text) < 1:
            raise ValueError(f"transport URL option {name}={text!r}: use a whole number above 0")
        return int(text)
    if text.lower() in ("", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ValueError(f"transport URL option {name}={text!r}: use a number of seconds above 0")
    return value


def apply_url_options(
    url: str, config: TransportConfig, *, allowed: tuple[str, ...] = ()
) -> tuple[str, TransportConfig]:
    """Take the :data:`URL_OPTIONS` out of ``url``'s query and apply them to ``config``.

    A failover URL (``amqp://h1//;amqp://h2//?quorum_queues=true``) may carry options on any
    of its URLs; they apply to all. URL options win over ``config``. Other query options stay
    in the returned URL when named in ``allowed`` (a driver's own, such as TLS files).

    Raises:
        ValueError: an unknown option, a bad value, or two URLs disagreeing on one.
    """
    found: dict[str, bool | float | str | None] = {}
    kept_urls = []
    for one in url.split(";"):
        parts = urlsplit(one)
        kept = []
        for name, text in parse_qsl(parts.query, keep_blank_values=True):
            if name in URL_OPTIONS:
                value = _parse_option(name, text)
                if name in found and found[name] != value:
                    raise ValueError(f"the failover URLs disagree on transport URL option {name}")
                found[name] = value
            elif name in allowed:
                kept.append((name, text))
            else:
                known = ", ".join((*URL_OPTIONS, *allowed))
                raise ValueError(f"unknown transport URL option {name!r}; use {known}")
        kept_urls.append(urlunsplit(parts._replace(query=urlencode(kept))))
    if found.get("wire") == "oslo":
        # oslo.messaging reads one envelope per message: never pack several.
        found["batch_max_messages"] = 1
    if found:
        config = dataclasses.replace(config, **found)  # type: ignore[arg-type]
    return ";".join(kept_urls), config
