"""Across real processes: ``conductor serve`` started as a user would, the broker between.

These need a broker that crosses processes: they run when CONDUCTOR_TEST_TRANSPORT_URL
is set (CI sets it; there they must run) and use PostgreSQL when
CONDUCTOR_TEST_DATABASE_URL is set, else a SQLite file both processes open.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import conductor
import objects
from objects import base
from objects.context import RequestContext
from tests.brokers import delete_queues
from tests.conductor.processes import REPO, child_env, serve, unique_topic

pytestmark = [pytest.mark.rabbit, pytest.mark.slow]


@pytest.fixture
def topic(broker_url: str) -> Iterator[str]:
    name = unique_topic()
    yield name
    delete_queues(broker_url, [name] + [f"{name}.{server}" for server in ("c1", "c2", "solo")])


@pytest.fixture
def client(broker_url: str, topic: str) -> Iterator[conductor.ConductorAPI]:
    objects.register_all()
    api = conductor.connect(broker_url, topic=topic, timeout=30)
    try:
        yield api
    finally:
        api.close()
        base.set_indirection_api(None)


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext(user_id="compute", project_id="p")


def new_instance(ctx: RequestContext, **kw: Any) -> Any:
    values: dict[str, Any] = dict(
        uuid=str(uuid.uuid4()), host="node-1", state="building", vcpus=1, memory_mb=512
    )
    values.update(kw)
    return objects.Instance(ctx, **values)


def test_mission_snippet_against_conductor_serve(
    broker_url: str, shared_database_url: str, topic: str, client: Any, ctx: RequestContext
) -> None:
    with serve(broker_url, shared_database_url, topic, server="solo"):
        made = new_instance(ctx, tags=["t"], metadata={"k": "v"})
        made.create()

        # The mission's snippet, exactly as a user writes it.
        MyObject = objects.Instance.get_async(ctx, made.id)
        MyObject.wait()
        MyObject.host = "bar"
        MyObject.save_async()
        MyObject.wait()

        fresh = objects.Instance.get(ctx, made.id)
        assert fresh.host == "bar"
        assert fresh.tags == ["t"] and fresh.metadata == {"k": "v"}
        assert MyObject.obj_what_changed() == set()


def test_hundreds_of_get_async_in_flight_across_processes(
    broker_url: str, shared_database_url: str, topic: str, client: Any, ctx: RequestContext
) -> None:
    with serve(broker_url, shared_database_url, topic, server="solo"):
        made = [new_instance(ctx, host=f"h{i}", vcpus=i % 7) for i in range(300)]
        objects.wait_all([inst.create_async() for inst in made], timeout=120)
        pending = [objects.Instance.get_async(ctx, inst.id) for inst in made]
        objects.wait_all(pending, timeout=120)
        assert [p.id for p in pending] == [m.id for m in made]
        assert [(p.host, p.vcpus) for p in pending] == [(f"h{i}", i % 7) for i in range(300)]


def run_peer(mode: str, broker_url: str, topic: str, instance_id: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("peer_client.py")),
            mode,
            broker_url,
            topic,
            str(instance_id),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
        cwd=REPO,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_old_client_at_1_0_reads_and_saves_without_wiping_newer_fields(
    broker_url: str, shared_database_url: str, topic: str, client: Any, ctx: RequestContext
) -> None:
    with serve(broker_url, shared_database_url, topic, server="solo"):
        made = new_instance(ctx, host="before", tags=["keep"], metadata={"keep": "me"})
        made.create()

        seen = run_peer("old", broker_url, topic, made.id)

        assert seen["version"] == "1.0"
        assert seen["host_before"] == "before"
        assert seen["has_tags"] is False and seen["has_metadata"] is False
        assert seen["host_after"] == "old-host" and seen["changes_after_save"] == []
        fresh = objects.Instance.get(ctx, made.id)
        assert fresh.host == "old-host"
        assert fresh.tags == ["keep"] and fresh.metadata == {"keep": "me"}


def test_client_one_minor_ahead_reads_and_saves(
    broker_url: str, shared_database_url: str, topic: str, client: Any, ctx: RequestContext
) -> None:
    with serve(broker_url, shared_database_url, topic, server="solo"):
        made = new_instance(ctx, host="before", tags=["keep"], metadata={"keep": "me"})
        made.create()

        seen = run_peer("ahead", broker_url, topic, made.id)

        assert seen["version"] == "1.3"
        assert seen["host_before"] == "before" and seen["has_tags"] and seen["has_metadata"]
        assert seen["host_after"] == "ahead-host"
        assert seen["description_after"] == "only the newer client knows this field"
        fresh = objects.Instance.get(ctx, made.id)
        assert fresh.host == "ahead-host"
        assert fresh.tags == ["keep"] and fresh.metadata == {"keep": "me"}


def test_two_conductors_share_a_topic_and_stopping_one_loses_nothing(
    broker_url: str, shared_database_url: str, topic: str, client: Any, ctx: RequestContext
) -> None:
    host = f"share-{uuid.uuid4().hex[:6]}"
    extra = ("--log-level", "DEBUG", "--workers", "4")
    with serve(broker_url, shared_database_url, topic, *extra, server="c1") as c1:
        with serve(broker_url, shared_database_url, topic, *extra, server="c2") as c2:
            # In waves, so the work spans many broker messages (requests in flight
            # together travel packed into one).
            first = [new_instance(ctx, host=host) for _ in range(200)]
            for wave in range(0, 200, 10):
                objects.wait_all(
                    [inst.create_async() for inst in first[wave : wave + 10]], timeout=120
                )

            second = [new_instance(ctx, host=host) for _ in range(200)]
            futures = [inst.create_async() for inst in second]
            time.sleep(0.05)
            assert c2.terminate() == 0, c2.output
            objects.wait_all(futures, timeout=120)

        served_by_c1 = c1.output.count("served Instance.create")
        served_by_c2 = c2.output.count("served Instance.create")
        assert served_by_c1 > 0 and served_by_c2 > 0, (served_by_c1, served_by_c2)

        rows = objects.InstanceList.get_by_host(ctx, host)
        assert len(rows) == 400
        assert len({r.uuid for r in rows}) == 400
        assert {r.uuid for r in rows} == {i.uuid for i in first + second}
