"""Coalescing sender: requests that are waiting to go out leave together.

Callers hand encoded envelopes to one daemon thread per transport and return at once.
While that thread waits for the broker (a publisher confirm), new envelopes queue up; the
next publish packs all that are queued for the same target into one broker message
(``{"batch": [...]}``). An idle transport therefore adds no delay (a lone request leaves
alone, straight away), and a busy one sends a few large messages instead of many small
ones: the only way past the broker's per-message cost. With many calls in flight the
sender also pauses briefly (about 10 µs per call in flight, at most 3 ms) before each
publish, so batches form even when the broker answers at once.

A caller never waits for a connection: it publishes on its own thread only when the
driver is connected (one attempt, no retries); otherwise the sender thread reconnects.
A request whose time to live passed while it waited is failed, never published late.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from transport import _wire
from transport.exceptions import ConnectionLost, MessageTooLarge, MessagingTimeout

if TYPE_CHECKING:
    from transport.driver import Driver
    from transport.target import Target

LOG = logging.getLogger(__name__)

OnSent = Callable[[BaseException | None], None]

#: Calls in flight above which the sender pauses briefly to gather a batch.
_LINGER_ABOVE = 16
_LINGER_PER_CALL = 10e-6
#: The pause ends early once this share of the calls in flight is queued (at least
#: ``_ENOUGH_AT_LEAST`` envelopes): a batch that size has formed, waiting longer only
#: lengthens every call's round trip.
_ENOUGH_SHARE = 4
_ENOUGH_AT_LEAST = 32


class _Outgoing:
    __slots__ = (
        "target",
        "body",
        "ttl",
        "on_sent",
        "batchable",
        "call",
        "transient",
        "expires",
        "publish",
    )

    def __init__(
        self,
        target: Target,
        body: bytes | _wire.Deferred,
        ttl: float | None,
        on_sent: OnSent,
        batchable: bool,
        call: bool,
        transient: bool = False,
    ) -> None:
        self.call = call
        self.transient = transient
        self.target = target
        self.body = body
        self.ttl = ttl
        self.on_sent = on_sent
        self.batchable = batchable
        self.expires = None if ttl is None else time.monotonic() + ttl
        self.publish: Callable[[], None] | None = None


class Sender:
    """One daemon thread that publishes queued envelopes, packing those for one target.

    Args:
        driver: publishes the packed bodies.
        max_batch: envelopes packed into one message at most.
        max_bytes: size of one packed message at most (the transport's message limit).
    """

    def __init__(
        self,
        driver: Driver,
        max_batch: int,
        max_bytes: int,
        in_flight: Callable[[], int] | None = None,
        linger: float = 0.003,
    ) -> None:
        self._driver = driver
        self._in_flight = in_flight
        self._linger = linger
        self._max_batch = max(1, max_batch)
        self._max_bytes = max_bytes
        self._queue: deque[_Outgoing] = deque()
        # NOTE: callers take the plain lock (``with self._lock``: no Python-level
        # Condition.__enter__/__exit__ per request); the Condition built on it is only for
        # the sender thread's waits and the notifications that end them.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._busy = False
        self._enough = 0  # while lingering: the queue length that ends the pause
        self.tasks = 0  # queued publish_later() tasks

    def submit(
        self,
        target: Target,
        body: bytes | _wire.Deferred,
        ttl: float | None,
        on_sent: OnSent,
        *,
        batchable: bool = True,
        inline: bool = False,
        call: bool = False,
        transient: bool = False,
    ) -> None:
        """Queue one encoded envelope (or a deferred one, encoded here with the rest of
        its batch: ``_wire.Deferred``); ``on_sent(None)`` once the broker has it, or
        ``on_sent(exc)`` when it could not be sent. Callbacks run on the sender thread.

        ``inline``: the caller has nothing else in flight; when the sender is idle too,
        publish on the caller's thread and save a thread hand-off (sequential calls).
        ``call``: a call, whose caller waits for a reply (see :meth:`Driver.send`).
        ``transient``: a call that changes nothing (:meth:`Driver.send`); packed only
        with others like it.
        """
        item = _Outgoing(target, body, ttl, on_sent, batchable, call, transient)
        with self._lock:
            if self._closed:
                raise ConnectionLost(reason="the transport was cleaned up")
            go_inline = inline and not self._queue and not self._busy
            if not go_inline:
                self._enqueue(item)
        if go_inline:
            if isinstance(body, _wire.Deferred):
                try:
                    item.body = body = body.encode(self._max_bytes)
                except (TypeError, MessageTooLarge) as exc:
                    _notify(item, exc)
                    return
            try:
                sent = self._driver.try_send(target, body, ttl=ttl, call=call, transient=transient)
            except Exception as exc:
                _notify(item, exc)
                return
            if sent:
                _notify(item, None)
                return
            with self._lock:  # not connected: the sender thread connects, with retries
                if self._closed:
                    raise ConnectionLost(reason="the transport was cleaned up")
                self._enqueue(item)

    def publish_later(self, target: Target, publish: Callable[[], None], on_sent: OnSent) -> None:
        """Queue ``publish()`` (a notification) behind what is waiting to be sent;
        ``on_sent`` as for :meth:`submit`. ``tasks`` counts the queued ones."""
        item = _Outgoing(target, b"", None, on_sent, False, False)
        item.publish = publish
        with self._lock:
            if self._closed:
                raise ConnectionLost(reason="the transport was cleaned up")
            self.tasks += 1
            self._enqueue(item)

    def _enqueue(self, item: _Outgoing) -> None:  # lock held
        queue = self._queue
        queue.append(item)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="transport-sender", daemon=True)
            self._thread.start()
        if len(queue) == 1 or len(queue) == self._enough:
            # NOTE: the sender thread waits on an empty queue, or lingers until the queue
            # holds enough; only the item that ends either wait needs to wake it
            # (Condition.notify's Python-level checks, per call queued, were for nobody).
            self._cond.notify()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            self.tasks = 0
            self._cond.notify()
        for item in left:
            _notify(item, ConnectionLost(reason="the transport was cleaned up"))

    def _run(self) -> None:
        while True:
            with self._lock:
                self._busy = False
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                self._busy = True
                lingering = self._linger_for()
                if lingering:
                    self._gather(lingering)
            with self._lock:
                items = list(self._queue)
                self._queue.clear()
                self.tasks -= sum(1 for item in items if item.publish is not None)
            for group in self._groups(items):
                self._publish(group)

    def _gather(self, seconds: float) -> None:  # lock held
        """Gather a batch: wait up to ``seconds``, or until a share of the calls in flight
        is queued.

        NOTE: with many calls in flight, a publish is cheap and returns at once, so without
        a pause each message would carry one or two requests. Their callers wait tens of
        ms for replies anyway; a millisecond gathers a batch and saves the broker and the
        server most of their per-message work. A fixed pause (about 2.6 ms at 256 in
        flight) was part of every call's round trip, though: ending it once a quarter of
        the calls in flight are queued gave 0-9% more pipelined gets per second
        (bench/clients.py, alternated).
        """
        assert self._in_flight is not None  # (_linger_for pauses only with it)
        enough = max(_ENOUGH_AT_LEAST, self._in_flight() // _ENOUGH_SHARE)
        deadline = time.monotonic() + seconds
        self._enough = enough
        try:
            while len(self._queue) < enough and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)
        finally:
            self._enough = 0

    def _linger_for(self) -> float:  # lock held
        """How long to gather before publishing: nothing for a few calls in flight, up
        to ``linger`` for hundreds (about 10 µs per call in flight)."""
        if self._linger <= 0 or self._in_flight is None or len(self._queue) >= self._max_batch:
            return 0.0
        in_flight = self._in_flight()
        if in_flight <= _LINGER_ABOVE:
            return 0.0
        return min(self._linger, in_flight * _LINGER_PER_CALL)

    def _groups(self, items: list[_Outgoing]) -> list[list[_Outgoing]]:
        """Split into runs for one target within the size limits, keeping order per target."""
        groups: list[list[_Outgoing]] = []
        open_groups: dict[tuple[object, ...], tuple[list[_Outgoing], int]] = {}
        for item in items:
            if not item.batchable:
                groups.append([item])
                continue
            key = (
                item.target.exchange,
                item.target.topic,
                item.target.server,
                item.call,
                item.transient,
            )
            current = open_groups.get(key)
            size = len(item.body) + 1
            if (
                current is None
                or len(current[0]) >= self._max_batch
                or current[1] + size + _wire.BATCH_OVERHEAD > self._max_bytes
            ):
                group: list[_Outgoing] = [item]
                groups.append(group)
                open_groups[key] = (group, size)
            else:
                current[0].append(item)
                open_groups[key] = (current[0], current[1] + size)
        return groups

    def _publish(self, group: list[_Outgoing]) -> None:
        first = group[0]
        if first.publish is not None:
            try:
                first.publish()
            except Exception as exc:
                _notify(first, exc)
            else:
                _notify(first, None)
            return
        now = time.monotonic()
        live = [item for item in group if item.expires is None or item.expires > now]
        if len(live) < len(group):
            # Waited out their time to live (the broker was unreachable): their callers
            # have timed out already, and a late publish would run them unasked.
            expired = MessagingTimeout("the request's timeout passed before the broker took it")
            for item in group:
                if item.expires is not None and item.expires <= now:
                    _notify(item, expired)
            if not live:
                return
            group, first = live, live[0]
        bodies = [item.body for item in group]
        if any(type(part) is _wire.Deferred for part in bodies):
            packed = _wire.encode_group(bodies, self._max_bytes)
            if packed is None:
                self._publish_each(group)
                return
            body = packed
        else:
            encoded = cast("list[bytes]", bodies)
            body = encoded[0] if len(encoded) == 1 else _wire.pack_batch(encoded)
        ttl: float | None = None
        if all(item.expires is not None for item in group):
            ttl = max(item.expires for item in group if item.expires is not None) - now
        error: BaseException | None = None
        try:
            self._driver.send(
                first.target, body, ttl=ttl, call=first.call, transient=first.transient
            )
        except Exception as exc:  # every envelope of the group learns why
            error = exc
        for item in group:
            _notify(item, error)

    def _publish_each(self, group: list[_Outgoing]) -> None:
        """A group that could not be encoded in one go: each deferred envelope encoded on
        its own (what it cannot carry, or a size over the limit, fails its own call only),
        the rest packed again within the size limit."""
        encoded: list[_Outgoing] = []
        for item in group:
            body = item.body
            if type(body) is _wire.Deferred:
                try:
                    item.body = body.encode(self._max_bytes)
                except (TypeError, MessageTooLarge) as exc:
                    _notify(item, exc)
                    continue
            encoded.append(item)
        for part in self._groups(encoded):
            self._publish(part)


def _notify(item: _Outgoing, error: BaseException | None) -> None:
    try:
        item.on_sent(error)
    except Exception:  # a callback must not stop the sender
        LOG.exception("send callback failed")
