"""Stock loads answered from the row: the same reply as building the object, on real databases.

The conductor turns the row of a stock ``get``/``get_by_*`` straight into the reply's
primitive when the caller reads our versions (``objects.persistent.record_to_primitive``).
These tests run every load both ways, alone and in a batch, on SQLite and PostgreSQL,
and compare the replies byte for byte; and check that what it cannot promise goes the
object's way.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

import objects
from conductor import db
from conductor.manager import ConductorManager, ConductorManagerV3
from conductor.service import ConductorSerializer
from conductor.unit_of_work import ServedContext, digest_of
from objects import base, exception, indirection
from objects.context import RequestContext
from objects.instance import Instance as BuiltinInstance
from transport.dispatcher import RPCDispatcher

MANIFEST = {"Instance": "1.2", "Flavor": "1.0"}


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext(user_id="u", project_id="p1")


def create(manager: ConductorManager, ctx: RequestContext, obj: Any) -> Any:
    updates, _ = manager.object_action(ctx, obj, "create", [], {})
    obj._obj_apply_updates(updates)
    return obj


@pytest.fixture
def rows(manager: ConductorManager, ctx: RequestContext) -> dict[str, Any]:
    flavor = create(
        manager,
        ctx,
        objects.Flavor(ctx, flavorid="f1", name="m1.tiny", vcpus=1, memory_mb=512, root_gb=1),
    )
    full = create(
        manager,
        ctx,
        objects.Instance(
            ctx,
            uuid=str(uuid.uuid4()),
            host="node-1",
            state="active",
            vcpus=2,
            memory_mb=1024,
            flavor=flavor,
            task_state="spawning",
            tags=["x", "y"],
            metadata={"a": "b", "c": "d"},
        ),
    )
    bare = create(
        manager,
        ctx,
        objects.Instance(ctx, uuid=str(uuid.uuid4()), state="building", vcpus=1, memory_mb=1),
    )
    node = create(
        manager,
        ctx,
        objects.ComputeNode(
            ctx, host="node-1", vcpus=8, vcpus_used=2, memory_mb=4096, memory_mb_used=1024
        ),
    )
    return {"flavor": flavor, "full": full, "bare": bare, "node": node}


def loads(rows: dict[str, Any]) -> list[tuple[str, str, list[Any]]]:
    return [
        ("Instance", "get", [rows["full"].id]),
        ("Instance", "get", [rows["bare"].id]),
        ("Instance", "get_by_uuid", [rows["full"].uuid]),
        ("Instance", "get_by_uuid", [rows["bare"].uuid]),
        ("Flavor", "get", [rows["flavor"].id]),
        ("Flavor", "get_by_flavorid", ["f1"]),
        ("ComputeNode", "get_by_host", ["node-1"]),
    ]


@pytest.fixture
def objects_way(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Call it to make every load build its object (the path without the shortcut)."""

    def off() -> None:
        monkeypatch.setattr(indirection, "record_fetch_of", lambda method: None)

    return off


def same(fast: Any, slow: Any) -> None:
    assert fast == slow
    assert json.dumps(fast) == json.dumps(slow)


def manifest_of(objname: str) -> dict[str, str]:
    return base.VersionedObjectRegistry.newest(objname)._obj_manifest()


def test_loads_alone_answer_what_the_object_would(
    manager: ConductorManager,
    ctx: RequestContext,
    rows: dict[str, Any],
    objects_way: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = loads(rows)
    built: list[Any] = []
    to_wire = indirection.to_wire

    def counted(*args: Any) -> Any:
        built.append(args)
        return to_wire(*args)

    monkeypatch.setattr(indirection, "to_wire", counted)
    fast = [
        manager.object_class_action_versions(ctx, name, method, manifest_of(name), args, {})
        for name, method, args in calls
    ]
    assert built == []  # no object was built for any of them
    objects_way()
    slow = [
        manager.object_class_action_versions(ctx, name, method, manifest_of(name), args, {})
        for name, method, args in calls
    ]
    same(fast, slow)
    bare = fast[1]["versioned_object.data"]
    assert bare["host"] is None and bare["flavor"] is None and bare["task_state"] is None
    full = fast[0]["versioned_object.data"]
    assert full["flavor"]["versioned_object.data"]["name"] == "m1.tiny"
    assert full["tags"] == ["x", "y"] and full["metadata"] == {"a": "b", "c": "d"}
    assert full["created_at"].endswith("+00:00")


def dispatcher(manager: ConductorManager) -> RPCDispatcher:
    return RPCDispatcher([manager, ConductorManagerV3(manager)], ConductorSerializer())


def batch(ctx: RequestContext, calls: list[tuple[str, str, list[Any]]]) -> list[Any]:
    return [
        (
            uuid.uuid4().hex,
            ctx.to_dict(),
            "object_class_action_versions",
            {
                "objname": name,
                "objmethod": method,
                "object_versions": manifest_of(name),
                "args": args,
                "kwargs": {},
            },
            None,
            "1.0",
        )
        for name, method, args in calls
    ]


def test_loads_in_a_batch_answer_what_the_object_would(
    manager: ConductorManager, ctx: RequestContext, rows: dict[str, Any], objects_way: Any
) -> None:
    calls = [*loads(rows), ("Instance", "get", [10**9])]
    fast = dispatcher(manager).dispatch_batch(batch(ctx, calls), redelivered=False)
    objects_way()
    slow = dispatcher(manager).dispatch_batch(batch(ctx, calls), redelivered=False)
    assert [ok for ok, _ in fast] == [True] * (len(calls) - 1) + [False]
    same([v for _, v in fast[:-1]], [v for _, v in slow[:-1]])
    assert isinstance(fast[-1][1], exception.NotFound)
    assert str(fast[-1][1]) == str(slow[-1][1])


def test_a_caller_at_an_older_version_gets_the_backport(
    manager: ConductorManager, ctx: RequestContext, rows: dict[str, Any]
) -> None:
    old = {"Instance": "1.1", "Flavor": "1.0"}
    primitive = manager.object_class_action_versions(
        ctx, "Instance", "get", old, [rows["full"].id], {}
    )
    assert primitive["versioned_object.version"] == "1.1"
    assert "metadata" not in primitive["versioned_object.data"]


def test_a_class_registered_in_place_of_a_built_in_one_answers_itself(
    manager: ConductorManager, ctx: RequestContext, rows: dict[str, Any]
) -> None:
    @base.VersionedObjectRegistry.register
    class Instance(BuiltinInstance):
        @classmethod
        def _from_record(cls, context: Any, record: Any) -> Any:
            return super()._from_record(context, {**record, "host": "from-subclass"})

    primitive = manager.object_class_action_versions(
        ctx, "Instance", "get", Instance._obj_manifest(), [rows["full"].id], {}
    )
    assert primitive["versioned_object.data"]["host"] == "from-subclass"


def test_a_row_the_object_refuses_fails_as_it_would(
    engine: db.Engine,
    manager: ConductorManager,
    ctx: RequestContext,
    rows: dict[str, Any],
    objects_way: Any,
) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE instances SET state = 'melting' WHERE id = {rows['full'].id}")
    errors = []
    for _ in range(2):
        with pytest.raises(exception.ObjectValueError) as caught:
            manager.object_class_action_versions(
                ctx, "Instance", "get", MANIFEST, [rows["full"].id], {}
            )
        errors.append(str(caught.value))
        objects_way()
    assert errors[0] == errors[1]
    assert "state" in errors[0]


def test_project_scoping_still_hides_other_projects_rows(
    engine: db.Engine, rows: dict[str, Any]
) -> None:
    scoped = ConductorManager(
        engine, serialize_transactions=engine.dialect.name == "sqlite", project_scoping=True
    )
    own = RequestContext(user_id="u", project_id="p1")
    other = RequestContext(user_id="u", project_id="p2")
    found = scoped.object_class_action_versions(
        own, "Instance", "get", MANIFEST, [rows["full"].id], {}
    )
    assert found["versioned_object.data"]["uuid"] == rows["full"].uuid
    with pytest.raises(exception.NotFound):
        scoped.object_class_action_versions(
            other, "Instance", "get", MANIFEST, [rows["full"].id], {}
        )
    requests = batch(other, [("Instance", "get", [rows["full"].id])] * 2)
    outcomes = dispatcher(scoped).dispatch_batch(requests, redelivered=False)
    assert all(not ok and isinstance(v, exception.NotFound) for ok, v in outcomes)


def test_arguments_that_are_their_own_value_are_kept_as_they_arrived_for_the_digest() -> None:
    serializer = ConductorSerializer()
    args = {
        "objname": "Instance",
        "objmethod": "get",
        "object_versions": dict(MANIFEST),
        "args": [7],
        "kwargs": {},
        "nested": {"deep": [1, {"x": "y"}]},
    }
    context = serializer.deserialize_context(RequestContext(user_id="u").to_dict())
    assert isinstance(context, ServedContext)
    values = {k: serializer.deserialize_entity(context, v) for k, v in args.items()}
    assert values == args
    assert context.wire_args == list(args.values())  # each argument once, in order
    other = serializer.deserialize_context(RequestContext(user_id="u").to_dict())
    for v in {**args, "args": [8]}.values():
        serializer.deserialize_entity(other, v)
    digest = digest_of(context, "object_class_action_versions", values)()
    assert digest is not None
    assert digest != digest_of(other, "object_class_action_versions", values)()


def test_replies_without_objects_go_out_as_they_are_and_objects_still_carry_revisions() -> None:
    serializer = ConductorSerializer()
    ctx = RequestContext()
    updates = [{"updated_at": "2026-01-01T00:00:00+00:00", "obj_what_changed": [], "x": 1}, None]
    assert serializer.serialize_entity(ctx, updates) is updates
    primitive = {
        "versioned_object.name": "Flavor",
        "versioned_object.namespace": "versionedobjects",
        "versioned_object.version": "1.0",
        "versioned_object.data": {"id": 1},
        "versioned_object.revision": 4,
    }
    out = serializer.serialize_entity(ctx, [{"obj_revision": 4}, [dict(primitive)]])
    assert out[1][0]["versioned_object.data"]["obj_revision"] == 4
    assert serializer.serialize_entity(ctx, (1, 2)) == [1, 2]


def test_a_save_of_only_the_changed_fields_and_the_revision_is_served_today(
    manager: ConductorManager, ctx: RequestContext, rows: dict[str, Any]
) -> None:
    # The design of a smaller save request needs no new wire format: a primitive with the
    # id, the changed fields and the revision is an object the conductor saves as is.
    full = rows["full"]
    primitive = full.obj_to_primitive()
    primitive["versioned_object.data"] = {"id": full.id, "host": "node-9"}
    primitive["versioned_object.changes"] = ["host"]
    partial = base.VersionedObject.obj_from_primitive(primitive, ctx)
    updates, result = manager.object_action(ctx, partial, "save", [], {}, MANIFEST)
    assert result is None
    # The host went as sent; what the save changed besides comes back: updated_at (not
    # created_at, which a save never changes and the caller's copy has already).
    assert set(updates) == {"updated_at", "obj_what_changed", "obj_revision"}
    assert updates["obj_revision"] == full.obj_revision + 1
    stored = manager.object_class_action_versions(ctx, "Instance", "get", MANIFEST, [full.id], {})
    data = stored["versioned_object.data"]
    assert data["host"] == "node-9"
    assert (
        data["tags"] == ["x", "y"] and data["flavor"]["versioned_object.data"]["name"] == "m1.tiny"
    )
    # A stale one is refused as a whole save would be.
    with pytest.raises(exception.ConcurrentUpdate):
        manager.object_action(
            ctx, base.VersionedObject.obj_from_primitive(primitive, ctx), "save", [], {}, MANIFEST
        )
