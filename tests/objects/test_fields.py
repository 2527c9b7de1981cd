"""Fields coerce at assignment, keep the old value on a bad one, and travel as primitives."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest

from objects import base, exception, fields

UTC = dt.UTC


@pytest.fixture
def thing_cls(registry: Any) -> type[base.VersionedObject]:
    @registry.register
    class Thing(base.VersionedObject):
        VERSION = "1.0"
        fields = {
            "count": fields.IntegerField(default=0),
            "name": fields.StringField(nullable=True),
            "flag": fields.BooleanField(default=False),
            "ratio": fields.FloatField(),
            "when": fields.DateTimeField(nullable=True),
            "ident": fields.UUIDField(),
            "color": fields.EnumField(["red", "green"], default="red"),
            "tags": fields.ListOfStringsField(default=[]),
            "meta": fields.DictOfStringsField(default={}),
            "fixed": fields.IntegerField(read_only=True),
        }

    return Thing


@pytest.mark.parametrize(
    ("field", "given", "expected"),
    [
        (fields.IntegerField(), 5, 5),
        (fields.IntegerField(), "7", 7),
        (fields.IntegerField(), 3.0, 3),
        (fields.FloatField(), 2, 2.0),
        (fields.FloatField(), "1.5", 1.5),
        (fields.StringField(), "x", "x"),
        (fields.StringField(), 12, "12"),
        (fields.BooleanField(), True, True),
        (fields.BooleanField(), "no", False),
        (fields.BooleanField(), 1, True),
        (fields.EnumField(["a", "b"]), "b", "b"),
        (fields.ListOfStringsField(), ("a", 1), ["a", "1"]),
        (fields.DictOfStringsField(), {"k": 2}, {"k": "2"}),
        (
            fields.UUIDField(),
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "12345678-1234-5678-1234-567812345678",
        ),
        (
            fields.UUIDField(),
            "{12345678-1234-5678-1234-567812345678}".upper(),
            "12345678-1234-5678-1234-567812345678",
        ),
    ],
)
def test_coerce_converts_acceptable_values(field: fields.Field, given: Any, expected: Any) -> None:
    assert field.coerce(given) == expected
    assert type(field.coerce(given)) is type(expected)


@pytest.mark.parametrize(
    ("field", "bad", "error"),
    [
        (fields.IntegerField(), "seven", ValueError),
        (fields.IntegerField(), 2.5, ValueError),
        (fields.IntegerField(), True, TypeError),
        (fields.IntegerField(), [1], TypeError),
        (fields.FloatField(), "x", ValueError),
        (fields.StringField(), b"bytes", TypeError),
        (fields.StringField(), None, ValueError),
        (fields.BooleanField(), "maybe", ValueError),
        (fields.BooleanField(), 2, TypeError),
        (fields.EnumField(["a"]), "z", ValueError),
        (fields.UUIDField(), "not-a-uuid", ValueError),
        (fields.UUIDField(), 42, TypeError),
        (fields.DateTimeField(), "yesterday", ValueError),
        (fields.DateTimeField(), 1234, TypeError),
        (fields.ListOfStringsField(), "abc", TypeError),
        (fields.ListOfStringsField(), [b"x"], TypeError),
        (fields.DictOfStringsField(), {1: "x"}, TypeError),
        (fields.DictOfStringsField(), ["x"], TypeError),
        (fields.ObjectField("Flavor"), {"name": "x"}, TypeError),
    ],
)
def test_coerce_refuses_bad_values(field: fields.Field, bad: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        field.coerce(bad)


def test_bad_assignment_raises_and_keeps_the_old_value(thing_cls: Any) -> None:
    thing = thing_cls(count=3, color="green")
    with pytest.raises(ValueError, match=r"Thing.count"):
        thing.count = "three"
    with pytest.raises(ValueError, match="not one of"):
        thing.color = "blue"
    assert thing.count == 3
    assert thing.color == "green"


def test_not_nullable_field_refuses_none_but_nullable_takes_it(thing_cls: Any) -> None:
    thing = thing_cls()
    thing.name = None
    assert thing.name is None
    with pytest.raises(ValueError, match="nullable"):
        thing.count = None


def test_datetime_naive_is_utc_and_aware_is_converted_to_utc() -> None:
    field = fields.DateTimeField()
    naive = dt.datetime(2026, 11, 22, 2, 3, 25, 123456)
    assert field.coerce(naive) == naive.replace(tzinfo=UTC)
    plus_two = dt.timezone(dt.timedelta(hours=2))
    aware = dt.datetime(2026, 11, 22, 4, 3, 25, tzinfo=plus_two)
    converted = field.coerce(aware)
    assert converted.tzinfo is UTC
    assert converted == aware


def test_datetime_primitive_is_iso_with_microseconds_and_offset() -> None:
    field = fields.DateTimeField()
    value = field.coerce(dt.datetime(2026, 11, 22, 2, 3, 25, 123456))
    assert field.to_primitive(value) == "2026-11-22T02:03:25.123456+00:00"
    whole = field.coerce(dt.datetime(2026, 11, 22, 2, 3, 25))
    assert field.to_primitive(whole) == "2026-11-22T02:03:25.000000+00:00"
    assert field.from_primitive(field.to_primitive(value)) == value


def test_datetime_reads_oslo_z_form() -> None:
    parsed = fields.DateTimeField().from_primitive("2026-11-22T02:03:25Z")
    assert parsed == dt.datetime(2026, 11, 22, 2, 3, 25, tzinfo=UTC)
    assert parsed.tzinfo is UTC


def test_from_primitive_refuses_wrong_wire_types() -> None:
    with pytest.raises(TypeError):
        fields.DateTimeField().from_primitive(12345)
    with pytest.raises(TypeError):
        fields.ListOfObjectsField("Flavor").from_primitive({"not": "a list"})
    with pytest.raises(ValueError):
        fields.IntegerField().from_primitive(None)


def test_uuid_field_stores_canonical_string(thing_cls: Any) -> None:
    thing = thing_cls()
    thing.ident = "12345678123456781234567812345678"
    assert thing.ident == "12345678-1234-5678-1234-567812345678"


def test_read_only_field_can_be_set_once(thing_cls: Any) -> None:
    thing = thing_cls(fixed=1)
    with pytest.raises(exception.ReadOnlyFieldError):
        thing.fixed = 2
    assert thing.fixed == 1


def test_read_only_field_set_again_to_its_value_is_accepted_and_no_change(
    thing_cls: Any,
) -> None:
    # oslo.versionedobjects' rule: only another value is refused.
    thing = thing_cls(fixed=1)
    thing.obj_reset_changes()
    thing.fixed = 1
    assert thing.fixed == 1
    assert thing.obj_what_changed() == set()
    with pytest.raises(exception.ReadOnlyFieldError):
        thing.fixed = 3
    with pytest.raises(ValueError):
        thing.fixed = "not a number"


def test_list_field_copies_the_assigned_list(thing_cls: Any) -> None:
    mine = ["a"]
    thing = thing_cls(tags=mine)
    mine.append("b")
    assert thing.tags == ["a"]


def test_in_place_changes_of_list_and_dict_fields_are_tracked(thing_cls: Any) -> None:
    thing = thing_cls(tags=["a"], meta={"k": "v"})
    thing.obj_reset_changes()
    assert thing.obj_what_changed() == set()
    thing.tags.append("b")
    assert thing.obj_what_changed() == {"tags"}
    thing.meta["k2"] = "v2"
    assert thing.obj_what_changed() == {"tags", "meta"}
    assert thing.obj_get_changes() == {"tags": ["a", "b"], "meta": {"k": "v", "k2": "v2"}}
    thing.obj_reset_changes(["tags"])
    assert thing.obj_what_changed() == {"meta"}


def test_in_place_change_survives_the_wire_as_a_change(thing_cls: Any) -> None:
    thing = thing_cls(tags=["a"])
    thing.obj_reset_changes()
    thing.tags.append("b")
    primitive = json.loads(json.dumps(thing.obj_to_primitive()))
    assert primitive["versioned_object.changes"] == ["tags"]
    copy = base.VersionedObject.obj_from_primitive(primitive)
    assert copy.obj_what_changed() == {"tags"}
    assert copy.tags == ["a", "b"]


def test_defaults_are_applied_only_to_unset_fields_and_never_shared(thing_cls: Any) -> None:
    first = thing_cls(count=9)
    first.obj_set_defaults()
    assert first.count == 9
    assert first.color == "red"
    assert first.tags == []
    second = thing_cls()
    second.obj_set_defaults("tags")
    first.tags.append("x")
    assert second.tags == []
    assert not second.obj_attr_is_set("color")
    with pytest.raises(exception.ObjectActionError, match="no default"):
        second.obj_set_defaults("ratio")


def test_invalid_default_is_refused_at_declaration() -> None:
    with pytest.raises(ValueError):
        fields.EnumField(["a"], default="b")
    with pytest.raises(ValueError, match="nullable"):
        fields.StringField(default=None)


def test_object_field_takes_only_objects_of_its_name(registry: Any, db_ctx: Any) -> None:
    import objects

    inst = objects.Instance()
    with pytest.raises(TypeError, match="Flavor"):
        inst.flavor = objects.ComputeNode()
    inst.flavor = objects.Flavor(name="x")
    assert inst.flavor.name == "x"


def test_describe_is_json_and_covers_the_attributes() -> None:
    described = fields.EnumField(["a", "b"], nullable=True, default="a", read_only=True).describe()
    assert json.loads(json.dumps(described)) == {
        "type": "Enum",
        "nullable": True,
        "default": {"value": "a"},
        "read_only": True,
        "valid_values": ["a", "b"],
    }
    assert fields.ObjectField("Flavor").describe()["objname"] == "Flavor"
