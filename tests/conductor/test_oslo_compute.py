"""A compute process built the OpenStack way (oslo.versionedobjects classes whose
indirection API is an oslo.messaging RPC client, as nova's conductor rpcapi) reads and
saves through ``conductor serve``: a real CLI process, the real oslo packages."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from objects import exception
from tests.brokers import delete_queues
from tests.conductor.processes import serve, unique_topic
from tests.openstack import (
    ConductorRPCAPI,
    NovaFlavor,
    NovaObjectSerializer,
    Oslo,
    OvoInstance,
    om,
    oslo_context,
    ovo_base,
)

pytestmark = [pytest.mark.rabbit, pytest.mark.slow]


@pytest.fixture
def topic(broker_url: str) -> Iterator[str]:
    name = unique_topic()
    yield name
    delete_queues(broker_url, [name, f"{name}.solo", f"{name}.dead"])


@pytest.fixture
def oslo(broker_url: str) -> Iterator[Oslo]:
    made = Oslo(broker_url, allowed_remote_exmods=["objects.exception"])
    yield made
    made.close()


@pytest.fixture
def compute(oslo: Oslo, topic: str) -> Iterator[None]:
    ovo_base.VersionedObject.indirection_api = ConductorRPCAPI(oslo, topic)
    try:
        yield
    finally:
        ovo_base.VersionedObject.indirection_api = None


def _ctx() -> Any:
    return oslo_context.RequestContext(user_id="compute", project_id="p")


def test_ovo_compute_creates_gets_and_saves_through_conductor_serve(
    broker_url: str, shared_database_url: str, topic: str, compute: None
) -> None:
    ctx = _ctx()
    with serve(broker_url, shared_database_url, topic, server="solo"):
        made = OvoInstance(
            ctx, uuid=str(uuid.uuid4()), host="node-1", state="building", vcpus=1, memory_mb=512
        )
        made.create()
        assert made.id is not None and made.obj_revision is not None
        assert made.obj_what_changed() == set()

        got = OvoInstance.get(ctx, made.id)
        assert isinstance(got, OvoInstance)
        assert (got.uuid, got.host, got.vcpus) == (made.uuid, "node-1", 1)
        got.host = "node-2"
        got.task_state = "spawning"
        got.save()
        assert got.obj_what_changed() == set()
        assert got.obj_revision > made.obj_revision

        fresh = OvoInstance.get(ctx, made.id)
        assert (fresh.host, fresh.task_state) == ("node-2", "spawning")

        # Optimistic: the copy read before that save is stale, and its save says so.
        made.host = "node-3"
        # (objects.exception is on this caller's allow-list: raised as itself.)
        with pytest.raises(exception.ConcurrentUpdate, match="changed by someone else"):
            made.save()
        assert OvoInstance.get(ctx, made.id).host == "node-2"

        # A plain oslo.messaging call of a method that is not there: a typed refusal.
        client = ConductorRPCAPI.__new__(ConductorRPCAPI)
        client.client = ovo_base.VersionedObject.indirection_api.client
        with pytest.raises(om.RemoteError) as refused:
            client.client.call(ctx, "object_destroy_everything")
        assert refused.value.exc_type == "NoSuchMethod"


def test_ovo_compute_save_runs_once_when_its_request_is_delivered_twice(
    broker_url: str, shared_database_url: str, topic: str, oslo: Oslo, compute: None
) -> None:
    # Given a save whose oslo request (same _msg_id) reaches the conductor twice
    ctx = _ctx()
    with serve(broker_url, shared_database_url, topic, server="solo"):
        made = OvoInstance(
            ctx, uuid=str(uuid.uuid4()), host="a", state="building", vcpus=1, memory_mb=512
        )
        made.create()
        got = OvoInstance.get(ctx, made.id)
        driver = oslo.transport._driver
        replies: list[dict[str, Any]] = []
        both = threading.Event()
        real_put = driver._waiter.waiters.put

        def record(msg_id: str, message: dict[str, Any]) -> None:
            replies.append(dict(message))
            if len(replies) == 2:
                both.set()
            real_put(msg_id, message)

        connection_class = type(driver._connection_pool.get(retry=0))
        real_topic_send = connection_class.topic_send

        def topic_send_twice(self: Any, exchange_name: str, topic: str, msg: Any, **kw: Any) -> Any:
            real_topic_send(self, exchange_name, topic, msg, **kw)
            return real_topic_send(self, exchange_name, topic, msg, **kw)

        driver._waiter.waiters.put = record
        connection_class.topic_send = topic_send_twice
        try:
            got.host = "b"
            got.save()
        finally:
            connection_class.topic_send = real_topic_send
        assert both.wait(10), replies
        driver._waiter.waiters.put = real_put
        # Then both deliveries were answered with the one save's result (the second is a
        # replay, not a second run that would fail as stale)
        assert [r["failure"] for r in replies] == [None, None]
        assert replies[0]["result"] == replies[1]["result"]
        fresh = OvoInstance.get(ctx, made.id)
        assert fresh.host == "b" and fresh.obj_revision == got.obj_revision


def test_objects_of_nova_namespace_read_and_answered_in_it(
    broker_url: str, shared_database_url: str, topic: str, oslo: Oslo
) -> None:
    # Given a conductor told about nova's namespace, and a compute whose objects are nova's
    # (nova_object.* keys, namespace "nova"), as nova's own NovaObjectSerializer reads them
    ovo_base.VersionedObject.indirection_api = ConductorRPCAPI(
        oslo, topic, serializer=NovaObjectSerializer()
    )
    ctx = _ctx()
    flavorid = uuid.uuid4().hex[:12]
    try:
        with serve(
            broker_url, shared_database_url, topic, "--object-namespace", "nova", server="solo"
        ):
            made = NovaFlavor(
                ctx, flavorid=flavorid, name="m1.nova", vcpus=2, memory_mb=2048, root_gb=20
            )
            made.create()  # object_action: a nova primitive in, updates out
            assert made.id is not None and made.obj_what_changed() == set()
            # A class action carries no object: 3.x answers in the configured namespace.
            got = NovaFlavor.get_by_flavorid(ctx, flavorid)
            assert isinstance(got, NovaFlavor)
            assert (got.id, got.name, got.vcpus) == (made.id, "m1.nova", 2)
    finally:
        ovo_base.VersionedObject.indirection_api = None
