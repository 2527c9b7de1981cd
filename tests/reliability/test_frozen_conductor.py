"""A frozen (SIGSTOPped) conductor beside a live one: calls go to the live one, and the few
the frozen one holds fail fast with a typed error instead of waiting out their timeout.

A frozen process keeps its broker connection (until the broker's heartbeat gives up on
it), so the broker keeps counting it as a consumer and hands it messages up to its
prefetch. A conductor holds ``workers * PREFETCH_PER_WORKER`` messages at most, and a
caller whose request was delivered but never acknowledged by a heartbeat learns it from
its call monitor within seconds.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

import conductor
import objects
from conductor.service import PREFETCH_PER_WORKER
from objects import base
from objects.context import RequestContext
from tests.conductor.processes import ServeProcess, child_env
from tests.reliability import faults
from transport import exceptions as texc

pytestmark = [pytest.mark.rabbit, pytest.mark.slow]

WORKERS = 2
CALLS = 200
TIMEOUT = 40.0
#: Send -> first look (interval 1 s * 4 misses) -> monitor armed -> 4 s of silence.
FAILS_WITHIN = 15.0


def start(broker_url: str, database_url: str, topic: str, server: str) -> ServeProcess:
    proc = ServeProcess(
        [
            "--transport-url",
            broker_url,
            "--database-url",
            database_url,
            "--topic",
            topic,
            "--server",
            server,
            "--workers",
            str(WORKERS),
        ],
        child_env(),
    )
    proc.wait_ready()
    return proc


@pytest.fixture
def client(broker_url: str, topic: str) -> Iterator[conductor.ConductorAPI]:
    objects.register_all()
    api = conductor.connect(broker_url, topic=topic, timeout=TIMEOUT)
    try:
        yield api
    finally:
        api.close()
        base.set_indirection_api(None)


def test_a_frozen_conductor_holds_a_bounded_few_and_their_callers_fail_fast(
    broker_url: str, database_url: str, topic: str, client: conductor.ConductorAPI
) -> None:
    ctx = RequestContext(user_id="frozen-test")
    marker = f"frozen-{uuid.uuid4().hex[:8]}"
    frozen = start(broker_url, database_url, topic, "frozen")
    live: ServeProcess | None = None
    stopped = False
    try:
        live = start(broker_url, database_url, topic, "live")
        os.kill(frozen.proc.pid, signal.SIGSTOP)
        stopped = True
        # One request per broker message (spaced out), so the broker spreads them.
        started = time.monotonic()
        ended: dict[int, float] = {}
        futures: list[Future[Any]] = []
        for i in range(CALLS):
            inst = objects.Instance(
                ctx, uuid=str(uuid.uuid4()), host=marker, state="building", vcpus=1, memory_mb=64
            )
            future = inst.create_async()
            future.add_done_callback(lambda _, i=i: ended.setdefault(i, time.monotonic()))
            futures.append(future)
            time.sleep(0.005)
        for future in futures:
            future.exception(TIMEOUT + 10)
        # Done-callbacks run on the transport's callback thread, just after the futures
        # resolve: wait for the ones that time the calls.
        deadline = time.monotonic() + 10
        while len(ended) < CALLS and time.monotonic() < deadline:
            time.sleep(0.01)
        sent_for = max(ended.values(), default=started) - started
        failures = [f.exception() for f in futures if f.exception() is not None]
        held = PREFETCH_PER_WORKER * WORKERS
        # Then the live conductor serves all but what the frozen one holds (its prefetch)
        # (a message may carry two requests when two calls met in the sender)
        assert len(failures) <= 2 * held, [repr(e) for e in failures[:5]]
        # ... and those callers learn it from their call monitor, long before the timeout
        assert all(isinstance(e, texc.CallMonitorTimeout) for e in failures), failures
        assert sent_for < CALLS * 0.005 + FAILS_WITHIN + 5, sent_for
        slowest = max(ended[i] - started - i * 0.005 for i in range(CALLS))
        print(
            f"figures: {CALLS} calls, {len(failures)} failed fast (held by the frozen "
            f"conductor, which holds {held} messages), slowest call {slowest:.1f}s, "
            f"timeout {TIMEOUT:.0f}s"
        )
        assert slowest < FAILS_WITHIN, slowest

        # When the frozen conductor resumes, it runs what it held (its callers were told
        # the request may still run), each exactly once.
        os.kill(frozen.proc.pid, signal.SIGCONT)
        stopped = False
        deadline = time.monotonic() + 30
        count = 0
        while time.monotonic() < deadline:
            count = faults.count_rows(
                database_url, "SELECT count(*) FROM instances WHERE host = :h", h=marker
            )
            if count == CALLS:
                break
            time.sleep(0.2)
        assert count == CALLS
        assert (
            faults.count_rows(
                database_url, "SELECT count(DISTINCT uuid) FROM instances WHERE host = :h", h=marker
            )
            == CALLS
        )
    finally:
        if stopped:
            os.kill(frozen.proc.pid, signal.SIGCONT)
        frozen.terminate()
        if live is not None:
            live.terminate()
