"""Load: several compute processes with many operations in flight against two conductors.

Bounded in CI (``CONDUCTOR_RELIABILITY_LOAD_SECONDS``, default 20 s); ``tests/reliability/soak.py``
runs it for minutes. Zero errors; memory flat once warm (RSS growth bounded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from tests.conductor.processes import REPO, child_env, serve
from tests.reliability import faults

pytestmark = [pytest.mark.rabbit, pytest.mark.slow]

SECONDS = float(os.environ.get("CONDUCTOR_RELIABILITY_LOAD_SECONDS", "20"))
CLIENTS = 3
IN_FLIGHT = 100
#: RSS a process may gain between a quarter of the run and its end (allocator noise,
#: caches filling): a leak of even a few hundred bytes per request goes well past it.
GROWTH_KIB = 24 * 1024


def test_clients_with_many_in_flight_against_two_conductors_zero_errors_flat_memory(
    broker_url: str, database_url: str, topic: str
) -> None:
    marker = f"load-{uuid.uuid4().hex[:8]}"
    extra = ("--workers", "8", "--log-level", "WARNING")
    with (
        serve(broker_url, database_url, topic, *extra, server="c1") as c1,
        serve(broker_url, database_url, topic, *extra, server="c2") as c2,
    ):
        clients = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.reliability.load_client",
                    broker_url,
                    topic,
                    str(SECONDS),
                    str(IN_FLIGHT),
                    f"{marker}-{n}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=child_env(),
                cwd=REPO,
            )
            for n in range(CLIENTS)
        ]
        time.sleep(SECONDS / 4)
        warm = {p.proc.pid: faults.rss_kib(p.proc.pid) for p in (c1, c2)}
        results = []
        for proc in clients:
            out, err = proc.communicate(timeout=SECONDS + 120)
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        end = {pid: faults.rss_kib(pid) for pid in warm}
        assert c1.proc.poll() is None and c2.proc.poll() is None

    ops = sum(r["ops"] for r in results)
    assert [r["errors"] for r in results] == [{}] * CLIENTS, [r["samples"] for r in results]
    assert ops > CLIENTS * IN_FLIGHT
    for pid, before in warm.items():
        assert end[pid] - before < GROWTH_KIB, f"conductor {pid}: {before} -> {end[pid]} KiB"
    for r in results:
        assert r["rss_end"] - r["rss_warm"] < GROWTH_KIB, r
    print(
        f"figures: {CLIENTS} clients x {IN_FLIGHT} in flight, {SECONDS:.0f}s, {ops} ops "
        f"({ops / SECONDS:.0f}/s), errors 0, conductor RSS KiB {warm} -> {end}, "
        f"client RSS KiB {[(r['rss_warm'], r['rss_end']) for r in results]}"
    )
