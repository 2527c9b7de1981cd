"""Typed transport configuration, passed in explicitly (never read from the environment)."""

from __future__ import annotations

import dataclasses

__all__ = ["DEFAULT_CONFIG", "TransportConfig"]


@dataclasses.dataclass(frozen=True)
class TransportConfig:
    """Knobs of a :class:`transport.Transport`; every field has a production default.

    Attributes:
        default_timeout: seconds a call waits when neither client nor call gives a timeout.
        max_message_size: envelopes over this many bytes raise MessageTooLarge on the sender
            and are rejected by receivers.
        call_monitor_interval: servers send a heartbeat this often while a call runs; None
            switches the call monitor off.
        call_monitor_misses: heartbeats a caller may miss before it gives up on the server.
        default_exchange: exchange used when a Target names none.
        quorum_queues: declare durable topic queues as RabbitMQ quorum queues.
        persistent: publish requests and notifications persistent (survive a broker restart).
        reply_queue_expires: seconds an unused reply queue lives on the broker.
        fanout_queue_expires: seconds an unused fanout queue lives on the broker.
        connect_retries: attempts to (re)connect before an operation fails with TransportError.
        retry_interval_max: cap of the jittered exponential reconnect backoff, seconds.
        prefetch_multiplier: a server prefetches ``max_workers * prefetch_multiplier`` messages.
        batch_max_messages: requests (or replies) packed into one broker message at most
            when several are waiting to be sent at once; 1 switches packing off.
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


DEFAULT_CONFIG = TransportConfig()
