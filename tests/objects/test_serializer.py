"""VersionedObjectSerializer walks containers and backports too-new objects."""

from __future__ import annotations

import json
from typing import Any

import pytest

import objects
from objects import base, exception
from objects.context import RequestContext
from objects.indirection import IndirectionAPI
from objects.serializer import VersionedObjectSerializer
from tests.objects.helpers import make_classes


@pytest.fixture
def classes(registry: Any) -> dict[str, Any]:
    return make_classes()


def test_serializer_is_exported_by_base() -> None:
    assert base.VersionedObjectSerializer is VersionedObjectSerializer


def test_objects_in_lists_tuples_and_dicts_round_trip(classes: dict[str, Any]) -> None:
    serializer = VersionedObjectSerializer()
    child = classes["Child"](name="a")
    entity = {"one": child, "many": (child, [child]), "n": 3, "s": {"x"}}
    wire = json.loads(json.dumps(serializer.serialize_entity(None, entity)))
    ctx = RequestContext()
    back = serializer.deserialize_entity(ctx, wire)
    assert back["n"] == 3
    assert back["s"] == ["x"]
    assert back["one"] == child and back["one"]._context is ctx
    assert back["many"][0] == child and back["many"][1][0] == child


def test_plain_values_are_sent_as_they_are_and_objects_among_them_are_turned(
    classes: dict[str, Any],
) -> None:
    serializer = VersionedObjectSerializer()
    updates = {"state": "active", "obj_what_changed": ["state"], "obj_revision": 2}
    assert serializer.serialize_entity(None, updates) is updates
    rows = [[1, "a"], [2, None]]
    assert serializer.serialize_entity(None, rows) is rows
    child = classes["Child"](name="a")
    mixed = serializer.serialize_entity(None, {"tags": ["x"], "children": [child, 1]})
    assert mixed["tags"] == ["x"]
    assert mixed["children"][0] == child.obj_to_primitive() and mixed["children"][1] == 1


def test_contexts_travel_as_dicts() -> None:
    serializer = VersionedObjectSerializer()
    ctx = RequestContext(user_id="u", project_id="p", roles=["admin"], is_admin=True)
    wire = json.loads(json.dumps(serializer.serialize_context(ctx)))
    back = serializer.deserialize_context(wire)
    assert isinstance(back, RequestContext)
    assert back.to_dict() == ctx.to_dict()
    assert serializer.serialize_context({"user_id": "x"}) == {"user_id": "x"}
    assert serializer.serialize_context(None) == {}


class _BackportingAPI(IndirectionAPI):
    """Answers object_backport_versions by rewriting the version; records the call."""

    def __init__(self) -> None:
        self.backports: list[tuple[Any, dict[str, str]]] = []

    def object_class_action_versions(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not used")

    def object_action(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not used")

    def object_backport_versions(
        self, context: Any, objinst: Any, object_versions: dict[str, str]
    ) -> Any:
        self.backports.append((objinst, object_versions))
        backported = dict(objinst, **{"versioned_object.version": object_versions["Child"]})
        backported["versioned_object.data"] = {"name": objinst["versioned_object.data"]["name"]}
        return backported


def test_too_new_object_is_sent_back_for_a_backport(classes: dict[str, Any]) -> None:
    primitive = classes["Child"](name="a").obj_to_primitive()
    primitive["versioned_object.version"] = "1.4"
    primitive["versioned_object.data"]["from_the_future"] = 1
    api = _BackportingAPI()
    base.set_indirection_api(api)
    obj = VersionedObjectSerializer().deserialize_entity(RequestContext(), primitive)
    assert obj.name == "a"
    assert api.backports == [(primitive, {"Child": "1.1"})]


def test_too_new_object_without_indirection_api_raises(classes: dict[str, Any]) -> None:
    primitive = classes["Child"](name="a").obj_to_primitive()
    primitive["versioned_object.version"] = "1.4"
    with pytest.raises(exception.IncompatibleObjectVersion):
        VersionedObjectSerializer().deserialize_entity(None, primitive)
    base.set_indirection_api(_BackportingAPI())
    with base.local_execution(), pytest.raises(exception.IncompatibleObjectVersion):
        VersionedObjectSerializer().deserialize_entity(None, primitive)


def test_unknown_object_name_is_not_backported(classes: dict[str, Any]) -> None:
    base.set_indirection_api(_BackportingAPI())
    primitive = objects.Flavor(name="x").obj_to_primitive()
    primitive["versioned_object.name"] = "Martian"
    with pytest.raises(exception.UnsupportedObjectError):
        VersionedObjectSerializer().deserialize_entity(None, primitive)
