"""The caller's side of replies: pending calls by request id, deadlines, the call monitor.

One :class:`ReplyWaiter` per transport: one reply queue for every client of the process,
replies matched to pending calls by request id. A single daemon thread enforces deadlines
and watches heartbeats; nothing polls.

The call monitor starts with a call's first heartbeat. A call that hears nothing for
``interval * misses`` seconds after it was sent is either still in the broker's queue
(servers busy, or none running: it waits for one) or was delivered to a server that
froze before it could send anything (a live server heartbeats every request it holds,
see transport.server). One broker round trip per queue tells them apart: when the queue
has consumers but no message waiting, the request was delivered, and the monitor starts
as if a heartbeat had just arrived.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

from transport import _oslo, _wire
from transport.driver import Driver
from transport.exceptions import CallMonitorTimeout, ConnectionLost, MessagingTimeout
from transport.futures import RPCFuture, resolve

LOG = logging.getLogger(__name__)
_OSLO = _oslo.VERSION_KEY

_END = object()


class PendingCall:
    """What a caller waits on: a future (call) or a queue of items (multicall).

    ``future`` may be the caller's own (``RPCClient.start_call``): the transport resolves
    it directly, so a call costs one future. ``on_error`` may take a failure over (return
    True), for example to send the request again; the future then stays pending.
    """

    __slots__ = (
        "request_id",
        "method",
        "timeout",
        "deadline",
        "monitor_interval",
        "heartbeat_deadline",
        "queue",
        "check_at",
        "sent",
        "convert",
        "allowed_exmods",
        "on_error",
        "future",
        "items",
        "forget",
    )

    def __init__(
        self,
        request_id: str,
        method: str,
        timeout: float,
        monitor_interval: float | None,
        convert: Callable[[Any], Any],
        allowed_exmods: Iterable[str],
        *,
        multi: bool = False,
        future: Future[Any] | None = None,
        on_error: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self.request_id = request_id
        self.method = method
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.monitor_interval = monitor_interval
        self.heartbeat_deadline: float | None = None
        self.queue: str | None = None  # the queue it went to, probed if it hears nothing
        self.check_at: float | None = None
        self.sent = False  # the broker has it (set by the sender)
        self.convert = convert
        self.allowed_exmods = tuple(allowed_exmods)
        self.on_error = on_error
        self.future: Future[Any] | None = None
        if not multi:
            self.future = future if future is not None else RPCFuture(request_id, method)
        self.items: queue.SimpleQueue[Any] | None = queue.SimpleQueue() if multi else None
        # Stops the waiting for replies when the request could not be sent (set by the
        # client that sends it: its transport's forget_call).
        self.forget: Callable[[str], None] | None = None

    def on_sent(self, error: BaseException | None) -> None:
        """The sender's word on this call's request: sent, or why not (fails the call)."""
        if error is None:
            self.sent = True
            return
        if self.forget is not None:
            self.forget(self.request_id)
        self.fail(error)

    def fail(self, exc: BaseException) -> None:
        if self.future is not None:
            if self.on_error is not None and self.on_error(exc):
                return
            resolve(self.future, exc=exc)
        elif self.items is not None:
            self.items.put(exc)

    def deliver(self, value: Any) -> None:
        try:
            value = self.convert(value)
        except Exception as exc:  # a reply the serializer cannot read fails only this call
            self.fail(exc)
            return
        if self.future is not None:
            resolve(self.future, value)
        elif self.items is not None:
            self.items.put(value)

    def end(self) -> None:
        if self.items is not None:
            self.items.put(_END)


#: Seconds a call waits at least before its queue is looked at, and then for a first
#: heartbeat (a server heartbeats a request it holds within transport.server._HELD_GRACE).
_MIN_CHECK = 1.0
_MIN_ARMED = 2.0
#: Due checks are looked at in sweeps at most this often: every call schedules one, and
#: waking the monitor thread for each (most of them for calls answered long ago) cost a
#: thread switch per call on the sequential path.
_CHECK_SWEEP = 0.25
_NEVER = float("inf")
_NO_CHECKS: deque[tuple[float, str]] = deque()
#: Seconds a queue's state serves the calls that come to be looked at after it.
_PROBE_FRESH = 0.5

#: Finished calls' timer entries tolerated before the heap is compacted.
_COMPACT_SLACK = 1024


class ReplyWaiter:
    """Matches replies to pending calls and fails calls whose deadline or monitor passed."""

    def __init__(self, driver: Driver, monitor_misses: int) -> None:
        self._driver = driver
        self._misses = monitor_misses
        self._pending: dict[str, PendingCall] = {}
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._timers: list[tuple[float, int, str]] = []
        # (when, request id) of calls to look at if they heard nothing by then. NOTE: a
        # FIFO, not the heap: almost every call is answered before, and appending costs
        # less than a heap push (one interval for all: in order; mixed intervals only
        # delay a look a little).
        self._checks: deque[tuple[float, str]] = deque()
        self._next_sweep = 0.0
        self._seq = itertools.count()
        self._address: str | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._probes: dict[str, list[str]] = {}  # queue -> request ids waiting for its state
        self._probe_thread: threading.Thread | None = None
        self._probe_wake = threading.Condition(self._lock)
        self._probed: dict[str, tuple[float, tuple[int, int] | None]] = {}

    @property
    def address(self) -> str:
        """This process's reply address (the reply queue is started on first use)."""
        if self._address is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._watch, name="transport-monitor", daemon=True
                    )
                    self._thread.start()
            self._address = self._driver.start_replies(self._on_reply, self._on_lost)
        return self._address

    def register(self, call: PendingCall) -> None:
        with self._lock:
            if self._closed:
                raise ConnectionLost(reason="the transport was cleaned up")
            self._pending[call.request_id] = call
            self._schedule(call.deadline, call.request_id)
            if call.queue is not None and call.monitor_interval:
                self._schedule_check(call, time.monotonic())

    @property
    def in_flight(self) -> int:
        """Calls waiting for their reply."""
        return len(self._pending)

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._pending.pop(request_id, None)

    def _schedule_check(self, call: PendingCall, now: float) -> None:  # lock held
        assert call.monitor_interval
        call.check_at = now + max(call.monitor_interval * self._misses, _MIN_CHECK)
        if call.check_at < call.deadline:
            if not self._checks:
                self._wakeup.notify()
            self._checks.append((call.check_at, call.request_id))

    def _schedule(self, when: float, request_id: str) -> None:  # lock held
        timers = self._timers
        if len(timers) > 2 * len(self._pending) + _COMPACT_SLACK:
            # A call answered in time leaves its deadline in the heap until it passes: at
            # thousands of calls a second and a 120 s timeout that is ~70 MB. Drop the
            # entries no call needs any more, now and then (amortised O(1) per call).
            pending = self._pending
            timers[:] = [
                t
                for t in timers
                if (call := pending.get(t[2])) is not None
                and t[0] in (call.deadline, call.heartbeat_deadline)
            ]
            heapq.heapify(timers)
        wake = not timers or when < timers[0][0]
        heapq.heappush(timers, (when, next(self._seq), request_id))
        if wake:
            self._wakeup.notify()

    def _on_reply(self, body: bytes) -> None:
        try:
            message = _wire.decode(body)
            if _OSLO in message:  # from an oslo.messaging server (wire=oslo)
                message = _oslo.reply_to_native(message)
            batch = _wire.unpack(message)
        except Exception as exc:
            LOG.warning("dropping malformed reply: %s", exc)
            return
        if batch is None:
            self._on_one_reply(message)
            return
        # NOTE: a batch's results matched under one hold of the lock (one per reply was a
        # tenth of the I/O thread's own work per pipelined get); anything else (heartbeats,
        # errors, stream items, malformed replies) one by one as ever, in order.
        results: list[tuple[PendingCall, Any]] = []
        others: list[Any] = []
        with self._lock:
            pending = self._pending
            for reply in batch:
                if type(reply) is dict and reply.get("t") == "r" and type(reply.get("id")) is str:
                    call = pending.pop(reply["id"], None)
                    if call is not None:
                        results.append((call, reply.get("v")))
                else:
                    others.append(reply)
        # Resolve outside the lock: done-callbacks may start more calls right away.
        for call, value in results:
            call.deliver(value)
        for reply in others:
            self._on_one_reply(reply)

    def _on_one_reply(self, reply: Any) -> None:
        try:
            request_id, kind = reply["id"], reply["t"]
        except Exception as exc:
            LOG.warning("dropping malformed reply: %s", exc)
            return
        if type(request_id) is not str:
            # (an unhashable one failed the lookup below, and with it the rest of its batch)
            LOG.warning("dropping malformed reply: its id is a %s", type(request_id).__name__)
            return
        with self._lock:
            call = self._pending.get(request_id)
            if call is None:
                return  # its caller gave up (timeout) or it is a duplicate after redelivery
            if kind == "hb":
                if call.monitor_interval:
                    call.heartbeat_deadline = (
                        time.monotonic() + call.monitor_interval * self._misses
                    )
                    self._schedule(call.heartbeat_deadline, request_id)
                return
            if kind in ("r", "e", "end"):
                self._pending.pop(request_id, None)
        # Resolve outside the lock: done-callbacks may start more calls right away.
        if kind == "r" or kind == "i":
            call.deliver(reply.get("v"))
        elif kind == "e":
            call.fail(_wire.deserialize_exception(reply.get("exc"), call.allowed_exmods))
        elif kind == "end":
            call.end()

    def _on_lost(self, reason: str) -> None:
        with self._lock:
            calls, self._pending = list(self._pending.values()), {}
        if calls:
            LOG.warning("failing %d pending calls: broker connection lost (%s)", len(calls), reason)
        for call in calls:
            call.fail(ConnectionLost(reason=reason, method=call.method))

    def _watch(self) -> None:
        while True:
            expired: list[tuple[PendingCall, BaseException]] = []
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    when, _, request_id = heapq.heappop(self._timers)
                    call = self._pending.get(request_id)
                    if call is None:
                        continue
                    if when >= call.deadline:
                        exc: BaseException = self._timeout(call)
                    elif call.heartbeat_deadline == when:
                        silence = round(call.monitor_interval * self._misses, 3)  # type: ignore[operator]
                        exc = CallMonitorTimeout(method=call.method, silence=silence)
                    else:
                        continue  # a heartbeat arrived after this check was scheduled
                    del self._pending[request_id]
                    expired.append((call, exc))
                checks = self._checks
                if checks and checks[0][0] <= now and now >= self._next_sweep:
                    self._next_sweep = now + _CHECK_SWEEP
                else:
                    checks = _NO_CHECKS  # not yet: the next sweep takes every due one
                while checks and checks[0][0] <= now:
                    when, request_id = checks.popleft()
                    call = self._pending.get(request_id)
                    if (
                        call is not None
                        and call.check_at == when
                        and call.heartbeat_deadline is None
                    ):
                        if call.sent:
                            self._probe(call)
                        else:  # still on its way to the broker: nothing to look for yet
                            self._schedule_check(call, now)
                if not expired:
                    checks = self._checks
                    wake = min(
                        self._timers[0][0] if self._timers else _NEVER,
                        max(checks[0][0], self._next_sweep) if checks else _NEVER,
                    )
                    self._wakeup.wait(None if wake == _NEVER else max(0.0, wake - now))
            for call, exc in expired:
                call.fail(exc)

    def _timeout(self, call: PendingCall) -> MessagingTimeout:
        """The call's deadline passed; say why when the broker is the reason."""
        unreachable = self._driver.unreachable()
        if unreachable is None:
            return MessagingTimeout(method=call.method, timeout=call.timeout)
        return MessagingTimeout(
            f"Timed out after {call.timeout}s waiting for a reply to {call.method}: {unreachable}",
            method=call.method,
            timeout=call.timeout,
        )

    # -- probing a queue for calls that heard nothing --------------------------------------
    def _probe(self, call: PendingCall) -> None:  # lock held
        assert call.queue is not None
        call.check_at = None
        seen = self._probed.get(call.queue)
        if seen is not None and time.monotonic() - seen[0] < _PROBE_FRESH:
            # Looked at after this call was sent: its answer holds for it too.
            self._apply_probe(call, seen[1], time.monotonic())
            return
        waiting = self._probes.setdefault(call.queue, [])
        waiting.append(call.request_id)
        if self._probe_thread is None:
            self._probe_thread = threading.Thread(
                target=self._probe_loop, name="transport-probe", daemon=True
            )
            self._probe_thread.start()
        else:
            self._probe_wake.notify()

    def _probe_loop(self) -> None:
        # NOTE: its own thread: a broker round trip must never delay the deadlines the
        # monitor thread enforces.
        while True:
            with self._lock:
                while not self._probes and not self._closed:
                    self._probe_wake.wait()
                if self._closed:
                    return
                queue_name = next(iter(self._probes))
            asked = time.monotonic()
            try:
                state = self._driver.queue_state(queue_name)
            except Exception as exc:  # broker trouble: the deadline still holds
                LOG.debug("cannot probe %s: %s", queue_name, exc)
                state = (1, 1)  # as if still queued: look again later
            with self._lock:
                waiting = self._probes.pop(queue_name, [])
                now = time.monotonic()
                if len(self._probed) > 1000:
                    self._probed.clear()
                self._probed[queue_name] = (asked, state)
                for request_id in waiting:
                    call = self._pending.get(request_id)
                    if call is not None:
                        self._apply_probe(call, state, now)

    def _apply_probe(
        self, call: PendingCall, state: tuple[int, int] | None, now: float
    ) -> None:  # lock held
        if call.heartbeat_deadline is not None or not call.monitor_interval or state is None:
            return  # heard from a server meanwhile, or the driver cannot tell: the deadline holds
        messages, consumers = state
        if consumers and not messages:
            # Delivered, and no server said a word: monitor it from now.
            silence = max(call.monitor_interval * self._misses, _MIN_ARMED)
            call.heartbeat_deadline = now + silence
            self._schedule(call.heartbeat_deadline, call.request_id)
        else:  # still waiting in the queue, or for a server to start
            self._schedule_check(call, now)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            calls, self._pending = list(self._pending.values()), {}
            self._wakeup.notify()
            self._probe_wake.notify()
        for call in calls:
            call.fail(ConnectionLost(reason="the transport was cleaned up", method=call.method))
