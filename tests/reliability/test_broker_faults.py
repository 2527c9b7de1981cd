"""The broker drops every connection mid-load (``rabbitmqctl close_all_connections``).

Clients and conductors reconnect by themselves; every pending call completes or fails
with a typed error within its timeout; casts the broker confirmed are delivered; nothing
hangs; no thread or queue is left behind. The connections cut are those of a vhost made
for the test, so other users of the broker are untouched.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import Future
from typing import Any

import pytest

import conductor
import objects
import transport
from objects import base
from objects import exception as oexc
from objects.context import RequestContext
from tests.conductor.processes import serve
from tests.reliability import faults
from transport import exceptions as texc

pytestmark = [pytest.mark.rabbit, pytest.mark.slow]

TIMEOUT = 20.0
WORKERS = 8
LOAD_SECONDS = 10.0
FAULTS_AT = (3.0, 6.5)
#: What a call may fail with when the broker drops it: the transport's typed errors.
TYPED = (texc.MessagingException, oexc.DatabaseError)


def os_threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no thread count")


def new_instance(ctx: RequestContext, host: str) -> Any:
    return objects.Instance(
        ctx, uuid=str(uuid.uuid4()), host=host, state="building", vcpus=1, memory_mb=64
    )


def test_connections_dropped_mid_load_every_call_ends_typed_and_service_recovers(
    own_vhost: faults.Vhost, database_url: str, topic: str
) -> None:
    objects.register_all()
    url = own_vhost.url
    marker = f"brk-{uuid.uuid4().hex[:8]}"
    ctx = RequestContext(user_id="broker-faults")
    threads_before = threading.active_count()
    with serve(url, database_url, topic, "--workers", str(WORKERS), server="s1") as proc:
        client = conductor.connect(url, topic=topic, timeout=TIMEOUT)
        caster_transport = transport.get_transport(url)
        caster = transport.RPCClient(
            caster_transport,
            transport.Target(topic=topic, version="1.0"),
            serializer=base.VersionedObjectSerializer(),
        )
        try:
            calls: list[tuple[float, Future[Any], Any]] = []
            confirmed_casts: list[str] = []
            refused_casts: list[BaseException] = []
            refused_calls: list[BaseException] = []
            cut = 0
            start = time.monotonic()
            faults_left = list(FAULTS_AT)
            # When the load runs and the broker closes every connection, twice
            while (now := time.monotonic() - start) < LOAD_SECONDS:
                if faults_left and now >= faults_left[0]:
                    faults_left.pop(0)
                    cut += own_vhost.close_connections("reliability: connections dropped")
                for _ in range(40):
                    inst = new_instance(ctx, f"{marker}-call")
                    try:
                        calls.append((time.monotonic(), inst.create_async(), inst))
                    except TYPED as exc:
                        refused_calls.append(exc)
                cast_uuid = str(uuid.uuid4())
                try:
                    caster.cast(
                        ctx,
                        "object_action",
                        objinst=objects.Instance(
                            ctx,
                            uuid=cast_uuid,
                            host=f"{marker}-cast",
                            state="building",
                            vcpus=1,
                            memory_mb=64,
                        ),
                        objmethod="create",
                        args=[],
                        kwargs={},
                    )
                    confirmed_casts.append(cast_uuid)
                except TYPED as exc:
                    refused_casts.append(exc)
                time.sleep(0.1)

            # Then every call ends within its timeout, successfully or with a typed error
            ok, failed = 0, []
            for sent_at, future, _ in calls:
                left = sent_at + TIMEOUT + 5 - time.monotonic()
                try:
                    future.result(timeout=max(left, 0.1))
                    ok += 1
                except TYPED as exc:
                    failed.append(exc)
            assert all(f.done() for _, f, _ in calls), "a call outlived its timeout"
            assert cut >= 4, f"expected both processes' connections cut, closed {cut}"
            assert ok > len(calls) // 2, (ok, len(calls), failed[:3])

            # ... the service recovers on its own and serves normally
            after = [new_instance(ctx, f"{marker}-after") for _ in range(100)]
            objects.wait_all([i.create_async() for i in after], timeout=60)
            assert proc.proc.poll() is None
            assert "reconnected to the broker" in proc.output

            # ... casts the broker confirmed were all delivered, each once
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                cast_rows = faults.query(
                    database_url, "SELECT uuid FROM instances WHERE host = :h", h=f"{marker}-cast"
                )
                if len({r[0] for r in cast_rows} & set(confirmed_casts)) == len(confirmed_casts):
                    break
                time.sleep(0.5)
            landed = [r[0] for r in cast_rows]
            assert set(confirmed_casts) <= set(landed), "a confirmed cast was lost"
            assert len(landed) == len(set(landed)), "a cast ran twice"

            # ... successful creates are stored exactly once
            rows = faults.query(
                database_url, "SELECT uuid FROM instances WHERE host = :h", h=f"{marker}-call"
            )
            stored = [r[0] for r in rows]
            assert len(stored) == len(set(stored)), "a create ran twice"
            succeeded = {inst.uuid for _, f, inst in calls if f.exception() is None}
            assert succeeded <= set(stored), "a create that succeeded is missing"

            # ... and threads do not pile up with reconnects: two more cuts, same count
            server_threads = os_threads(proc.proc.pid)
            assert server_threads <= WORKERS + 6
            for _ in range(2):
                cut += own_vhost.close_connections("reliability: connections dropped again")
                again = [new_instance(ctx, f"{marker}-again") for _ in range(50)]
                objects.wait_all([i.create_async() for i in again], timeout=60)
            assert os_threads(proc.proc.pid) <= server_threads + 1
            print(
                f"figures: connections cut {cut}, calls {len(calls)} ok {ok} "
                f"typed failures {len(failed)} ({sorted({type(e).__name__ for e in failed})}), "
                f"casts confirmed {len(confirmed_casts)} refused {len(refused_casts)}, "
                f"calls refused at send {len(refused_calls)}"
            )
        finally:
            caster_transport.cleanup()
            client.close()
            base.set_indirection_api(None)

    # No thread of this process outlives its transports, and no queue but the topic's stays.
    deadline = time.monotonic() + 10
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert threading.active_count() <= threads_before, [t.name for t in threading.enumerate()]
    leftover = set(own_vhost.queues()) - {topic, f"{topic}.s1", f"{topic}.dead"}
    assert leftover == set(), leftover
