"""What ``conductor serve --metrics-port`` shows monitoring: Prometheus metrics and a health check.

Metric names (fixed by DESIGN.md, "Observability and operations"):

=====================================================  =========================================
``conductor_requests_total{objname,objmethod,outcome}``  requests answered; outcome ``ok`` or the
                                                         error's type name
``conductor_request_seconds{objname,objmethod}``        time from dispatch to outcome (histogram)
``conductor_batch_size``                                requests per message (1 for a lone request)
``conductor_replays_total``                             requests answered from a stored result
``conductor_requests_in_flight``                        requests being served now
=====================================================  =========================================

``GET /metrics`` serves them in Prometheus' text format; ``GET /healthz`` answers 200 when
every check passes (the broker connection, a ``SELECT 1`` on the database) and 503 naming
what is down. Each conductor has its own registry, so several in one process (tests) do not
mix their counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LOG = logging.getLogger(__name__)

#: A health check: a name ("broker", "database") and a callable raising when it is down.
Check = tuple[str, Callable[[], None]]

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The conductor's metrics in their own registry.

    The recording methods are on every request's path: labelled children are looked up
    once per label set and cached, so a request costs two dict lookups and two updates.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "conductor_requests",
            "Requests answered, by object, method and outcome.",
            ["objname", "objmethod", "outcome"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "conductor_request_seconds",
            "Time from dispatch to a request's outcome.",
            ["objname", "objmethod"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._batch = Histogram(
            "conductor_batch_size",
            "Requests per broker message served together.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self._replays = Counter(
            "conductor_replays",
            "Requests answered from their stored result (redeliveries).",
            registry=self.registry,
        )
        self._in_flight = Gauge(
            "conductor_requests_in_flight",
            "Requests being served now.",
            registry=self.registry,
        )
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    def request_done(self, objname: str, objmethod: str, outcome: str, seconds: float) -> None:
        """Count one answered request (``outcome`` is ``ok`` or the error's type name)."""
        key = (objname, objmethod, outcome)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters.setdefault(key, self._requests.labels(*key))
        counter.inc()
        timer = self._timers.get(key[:2])
        if timer is None:
            timer = self._timers.setdefault(key[:2], self._seconds.labels(objname, objmethod))
        timer.observe(seconds)

    def batch(self, size: int) -> None:
        self._batch.observe(size)

    def replayed(self, count: int = 1) -> None:
        self._replays.inc(count)

    def started(self, count: int = 1) -> None:
        self._in_flight.inc(count)

    def finished(self, count: int = 1) -> None:
        self._in_flight.dec(count)

    def text(self) -> bytes:
        return generate_latest(self.registry)


def outcome_of(error: BaseException | None) -> str:
    """The ``outcome`` label: ``ok``, or the error's type name."""
    return "ok" if error is None else type(error).__name__


class MonitoringServer:
    """``/metrics`` and ``/healthz`` over HTTP, on a daemon thread.

    Args:
        metrics: what ``/metrics`` shows.
        checks: what ``/healthz`` runs, in order; each raises when its part is down.
        host, port: where to listen (port 0 picks a free one; see :attr:`port`).
    """

    def __init__(
        self, metrics: Metrics, checks: Sequence[Check], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.metrics = metrics
        self.checks = list(checks)
        self._httpd = ThreadingHTTPServer((host, port), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="conductor-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def health(self) -> tuple[bool, str]:
        """Run every check: (all passed, one line per part)."""
        lines, healthy = [], True
        for name, check in self.checks:
            started = time.monotonic()
            try:
                check()
            except Exception as exc:  # noqa: BLE001 - a failed check is the answer
                healthy = False
                lines.append(f"{name}: down ({type(exc).__name__}: {_first_line(exc)})")
            else:
                lines.append(f"{name}: ok ({(time.monotonic() - started) * 1000:.1f} ms)")
        return healthy, "\n".join(lines) + "\n"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def _handler(server: MonitoringServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, server.metrics.text(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                healthy, text = server.health()
                self._send(200 if healthy else 503, text.encode(), "text/plain; charset=utf-8")
            else:
                self._send(404, b"try /metrics or /healthz\n", "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            LOG.debug("metrics: " + format, *args)

    return Handler
