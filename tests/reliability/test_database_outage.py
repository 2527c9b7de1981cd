"""The database goes away for a few seconds under a running ``conductor serve``.

The outage is real but scoped: the test's own PostgreSQL database stops accepting
connections and every open one is terminated (what a server restart does to its clients),
then connections are allowed again. Requests in the gap fail with
``objects.exception.DatabaseError`` (and wrote nothing) or succeed; the conductor stays up
and serves again once the database is back.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import Future
from typing import Any

import pytest
from sqlalchemy.engine import make_url

import conductor
import objects
from objects import base
from objects import exception as oexc
from objects.context import RequestContext
from tests.conductor.processes import serve
from tests.reliability import faults

pytestmark = [pytest.mark.rabbit, pytest.mark.postgres, pytest.mark.slow]

OUTAGE_SECONDS = 4.0


def new_instance(ctx: RequestContext, host: str) -> Any:
    return objects.Instance(
        ctx, uuid=str(uuid.uuid4()), host=host, state="building", vcpus=1, memory_mb=64
    )


def test_database_outage_fails_requests_typed_and_the_conductor_serves_again(
    broker_url: str, postgres_url: str, topic: str
) -> None:
    objects.register_all()
    name = make_url(postgres_url).database
    assert name is not None
    marker = f"db-{uuid.uuid4().hex[:8]}"
    ctx = RequestContext(user_id="db-outage")
    with serve(broker_url, postgres_url, topic, "--workers", "4", server="s1") as proc:
        client = conductor.connect(broker_url, topic=topic, timeout=30)
        try:
            # Given a conductor that has served writes
            objects.wait_all(
                [new_instance(ctx, f"{marker}-before").create_async() for _ in range(20)],
                timeout=30,
            )
            assert faults.PostgresDatabases.backends(name) > 0

            # When the database is unreachable for a few seconds while requests arrive
            during: list[tuple[Future[Any], Any]] = []
            with faults.PostgresDatabases.outage(name):
                end = time.monotonic() + OUTAGE_SECONDS
                while time.monotonic() < end:
                    inst = new_instance(ctx, f"{marker}-during")
                    during.append((inst.create_async(), inst))
                    time.sleep(0.1)
                # (the requests sent so far have been answered while it is still down)
                for future, _ in during:
                    future.exception(timeout=30)

            # Then each failed with DatabaseError and wrote nothing, or succeeded
            failed = [inst for f, inst in during if f.exception() is not None]
            for f, _ in during:
                exc = f.exception()
                assert exc is None or isinstance(exc, oexc.DatabaseError), repr(exc)
            assert failed, "no request met the outage"
            assert proc.proc.poll() is None, "the conductor died with its database"

            # ... and once the database is back, the conductor serves again on its own
            deadline = time.monotonic() + 20
            while True:
                try:
                    new_instance(ctx, f"{marker}-probe").create()
                    break
                except oexc.DatabaseError:
                    assert time.monotonic() < deadline, "no recovery 20s after the outage"
                    time.sleep(0.5)
            after = [new_instance(ctx, f"{marker}-after") for _ in range(50)]
            objects.wait_all([i.create_async() for i in after], timeout=30)

            stored = {
                r[0]
                for r in faults.query(
                    postgres_url, "SELECT uuid FROM instances WHERE host = :h", h=f"{marker}-during"
                )
            }
            assert not stored & {i.uuid for i in failed}, "a failed request wrote anyway"
            ok = {inst.uuid for f, inst in during if f.exception() is None}
            assert ok <= stored
            print(
                f"figures: requests during outage {len(during)}, DatabaseError {len(failed)}, "
                f"succeeded {len(ok)}, written by a failed request 0"
            )
        finally:
            client.close()
            base.set_indirection_api(None)
