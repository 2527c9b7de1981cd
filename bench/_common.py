"""Shared pieces of the benchmark: the worker protocol, load loops and statistics.

Every measured system runs its client in its own worker process (``bench/_worker.py``), so
the orchestrator can read that process's CPU time and RSS with psutil, and so the
OpenStack libraries (which import eventlet) never share an interpreter with ours.

Protocol: the orchestrator writes one JSON object per line on the worker's stdin
(``{"cmd": "run", "workload": "get_async", "window": 64, "ops": 5000, "seconds": 2.0}``),
the worker answers with one JSON line on the file descriptor it was given for replies
(its stdout at start; ``sys.stdout`` is pointed at stderr so library prints cannot
corrupt the stream).
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

__all__ = [
    "Result",
    "instance_values",
    "percentile",
    "run_sequential",
    "run_two_stage",
    "run_window",
    "run_window_asyncio",
    "serve_commands",
]

# What every system stores in an Instance row (besides id, uuid and the timestamps),
# so the payloads are the same size everywhere.
TAGS = ["bench", "pipelined", "rack-7"]
METADATA = {"owner": "bench", "az": "nova-1", "image": "cirros-0.6.2"}
STATES = ("building", "active", "stopped")


def instance_values(i: int) -> dict[str, Any]:
    """Field values of the i-th benchmark instance (flavor and uuid aside)."""
    return {
        "host": f"node-{i % 50}",
        "state": "building",
        "vcpus": 1 + i % 8,
        "memory_mb": 512 * (1 + i % 16),
        "task_state": None,
        "tags": list(TAGS),
        "metadata": dict(METADATA),
    }


class Result:
    """Counts and latencies of one measured run (one cell of one round)."""

    def __init__(self) -> None:
        self.ops = 0
        self.errors = 0
        self.latencies: list[float] = []  # seconds
        self.started = time.perf_counter()
        self.elapsed = 0.0
        self.first_error: str | None = None

    def record(self, t0: float, now: float | None = None) -> None:
        self.latencies.append((now if now is not None else time.perf_counter()) - t0)
        self.ops += 1

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        self.ops += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"

    def finish(self) -> dict[str, Any]:
        self.elapsed = time.perf_counter() - self.started
        return {
            "ops": self.ops,
            "errors": self.errors,
            "elapsed": self.elapsed,
            # microsecond resolution is plenty and keeps the JSON line short
            "lat_ms": [round(x * 1000.0, 3) for x in self.latencies],
            "first_error": self.first_error,
        }


#: Seconds between two wake-ups of the event-loop lag probe of ``run_window_asyncio``.
LAG_PROBE_S = 0.01


def _deadline(seconds: float | None) -> float:
    return float("inf") if not seconds else time.perf_counter() + seconds


def run_sequential(op: Callable[[int], Any], ops: int, seconds: float | None) -> dict[str, Any]:
    """Call ``op(i)`` one after the other until ``ops`` calls or ``seconds`` have passed."""
    result = Result()
    deadline = _deadline(seconds)
    perf = time.perf_counter
    for i in range(ops):
        t0 = perf()
        if t0 >= deadline:
            break
        try:
            op(i)
        except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
            result.error(exc)
            continue
        result.record(t0)
    return result.finish()


def run_window(
    start: Callable[[int], Any],
    finish: Callable[[Any], Any],
    window: int,
    ops: int,
    seconds: float | None,
) -> dict[str, Any]:
    """Keep ``window`` operations outstanding: ``start(i)`` begins one, ``finish(handle)``
    waits for the oldest. Stops starting new ones after ``ops`` or ``seconds``."""
    result = Result()
    deadline = _deadline(seconds)
    perf = time.perf_counter
    pending: collections.deque[tuple[float, Any]] = collections.deque()
    started = 0
    while True:
        while started < ops and len(pending) < window:
            t0 = perf()
            if t0 >= deadline:
                ops = started  # stop starting; drain what is in flight
                break
            try:
                pending.append((t0, start(started)))
            except Exception as exc:  # noqa: BLE001
                result.error(exc)
            started += 1
        if not pending:
            break
        t0, handle = pending.popleft()
        try:
            finish(handle)
        except Exception as exc:  # noqa: BLE001
            result.error(exc)
            continue
        result.record(t0)
    return result.finish()


async def run_window_asyncio(
    start: Callable[[int], Awaitable[Any]],
    window: int,
    ops: int,
    seconds: float | None,
) -> dict[str, Any]:
    """The asyncio twin of ``run_window``: ``window`` coroutines, each awaiting one
    operation after the other (``await start(i)``), gathered; so ``window`` operations
    are in flight until ``ops`` were started or ``seconds`` have passed.

    Meanwhile a probe sleeps ``LAG_PROBE_S`` at a time and records how late it wakes up:
    the event loop's lag (``loop_lag_ms`` in the result)."""
    import asyncio

    result = Result()
    deadline = _deadline(seconds)
    perf = time.perf_counter
    started = 0

    async def one_after_the_other() -> None:
        nonlocal started
        while started < ops:
            t0 = perf()
            if t0 >= deadline:
                break
            i = started
            started += 1
            try:
                await start(i)
            except Exception as exc:  # noqa: BLE001
                result.error(exc)
                continue
            result.record(t0)

    lags: list[float] = []
    running = True

    async def probe() -> None:
        while running:
            t0 = perf()
            await asyncio.sleep(LAG_PROBE_S)
            lags.append(perf() - t0 - LAG_PROBE_S)

    prober = asyncio.ensure_future(probe())
    try:
        await asyncio.gather(*(one_after_the_other() for _ in range(window)))
    finally:
        running = False
        await prober
    out = result.finish()
    out["loop_lag_ms"] = [round(x * 1000.0, 3) for x in lags]
    return out


def run_two_stage(
    first: Callable[[int], Any],
    wait_first: Callable[[Any], Any],
    second: Callable[[Any], Any],
    is_done: Callable[[Any], bool],
    wait_second: Callable[[Any], Any],
    window: int,
    ops: int,
    seconds: float | None,
) -> dict[str, Any]:
    """Pipelined two-step operations (get, then modify + save) with ``window`` in flight.

    ``first(i)`` starts step one; ``wait_first(h)`` waits for it and returns what
    ``second`` needs; ``second(x)`` starts step two and returns a handle that
    ``is_done`` can poll and ``wait_second`` waits for. Finished saves are collected
    without blocking; otherwise the oldest get is waited for (gets finish roughly in
    order), and only when no get is outstanding does the loop block on the oldest save.
    """
    result = Result()
    deadline = _deadline(seconds)
    perf = time.perf_counter
    stage1: collections.deque[tuple[float, Any]] = collections.deque()
    stage2: collections.deque[tuple[float, Any]] = collections.deque()
    started = 0

    def complete_save() -> None:
        t0, handle = stage2.popleft()
        try:
            wait_second(handle)
        except Exception as exc:  # noqa: BLE001
            result.error(exc)
            return
        result.record(t0)

    while True:
        while started < ops and len(stage1) + len(stage2) < window:
            t0 = perf()
            if t0 >= deadline:
                ops = started
                break
            try:
                stage1.append((t0, first(started)))
            except Exception as exc:  # noqa: BLE001
                result.error(exc)
            started += 1
        while stage2 and is_done(stage2[0][1]):
            complete_save()
        if stage1:
            t0, handle = stage1.popleft()
            try:
                stage2.append((t0, second(wait_first(handle))))
            except Exception as exc:  # noqa: BLE001
                result.error(exc)
        elif stage2:
            complete_save()
        elif started >= ops:
            break
    return result.finish()


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) of already sorted values, nearest-rank."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def serve_commands(handler: Callable[[dict[str, Any]], Any]) -> None:
    """Worker main loop: one JSON command per stdin line, one JSON reply per command.

    ``handler`` returns a JSON-compatible reply; an exception becomes
    ``{"error": ...}`` and the worker keeps serving. ``{"cmd": "quit"}`` ends the loop.
    """
    reply_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    replies: TextIO = os.fdopen(reply_fd, "w", buffering=1)
    replies.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        if command.get("cmd") == "quit":
            replies.write(json.dumps({"bye": True}) + "\n")
            break
        try:
            reply = handler(command)
        except Exception as exc:  # noqa: BLE001 - the orchestrator reports it
            traceback.print_exc(file=sys.stderr)
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
    replies.flush()
