"""The built-in domain through local bodies and through the JSON-round-tripping API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

import objects
from objects import exception
from objects.fixture import MemoryStorage


class RecordingStorage(MemoryStorage):
    """MemoryStorage that remembers what each update wrote."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[dict[str, Any]] = []

    def update(
        self, objname: str, id: int, values: Any, expected_revision: int | None = None
    ) -> Any:
        self.writes.append(dict(values))
        return super().update(objname, id, values, expected_revision)


@pytest.fixture
def storage() -> RecordingStorage:
    return RecordingStorage()


def _flavor(ctx: Any, flavorid: str = "f1") -> Any:
    flavor = objects.Flavor(
        ctx, flavorid=flavorid, name="m1.tiny", vcpus=1, memory_mb=512, root_gb=1
    )
    flavor.create()
    return flavor


def _instance(ctx: Any, **values: Any) -> Any:
    inst = objects.Instance(ctx, **{"host": "node-1", "vcpus": 2, "memory_mb": 2048, **values})
    inst.create()
    return inst


def test_flavor_create_and_lookups(ctx: Any) -> None:
    flavor = _flavor(ctx)
    assert flavor.id == 1
    assert flavor.obj_what_changed() == set()
    assert objects.Flavor.get(ctx, flavor.id) == flavor
    assert objects.Flavor.get_by_flavorid(ctx, "f1") == flavor
    with pytest.raises(exception.NotFound):
        objects.Flavor.get_by_flavorid(ctx, "nope")
    with pytest.raises(exception.DuplicateEntry):
        _flavor(ctx)


def test_instance_create_fills_what_the_conductor_owns(ctx: Any) -> None:
    inst = _instance(ctx)
    assert inst.id == 1
    assert str(uuid.UUID(inst.uuid)) == inst.uuid
    assert inst.state == "building"
    assert inst.tags == [] and inst.metadata == {}
    assert inst.task_state is None
    assert inst.created_at.tzinfo is dt.UTC
    assert inst.updated_at is not None
    assert inst.obj_revision == 1
    assert inst.obj_what_changed() == set()
    with pytest.raises(exception.ObjectActionError, match="already exists"):
        inst.create()


def test_instance_get_and_get_by_uuid_with_a_nested_flavor(ctx: Any) -> None:
    inst = _instance(ctx, flavor=_flavor(ctx), tags=["a"], metadata={"k": "v"})
    by_id = objects.Instance.get(ctx, inst.id)
    by_uuid = objects.Instance.get_by_uuid(ctx, inst.uuid.upper())
    assert by_id == inst == by_uuid
    assert by_id.flavor.name == "m1.tiny"
    assert by_id.obj_what_changed() == set()
    assert by_id.flavor.obj_what_changed() == set()


def test_save_writes_only_changes_and_bumps_revision_and_updated_at(ctx: Any, storage: Any) -> None:
    inst = _instance(ctx)
    before = inst.updated_at
    inst.host = "node-2"
    inst.tags.append("in-place")
    inst.save()
    assert storage.writes == [{"host": "node-2", "tags": ["in-place"]}]
    assert inst.obj_what_changed() == set()
    assert inst.obj_revision == 2
    assert inst.updated_at > before
    fresh = objects.Instance.get(ctx, inst.id)
    assert (fresh.host, fresh.tags) == ("node-2", ["in-place"])


def test_save_without_changes_writes_nothing(ctx: Any, storage: Any) -> None:
    inst = _instance(ctx)
    inst.save()
    assert storage.writes == []
    assert inst.obj_revision == 1


def test_nested_flavor_change_is_saved(ctx: Any) -> None:
    inst = _instance(ctx, flavor=_flavor(ctx))
    inst.flavor.name = "renamed"
    assert inst.obj_what_changed() == {"flavor"}
    inst.save()
    assert inst.obj_what_changed() == set()
    assert objects.Instance.get(ctx, inst.id).flavor.name == "renamed"


def test_stale_save_raises_concurrent_update_and_writes_nothing(ctx: Any) -> None:
    inst = _instance(ctx)
    first = objects.Instance.get(ctx, inst.id)
    second = objects.Instance.get(ctx, inst.id)
    first.host = "winner"
    first.save()
    second.host = "loser"
    with pytest.raises(exception.ConcurrentUpdate) as caught:
        second.save()
    assert caught.value.kwargs["expected"] == 1 and caught.value.kwargs["actual"] == 2
    assert objects.Instance.get(ctx, inst.id).host == "winner"
    second.refresh()
    assert second.host == "winner" and second.obj_what_changed() == set()
    second.host = "loser"
    second.save()
    assert objects.Instance.get(ctx, inst.id).host == "loser"


def test_destroy_then_lookups_raise_not_found(ctx: Any) -> None:
    inst = _instance(ctx)
    stale = objects.Instance.get(ctx, inst.id)
    inst.task_state = "deleting"
    inst.save()
    with pytest.raises(exception.ConcurrentUpdate):
        stale.destroy()
    inst.destroy()
    with pytest.raises(exception.NotFound):
        objects.Instance.get(ctx, inst.id)
    with pytest.raises(exception.NotFound):
        objects.Instance.get_by_uuid(ctx, inst.uuid)


def test_actions_on_a_never_created_instance_are_refused(ctx: Any) -> None:
    inst = objects.Instance(ctx, vcpus=1, memory_mb=1)
    for action in (inst.save, inst.destroy, inst.refresh):
        with pytest.raises(exception.ObjectActionError, match="never created"):
            action()


def test_unset_fields_are_lazy_loaded_through_a_remotable_get(ctx: Any, mode: Any) -> None:
    inst = _instance(ctx, tags=["t"])
    partial = objects.Instance(ctx, id=inst.id)
    partial.obj_reset_changes()
    calls_before = len(mode.calls) if mode is not None else 0
    assert partial.tags == ["t"]
    assert partial.host == "node-1"
    assert partial.obj_what_changed() == set()
    if mode is not None:
        assert mode.calls[calls_before:] == [("Instance", "get")]
    with pytest.raises(exception.OrphanedObjectError):
        objects.Instance(id=inst.id).host  # noqa: B018
    with pytest.raises(exception.ObjectActionError, match="never created"):
        objects.Instance(ctx).host  # noqa: B018


def test_instance_list_queries(ctx: Any) -> None:
    made = [_instance(ctx, host=f"h{i % 2}", vcpus=i) for i in range(1, 7)]
    everything = objects.InstanceList.get_all(ctx)
    assert [i.id for i in everything] == [m.id for m in made]
    assert everything.obj_what_changed() == set()
    on_h1 = objects.InstanceList.get_by_host(ctx, "h1")
    assert [i.vcpus for i in on_h1] == [1, 3, 5]
    page1 = objects.InstanceList.get_all(ctx, filters={"host": "h0"}, limit=2)
    page2 = objects.InstanceList.get_all(ctx, filters={"host": "h0"}, limit=2, marker=page1[-1].id)
    assert [i.vcpus for i in page1] == [2, 4] and [i.vcpus for i in page2] == [6]
    some = objects.InstanceList.get_all(ctx, filters={"vcpus": [1, 6]})
    assert [i.vcpus for i in some] == [1, 6]
    assert isinstance(everything[1:3], objects.InstanceList)
    with pytest.raises(exception.ObjectValueError, match="bogus"):
        objects.InstanceList.get_all(ctx, filters={"bogus": 1})


def test_compute_node(ctx: Any) -> None:
    node = objects.ComputeNode(
        ctx, host="cn1", vcpus=16, vcpus_used=0, memory_mb=4096, memory_mb_used=0
    )
    node.create()
    a = objects.ComputeNode.get_by_host(ctx, "cn1")
    b = objects.ComputeNode.get_by_host(ctx, "cn1")
    a.vcpus_used = 4
    a.save()
    b.vcpus_used = 8
    with pytest.raises(exception.ConcurrentUpdate):
        b.save()
    assert objects.ComputeNode.get_by_host(ctx, "cn1").vcpus_used == 4


def test_the_design_flow_with_futures(ctx: Any) -> None:
    created = _instance(ctx)
    inst = objects.Instance.get_async(ctx, created.id)
    assert isinstance(inst, objects.Instance)
    inst.wait()
    inst.host = "node-7"
    future = inst.save_async()
    inst.wait()
    assert future.done() and future.result() is None
    assert inst.obj_what_changed() == set()
    assert inst.updated_at > created.updated_at
    assert objects.Instance.get(ctx, created.id).host == "node-7"
    missing = objects.Instance.get_async(ctx, 10_000)
    with pytest.raises(exception.NotFound):
        missing.wait()


def test_many_operations_in_flight(ctx: Any) -> None:
    made = [objects.Instance(ctx, host="bulk", vcpus=1, memory_mb=1) for _ in range(8)]
    objects.wait_all([m.create_async() for m in made], timeout=10)
    loaded = objects.wait_all([objects.Instance.get_async(ctx, m.id) for m in made], timeout=10)
    assert sorted(i.id for i in loaded) == sorted(m.id for m in made)
    lists = objects.wait_all([objects.InstanceList.get_by_host_async(ctx, "bulk")], timeout=10)
    assert len(lists[0]) == 8
