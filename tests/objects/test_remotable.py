"""@remotable and @remotable_classmethod: local bodies, or the indirection API."""

from __future__ import annotations

from typing import Any

import pytest

from objects import base, exception
from objects.context import RequestContext
from objects.fixture import LocalIndirectionAPI
from objects.indirection import IndirectionAPI
from tests.objects.counters import make_counter


@pytest.fixture
def counter_cls(registry: Any) -> Any:
    return make_counter(registry)


def test_classmethod_result_gets_the_callers_context(counter_cls: Any, ctx: Any, mode: Any) -> None:
    counter = counter_cls.get(ctx, 4)
    assert type(counter) is counter_cls
    assert counter.value == 40
    assert counter._context is ctx
    assert counter.obj_what_changed() == set()
    assert counter.obj_revision == 1
    if mode is not None:
        assert mode.calls == [("Counter", "get")]


def test_objects_travel_as_arguments(counter_cls: Any, ctx: Any) -> None:
    counters = [counter_cls.get(ctx, 1), counter_cls.get(ctx, 2)]
    assert counter_cls.total(ctx, counters) == 30
    assert counter_cls.total(ctx, counters=counters) == 30


def test_instance_method_applies_the_changes_in_place(
    counter_cls: Any, ctx: Any, mode: Any
) -> None:
    counter = counter_cls.get(ctx, 1)
    assert counter.bump(5) == 15
    assert counter.value == 15
    assert counter.note == "bumped by 5"
    assert counter.obj_what_changed() == {"value", "note"}
    if mode is not None:
        assert ("Counter", "bump") in mode.calls


def test_read_only_fields_and_revision_come_back_from_the_server(
    counter_cls: Any, ctx: Any
) -> None:
    counter = counter_cls.get(ctx, 1)
    counter.renumber(99)
    assert counter.id == 99
    assert counter.obj_revision == 2
    assert counter.obj_what_changed() == set()


def test_errors_of_the_body_reach_the_caller_typed(counter_cls: Any, ctx: Any) -> None:
    with pytest.raises(exception.NotFound) as caught:
        counter_cls.get(ctx, -1)
    assert caught.value.kwargs == {"objname": "Counter", "id": -1}
    counter = counter_cls.get(ctx, 1)
    with pytest.raises(exception.ConcurrentUpdate):
        counter.fail()


def test_instance_method_without_context_is_orphaned(counter_cls: Any, ctx: Any) -> None:
    orphan = counter_cls(id=1, value=1)
    with pytest.raises(exception.OrphanedObjectError, match="bump"):
        orphan.bump()
    with pytest.raises(exception.OrphanedObjectError):
        orphan.bump_async()


def test_local_execution_runs_bodies_here_despite_an_api(counter_cls: Any) -> None:
    api = LocalIndirectionAPI()
    base.set_indirection_api(api)
    ctx = RequestContext()
    try:
        with base.local_execution():
            counter = counter_cls.get(ctx, 3)
            counter.bump()
            counter.bump_async().wait()
        assert api.calls == []
        counter_cls.get(ctx, 3)
        assert api.calls == [("Counter", "get")]
    finally:
        api.close()


def test_wrappers_are_marked_and_keep_the_original(counter_cls: Any) -> None:
    assert counter_cls.get.remotable is True
    assert counter_cls.bump.remotable is True
    assert counter_cls.bump.original_fn.__name__ == "bump"
    assert counter_cls.get.original_fn.__name__ == "get"
    assert not hasattr(counter_cls.not_remotable, "remotable")


class _ScriptedAPI(IndirectionAPI):
    """Returns canned (updates, result) replies and records what it was asked."""

    def __init__(self, updates: Any) -> None:
        self.updates = updates
        self.asked: list[dict[str, Any]] = []

    def object_class_action_versions(
        self, context, objname, objmethod, object_versions, args, kwargs
    ):
        self.asked.append(
            {
                "objname": objname,
                "objmethod": objmethod,
                "versions": object_versions,
                "args": args,
                "kwargs": kwargs,
            }
        )
        return None

    def object_action(self, context, objinst, objmethod, args, kwargs, object_versions=None):
        self.asked.append({"objinst": objinst, "objmethod": objmethod, "versions": object_versions})
        return self.updates, "result"

    def object_backport_versions(self, context, objinst, object_versions):
        raise AssertionError("not used")


def test_calls_carry_the_version_manifest(counter_cls: Any) -> None:
    api = _ScriptedAPI({"obj_what_changed": []})
    base.set_indirection_api(api)
    ctx = RequestContext()
    counter_cls.get(ctx, 7)
    counter_cls(ctx, id=1).bump(by=2)
    assert api.asked[0] == {
        "objname": "Counter",
        "objmethod": "get",
        "versions": {"Counter": "1.0"},
        "args": (7,),
        "kwargs": {},
    }
    assert api.asked[1]["objmethod"] == "bump"
    assert api.asked[1]["versions"] == {"Counter": "1.0"}


def test_update_keys_the_class_does_not_know_are_ignored(counter_cls: Any) -> None:
    api = _ScriptedAPI(
        {
            "value": 5,
            "from_a_newer_server": 1,
            "obj_what_changed": ["value", "from_a_newer_server"],
            "obj_revision": 4,
        }
    )
    base.set_indirection_api(api)
    counter = counter_cls(RequestContext(), id=1, value=1, note="n")
    assert counter.bump() == "result"
    assert counter.value == 5
    assert counter.note == "n"
    assert counter.obj_what_changed() == {"value"}
    assert counter.obj_revision == 4
    assert not hasattr(counter, "from_a_newer_server")


def test_bad_updates_raise_object_value_error(counter_cls: Any) -> None:
    base.set_indirection_api(_ScriptedAPI({"value": "not a number"}))
    counter = counter_cls(RequestContext(), id=1, value=1)
    with pytest.raises(exception.ObjectValueError, match="Counter.value"):
        counter.bump()
    assert counter.value == 1
    base.set_indirection_api(_ScriptedAPI(["not", "a", "dict"]))
    with pytest.raises(exception.ObjectValueError, match="must be a dict"):
        counter.bump()
