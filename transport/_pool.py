"""A small pool of daemon worker threads.

``concurrent.futures.ThreadPoolExecutor`` joins its workers at interpreter exit, so one
stuck handler would keep the process alive; the transport promises it never does.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

LOG = logging.getLogger(__name__)

_STOP = object()


class WorkerPool:
    """Runs submitted callables on up to ``max_workers`` daemon threads, started lazily."""

    def __init__(self, max_workers: int, name: str) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._max = max_workers
        self._name = name
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._pending = 0
        self._drained = threading.Condition(self._lock)

    def submit(self, fn: Callable[[], None]) -> None:
        """Queue ``fn``; it runs as soon as a worker is free."""
        with self._lock:
            self._pending += 1
            if self._idle == 0 and len(self._threads) < self._max:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1 if self._idle else 0
        self._queue.put(fn)

    def enter(self) -> bool:
        """Count a job its caller runs itself, when none is queued or running (else False,
        nothing counted); :meth:`leave` when it is done. :meth:`drain` waits for it."""
        with self._lock:
            if self._pending:
                return False
            self._pending = 1
            return True

    def leave(self) -> None:
        """A job counted by :meth:`enter` is done."""
        with self._lock:
            self._pending -= 1
            # NOTE: Condition.notify_all runs three Python calls even when nobody waits
            # (the usual case: a caller's own answer, once per embedded get); a thread in
            # drain() is in the Condition's waiters, added under this same lock.
            if self._pending == 0 and self._drained._waiters:  # type: ignore[attr-defined]
                self._drained.notify_all()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                item()  # type: ignore[operator]
            except BaseException:  # a job must not kill its worker (SystemExit neither)
                LOG.exception("worker job failed")
            with self._lock:
                self._pending -= 1
                self._idle += 1
                if self._pending == 0:
                    self._drained.notify_all()

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        return self._pending

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no job is queued or running; False if ``timeout`` passed first."""
        with self._lock:
            return self._drained.wait_for(lambda: self._pending == 0, timeout)

    def shutdown(self) -> None:
        """Let the workers exit once the queue is empty (does not wait)."""
        with self._lock:
            threads, self._threads = self._threads, []
            self._idle = 0
        for _ in threads:
            self._queue.put(_STOP)
