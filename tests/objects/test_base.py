"""VersionedObject: construction, change tracking, wire primitives, copies, repr."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from objects import base, exception, fields
from objects.context import RequestContext
from tests.objects.helpers import make_classes


@pytest.fixture
def classes(registry: Any) -> dict[str, Any]:
    return make_classes()


def _wire(primitive: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(primitive))  # type: ignore[no-any-return]


def test_constructor_values_count_as_changes(classes: dict[str, Any]) -> None:
    child = classes["Child"](name="a")
    assert child.obj_what_changed() == {"name"}
    assert child._context is None
    with pytest.raises(TypeError, match="no field 'nope'"):
        classes["Child"](nope=1)


def test_primitive_has_oslo_keys_and_only_set_fields(classes: dict[str, Any]) -> None:
    child = classes["Child"](name="a")
    assert child.obj_to_primitive() == {
        "versioned_object.name": "Child",
        "versioned_object.namespace": "versionedobjects",
        "versioned_object.version": "1.1",
        "versioned_object.data": {"name": "a"},
        "versioned_object.changes": ["name"],
    }
    child.obj_reset_changes()
    assert "versioned_object.changes" not in child.obj_to_primitive()


def test_revision_travels_only_when_set(classes: dict[str, Any]) -> None:
    child = classes["Child"](name="a")
    assert "versioned_object.revision" not in child.obj_to_primitive()
    child.obj_revision = 7
    primitive = _wire(child.obj_to_primitive())
    assert primitive["versioned_object.revision"] == 7
    assert base.VersionedObject.obj_from_primitive(primitive).obj_revision == 7


def test_round_trip_keeps_values_changes_and_nested_objects(classes: dict[str, Any]) -> None:
    parent = classes["Parent"](id=1, child=classes["Child"](name="c"))
    parent.children = [classes["Child"](name="x"), classes["Child"](name="y", extra="e")]
    parent.obj_reset_changes(["id"])
    again = base.VersionedObject.obj_from_primitive(_wire(parent.obj_to_primitive()))
    assert type(again) is classes["Parent"]
    assert again == parent
    assert again.obj_what_changed() == {"child", "children"}
    assert [c.name for c in again.children] == ["x", "y"]
    assert again.child.obj_what_changed() == {"name"}


def test_from_primitive_resolves_through_the_registry_whatever_class(
    classes: dict[str, Any],
) -> None:
    primitive = classes["Child"](name="a").obj_to_primitive()
    assert type(classes["Parent"].obj_from_primitive(primitive)) is classes["Child"]


def test_context_is_given_to_the_object_and_its_children(classes: dict[str, Any]) -> None:
    parent = classes["Parent"](child=classes["Child"](name="c"))
    ctx = RequestContext()
    again = base.VersionedObject.obj_from_primitive(parent.obj_to_primitive(), context=ctx)
    assert again._context is ctx
    assert again.child._context is ctx


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda p: p.pop("versioned_object.data"), "lacks the key 'versioned_object.data'"),
        (lambda p: p.pop("versioned_object.name"), "lacks the key"),
        (lambda p: p.update({"versioned_object.data": []}), "data must be a dict"),
        (lambda p: p.update({"versioned_object.version": 1.1}), "must be strings"),
        (lambda p: p.update({"versioned_object.changes": "name"}), "changes must be a list"),
        (lambda p: p.update({"versioned_object.revision": "3"}), "revision must be an integer"),
        (lambda p: p.update({"versioned_object.extra": 1}), "unknown key"),
        (lambda p: p["versioned_object.data"].update({"name": ["x"]}), r"Child\.name"),
        (lambda p: p.update({"versioned_object.version": "one"}), "invalid object version"),
    ],
)
def test_malformed_primitive_raises_object_value_error(
    classes: dict[str, Any], mangle: Any, reason: str
) -> None:
    primitive = classes["Child"](name="a").obj_to_primitive()
    mangle(primitive)
    with pytest.raises(exception.ObjectValueError, match=reason):
        base.VersionedObject.obj_from_primitive(primitive)


def test_non_dict_primitive_is_refused(classes: dict[str, Any]) -> None:
    with pytest.raises(exception.ObjectValueError, match="must be a dict"):
        base.VersionedObject.obj_from_primitive(["not", "a", "dict"])  # type: ignore[arg-type]
    assert issubclass(exception.ObjectValueError, ValueError)


def test_foreign_namespace_and_unknown_name_are_unsupported(classes: dict[str, Any]) -> None:
    primitive = classes["Child"](name="a").obj_to_primitive()
    primitive["versioned_object.namespace"] = "nova"
    with pytest.raises(exception.UnsupportedObjectError, match="namespace"):
        base.VersionedObject.obj_from_primitive(primitive)
    primitive["versioned_object.namespace"] = "versionedobjects"
    primitive["versioned_object.name"] = "Nobody"
    with pytest.raises(exception.UnsupportedObjectError):
        base.VersionedObject.obj_from_primitive(primitive)


def test_too_new_primitive_is_incompatible(classes: dict[str, Any]) -> None:
    primitive = classes["Child"](name="a").obj_to_primitive()
    primitive["versioned_object.version"] = "1.9"
    with pytest.raises(exception.IncompatibleObjectVersion, match="supported version is 1.1"):
        base.VersionedObject.obj_from_primitive(primitive)


def test_unknown_data_keys_of_a_compatible_version_are_ignored(classes: dict[str, Any]) -> None:
    primitive = classes["Child"](name="a").obj_to_primitive()
    primitive["versioned_object.data"]["newer_field"] = "x"
    primitive["versioned_object.changes"] = ["name", "newer_field"]
    child = base.VersionedObject.obj_from_primitive(primitive)
    assert child.obj_what_changed() == {"name"}
    assert not child.obj_attr_is_set("newer_field")


def test_nested_changes_show_on_the_parent(classes: dict[str, Any]) -> None:
    parent = classes["Parent"](
        child=classes["Child"](name="c"), children=[classes["Child"](name="x")]
    )
    parent.obj_reset_changes(recursive=True)
    assert parent.obj_what_changed() == set()
    parent.child.name = "d"
    assert parent.obj_what_changed() == {"child"}
    parent.children[0].extra = "e"
    assert parent.obj_what_changed() == {"child", "children"}
    parent.obj_reset_changes()
    assert parent.obj_what_changed() == {"child", "children"}  # children still changed
    parent.obj_reset_changes(recursive=True)
    assert parent.obj_what_changed() == set()
    parent.children.append(classes["Child"](name="new"))
    assert parent.obj_what_changed() == {"children"}


def test_attr_is_set_and_unset_field_on_plain_class(classes: dict[str, Any]) -> None:
    child = classes["Child"]()
    assert not child.obj_attr_is_set("name")
    assert not child.obj_attr_is_set("_context")
    with pytest.raises(NotImplementedError, match="cannot lazy-load"):
        child.name  # noqa: B018
    with pytest.raises(exception.AttributeNotLoadable):
        child.name  # noqa: B018
    assert getattr(child, "name", "fallback") == "fallback"
    with pytest.raises(AttributeError):
        child.no_such_attribute  # noqa: B018


def test_load_attr_without_context_is_an_orphan_error(registry: Any) -> None:
    loads: list[str] = []

    class Lazy(base.VersionedObject):
        fields = {"a": fields.IntegerField(), "b": fields.IntegerField()}

        def obj_load_attr(self, attrname: str) -> None:
            loads.append(attrname)
            self._obj_set_loaded(attrname, 42)

    orphan = Lazy(a=1)
    with pytest.raises(exception.OrphanedObjectError, match="no context"):
        orphan.b  # noqa: B018
    attached = Lazy(context=RequestContext(), a=1)
    assert attached.b == 42
    assert loads == ["b"]
    assert attached.obj_what_changed() == {"a"}


def test_repr_shows_unset_fields_without_loading(registry: Any) -> None:
    class Lazy(base.VersionedObject):
        fields = {"a": fields.IntegerField(), "b": fields.StringField()}

        def obj_load_attr(self, attrname: str) -> None:
            raise AssertionError("repr must not load")

    assert repr(Lazy(context=RequestContext(), a=1)) == "Lazy(a=1,b=<?>)"


def test_equality_compares_name_and_set_fields(classes: dict[str, Any]) -> None:
    child = classes["Child"]
    assert child(name="a") == child(name="a")
    assert child(name="a") != child(name="b")
    assert child(name="a") != child(name="a", extra=None)
    assert child(name="a") != classes["Parent"]()
    assert child(name="a") != "a"


def test_objects_hash_by_identity_so_asyncio_gather_can_take_them(
    classes: dict[str, Any],
) -> None:
    child = classes["Child"]
    a, b = child(name="a"), child(name="a")
    assert a == b and hash(a) == hash(a)
    assert len({a, b}) == 2 and {a: 1}[a] == 1


def test_clone_is_deep_and_shares_the_context(classes: dict[str, Any]) -> None:
    ctx = object()
    parent = classes["Parent"](ctx, child=classes["Child"](name="c"), children=[])
    parent.obj_revision = 3
    clone = parent.obj_clone()
    assert clone == parent
    assert clone._context is ctx
    assert clone.obj_revision == 3
    assert clone.child is not parent.child
    clone.child.name = "changed"
    assert parent.child.name == "c"
    assert clone.obj_what_changed() == parent.obj_what_changed()
    assert copy.deepcopy(parent) == parent


def test_shallow_copy_has_its_own_change_tracking(classes: dict[str, Any]) -> None:
    child = classes["Child"](name="a")
    other = copy.copy(child)
    other.obj_reset_changes()
    assert child.obj_what_changed() == {"name"}


def test_target_version_above_version_raises(classes: dict[str, Any]) -> None:
    with pytest.raises(exception.InvalidTargetVersion, match="1.2"):
        classes["Child"](name="a").obj_to_primitive(target_version="1.2")


def test_deleting_a_field_unsets_it(classes: dict[str, Any]) -> None:
    child = classes["Child"](name="a")
    del child.name
    assert not child.obj_attr_is_set("name")
    assert child.obj_what_changed() == set()


def test_fields_must_be_field_instances(registry: Any) -> None:
    with pytest.raises(TypeError, match="not a Field"):
        type("Broken", (base.VersionedObject,), {"fields": {"a": int}})


def test_indirection_api_is_readable_on_the_class(registry: Any) -> None:
    assert base.VersionedObject.indirection_api is None
    sentinel: Any = object()
    base.set_indirection_api(sentinel)
    try:
        assert base.VersionedObject.indirection_api is sentinel
        assert base.get_indirection_api() is sentinel
    finally:
        base.set_indirection_api(None)
