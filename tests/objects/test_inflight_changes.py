"""Changes made while an object's own remotable call is in flight (issue 11, item 1).

The reply of a call is applied to the object when it arrives; whatever the caller changed
after the request left must stay changed (and keep its value), so the next save writes it.
The gated API holds every reply until ``release()``, so "after the request left" is certain.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import objects
from objects import base
from objects.context import RequestContext
from objects.fixture import LocalIndirectionAPI, MemoryStorage
from tests.objects.counters import GatedAPI


@pytest.fixture
def gated(storage: MemoryStorage) -> Iterator[GatedAPI]:
    api = GatedAPI(storage)
    base.set_indirection_api(api)
    try:
        yield api
    finally:
        api.release()
        base.set_indirection_api(None)
        api.close()


@pytest.fixture
def caller() -> RequestContext:
    return RequestContext(user_id="u1", project_id="p1")


def stored(db_ctx: RequestContext, **overrides: Any) -> Any:
    values: dict[str, Any] = dict(
        uuid=str(uuid.uuid4()), host="node-1", state="building", vcpus=1, memory_mb=512
    )
    values.update(overrides)
    with base.local_execution():
        inst = objects.Instance(db_ctx, **values)
        inst.create()
    return inst


def read(db_ctx: RequestContext, id: int) -> Any:
    with base.local_execution():
        return objects.Instance.get(db_ctx, id)


def loaded(caller: RequestContext, gated: GatedAPI, id: int) -> Any:
    gated.release()
    inst = objects.Instance.get(caller, id)
    gated.gate.clear()
    return inst


def test_assignment_after_save_async_left_stays_changed(
    gated: GatedAPI, caller: RequestContext, db_ctx: RequestContext
) -> None:
    inst = loaded(caller, gated, stored(db_ctx).id)
    inst.host = "h1"
    future = inst.save_async()
    inst.task_state = "x"
    gated.release()
    future.result(10)
    assert inst.task_state == "x"
    assert inst.obj_what_changed() == {"task_state"}
    assert read(db_ctx, inst.id).task_state is None  # not written yet
    inst.save()
    row = read(db_ctx, inst.id)
    assert (row.host, row.task_state) == ("h1", "x")
    assert inst.obj_what_changed() == set()


def test_change_between_two_save_async_is_sent_by_the_second(
    gated: GatedAPI, caller: RequestContext, db_ctx: RequestContext
) -> None:
    inst = loaded(caller, gated, stored(db_ctx).id)
    inst.host = "h1"
    first = inst.save_async()
    inst.task_state = "x"
    # The second call waits for the first one's reply before it is sent.
    threading.Timer(0.2, gated.release).start()
    second = inst.save_async()
    first.result(10)
    second.result(10)
    row = read(db_ctx, inst.id)
    assert (row.host, row.task_state) == ("h1", "x")
    assert inst.obj_what_changed() == set()
    assert inst.obj_revision == row.obj_revision


def test_a_sent_field_changed_again_keeps_the_newer_value(
    gated: GatedAPI, caller: RequestContext, db_ctx: RequestContext
) -> None:
    inst = loaded(caller, gated, stored(db_ctx, tags=["a"], metadata={"k": "v"}).id)
    inst.host = "h1"
    inst.tags.append("b")
    future = inst.save_async()
    inst.host = "h2"
    inst.tags.append("c")
    inst.metadata["k2"] = "v2"
    gated.release()
    future.result(10)
    assert (inst.host, inst.tags, inst.metadata) == ("h2", ["a", "b", "c"], {"k": "v", "k2": "v2"})
    assert inst.obj_what_changed() == {"host", "tags", "metadata"}
    row = read(db_ctx, inst.id)
    assert (row.host, row.tags, row.metadata) == ("h1", ["a", "b"], {"k": "v"})
    inst.save()
    row = read(db_ctx, inst.id)
    assert (row.host, row.tags, row.metadata) == ("h2", ["a", "b", "c"], {"k": "v", "k2": "v2"})
    assert inst.obj_what_changed() == set()


def test_a_sent_field_set_to_none_or_back_while_in_flight(
    gated: GatedAPI, caller: RequestContext, db_ctx: RequestContext
) -> None:
    # None against a sent value (and a value against a sent None) is a change; the same
    # value assigned again (an equal, not identical string) is not.
    inst = loaded(caller, gated, stored(db_ctx, task_state="t0").id)
    inst.host = "h1"
    inst.task_state = None
    inst.vcpus = 1000
    future = inst.save_async()
    inst.host = None
    inst.task_state = "t1"
    inst.vcpus = int("1000")
    gated.release()
    future.result(10)
    assert (inst.host, inst.task_state, inst.vcpus) == (None, "t1", 1000)
    assert inst.obj_what_changed() == {"host", "task_state"}
    row = read(db_ctx, inst.id)
    assert (row.host, row.task_state, row.vcpus) == ("h1", None, 1000)


def test_sent_changes_that_stayed_are_cleared_and_server_values_applied(
    gated: GatedAPI, caller: RequestContext, db_ctx: RequestContext
) -> None:
    inst = loaded(caller, gated, stored(db_ctx, tags=["a"]).id)
    before = inst.updated_at
    inst.host = "h1"
    inst.tags.append("b")
    future = inst.save_async()
    inst.host = "h1"  # assigned again, to the value already sent
    gated.release()
    future.result(10)
    assert inst.updated_at > before
    assert inst.obj_revision == read(db_ctx, inst.id).obj_revision
    # host was assigned again after the request left, but to the value written: the
    # object and the row agree, nothing is left to write.
    assert inst.obj_what_changed() == set()
    inst.tags.append("c")  # in-place changes are still tracked against what was saved
    assert inst.obj_what_changed() == {"tags"}


def test_nested_object_changed_while_in_flight_stays_changed(
    gated: GatedAPI, caller: RequestContext, db_ctx: RequestContext
) -> None:
    flavor = objects.Flavor(flavorid="f1", name="small", vcpus=1, memory_mb=512, root_gb=1)
    inst = loaded(caller, gated, stored(db_ctx, flavor=flavor).id)
    inst.host = "h1"
    future = inst.save_async()
    inst.flavor.name = "large"
    gated.release()
    future.result(10)
    assert inst.flavor.name == "large"
    assert inst.obj_what_changed() == {"flavor"}
    inst.save()
    assert read(db_ctx, inst.id).flavor.name == "large"
    assert inst.obj_what_changed() == set()


def test_assignments_racing_the_replies_are_never_lost(
    storage: MemoryStorage, caller: RequestContext, db_ctx: RequestContext
) -> None:
    # The reply is applied on the API's thread while this one keeps assigning: whatever
    # the interleaving, the last value assigned is what the final save leaves in the row.
    api = LocalIndirectionAPI(storage)
    base.set_indirection_api(api)
    try:
        inst = objects.Instance.get(caller, stored(db_ctx).id)
        for i in range(200):
            inst.host = f"h{i}"
            future = inst.save_async()
            inst.task_state = f"t{i}"
            future.result(10)
            assert inst.task_state == f"t{i}"
            assert "task_state" in inst.obj_what_changed()
        inst.save()
        row = read(db_ctx, inst.id)
        assert (row.host, row.task_state) == ("h199", "t199")
        assert inst.obj_what_changed() == set()
    finally:
        base.set_indirection_api(None)
        api.close()
