"""Slow handlers: heartbeats keep a long call alive; a dead conductor is noticed in seconds.

The call monitor gives up on a call after ``call_monitor_misses`` (4) missed heartbeats of
``call_monitor_interval`` (1 s). A method running longer than that completes only because
the conductor keeps sending heartbeats from its own thread while the handler is busy.
``CONDUCTOR_RELIABILITY_SLOW_SECONDS`` lengthens the slow call (``tests/reliability/soak.py`` runs
35 s, past two AMQP heartbeat intervals); CI runs 10 s.
"""

from __future__ import annotations

import os
import time

import pytest

import conductor
from objects import base
from objects.context import RequestContext
from tests.reliability import served
from transport import exceptions as texc
from transport.config import DEFAULT_CONFIG

pytestmark = [pytest.mark.rabbit, pytest.mark.slow]

SLOW = float(os.environ.get("CONDUCTOR_RELIABILITY_SLOW_SECONDS", "10"))
MONITOR = DEFAULT_CONFIG.call_monitor_interval or 0.0
SILENCE = MONITOR * DEFAULT_CONFIG.call_monitor_misses


def test_a_method_longer_than_the_missed_heartbeat_threshold_completes(
    broker_url: str, database_url: str, topic: str
) -> None:
    assert SLOW > 2 * SILENCE, "the call must outlast the call monitor's patience"
    with served.as_process(broker_url, database_url, topic) as s:
        probe = served.import_probe()
        ctx = RequestContext(user_id="patient")
        started = time.monotonic()
        slow = probe.Probe.sleep_async(ctx, SLOW)
        # Meanwhile the same conductor keeps answering quick calls
        assert [probe.Probe.echo(ctx, i) for i in range(20)] == list(range(20))
        assert slow.result(timeout=SLOW + 30) == SLOW
        assert time.monotonic() - started >= SLOW
        assert s.process is not None and "broker connection lost" not in s.process.output


def test_caller_of_a_killed_conductor_gets_call_monitor_timeout_within_seconds(
    broker_url: str, database_url: str, topic: str
) -> None:
    with served.as_process(broker_url, database_url, topic) as s:
        probe = served.import_probe()
        ctx = RequestContext(user_id="abandoned")
        # A caller whose timeout is far beyond what the monitor should take
        patient = conductor.connect(broker_url, topic=topic, timeout=120)
        try:
            pending = probe.Probe.sleep_async(ctx, 100)
        finally:
            base.set_indirection_api(s.client)
        time.sleep(2 * MONITOR + 0.5)  # heartbeats are flowing
        assert not pending.done()

        assert s.process is not None
        s.process.proc.kill()
        killed = time.monotonic()
        with pytest.raises(texc.CallMonitorTimeout):
            pending.result(timeout=60)
        noticed = time.monotonic() - killed
        assert noticed < SILENCE + 3, f"noticed after {noticed:.1f}s"
        patient.close()
        print(f"figures: killed conductor noticed after {noticed:.1f}s (timeout was 120s)")
