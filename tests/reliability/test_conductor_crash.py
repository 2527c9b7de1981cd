"""A conductor SIGKILLed with hundreds of writes in flight: nothing lost, nothing twice.

Requests are acknowledged only after their transaction committed and their reply went
out, and each write's result is stored under its request id in the same transaction. So
when a conductor dies, the broker hands its unacknowledged requests to the next conductor,
which runs the ones that never committed and answers the others from the stored result.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import conductor
import objects
from objects import base
from objects.context import RequestContext
from tests.conductor.processes import ServeProcess, child_env
from tests.reliability import faults

pytestmark = [pytest.mark.rabbit, pytest.mark.slow]

CREATES = 600
SAVES = 300
KILL_AFTER = 100


def start_conductor(broker_url: str, database_url: str, topic: str, server: str) -> ServeProcess:
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
            "8",
        ],
        child_env(),
    )
    proc.wait_ready()
    return proc


@pytest.fixture
def client(broker_url: str, topic: str) -> Iterator[conductor.ConductorAPI]:
    objects.register_all()
    api = conductor.connect(broker_url, topic=topic, timeout=90)
    try:
        yield api
    finally:
        api.close()
        base.set_indirection_api(None)


def new_instance(ctx: RequestContext, host: str) -> Any:
    return objects.Instance(
        ctx, uuid=str(uuid.uuid4()), host=host, state="building", vcpus=1, memory_mb=128
    )


def test_sigkill_with_hundreds_of_writes_in_flight_loses_none_and_doubles_none(
    broker_url: str, database_url: str, topic: str, client: conductor.ConductorAPI
) -> None:
    ctx = RequestContext(user_id="crash-test")
    marker = f"crash-{uuid.uuid4().hex[:8]}"
    first = start_conductor(broker_url, database_url, topic, "doomed")
    second: ServeProcess | None = None
    try:
        # Given instances to save, created while all is well
        to_save = [new_instance(ctx, f"{marker}-before") for _ in range(SAVES)]
        objects.wait_all([i.create_async() for i in to_save], timeout=120)
        revisions = {
            i.id: rev
            for i, rev in zip(
                to_save,
                (
                    r[0]
                    for r in faults.query(
                        database_url,
                        "SELECT revision FROM instances WHERE host = :h ORDER BY id",
                        h=f"{marker}-before",
                    )
                ),
                strict=True,
            )
        }

        # When hundreds of creates and saves are in flight and the conductor is SIGKILLed
        created = [new_instance(ctx, f"{marker}-new") for _ in range(CREATES)]
        futures = [i.create_async() for i in created]
        for inst in to_save:
            inst.host = f"{marker}-saved"
            futures.append(inst.save_async())
        # (once the conductor is well into them: some committed, some running, most queued)
        while sum(f.done() for f in futures) < KILL_AFTER:
            time.sleep(0.001)
        first.proc.kill()
        in_flight = sum(not f.done() for f in futures)
        first.kill()
        # ... and a new conductor starts on the topic
        second = start_conductor(broker_url, database_url, topic, "successor")

        # Then every future resolves successfully
        for f in futures:
            f.result(timeout=120)
        assert in_flight >= 100, f"only {in_flight} writes were in flight at the kill"

        # ... and every write is in the database exactly once
        rows = faults.query(
            database_url, "SELECT uuid FROM instances WHERE host = :h", h=f"{marker}-new"
        )
        assert sorted(r[0] for r in rows) == sorted(i.uuid for i in created)
        saved = faults.query(
            database_url,
            "SELECT id, revision FROM instances WHERE host = :h ORDER BY id",
            h=f"{marker}-saved",
        )
        assert len(saved) == SAVES
        applied_twice = [id_ for id_, rev in saved if rev != revisions[id_] + 1]
        assert applied_twice == [], "a save ran more than once"
        assert (
            faults.count_rows(
                database_url, "SELECT count(*) FROM instances WHERE host LIKE :m", m=f"{marker}-%"
            )
            == CREATES + SAVES
        )
        print(
            f"figures: in flight at SIGKILL {in_flight}, writes {CREATES + SAVES}, "
            f"lost 0, duplicates 0, replayed {second.output.count('from its stored result')}"
        )
    finally:
        first.kill()
        if second is not None:
            second.terminate()
