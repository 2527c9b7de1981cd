"""The server-side handlers: only @remotable methods, answers at the caller's versions."""

from __future__ import annotations

import json
from typing import Any

import pytest

import objects
from objects import base, exception
from objects.indirection import handle_backport, handle_class_action, handle_object_action
from tests.objects.counters import make_counter

V10 = {"Instance": "1.0", "Flavor": "1.0"}


@pytest.fixture
def stored(db_ctx: Any) -> Any:
    inst = objects.Instance(
        db_ctx, host="h1", vcpus=2, memory_mb=1024, tags=["keep"], metadata={"k": "v"}
    )
    inst.create()
    return inst


def _as_old_caller_sends(inst: Any, db_ctx: Any) -> Any:
    """The object as a 1.0 caller's primitive arrives at a 1.2 server."""
    primitive = json.loads(json.dumps(inst.obj_to_primitive(target_version="1.0")))
    with base.local_execution():
        return base.VersionedObject.obj_from_primitive(primitive, db_ctx)


@pytest.mark.parametrize(
    "name",
    ["__init__", "obj_reset_changes", "fields", "no_such_method", "get_async", "save", "_db_get"],
)
def test_class_action_refuses_what_is_not_a_remotable_classmethod(db_ctx: Any, name: str) -> None:
    with pytest.raises(exception.ObjectActionError, match="remotable") as caught:
        handle_class_action(db_ctx, "Instance", name, {}, [], {})
    assert caught.value.kwargs["action"] == name


@pytest.mark.parametrize(
    "name", ["__init__", "obj_reset_changes", "fields", "nope", "get", "save_async"]
)
def test_object_action_refuses_what_is_not_a_remotable_method(
    db_ctx: Any, stored: Any, name: str
) -> None:
    with pytest.raises(exception.ObjectActionError, match="remotable"):
        handle_object_action(db_ctx, stored, name, [], {})


def test_not_remotable_message_says_what_to_do(registry: Any, db_ctx: Any) -> None:
    counter_cls = make_counter(registry)
    with pytest.raises(exception.ObjectActionError, match="only methods decorated with @remotable"):
        handle_object_action(db_ctx, counter_cls(db_ctx, id=1), "not_remotable", [], {})
    with pytest.raises(exception.ObjectActionError, match="call it on the class"):
        handle_object_action(db_ctx, counter_cls(db_ctx, id=1), "get", [1], {})


def test_unknown_object_name_is_unsupported(db_ctx: Any) -> None:
    with pytest.raises(exception.UnsupportedObjectError):
        handle_class_action(db_ctx, "Martian", "get", {}, [1], {})


def test_class_action_answers_json_at_the_callers_versions(db_ctx: Any, stored: Any) -> None:
    new = handle_class_action(db_ctx, "Instance", "get", {"Instance": "1.2"}, [stored.id], {})
    old = handle_class_action(db_ctx, "Instance", "get", V10, [stored.id], {})
    assert json.loads(json.dumps(new)) == new
    assert new["versioned_object.data"]["tags"] == ["keep"]
    assert old["versioned_object.version"] == "1.0"
    assert "tags" not in old["versioned_object.data"]
    assert "metadata" not in old["versioned_object.data"]


def test_caller_ahead_of_us_gets_our_newest_version(db_ctx: Any, stored: Any) -> None:
    answer = handle_class_action(db_ctx, "Instance", "get", {"Instance": "1.9"}, [stored.id], {})
    assert answer["versioned_object.version"] == "1.2"
    with pytest.raises(exception.IncompatibleObjectVersion):
        handle_class_action(db_ctx, "Instance", "get", {"Instance": "2.0"}, [stored.id], {})


def test_old_callers_save_neither_wipes_nor_returns_newer_fields(
    db_ctx: Any, stored: Any, storage: Any
) -> None:
    arrived = _as_old_caller_sends(stored, db_ctx)
    assert type(arrived) is objects.Instance
    assert not arrived.obj_attr_is_set("tags")
    arrived.host = "h2"
    updates, result = handle_object_action(db_ctx, arrived, "save", [], {}, V10)
    assert result is None
    assert "tags" not in updates and "metadata" not in updates
    assert not arrived.obj_attr_is_set("tags")  # never defaulted on the server
    assert updates["obj_what_changed"] == []
    assert updates["obj_revision"] == 2
    assert "updated_at" in updates
    assert json.loads(json.dumps(updates)) == updates
    row = storage.get("Instance", stored.id)
    assert row["host"] == "h2"
    assert row["tags"] == ["keep"] and row["metadata"] == {"k": "v"}


def test_old_callers_create_gets_only_its_fields_back(db_ctx: Any, storage: Any) -> None:
    sent = objects.Instance(db_ctx, host="h", vcpus=1, memory_mb=1)
    arrived = _as_old_caller_sends(sent, db_ctx)
    updates, _ = handle_object_action(db_ctx, arrived, "create", [], {}, V10)
    assert {"id", "uuid", "state", "created_at", "updated_at"} <= set(updates)
    assert "tags" not in updates and "metadata" not in updates
    assert storage.get("Instance", updates["id"])["tags"] == []


def test_updates_hold_only_what_the_call_changed(registry: Any, db_ctx: Any) -> None:
    counter_cls = make_counter(registry)
    counter = counter_cls(db_ctx, id=1, value=1, note="same")
    updates, result = handle_object_action(db_ctx, counter, "bump", [2], {}, {"Counter": "1.0"})
    assert result == 3
    assert updates == {
        "value": 3,
        "note": "bumped by 2",
        "obj_what_changed": ["id", "note", "value"],
        "obj_revision": None,
    }


def test_in_place_change_by_the_server_is_an_update(registry: Any, db_ctx: Any) -> None:
    class Tagged(base.VersionedObject):
        fields = {"tags": objects.fields.ListOfStringsField()}

        @base.remotable
        def tag(self, value: str) -> None:
            self.tags.append(value)

    registry.register(Tagged)
    obj = Tagged(db_ctx, tags=["a"])
    obj.obj_reset_changes()
    updates, _ = handle_object_action(db_ctx, obj, "tag", ["b"], {})
    assert updates["tags"] == ["a", "b"]
    assert updates["obj_what_changed"] == ["tags"]


def test_backport_returns_the_primitive_at_the_manifest(db_ctx: Any, stored: Any) -> None:
    primitive = handle_backport(db_ctx, stored, V10)
    assert primitive["versioned_object.version"] == "1.0"
    assert "tags" not in primitive["versioned_object.data"]
    assert handle_backport(db_ctx, stored, {})["versioned_object.version"] == "1.2"


def test_handlers_refuse_non_objects(db_ctx: Any) -> None:
    with pytest.raises(exception.ObjectValueError):
        handle_object_action(db_ctx, {"not": "an object"}, "save", [], {})  # type: ignore[arg-type]
    with pytest.raises(exception.ObjectValueError):
        handle_backport(db_ctx, "nope", {})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "manifest",
    [
        None,
        {"Instance": "1.2", "Flavor": "1.0"},
        {"Instance": "1.2", "Flavor": "1.0", "Other": "1.0"},
    ],
    ids=["no-manifest", "our-versions", "a-manifest-that-is-not-ours"],
)
def test_save_updates_are_the_same_whichever_way_the_primitive_is_made(
    db_ctx: Any, manifest: Any
) -> None:
    # A caller at our versions gets its updates without a backport walk; any other
    # manifest takes the general path. Both must give the same answer.
    flavor = objects.Flavor(db_ctx, flavorid="f1", name="small", vcpus=1, memory_mb=512, root_gb=1)
    flavor.create()
    inst = objects.Instance(db_ctx, vcpus=1, memory_mb=512, flavor=flavor, tags=["a"])
    inst.create()
    before = inst.updated_at
    inst.host = "h2"
    inst.tags.append("b")
    updates, result = handle_object_action(db_ctx, inst, "save", [], {}, manifest)
    assert result is None
    # host and tags came with the caller's object: not changed by the call, not sent back
    assert sorted(updates) == ["obj_revision", "obj_what_changed", "updated_at"]
    assert updates["updated_at"] > before.isoformat()
    assert updates["obj_what_changed"] == [] and updates["obj_revision"] == 2
    json.dumps(updates)
