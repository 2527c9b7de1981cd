"""What a save writes, through a real conductor: the embedded default (memory:// + SQLite)
and RabbitMQ + PostgreSQL (when CONDUCTOR_TEST_TRANSPORT_URL / _DATABASE_URL are set).

Issue 11: changes made while a save is in flight must not be lost; a save of an object
that was never read must not overwrite newer data; ids are validated before any query.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import objects
from objects import exception
from objects.context import RequestContext


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext(user_id="u1", project_id="p1")


def new_instance(ctx: RequestContext, **overrides: Any) -> Any:
    values: dict[str, Any] = dict(
        uuid=str(uuid.uuid4()), host="node-1", state="building", vcpus=2, memory_mb=2048
    )
    values.update(overrides)
    inst = objects.Instance(ctx, **values)
    inst.create()
    return inst


# -- item 1: a change made while the object's own save is in flight ---------------------


def test_change_made_while_save_is_in_flight_is_written_by_the_next_save(
    stack: str, ctx: RequestContext
) -> None:
    inst = new_instance(ctx)
    inst.host = "h1"
    future = inst.save_async()
    inst.task_state = "x"
    future.result(30)
    assert inst.task_state == "x"
    assert "task_state" in inst.obj_what_changed()
    inst.save()
    assert inst.obj_what_changed() == set()
    fresh = objects.Instance.get(ctx, inst.id)
    assert (fresh.host, fresh.task_state) == ("h1", "x")


def test_change_between_two_save_async_is_written_by_the_second(
    stack: str, ctx: RequestContext
) -> None:
    inst = new_instance(ctx)
    inst.host = "h1"
    first = inst.save_async()
    inst.task_state = "x"
    second = inst.save_async()
    first.result(30)
    second.result(30)
    assert inst.obj_what_changed() == set()
    fresh = objects.Instance.get(ctx, inst.id)
    assert (fresh.host, fresh.task_state) == ("h1", "x")


def test_field_saved_then_changed_again_while_in_flight_keeps_the_new_value(
    stack: str, ctx: RequestContext
) -> None:
    inst = new_instance(ctx)
    inst.host = "h1"
    future = inst.save_async()
    inst.host = "h2"
    inst.tags.append("late")
    future.result(30)
    assert inst.host == "h2" and inst.tags == ["late"]
    assert {"host", "tags"} <= inst.obj_what_changed()
    inst.save()
    fresh = objects.Instance.get(ctx, inst.id)
    assert (fresh.host, fresh.tags) == ("h2", ["late"])
    assert inst.obj_what_changed() == set()


# -- item 2: a save of an object that was never read ------------------------------------


def test_save_of_an_object_never_read_is_refused_and_writes_nothing(
    stack: str, ctx: RequestContext
) -> None:
    inst = new_instance(ctx)
    newer = objects.Instance.get(ctx, inst.id)
    newer.host = "newer"
    newer.save()
    blind = objects.Instance(ctx, id=inst.id)
    blind.host = "blind"
    with pytest.raises(exception.ObjectActionError, match=r"never read.*get\(\)") as err:
        blind.save()
    assert not isinstance(err.value, exception.ConcurrentUpdate)
    assert err.value.kwargs["action"] == "save"
    assert objects.Instance.get(ctx, inst.id).host == "newer"
    assert blind.obj_what_changed() >= {"host"}  # nothing was taken back


def test_an_object_filled_by_lazy_loading_saves_against_what_it_loaded(
    stack: str, ctx: RequestContext
) -> None:
    inst = new_instance(ctx)
    lazy = objects.Instance(ctx, id=inst.id)
    lazy.obj_reset_changes()
    assert lazy.vcpus == 2  # lazy-loads every unset field, and the revision with them
    lazy.host = "lazy"
    lazy.save()
    assert objects.Instance.get(ctx, inst.id).host == "lazy"
    stale = objects.Instance(ctx, id=inst.id)
    stale.obj_reset_changes()
    assert stale.memory_mb == 2048
    inst.refresh()
    inst.task_state = "elsewhere"
    inst.save()
    stale.host = "stale"
    with pytest.raises(exception.ConcurrentUpdate):
        stale.save()
    assert objects.Instance.get(ctx, inst.id).host == "lazy"


# -- item 11: ids are validated as the id field before any query -------------------------


@pytest.mark.parametrize("bad", [1.5, True, False, "1; drop", [1], {"id": 1}])
def test_get_with_an_id_that_is_no_integer_is_refused_before_any_query(
    stack: str, ctx: RequestContext, bad: Any
) -> None:
    new_instance(ctx)
    new_instance(ctx)
    with pytest.raises(exception.ObjectValueError, match="id") as err:
        objects.Instance.get(ctx, bad)
    assert not isinstance(err.value, exception.DatabaseError)
    with pytest.raises(exception.ObjectValueError):
        objects.Instance.get_async(ctx, bad).wait(30)


def test_get_takes_what_the_id_field_takes(stack: str, ctx: RequestContext) -> None:
    new_instance(ctx)
    second = new_instance(ctx)
    assert objects.Instance.get(ctx, 2.0).id == second.id == 2
    assert objects.Instance.get(ctx, " 2 ").id == 2
    with pytest.raises(exception.NotFound):
        objects.Instance.get(ctx, 3)


@pytest.mark.parametrize(
    "filters",
    [
        {"id": 1.5},
        {"id": [1, 1.5]},
        {"id": True},
        {"vcpus": "many"},
        {"state": "flying"},
        {"host": ["a", None, {}]},
    ],
)
def test_list_filters_are_validated_as_their_fields(
    stack: str, ctx: RequestContext, filters: dict[str, Any]
) -> None:
    new_instance(ctx)
    with pytest.raises(exception.ObjectValueError) as err:
        objects.InstanceList.get_all(ctx, filters=filters)
    assert not isinstance(err.value, exception.DatabaseError)


def test_list_filters_and_marker_are_coerced_like_the_fields(
    stack: str, ctx: RequestContext
) -> None:
    first = new_instance(ctx)
    second = new_instance(ctx, vcpus=4)
    found = objects.InstanceList.get_all(ctx, filters={"id": [2.0, "1"], "vcpus": "4"})
    assert [i.id for i in found] == [second.id]
    assert [i.id for i in objects.InstanceList.get_all(ctx, marker=first.id)] == [second.id]
    with pytest.raises(exception.ObjectValueError):
        objects.InstanceList.get_all(ctx, marker=True)


def test_other_objects_keys_are_validated_too(stack: str, ctx: RequestContext) -> None:
    with pytest.raises(exception.ObjectValueError, match="Flavor.id"):
        objects.Flavor.get(ctx, 1.5)
    with pytest.raises(exception.ObjectValueError, match="ComputeNode.host"):
        objects.ComputeNode.get_by_host(ctx, ["node-1"])
