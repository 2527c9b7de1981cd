"""Small object classes the tests declare and register (never the built-in domain)."""

from __future__ import annotations

from typing import Any

from objects import base, fields


def make_classes() -> dict[str, type[base.VersionedObject]]:
    """Declare and register Child 1.0/1.1, Parent 1.0/1.1, Bag, BagList; returns them."""

    @base.VersionedObjectRegistry.register
    class Child(base.VersionedObject):
        VERSION = "1.1"
        fields = {
            "name": fields.StringField(),
            "extra": fields.StringField(nullable=True),  # added in 1.1
        }

        def obj_make_compatible(self, primitive: dict[str, Any], target_version: str) -> None:
            super().obj_make_compatible(primitive, target_version)
            if target_version == "1.0":
                primitive.pop("extra", None)

    @base.VersionedObjectRegistry.register
    class Parent(base.VersionedObject):
        VERSION = "1.1"
        fields = {
            "id": fields.IntegerField(read_only=True),
            "child": fields.ObjectField("Child", nullable=True),
            "children": fields.ListOfObjectsField("Child", default=[]),
        }
        obj_relationships = {
            "child": [("1.0", "1.0"), ("1.1", "1.1")],
            "children": [("1.1", "1.1")],
        }

    @base.VersionedObjectRegistry.register
    class ChildList(base.ObjectListBase):
        VERSION = "1.0"
        fields = {"objects": fields.ListOfObjectsField("Child")}

    return {"Child": Child, "Parent": Parent, "ChildList": ChildList}
