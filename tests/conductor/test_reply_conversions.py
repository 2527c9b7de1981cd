"""How a compute process takes the conductor's replies in: each reply is converted once.

A pending object reads its load's primitive itself (no object built and copied into it);
an ``object_action``'s updates are read by the object they update; only results that
hold objects are rebuilt, and a primitive too new for this process is still backported.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import conductor
import objects
from objects import base, exception
from objects.context import RequestContext


@pytest.fixture
def client(database_url: str) -> Iterator[conductor.ConductorAPI]:
    objects.register_all()
    url = f"memory://replies-{uuid.uuid4().hex[:8]}"
    service = conductor.Conductor(url, database_url, topic="conductor", workers=2)
    service.start()
    api = conductor.connect(url, topic="conductor", timeout=20)
    try:
        yield api
    finally:
        api.close()
        service.stop()
        base.set_indirection_api(None)


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext(user_id="u", project_id="p")


def _flavor(ctx: RequestContext, name: str) -> Any:
    flavor = objects.Flavor(
        ctx, flavorid=f"f-{uuid.uuid4().hex[:6]}", name=name, vcpus=1, memory_mb=512, root_gb=1
    )
    flavor.create()
    return flavor


def _instance(ctx: RequestContext, **values: Any) -> Any:
    inst = objects.Instance(
        ctx, uuid=str(uuid.uuid4()), host="h1", state="building", vcpus=2, memory_mb=2048
    )
    for name, value in values.items():
        setattr(inst, name, value)
    inst.create()
    return inst


def test_get_async_loads_the_reply_into_the_pending_object_without_a_copy(
    client: Any, ctx: RequestContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = _instance(ctx, flavor=_flavor(ctx, "small"), tags=["a"], metadata={"k": "v"})

    def copy(self: Any, loaded: Any) -> None:
        raise AssertionError("a built object was copied into the pending one")

    monkeypatch.setattr(base.VersionedObject, "_obj_absorb", copy)
    inst = objects.Instance.get_async(ctx, created.id).wait(10)
    assert (inst.uuid, inst.tags, inst.metadata) == (created.uuid, ["a"], {"k": "v"})
    assert inst.flavor.name == "small" and inst.flavor._context is ctx
    assert inst.obj_what_changed() == set()
    assert inst.obj_revision == created.obj_revision
    assert inst._context is ctx
    # An in-place change of a list field read from the reply is still seen as a change.
    inst.tags.append("b")
    assert inst.obj_what_changed() == {"tags"}


def test_a_primitive_too_new_for_the_then_step_is_rebuilt_the_general_way(
    client: Any, ctx: RequestContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a then step that takes primitives but cannot read this one's version
    seen: list[Any] = []

    def then(value: Any) -> Any:
        seen.append(value)
        if isinstance(value, dict):
            raise exception.IncompatibleObjectVersion(objname="Instance", objver="1.9")
        return value

    then.takes_primitive = True  # type: ignore[attr-defined]
    rebuilt = object()
    monkeypatch.setattr(client._objects, "deserialize_entity", lambda context, value: rebuilt)
    # When the reply arrives
    step = client._class_result(ctx, then)
    primitive = {"versioned_object.name": "Instance", "versioned_object.version": "1.9"}
    # Then it is rebuilt (the serializer backports it) and handed over as an object
    assert step(primitive) is rebuilt
    assert seen == [primitive, rebuilt]


def test_save_applies_updates_holding_an_object_as_that_object(
    client: Any, ctx: RequestContext
) -> None:
    inst = _instance(ctx, flavor=_flavor(ctx, "small"))
    bigger = _flavor(ctx, "big")
    inst.flavor = bigger
    inst.host = "h2"
    inst.save_async().wait(10)
    assert isinstance(inst.flavor, objects.Flavor)
    assert inst.flavor.name == "big" and inst.flavor.id == bigger.id
    assert inst.obj_what_changed() == set()
    assert objects.Instance.get(ctx, inst.id).flavor.name == "big"


def test_class_action_results_holding_objects_are_rebuilt(client: Any, ctx: RequestContext) -> None:
    inst = _instance(ctx)
    found = objects.Instance.get_by_uuid_async(ctx, inst.uuid).wait(10)
    assert isinstance(found, objects.Instance) and found.id == inst.id
    assert found._context is ctx and found.obj_what_changed() == set()
    listed = objects.InstanceList.get_by_host(ctx, "h1")
    assert [i.id for i in listed] == [inst.id]
    assert all(isinstance(i, objects.Instance) for i in listed)


def test_the_conductor_keeps_each_argument_as_it_arrived_for_the_digest(
    ctx: RequestContext,
) -> None:
    from conductor.service import ConductorSerializer
    from conductor.unit_of_work import ServedContext

    objects.register_all()
    serializer = ConductorSerializer()
    served = serializer.deserialize_context(ctx.to_dict())
    assert isinstance(served, ServedContext)
    flavor = objects.Flavor(ctx, flavorid="f", name="n", vcpus=1, memory_mb=1, root_gb=1)
    arguments = {
        "objname": "Instance",
        "id": 42,
        "none": None,
        "object_versions": {"Instance": "1.2"},
        "args": [flavor.obj_to_primitive(), 3],
    }
    rebuilt = {k: serializer.deserialize_entity(served, v) for k, v in arguments.items()}
    assert served.wire_args == list(arguments.values())  # each once, nested ones not again
    assert rebuilt["objname"] == "Instance" and rebuilt["id"] == 42 and rebuilt["none"] is None
    assert isinstance(rebuilt["args"][0], objects.Flavor) and rebuilt["args"][1] == 3


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((7,), {}),
        (("a", None, 1.5, True, ["x", "y"]), {"k": 1, "tags": ["t"]}),
        ((), {"versioned_object.name": "x"}),
        ((("nested", "tuple"),), {"d": {"k": "v"}}),
        (("flavor",), {"flavor": "flavor"}),
    ],
)
def test_class_action_arguments_go_out_as_the_serializer_turns_them(
    client: Any, ctx: RequestContext, monkeypatch: pytest.MonkeyPatch, args: Any, kwargs: Any
) -> None:
    # Plain arguments skip the serializer's walk; the request must not tell.
    flavor = objects.Flavor(ctx, flavorid="f", name="n", vcpus=1, memory_mb=1, root_gb=1)
    args = tuple(flavor if a == "flavor" else a for a in args)
    kwargs = {k: flavor if v == "flavor" else v for k, v in kwargs.items()}
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(client._client, "start_call", lambda c, m, kw, **_: sent.append(kw))
    client.object_class_action_versions_async(ctx, "Instance", "get", {}, args, kwargs)
    to_wire = client._objects.serialize_entity
    assert sent[0]["args"] == to_wire(ctx, list(args))
    assert sent[0]["kwargs"] == to_wire(ctx, dict(kwargs))
    assert type(sent[0]["args"]) is list and type(sent[0]["kwargs"]) is dict
    assert sent[0]["args"] is not args and sent[0]["kwargs"] is not kwargs  # copies
