"""Backports: obj_make_compatible, obj_relationships and version manifests for children."""

from __future__ import annotations

from typing import Any

import pytest

import objects
from objects import base
from tests.objects.helpers import make_classes


@pytest.fixture
def classes(registry: Any) -> dict[str, Any]:
    return make_classes()


def _data(primitive: dict[str, Any]) -> dict[str, Any]:
    return primitive["versioned_object.data"]  # type: ignore[no-any-return]


def test_instance_drops_metadata_then_tags_for_older_targets(db_ctx: Any) -> None:
    inst = objects.Instance(db_ctx, id=1, vcpus=1, tags=["a"], metadata={"k": "v"})
    at_12 = inst.obj_to_primitive()
    at_11 = inst.obj_to_primitive(target_version="1.1")
    at_10 = inst.obj_to_primitive(target_version="1.0")
    assert {"tags", "metadata"} <= set(_data(at_12))
    assert "metadata" not in _data(at_11) and _data(at_11)["tags"] == ["a"]
    assert "tags" not in _data(at_10) and "metadata" not in _data(at_10)
    assert at_10["versioned_object.version"] == "1.0"
    assert at_10["versioned_object.changes"] == ["id", "vcpus"]  # only fields that travel


def test_children_follow_obj_relationships_without_a_manifest(classes: dict[str, Any]) -> None:
    parent = classes["Parent"](child=classes["Child"](name="c", extra="e"))
    parent.children = [classes["Child"](name="x", extra="y")]
    at_10 = parent.obj_to_primitive(target_version="1.0")
    child = _data(at_10)["child"]
    assert child["versioned_object.version"] == "1.0"
    assert _data(child) == {"name": "c"}
    # "children" has no rule before 1.1: it did not exist yet, so it is dropped
    assert "children" not in _data(at_10)
    at_11 = parent.obj_to_primitive(target_version="1.1")
    assert _data(_data(at_11)["child"])["extra"] == "e"


def test_manifest_decides_child_versions(classes: dict[str, Any]) -> None:
    parent = classes["Parent"](child=classes["Child"](name="c", extra="e"), children=[])
    parent.children.append(classes["Child"](name="x", extra="y"))
    primitive = parent.obj_to_primitive(version_manifest={"Parent": "1.1", "Child": "1.0"})
    assert primitive["versioned_object.version"] == "1.1"
    assert _data(_data(primitive)["child"]) == {"name": "c"}
    assert [_data(c) for c in _data(primitive)["children"]] == [{"name": "x"}]
    assert {c["versioned_object.version"] for c in _data(primitive)["children"]} == {"1.0"}


def test_manifest_never_raises_a_child_above_its_version(classes: dict[str, Any]) -> None:
    parent = classes["Parent"](child=classes["Child"](name="c"))
    primitive = parent.obj_to_primitive(version_manifest={"Child": "1.7"})
    assert _data(primitive)["child"]["versioned_object.version"] == "1.1"


def test_child_missing_from_manifest_keeps_its_version(classes: dict[str, Any]) -> None:
    parent = classes["Parent"](child=classes["Child"](name="c", extra="e"))
    primitive = parent.obj_to_primitive(version_manifest={"Parent": "1.1"})
    assert _data(primitive)["child"]["versioned_object.version"] == "1.1"


def test_list_children_follow_manifest_and_child_versions(
    classes: dict[str, Any], registry: Any
) -> None:
    items = classes["ChildList"](objects=[classes["Child"](name="a", extra="b")])
    primitive = items.obj_to_primitive(version_manifest={"Child": "1.0"})
    assert _data(_data(primitive)["objects"][0]) == {"name": "a"}

    @registry.register
    class OldStyleList(base.ObjectListBase):
        VERSION = "1.1"
        fields = {"objects": objects.fields.ListOfObjectsField("Child")}
        child_versions = {"1.0": "1.0", "1.1": "1.1"}

    old = OldStyleList(objects=[classes["Child"](name="a", extra="b")])
    at_10 = old.obj_to_primitive(target_version="1.0")
    assert _data(at_10)["objects"][0]["versioned_object.version"] == "1.0"
    assert _data(_data(at_10)["objects"][0]) == {"name": "a"}


def test_backported_primitive_is_read_by_the_old_class(
    classes: dict[str, Any], registry: Any
) -> None:
    class OldChild(base.VersionedObject):
        VERSION = "1.0"
        fields = {"name": objects.fields.StringField()}

        @classmethod
        def obj_name(cls) -> str:
            return "Child"

    registry.register(OldChild)
    primitive = classes["Child"](name="c", extra="e").obj_to_primitive(target_version="1.0")
    again = base.VersionedObject.obj_from_primitive(primitive)
    assert type(again) is OldChild
    assert again.name == "c"


def test_tree_manifest_for_a_class_uses_its_own_version(
    classes: dict[str, Any], registry: Any
) -> None:
    class OldParent(base.VersionedObject):
        VERSION = "1.0"
        fields = {"child": objects.fields.ObjectField("Child", nullable=True)}

        @classmethod
        def obj_name(cls) -> str:
            return "Parent"

    registry.register(OldParent)
    assert OldParent._obj_manifest() == {"Parent": "1.0", "Child": "1.1"}
    assert classes["Parent"]._obj_manifest() == {"Parent": "1.1", "Child": "1.1"}
