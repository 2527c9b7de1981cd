"""Rate-limited logging for what senders control: one line per bad message, at most a burst
of them at once and a few a second after that, then "(N more suppressed)".

A flood of bad requests (hostile or buggy senders) must not become a flood of log lines:
every call site here logs one line (no traceback unless asked), through a token bucket
shared by the logger it wraps.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["RateLimitedLog", "one_line"]


class RateLimitedLog:
    """Logs through ``logger`` at most ``burst`` records at once and ``rate`` a second on
    average; the next record that gets through says how many were suppressed meanwhile.

    Args:
        logger: where records go.
        rate: records per second allowed on average.
        burst: records allowed back to back before the rate applies.
    """

    def __init__(self, logger: logging.Logger, rate: float = 5.0, burst: int = 20) -> None:
        self.logger = logger
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._suppressed = 0
        self._lock = threading.Lock()

    def _take(self) -> int | None:
        """None when this record is suppressed, else how many were suppressed before it."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens < 1.0:
                self._suppressed += 1
                return None
            self._tokens -= 1.0
            suppressed, self._suppressed = self._suppressed, 0
            return suppressed

    def log(
        self, level: int, msg: str, *args: Any, exc_info: Any = None, request_id: str | None = None
    ) -> None:
        """Log one line; ``request_id`` fills the record's ``request_id`` field (the
        ``[...]`` of ``conductor serve``'s log format) for a line about one request."""
        if not self.logger.isEnabledFor(level):
            return
        suppressed = self._take()
        if suppressed is None:
            return
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        extra = None if request_id is None else {"request_id": request_id}
        self.logger.log(level, msg, *args, exc_info=exc_info, extra=extra)

    def info(
        self, msg: str, *args: Any, exc_info: Any = None, request_id: str | None = None
    ) -> None:
        self.log(logging.INFO, msg, *args, exc_info=exc_info, request_id=request_id)

    def warning(
        self, msg: str, *args: Any, exc_info: Any = None, request_id: str | None = None
    ) -> None:
        self.log(logging.WARNING, msg, *args, exc_info=exc_info, request_id=request_id)

    def error(
        self, msg: str, *args: Any, exc_info: Any = None, request_id: str | None = None
    ) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=exc_info, request_id=request_id)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an exception on one line, at most ``limit`` characters."""
    try:
        text = str(exc)
    except Exception:  # a hostile __str__
        text = "<unprintable>"
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
