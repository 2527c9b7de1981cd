"""The precompiled per-class conversions behave exactly like the generic field methods.

Objects read primitives and storage records through one-call readers that take the
canonical value as is and hand everything else to ``from_primitive``/``coerce``; these
tests feed both kinds of value and check the generic behaviour survived.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

import objects
from objects import base, exception, fields
from objects.context import RequestContext

UUID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
STAMP = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)


def _primitive(**data: Any) -> dict[str, Any]:
    values = {"id": 1, "uuid": UUID, "state": "active", "vcpus": 2, "memory_mb": 512}
    values.update(data)
    return {
        "versioned_object.name": "Instance",
        "versioned_object.namespace": "versionedobjects",
        "versioned_object.version": "1.2",
        "versioned_object.data": values,
    }


def _record(**values: Any) -> dict[str, Any]:
    record = {
        "id": 1,
        "uuid": UUID,
        "host": None,
        "state": "active",
        "vcpus": 2,
        "memory_mb": 512,
        "flavor": None,
        "task_state": None,
        "created_at": STAMP,
        "updated_at": STAMP,
        "tags": ["a"],
        "metadata": {"k": "v"},
        "revision": 3,
    }
    record.update(values)
    return record


def test_non_canonical_wire_values_still_go_through_from_primitive() -> None:
    inst = objects.Instance.obj_from_primitive(
        _primitive(
            uuid=UUID.upper(),
            created_at="2026-01-02T04:04:05.678901+01:00",
            updated_at="2026-01-02T03:04:05Z",
            tags=["a", 7],
            metadata={"n": 1},
        )
    )
    assert inst.uuid == UUID
    assert inst.created_at == STAMP and inst.created_at.tzinfo is dt.UTC
    assert inst.updated_at == STAMP.replace(microsecond=0)
    assert inst.tags == ["a", "7"]
    assert inst.metadata == {"n": "1"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("uuid", "not-a-uuid"),
        ("state", "flying"),
        ("created_at", 5),
        ("tags", "a"),
        ("metadata", {"k": None}),
        ("vcpus", "two"),
        ("state", None),
    ],
)
def test_bad_wire_values_are_refused_as_before(name: str, value: Any) -> None:
    with pytest.raises(exception.ObjectValueError, match=f"Instance.{name}"):
        objects.Instance.obj_from_primitive(_primitive(**{name: value}))


def test_the_object_never_shares_containers_with_the_primitive() -> None:
    primitive = _primitive(tags=["a"], metadata={"k": "v"})
    inst = objects.Instance.obj_from_primitive(primitive)
    primitive["versioned_object.data"]["tags"].append("b")
    primitive["versioned_object.data"]["metadata"]["x"] = "y"
    assert inst.tags == ["a"] and inst.metadata == {"k": "v"}
    inst.tags.append("c")
    assert inst.obj_what_changed() == {"tags"}
    out = inst.obj_to_primitive()["versioned_object.data"]
    assert out["tags"] == ["a", "c"] and out["tags"] is not inst.tags
    assert out["metadata"] is not inst.metadata


def test_primitive_of_every_field_type_matches_the_fields_own_to_primitive() -> None:
    inst = objects.Instance.obj_from_primitive(
        _primitive(
            host="h",
            created_at="2026-01-02T03:04:05.678901+00:00",
            task_state=None,
            tags=["t"],
            metadata={"k": "v"},
            flavor=objects.Flavor(
                id=1, flavorid="f", name="n", vcpus=1, memory_mb=2, root_gb=3
            ).obj_to_primitive(),
        )
    )
    data = inst.obj_to_primitive()["versioned_object.data"]
    assert data == {
        name: field.to_primitive(getattr(inst, name))
        for name, field in objects.Instance.fields.items()
        if inst.obj_attr_is_set(name)
    }
    assert json.loads(json.dumps(data)) == data


def test_records_with_canonical_values_load_clean() -> None:
    ctx = RequestContext()
    record = _record(
        flavor={"id": 1, "flavorid": "f", "name": "n", "vcpus": 1, "memory_mb": 2, "root_gb": 3}
    )
    inst = objects.Instance._from_record(ctx, record)
    assert inst.obj_what_changed() == set()
    assert inst.obj_revision == 3
    assert inst.flavor.obj_what_changed() == set() and inst.flavor._context is ctx
    assert inst.tags is not record["tags"] and inst.metadata is not record["metadata"]
    inst.tags.append("b")
    inst.metadata["k"] = "w"
    assert inst.obj_what_changed() == {"tags", "metadata"}


def test_records_with_other_types_are_coerced_or_refused() -> None:
    ctx = RequestContext()
    naive = dt.datetime(2026, 1, 2, 3, 4, 5)
    inst = objects.Instance._from_record(ctx, _record(created_at=naive, uuid=UUID.upper()))
    assert inst.created_at == naive.replace(tzinfo=dt.UTC)
    assert inst.uuid == UUID
    for bad in ({"state": "flying"}, {"uuid": "x"}, {"tags": [None]}):
        with pytest.raises(exception.ObjectValueError, match="stored Instance"):
            objects.Instance._from_record(ctx, _record(**bad))


def test_a_field_subclass_keeps_its_own_conversions(registry: Any) -> None:
    class Shouting(fields.StringField):
        def _coerce(self, value: Any) -> Any:
            return str(value).upper()

    class Stamp(fields.DateTimeField):
        def _to_primitive(self, value: Any) -> Any:
            return value.strftime("%Y")

    @registry.register
    class Loud(base.VersionedObject):
        fields = {"word": Shouting(), "at": Stamp(nullable=True)}

    loud = Loud(word="hi", at=STAMP)
    assert loud.obj_to_primitive()["versioned_object.data"] == {"word": "HI", "at": "2026"}
    again = base.VersionedObject.obj_from_primitive(
        {**loud.obj_to_primitive(), "versioned_object.data": {"word": "quiet"}}
    )
    assert again.word == "QUIET"  # a str is taken as is only by an exact StringField


def _flavor_primitive(**data: Any) -> dict[str, Any]:
    values = {"id": 4, "flavorid": "f", "name": "m1", "vcpus": 1, "memory_mb": 64, "root_gb": 1}
    values.update(data)
    return {
        "versioned_object.name": "Flavor",
        "versioned_object.namespace": "versionedobjects",
        "versioned_object.version": "1.0",
        "versioned_object.data": values,
    }


@pytest.mark.parametrize(
    "value",
    [
        _flavor_primitive(),
        None,
        _flavor_primitive(vcpus="two"),
        _primitive(),  # another class's primitive
        {**_flavor_primitive(), "versioned_object.version": "9.0"},
        {**_flavor_primitive(), "versioned_object.namespace": "elsewhere"},
        {"versioned_object.name": "Flavor"},
        ["not", "a", "primitive"],
    ],
)
def test_a_nested_object_reads_as_from_primitive_reads_it(value: Any) -> None:
    # The one-call reader of an ObjectField (a plain dict read straight through the
    # registry) against the field's own from_primitive: same object, or same error.
    field = objects.Instance.fields["flavor"]
    reader = objects.Instance._obj_from_plan["flavor"][2]
    ctx = RequestContext()

    def outcome(read: Any) -> Any:
        try:
            got = read(value, ctx)
        except Exception as exc:  # noqa: BLE001 - compared below
            return type(exc), str(exc)
        if got is None:
            return None
        assert got._context is ctx
        return type(got), got.obj_to_primitive()

    assert outcome(reader) == outcome(field.from_primitive)


def test_a_nested_object_is_read_with_the_instance() -> None:
    inst = objects.Instance.obj_from_primitive(_primitive(flavor=_flavor_primitive()))
    assert inst.flavor.name == "m1" and inst.flavor.obj_what_changed() == set()
    with pytest.raises(exception.ObjectValueError, match="Instance.flavor"):
        objects.Instance.obj_from_primitive(_primitive(flavor=_primitive()))


def test_the_kept_manifest_follows_the_registry_and_the_version(registry: Any) -> None:
    stock_flavor = objects.Flavor
    first = objects.Instance._obj_manifest()
    assert first == {"Instance": "1.2", "Flavor": "1.0"}
    assert objects.Instance._obj_manifest() is first  # kept while nothing changed

    @registry.register
    class Flavor(base.VersionedObject):  # a newer Flavor: the tree's manifest changes
        VERSION = "1.1"
        fields = dict(stock_flavor.fields)

    assert objects.Instance._obj_manifest() == {"Instance": "1.2", "Flavor": "1.1"}
    assert Flavor._obj_manifest() == {"Flavor": "1.1"}
    assert stock_flavor._obj_manifest() == {"Flavor": "1.0"}  # its own VERSION wins
