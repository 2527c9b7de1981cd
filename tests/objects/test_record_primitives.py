"""Loads answered from the record (``reads_record``, ``record_to_primitive``).

A conductor answers a stock load for a caller at our versions without building the
object: the primitive it makes from the record must be the one the object would give,
byte for byte, and anything it cannot promise must go the object's way.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import objects
from objects import base, exception, fields, indirection
from objects._primitive import _KEY_DATA
from objects.context import RequestContext
from objects.fixture import MemoryStorage
from objects.flavor import Flavor as BuiltinFlavor
from objects.instance import Instance as BuiltinInstance
from objects.persistent import (
    PersistentObject,
    primitive_is_plain,
    reads_record,
    record_fetch_of,
    record_to_primitive,
)

UUID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
STAMP = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
FLAVOR = {
    "id": 7,
    "flavorid": "m1",
    "name": "m1.small",
    "vcpus": 2,
    "memory_mb": 2048,
    "root_gb": 20,
}


def _record(**values: Any) -> dict[str, Any]:
    record = {
        "id": 1,
        "uuid": UUID,
        "host": "node-1",
        "state": "active",
        "vcpus": 2,
        "memory_mb": 512,
        "flavor": dict(FLAVOR),
        "task_state": "spawning",
        "created_at": STAMP,
        "updated_at": STAMP,
        "tags": ["a", "b"],
        "metadata": {"k": "v"},
        "revision": 3,
        "project_id": "p1",
    }
    record.update(values)
    return record


def _stored() -> dict[str, Any]:
    """The record's values as a create stores them."""
    return {k: v for k, v in _record().items() if k not in ("id", "revision", "project_id")}


def _by_object(cls: Any, record: dict[str, Any]) -> dict[str, Any]:
    primitive: dict[str, Any] = cls._from_record(None, record).obj_to_primitive()
    return primitive


def _same(fast: Any, slow: Any) -> None:
    assert fast == slow
    assert json.dumps(fast) == json.dumps(slow)  # key order too: the reply's bytes


RECORDS = {
    "full": _record(),
    "nulls": _record(host=None, task_state=None, flavor=None, created_at=None, updated_at=None),
    "empty json": _record(tags=[], metadata={}),
    "no revision": {k: v for k, v in _record().items() if k != "revision"},
    "columns missing": {"id": 1, "uuid": UUID, "revision": 1},
    "naive datetime": _record(created_at=STAMP.replace(tzinfo=None)),
    "whole second": _record(created_at=STAMP.replace(microsecond=0)),
    "other offset": _record(updated_at=STAMP.astimezone(dt.timezone(dt.timedelta(hours=5)))),
    "upper-case uuid": _record(uuid=UUID.upper()),
    "flavor with unknown key": _record(flavor={**FLAVOR, "extra_specs": {"a": "b"}}),
    "flavor missing fields": _record(flavor={"id": 7, "name": "x"}),
    "flavor wire datetime-ish": _record(flavor={**FLAVOR, "vcpus": 4}),
    "json string revision": _record(revision=4),
}


@pytest.mark.parametrize("case", sorted(RECORDS))
def test_an_instance_primitive_from_the_record_is_the_objects_own(case: str) -> None:
    record = RECORDS[case]
    fast = record_to_primitive(objects.Instance, dict(record))
    assert fast is not None
    _same(fast, _by_object(objects.Instance, dict(record)))


def test_flavor_and_compute_node_primitives_from_the_record() -> None:
    _same(
        record_to_primitive(objects.Flavor, {**FLAVOR, "revision": 2}),
        _by_object(objects.Flavor, {**FLAVOR, "revision": 2}),
    )
    node = {
        "id": 3,
        "host": "h",
        "vcpus": 8,
        "vcpus_used": 1,
        "memory_mb": 1024,
        "memory_mb_used": 0,
        "revision": 9,
    }
    _same(record_to_primitive(objects.ComputeNode, node), _by_object(objects.ComputeNode, node))


@pytest.mark.parametrize(
    "values",
    [
        {"state": "no-such-state"},
        {"tags": ["a", 1]},
        {"tags": "ab"},
        {"metadata": {"k": 1}},
        {"flavor": ["not", "a", "dict"]},
        {"flavor": {**FLAVOR, "vcpus": "many"}},
        {"vcpus": None},
        {"created_at": "yesterday"},
        {"revision": "x"},
    ],
)
def test_odd_stored_values_load_as_the_object_would_or_are_left_to_it(
    values: dict[str, Any],
) -> None:
    record = _record(**values)
    fast = record_to_primitive(objects.Instance, dict(record))
    try:
        slow = _by_object(objects.Instance, dict(record))
    except (ValueError, TypeError):
        assert fast is None  # building the object raises the error
    else:
        _same(fast, slow)


def test_a_class_of_its_own_under_a_built_in_name_gets_its_own_primitive() -> None:
    @base.VersionedObjectRegistry.register
    class Instance(BuiltinInstance):
        def obj_to_primitive(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            primitive: dict[str, Any] = super().obj_to_primitive(*args, **kwargs)
            primitive["versioned_object.data"]["host"] = "rewritten"
            return primitive

    assert record_to_primitive(Instance, _record()) is None
    ctx = RequestContext()
    ctx.db = MemoryStorage()
    ctx.db.create("Instance", _stored())
    primitive = indirection.handle_class_action(
        ctx, "Instance", "get", Instance._obj_manifest(), [1], {}
    )
    assert primitive["versioned_object.data"]["host"] == "rewritten"


def test_a_nested_class_of_its_own_sends_the_load_the_objects_way() -> None:
    @base.VersionedObjectRegistry.register
    class Flavor(BuiltinFlavor):
        @classmethod
        def _obj_from_data(cls, data: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            return super()._obj_from_data({**data, "name": "renamed"}, *args, **kwargs)

    assert record_to_primitive(objects.Instance, _record()) is None
    prim = _by_object(objects.Instance, _record())
    assert prim["versioned_object.data"]["flavor"]["versioned_object.data"]["name"] == "renamed"


def test_a_field_type_of_its_own_is_left_to_the_object() -> None:
    class Upper(fields.StringField):
        def _to_primitive(self, value: Any) -> Any:
            return value.upper()

    class Gadget(PersistentObject, base.VersionedObject):
        fields = {"id": fields.IntegerField(), "name": Upper()}

    assert record_to_primitive(Gadget, {"id": 1, "name": "x", "revision": 1}) is None
    assert _by_object(Gadget, {"id": 1, "name": "x"})["versioned_object.data"]["name"] == "X"


def test_loading_methods_of_its_own_are_left_to_the_object() -> None:
    class Gadget(PersistentObject, base.VersionedObject):
        fields = {"id": fields.IntegerField(), "name": fields.StringField()}

        @classmethod
        def _from_record(cls, context: Any, record: Any) -> Any:
            return super()._from_record(context, {**record, "name": "mine"})

    assert record_to_primitive(Gadget, {"id": 1, "name": "x"}) is None


def test_reads_record_bodies_load_the_object_and_name_their_fetch() -> None:
    method = objects.Instance.get
    assert record_fetch_of(method) is not None
    assert record_fetch_of(objects.InstanceList.get_all) is None
    assert record_fetch_of(objects.Instance.refresh) is None
    ctx = RequestContext()
    ctx.db = MemoryStorage()
    ctx.db.create("Instance", _stored())
    with base.local_execution():
        inst = objects.Instance.get(ctx, 1)
    assert isinstance(inst, objects.Instance)
    assert inst.obj_what_changed() == set()
    assert inst.flavor.name == "m1.small"


def test_a_user_object_can_declare_its_load_from_a_record() -> None:
    @base.VersionedObjectRegistry.register
    class Widget(PersistentObject, base.VersionedObject):
        fields = {"id": fields.IntegerField(read_only=True), "name": fields.StringField()}

        @base.remotable_classmethod
        @reads_record
        def get(cls, context: Any, id: int) -> Any:
            return cls._db_get_record(context, id)

    ctx = RequestContext()
    ctx.db = MemoryStorage()
    ctx.db.create("Widget", {"name": "w"})
    primitive = indirection.handle_class_action(ctx, "Widget", "get", {"Widget": "1.0"}, [1], {})
    with base.local_execution():
        assert primitive == Widget.get(ctx, 1).obj_to_primitive()


def test_a_caller_at_other_versions_gets_the_backport() -> None:
    ctx = RequestContext()
    ctx.db = MemoryStorage()
    ctx.db.create("Instance", _stored())
    primitive = indirection.handle_class_action(
        ctx, "Instance", "get", {"Instance": "1.1", "Flavor": "1.0"}, [1], {}
    )
    assert primitive["versioned_object.version"] == "1.1"
    assert "metadata" not in primitive["versioned_object.data"]
    assert primitive["versioned_object.data"]["tags"] == ["a", "b"]


def test_errors_of_a_load_are_the_bodys_own() -> None:
    ctx = RequestContext()
    ctx.db = MemoryStorage()
    manifest = objects.Instance._obj_manifest()
    with pytest.raises(exception.NotFound):
        indirection.handle_class_action(ctx, "Instance", "get", manifest, [5], {})
    with pytest.raises(exception.ObjectValueError):
        indirection.handle_class_action(ctx, "Instance", "get", manifest, ["x"], {})
    with pytest.raises(TypeError, match="get"):
        indirection.handle_class_action(ctx, "Instance", "get", manifest, [1, 2], {})
    with pytest.raises(ValueError):
        indirection.handle_class_action(ctx, "Instance", "get_by_uuid", manifest, ["nope"], {})


# -- plain JSON: what the lane may send without the encoder's read-back check -------------


def test_primitives_of_the_built_in_classes_are_plain_json() -> None:
    for cls in (objects.Instance, objects.Flavor, objects.ComputeNode):
        assert primitive_is_plain(cls), cls


def test_a_float_field_anywhere_makes_a_primitive_not_plain() -> None:
    """A float may be NaN or infinite, which the stdlib encoder refuses and orjson writes
    as null: such a primitive must take the check."""

    class Gauge(PersistentObject, base.VersionedObject):
        fields = {"id": fields.IntegerField(), "load": fields.FloatField(nullable=True)}

    assert not primitive_is_plain(Gauge)
    assert primitive_is_plain(objects.Instance)

    @base.VersionedObjectRegistry.register
    class Flavor(BuiltinFlavor):
        VERSION = "1.1"
        fields = {**BuiltinFlavor.fields, "weight": fields.FloatField(nullable=True)}

    # Instance nests the newest Flavor, which has a float now
    assert not primitive_is_plain(objects.Instance)


@settings(max_examples=300, deadline=None)
@given(
    host=st.text() | st.none(),
    tags=st.lists(st.text(), max_size=4),
    metadata=st.dictionaries(st.text(), st.text(), max_size=4),
    vcpus=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    revision=st.integers(min_value=0, max_value=2**63 - 1),
)
def test_a_plain_primitive_is_what_any_json_encoder_reads_back_as_itself(
    host: str | None, tags: list[str], metadata: dict[str, str], vcpus: int, revision: int
) -> None:
    assert primitive_is_plain(objects.Instance)
    record = _record(host=host, tags=tags, metadata=metadata, vcpus=vcpus, revision=revision)
    primitive = record_to_primitive(objects.Instance, record)
    assert primitive is not None
    # The check a plain reply skips would have passed, and the stdlib takes it as it is
    assert orjson.loads(orjson.dumps(primitive)) == primitive
    assert json.loads(json.dumps(primitive, allow_nan=False)) == primitive


@settings(max_examples=500, deadline=None)
@given(stamp=st.datetimes(timezones=st.just(dt.UTC)))
def test_a_timestamp_is_written_as_the_object_writes_it(stamp: dt.datetime) -> None:
    """Every UTC timestamp, microseconds or none, from year 1 to 9999: the record's
    primitive holds the text the object's own primitive holds."""
    record = _record(created_at=stamp, updated_at=stamp.replace(microsecond=0))
    fast = record_to_primitive(objects.Instance, record)
    slow = _by_object(objects.Instance, record)
    _same(fast, slow)
    assert fast is not None
    data = fast[_KEY_DATA]
    assert data["created_at"] == stamp.isoformat(timespec="microseconds")
    assert data["updated_at"].endswith(".000000+00:00")
