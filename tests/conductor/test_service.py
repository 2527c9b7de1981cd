"""The conductor in-process: memory:// transport, real database (SQLite, and PostgreSQL in CI)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import conductor
import objects
import transport
from objects import base, exception
from objects.context import RequestContext


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext(user_id="u1", project_id="p1")


@pytest.fixture
def running(database_url: str) -> Iterator[tuple[conductor.Conductor, conductor.ConductorAPI]]:
    objects.register_all()
    url = f"memory://svc-{uuid.uuid4().hex[:8]}"
    service = conductor.Conductor(url, database_url, topic="conductor", workers=4)
    service.start()
    client = conductor.connect(url, topic="conductor", timeout=20)
    try:
        yield service, client
    finally:
        client.close()
        service.stop()
        base.set_indirection_api(None)


def make_instance(ctx: RequestContext, **overrides: Any) -> Any:
    values: dict[str, Any] = dict(
        uuid=str(uuid.uuid4()), host="node-1", state="building", vcpus=2, memory_mb=2048
    )
    values.update(overrides)
    return objects.Instance(ctx, **values)


def test_connect_installs_the_conductor_as_indirection_api(running: Any) -> None:
    _, client = running
    assert base.get_indirection_api() is client


def test_mission_snippet_get_async_wait_save_async_wait(running: Any, ctx: RequestContext) -> None:
    created = make_instance(ctx, tags=["a"], metadata={"k": "v"})
    created.create()

    inst = objects.Instance.get_async(ctx, created.id)
    inst.wait()
    inst.host = "node-7"
    inst.save_async()
    inst.wait()

    fresh = objects.Instance.get(ctx, created.id)
    assert fresh.host == "node-7"
    assert fresh.tags == ["a"] and fresh.metadata == {"k": "v"}
    assert fresh.updated_at > created.updated_at
    assert inst.updated_at == fresh.updated_at
    assert fresh.obj_what_changed() == set()


def test_create_assigns_id_and_timestamps_and_leaves_no_changes(
    running: Any, ctx: RequestContext
) -> None:
    inst = make_instance(ctx)
    inst.create()
    assert isinstance(inst.id, int)
    assert inst.created_at.tzinfo is not None
    assert inst.tags == [] and inst.metadata == {}
    assert inst.obj_what_changed() == set()


def test_missing_instance_raises_not_found_on_the_caller(running: Any, ctx: RequestContext) -> None:
    with pytest.raises(exception.NotFound):
        objects.Instance.get(ctx, 10_000_000)
    pending = objects.Instance.get_async(ctx, 10_000_001)
    with pytest.raises(exception.NotFound):
        pending.wait()
    with pytest.raises(exception.NotFound):
        _ = pending.host


def test_stale_save_raises_concurrent_update_and_writes_nothing(
    running: Any, ctx: RequestContext
) -> None:
    inst = make_instance(ctx)
    inst.create()
    first = objects.Instance.get(ctx, inst.id)
    second = objects.Instance.get(ctx, inst.id)
    first.host = "winner"
    first.save()
    second.host = "loser"
    with pytest.raises(exception.ConcurrentUpdate):
        second.save()
    assert objects.Instance.get(ctx, inst.id).host == "winner"


def test_destroy_then_get_and_get_by_uuid_raise_not_found(
    running: Any, ctx: RequestContext
) -> None:
    inst = make_instance(ctx)
    inst.create()
    inst.destroy()
    with pytest.raises(exception.NotFound):
        objects.Instance.get(ctx, inst.id)
    with pytest.raises(exception.NotFound):
        objects.Instance.get_by_uuid(ctx, inst.uuid)


def test_refresh_sees_another_copy_save(running: Any, ctx: RequestContext) -> None:
    inst = make_instance(ctx)
    inst.create()
    other = objects.Instance.get_by_uuid(ctx, inst.uuid)
    other.task_state = "rebooting"
    other.save()
    inst.refresh()
    assert inst.task_state == "rebooting"
    assert inst.obj_what_changed() == set()


def test_in_place_tag_change_is_saved(running: Any, ctx: RequestContext) -> None:
    inst = make_instance(ctx, tags=["a"])
    inst.create()
    inst.tags.append("b")
    inst.metadata["x"] = "y"
    inst.save()
    fresh = objects.Instance.get(ctx, inst.id)
    assert fresh.tags == ["a", "b"] and fresh.metadata == {"x": "y"}


def test_flavor_travels_nested(running: Any, ctx: RequestContext) -> None:
    flavor = objects.Flavor(ctx, flavorid="f1", name="m1.tiny", vcpus=1, memory_mb=512, root_gb=1)
    flavor.create()
    inst = make_instance(ctx, flavor=flavor)
    inst.create()
    fresh = objects.Instance.get(ctx, inst.id)
    assert fresh.flavor.name == "m1.tiny" and fresh.flavor.vcpus == 1
    assert objects.Flavor.get_by_flavorid(ctx, "f1").id == flavor.id


def test_list_queries_filter_order_and_page(running: Any, ctx: RequestContext) -> None:
    host = f"h-{uuid.uuid4().hex[:6]}"
    made = [make_instance(ctx, host=host, vcpus=i % 3) for i in range(7)]
    for inst in made:
        inst.create_async()
    objects.wait_all(made)
    ids = [inst.id for inst in made]

    everything = objects.InstanceList.get_by_host(ctx, host)
    assert [i.id for i in everything] == sorted(ids)
    assert everything.obj_what_changed() == set()

    page1 = objects.InstanceList.get_all(ctx, filters={"host": host}, limit=3)
    page2 = objects.InstanceList.get_all(ctx, filters={"host": host}, limit=3, marker=page1[-1].id)
    assert [i.id for i in page1] + [i.id for i in page2] == sorted(ids)[:6]
    assert isinstance(page1[0:2], objects.InstanceList)

    some = objects.InstanceList.get_all(ctx, filters={"host": host, "vcpus": [0, 2]})
    assert {i.vcpus for i in some} == {0, 2}
    assert len(some) == sum(1 for i in made if i.vcpus in (0, 2))


def test_hundreds_of_get_async_in_flight_resolve_in_order(
    running: Any, ctx: RequestContext
) -> None:
    made = [make_instance(ctx, host=f"n{i}") for i in range(300)]
    futures = [inst.create_async() for inst in made]
    objects.wait_all(futures, timeout=60)
    pending = [objects.Instance.get_async(ctx, inst.id) for inst in made]
    objects.wait_all(pending, timeout=60)
    assert [p.host for p in pending] == [f"n{i}" for i in range(300)]
    assert [p.id for p in pending] == [m.id for m in made]


def test_compute_node_get_by_host_and_save(running: Any, ctx: RequestContext) -> None:
    host = f"cn-{uuid.uuid4().hex[:6]}"
    node = objects.ComputeNode(
        ctx, host=host, vcpus=16, vcpus_used=0, memory_mb=65536, memory_mb_used=0
    )
    node.create()
    a = objects.ComputeNode.get_by_host(ctx, host)
    b = objects.ComputeNode.get_by_host(ctx, host)
    a.vcpus_used = 4
    a.save()
    b.vcpus_used = 2
    with pytest.raises(exception.ConcurrentUpdate):
        b.save()
    assert objects.ComputeNode.get_by_host(ctx, host).vcpus_used == 4


def test_non_remotable_methods_are_refused_with_a_typed_error(
    running: Any, ctx: RequestContext
) -> None:
    _, client = running
    rpc = client._client
    for name in ("obj_reset_changes", "__init__", "fields", "no_such_method"):
        with pytest.raises(exception.ObjectActionError):
            rpc.call(
                ctx,
                "object_class_action_versions",
                objname="Instance",
                objmethod=name,
                object_versions={"Instance": "1.2"},
                args=[],
                kwargs={},
            )
    with pytest.raises(exception.UnsupportedObjectError):
        rpc.call(
            ctx,
            "object_class_action_versions",
            objname="NoSuchThing",
            objmethod="get",
            object_versions={},
            args=[1],
            kwargs={},
        )
    # The service keeps serving afterwards.
    inst = make_instance(ctx)
    inst.create()
    assert objects.Instance.get(ctx, inst.id).uuid == inst.uuid


def test_malformed_object_primitive_gets_a_typed_error(running: Any, ctx: RequestContext) -> None:
    _, client = running
    bad = {
        "versioned_object.name": "Instance",
        "versioned_object.namespace": "versionedobjects",
        "versioned_object.version": "1.2",
        "versioned_object.data": {"vcpus": "many"},
    }
    with pytest.raises((ValueError, TypeError)):
        client._client.call(ctx, "object_action", objinst=bad, objmethod="save", args=[], kwargs={})


def test_a_replayed_request_id_is_answered_from_the_stored_result(
    running: Any, ctx: RequestContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a conductor that committed a create but died before acknowledging it,
    # when the broker redelivers the same request (same id) to a conductor,
    # then the stored result is returned and nothing is written twice.
    service, _ = running
    endpoint = service._rpc_server_endpoints()[0]
    monkeypatch.setattr(transport, "current_request_id", lambda: "req-fixed-1")
    inst = make_instance(ctx, host="replay-host")
    with base.local_execution():
        ctx_server = RequestContext.from_dict(ctx.to_dict())
        first = endpoint.object_action(ctx_server, inst.obj_clone(), "create", [], {})
        second = endpoint.object_action(ctx_server, inst.obj_clone(), "create", [], {})
    assert first == second
    monkeypatch.undo()
    assert len(objects.InstanceList.get_by_host(ctx, "replay-host")) == 1


def test_in_one_process_stock_gets_are_answered_on_the_callers_thread(
    running: Any, ctx: RequestContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """memory:// with the conductor in this process: a stock get is read on the caller's
    thread (no sender, broker, worker or reply thread), with the answer and the typed
    errors the broker's way gives; whatever else still goes through the broker."""
    from conductor import lane

    created = make_instance(ctx, tags=["a"], metadata={"k": "v"})
    created.create()
    threads: list[str] = []
    serve_inline = lane.StockGets._serve_inline

    def watched(self: Any, request: Any, local_only: bool) -> Any:
        threads.append(threading.current_thread().name)
        return serve_inline(self, request, local_only)

    monkeypatch.setattr(lane.StockGets, "_serve_inline", watched)

    pending = objects.Instance.get_async(ctx, created.id)
    pending.wait()
    assert (pending.host, pending.tags, pending.metadata) == ("node-1", ["a"], {"k": "v"})
    with pytest.raises(exception.NotFound):
        objects.Instance.get(ctx, 10_000_000)
    # The found row: once, for its local form; the missing one: asked for its local form
    # (none), then answered the ordinary way (NotFound), all on this thread.
    assert threads == [threading.current_thread().name] * 3
    # A save still goes through the broker to a worker, and the next get sees it
    pending.host = "node-2"
    pending.save()
    assert objects.Instance.get(ctx, created.id).host == "node-2"
    assert len(threads) >= 3 and set(threads) == {threading.current_thread().name}


def test_in_one_process_a_found_row_is_taken_before_any_request_is_made(
    running: Any, ctx: RequestContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """memory:// with the conductor in this process: a stock get whose row is there is
    answered with the row itself (``RPCClient.answer_locally``), before any request is
    made; a missing row, and anything else, makes its request as ever."""
    created = make_instance(ctx, tags=["a"], metadata={"k": "v"})
    created.create()
    calls: list[str] = []
    start_call = transport.RPCClient.start_call

    def counted(self: Any, ctxt: Any, method: str, kwargs: Any, **rest: Any) -> Any:
        calls.append(kwargs.get("objmethod", method))
        return start_call(self, ctxt, method, kwargs, **rest)

    monkeypatch.setattr(transport.RPCClient, "start_call", counted)

    pending = objects.Instance.get_async(ctx, created.id)
    assert calls == []  # loaded before get_async returned, with no request
    pending.wait()
    got = objects.Instance.get(ctx, created.id)
    assert calls == []
    assert pending.obj_to_primitive() == got.obj_to_primitive()
    assert (got.host, got.tags, got.metadata) == ("node-1", ["a"], {"k": "v"})
    assert not got.obj_what_changed()
    with pytest.raises(exception.NotFound):
        objects.Instance.get(ctx, 10_000_000)
    assert calls == ["get"]
    got.host = "node-2"
    got.save()
    assert calls == ["get", "save"]
    assert objects.Instance.get(ctx, created.id).host == "node-2"
    assert calls == ["get", "save"]


def test_gets_answered_on_the_callers_thread_share_nothing(
    running: Any, ctx: RequestContext
) -> None:
    """The row's primitive reaches the caller without a copy through JSON
    (``transport.FreshJSON``): two gets of one row must still hold values of their own,
    and a change made in place is still seen as a change."""
    flavor = objects.Flavor(
        ctx, flavorid=f"f-{uuid.uuid4().hex[:8]}", name="m1", vcpus=2, memory_mb=512, root_gb=1
    )
    flavor.create()
    created = make_instance(ctx, tags=["a"], metadata={"k": "v"}, flavor=flavor)
    created.create()

    first = objects.Instance.get(ctx, created.id)
    second = objects.Instance.get(ctx, created.id)
    first.metadata["k"] = "changed"
    first.tags.append("b")
    first.flavor.vcpus += 1

    assert second.metadata == {"k": "v"} and second.tags == ["a"]
    assert second.flavor.vcpus == 2
    assert {"metadata", "tags", "flavor"} <= first.obj_what_changed()
    assert not second.obj_what_changed()
    first.save()
    again = objects.Instance.get(ctx, created.id)
    assert again.metadata == {"k": "changed"} and again.tags == ["a", "b"]


def test_in_one_process_a_pending_get_loads_its_row_as_it_is(
    running: Any, ctx: RequestContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A get answered on the caller's thread takes its row's record
    (``objects.storage.StoredRecord``): no primitive is made and read back. A pending get
    (``get_async``) loads it, a plain get builds its result from it; each holds nothing
    another get holds, and its changes are seen and saved. (That the record gives the
    object its primitive would: ``test_get_lane``.)"""
    from conductor import lane
    from objects.storage import StoredRecord
    from tests.conductor.lanes import loaded_state

    flavor = objects.Flavor(
        ctx, flavorid=f"f-{uuid.uuid4().hex[:8]}", name="m1", vcpus=2, memory_mb=512, root_gb=1
    )
    flavor.create()
    created = make_instance(ctx, tags=["a"], metadata={"k": "v"}, flavor=flavor)
    created.create()
    handed: list[Any] = []
    local = lane._RowAnswer.local

    def watched(self: Any, limit: int | None) -> Any:
        handed.append(local(self, limit))
        return handed[-1]

    monkeypatch.setattr(lane._RowAnswer, "local", watched)

    first = objects.Instance.get_async(ctx, created.id)
    second = objects.Instance.get_async(ctx, created.id)
    first.wait()
    second.wait()
    plain = objects.Instance.get(ctx, created.id)  # a plain get builds it from the record
    assert [type(value) for value in handed] == [StoredRecord] * 3
    assert loaded_state(first) == loaded_state(plain) == loaded_state(second)
    assert first._context is ctx and first.flavor._context is ctx

    first.metadata["k"] = "changed"
    first.tags.append("b")
    first.flavor.vcpus += 1
    assert second.metadata == {"k": "v"} and second.tags == ["a"] and second.flavor.vcpus == 2
    assert {"metadata", "tags", "flavor"} <= first.obj_what_changed()
    assert not second.obj_what_changed()
    first.save()
    again = objects.Instance.get_async(ctx, created.id).wait()
    assert again.metadata == {"k": "changed"} and again.tags == ["a", "b"]
    assert again.obj_revision == first.obj_revision
