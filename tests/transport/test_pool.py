"""The worker pool's accounting: drain() waits for jobs run by their callers too."""

from __future__ import annotations

import threading
import time

from transport._pool import WorkerPool


def test_drain_waits_for_a_job_its_caller_runs_and_wakes_when_it_leaves() -> None:
    pool = WorkerPool(1, "test-pool")
    assert pool.enter()
    assert not pool.enter()  # one at a time, while it runs
    drained: list[bool] = []
    waiter = threading.Thread(target=lambda: drained.append(pool.drain(timeout=5.0)))
    waiter.start()
    time.sleep(0.05)
    assert drained == []  # still waiting for the job
    started = time.monotonic()
    pool.leave()
    waiter.join(timeout=5.0)
    assert drained == [True]
    assert time.monotonic() - started < 1.0  # woken by leave(), not by its timeout
    assert pool.enter()  # counted out: the next one may run
    pool.leave()


def test_drain_with_nothing_running_returns_at_once() -> None:
    pool = WorkerPool(1, "test-pool")
    assert pool.enter()
    pool.leave()
    started = time.monotonic()
    assert pool.drain(timeout=5.0)
    assert time.monotonic() - started < 1.0
