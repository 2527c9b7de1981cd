"""The lifecycle RPCServer and NotificationListener share: consume, hand each delivery to a
worker, settle it whatever happens, stop by draining.

A subclass says what to consume (:meth:`Consumer._listen`) and how to handle one delivery
(:meth:`Consumer._handle_message`); everything else (states and their errors, the worker
pool, the listener, stop/kill/wait, settling a delivery whose handling failed) is here.
"""

from __future__ import annotations

import abc
import enum
import logging
import threading
from typing import TYPE_CHECKING, Any

from transport._pool import WorkerPool
from transport._ratelog import RateLimitedLog, one_line
from transport.driver import Incoming, Listener

if TYPE_CHECKING:
    from transport._transport import Transport


class ServerState(enum.Enum):
    """Lifecycle of a server: NEW -start-> RUNNING -stop-> STOPPING -(drained)-> STOPPED."""

    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Consumer(abc.ABC):
    """Base of RPCServer and NotificationListener (not public).

    Subclasses set ``_log`` (their module's logger) and ``_what`` (how a delivery is named
    in log lines) and ``_role``, call ``super().__init__`` and implement :meth:`_listen` and
    :meth:`_handle_message`. ``_admit`` and ``_state_changed`` are hooks run under
    ``_lock``.
    """

    _log: logging.Logger
    _what = "a message"
    _role = "server"

    def __init__(
        self, transport: Transport, executor: str, max_workers: int, pool_name: str
    ) -> None:
        if executor != "threading":
            raise ValueError(f"unsupported executor {executor!r}; use 'threading'")
        self.transport = transport
        self.max_workers = max_workers
        self.state = ServerState.NEW
        self._pool = WorkerPool(max_workers, pool_name)
        self._listener: Listener | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._killed = False
        # One line per bad message or failed request, rate-limited: senders choose how many.
        self._bad = RateLimitedLog(self._log, rate=10.0, burst=50)
        self._failed = RateLimitedLog(self._log, rate=10.0, burst=50)

    @abc.abstractmethod
    def _listen(self, prefetch: int) -> Listener:
        """Declare and consume the queues (``self._on_message`` gets each delivery)."""

    @abc.abstractmethod
    def _handle_message(self, incoming: Incoming, decoded: Any = None) -> None:
        """Handle one delivery on a worker thread and settle it (``decoded``: its body,
        when :meth:`_on_message` decoded it already)."""

    def _admit(self, incoming: Incoming) -> None:  # noqa: B027  (lock held)
        """A delivery goes to the worker pool."""

    def _state_changed(self) -> None:  # noqa: B027  (lock held)
        """``state`` changed (or stopping began)."""

    def _name(self) -> str:
        """What the stop warning calls this consumer."""
        return type(self).__name__

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Declare and consume the queues; returns once consuming.

        Raises:
            RuntimeError: started before (a stopped one cannot start again).
            QueueMismatch: a queue exists with other arguments than the transport's.
            BrokerRefused: the broker refused a queue or exchange (permissions, type).
            TransportError: the broker stayed unreachable through the retries.
        """
        with self._lock:
            if self.state is not ServerState.NEW:
                raise RuntimeError(
                    f"cannot start a {type(self).__name__} that is {self.state.value}"
                )
            self.state = ServerState.RUNNING
        prefetch = self.max_workers * self.transport.config.prefetch_multiplier
        try:
            self._listener = self._listen(prefetch)
        except BaseException:
            with self._lock:
                self.state = ServerState.STOPPED
                self._state_changed()
            self._stopped.set()
            raise

    def stop(self, timeout: float | None = None) -> None:
        """Stop consuming, then wait for deliveries being handled to finish (and be
        acknowledged); what is left after ``timeout`` goes back to the broker."""
        # NOTE: stop consuming before flipping the state: a message arriving in between is
        # then requeued to other consumers instead of bouncing back to us.
        if self._listener is not None:
            self._listener.stop()
        with self._lock:
            if self.state not in (ServerState.STOPPING, ServerState.STOPPED):
                self.state = ServerState.STOPPING
            self._state_changed()
        if not self._pool.drain(timeout):
            self._log.warning("%s stopped with work still running", self._name())
        if self._listener is not None:
            # Everything handled is acknowledged by now; give back whatever is left.
            self._listener.kill()
        self._pool.shutdown()
        with self._lock:
            self.state = ServerState.STOPPED
            self._state_changed()
        self._stopped.set()

    def kill(self) -> None:
        """Stop at once as if the process died: unacknowledged deliveries go back to their
        queue for another consumer, running handlers' replies are dropped. Never raises."""
        with self._lock:
            self.state = ServerState.STOPPED
            self._killed = True
            self._state_changed()
        if self._listener is not None:
            try:
                self._listener.kill()
            except Exception:
                self._log.debug("kill of %s listener failed", self._name(), exc_info=True)
        self._pool.shutdown()
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stopped and drained; False if ``timeout`` passed first."""
        return self._stopped.wait(timeout)

    # -- deliveries -----------------------------------------------------------------
    def _on_message(self, incoming: Incoming) -> None:
        with self._lock:
            if self.state is not ServerState.RUNNING:
                incoming.requeue()
                return
            self._admit(incoming)
            self._pool.submit(lambda: self._handle(incoming))

    def _handle(self, incoming: Incoming, decoded: Any = None) -> None:
        # NOTE: whatever goes wrong, the delivery is settled: an unsettled message holds a
        # prefetch slot for good, and the next consumer would stall on it after a restart.
        try:
            self._handle_message(incoming, decoded)
        except BaseException as exc:
            if self._killed:
                return
            reason = f"the {self._role} failed handling it: {one_line(exc)}"
            self._bad.error("parking %s in the dead-letter queue: %s", self._what, reason)
            try:
                incoming.dead_letter(reason)
            except BaseException:
                self._log.error("cannot settle %s; requeueing it", self._what, exc_info=True)
                incoming.requeue()
