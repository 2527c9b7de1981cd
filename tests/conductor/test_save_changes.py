"""Issue 13: a save sends only what it writes (the object's id, its changed fields, their
names and its revision), through a real conductor: the embedded default (memory:// +
SQLite) and RabbitMQ + PostgreSQL (when CONDUCTOR_TEST_TRANSPORT_URL / _DATABASE_URL are
set). Classes with a save or primitive methods of their own, and oslo.messaging servers
(wire=oslo), still get the whole object.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import conductor
import objects
import transport
from objects import base, exception
from objects.context import RequestContext
from objects.instance import Instance
from objects.persistent import save_primitive
from objects.remoting import ActionReply, sent_changes

DATA = "versioned_object.data"
CHANGES = "versioned_object.changes"
REVISION = "versioned_object.revision"


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext(user_id="u1", project_id="p1")


@pytest.fixture
def sent(stack: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """The ``objinst`` of every ``object_action`` request the client sends."""
    api = base.get_indirection_api()
    assert isinstance(api, conductor.ConductorAPI)
    captured: list[dict[str, Any]] = []
    start_call = api._client.start_call

    def spy(context: Any, method: str, kwargs: dict[str, Any], **options: Any) -> Any:
        if method == "object_action":
            captured.append(kwargs["objinst"])
        return start_call(context, method, kwargs, **options)

    monkeypatch.setattr(api._client, "start_call", spy)
    yield captured


def stored(ctx: RequestContext) -> Any:
    inst = objects.Instance(
        ctx,
        uuid=str(uuid.uuid4()),
        host="node-1",
        state="building",
        vcpus=2,
        memory_mb=2048,
        tags=["a", "b"],
        metadata={"k": "v"},
        flavor=objects.Flavor(
            ctx, id=1, flavorid="f1", name="m1.tiny", vcpus=1, memory_mb=512, root_gb=1
        ),
    )
    inst.create()
    return objects.Instance.get(ctx, inst.id)


def test_a_save_sends_only_the_id_the_changed_fields_and_the_revision(
    sent: list[dict[str, Any]], ctx: RequestContext
) -> None:
    inst = stored(ctx)
    revision, updated_at = inst.obj_revision, inst.updated_at
    inst.host = "node-2"
    inst.tags.append("c")
    sent.clear()
    inst.save_async().result(30)
    (objinst,) = sent
    assert objinst[DATA] == {"id": inst.id, "host": "node-2", "tags": ["a", "b", "c"]}
    assert objinst[CHANGES] == ["host", "tags"]
    assert objinst[REVISION] == revision
    # The reply was applied: new revision, the server's updated_at, nothing changed.
    assert inst.obj_revision == revision + 1
    assert inst.updated_at is not None and (updated_at is None or inst.updated_at > updated_at)
    assert inst.obj_what_changed() == set()
    # Only the changed columns were written: the rest of the row is as it was.
    fresh = objects.Instance.get(ctx, inst.id)
    assert fresh == inst
    assert (fresh.state, fresh.metadata, fresh.flavor.name) == ("building", {"k": "v"}, "m1.tiny")
    assert fresh.obj_revision == inst.obj_revision


def test_a_changed_nested_object_travels_whole_and_is_written(
    sent: list[dict[str, Any]], ctx: RequestContext
) -> None:
    inst = stored(ctx)
    inst.flavor.name = "m1.small"
    sent.clear()
    inst.save()
    (objinst,) = sent
    assert set(objinst[DATA]) == {"id", "flavor"}
    assert objinst[DATA]["flavor"][DATA]["name"] == "m1.small"
    assert inst.obj_what_changed() == set() and inst.flavor.obj_what_changed() == set()
    assert objects.Instance.get(ctx, inst.id).flavor.name == "m1.small"


def test_the_changes_the_save_took_when_it_left_are_those_save_primitive_finds(
    sent: list[dict[str, Any]], ctx: RequestContext
) -> None:
    # The client hands the changes its twin took (objects.remoting.sent_changes) to
    # save_primitive instead of walking the object again: the request is the same.
    inst = stored(ctx)
    inst.host = "node-9"
    inst.tags.append("c")
    inst.metadata["k2"] = "v2"
    inst.flavor.name = "m1.other"
    expected = save_primitive(inst)
    sent.clear()
    inst.save_async().result(30)
    assert sent == [expected]
    assert expected is not None and expected[CHANGES] == ["flavor", "host", "metadata", "tags"]
    assert inst.obj_what_changed() == set()
    # Only the twin's own step for this very object says what it sent.
    other = stored(ctx)
    step = ActionReply(inst, inst._obj_sent_state())
    assert sent_changes(step, inst) == set() and sent_changes(step, other) is None
    assert sent_changes(lambda reply: reply, inst) is None and sent_changes(None, inst) is None


def test_a_stale_or_never_read_copy_is_still_refused(
    sent: list[dict[str, Any]], ctx: RequestContext
) -> None:
    inst = stored(ctx)
    stale = objects.Instance.get(ctx, inst.id)
    inst.host = "first"
    inst.save()
    stale.host = "second"
    with pytest.raises(exception.ConcurrentUpdate):
        stale.save()
    assert "host" in stale.obj_what_changed()
    unread = objects.Instance(ctx, id=inst.id, host="blind")
    with pytest.raises(exception.ObjectActionError, match="never read"):
        unread.save()
    assert set(sent[-1][DATA]) == {"id", "host"} and REVISION not in sent[-1]
    assert objects.Instance.get(ctx, inst.id).host == "first"


def test_a_change_made_while_the_save_is_in_flight_survives_it(
    sent: list[dict[str, Any]], ctx: RequestContext
) -> None:
    inst = stored(ctx)
    inst.host = "h1"
    future = inst.save_async()
    inst.host = "h2"
    inst.task_state = "x"
    future.result(30)
    assert (inst.host, inst.task_state) == ("h2", "x")
    assert {"host", "task_state"} <= inst.obj_what_changed()
    inst.save()
    assert set(sent[-1][DATA]) == {"id", "host", "task_state"}
    fresh = objects.Instance.get(ctx, inst.id)
    assert (fresh.host, fresh.task_state) == ("h2", "x")


class _OwnPrimitive(Instance):
    """A subclass whose primitive is its own: its save sends the whole object."""

    def obj_to_primitive(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return super().obj_to_primitive(*args, **kwargs)


class _OwnSave(Instance):
    """A subclass whose save body is its own (not marked ``saves_changes``)."""

    @base.remotable
    def save(self) -> None:
        self._db_save()


def test_classes_with_their_own_save_or_primitive_get_the_whole_object(
    ctx: RequestContext,
) -> None:
    objects.register_all()
    values = dict(id=4, uuid=str(uuid.uuid4()), host="h", state="active", vcpus=1, memory_mb=1)
    for cls in (_OwnPrimitive, _OwnSave):
        obj = cls(ctx, **values)
        obj.obj_reset_changes()
        obj.obj_revision = 3
        obj.host = "other"
        assert save_primitive(obj) is None
    obj = objects.Instance(ctx, **values)
    obj.obj_reset_changes()
    obj.obj_revision = 3
    obj.host = "other"
    assert save_primitive(obj) == {
        "versioned_object.name": "Instance",
        "versioned_object.namespace": obj.OBJ_PROJECT_NAMESPACE,
        "versioned_object.version": obj.VERSION,
        DATA: {"id": 4, "host": "other"},
        CHANGES: ["host"],
        REVISION: 3,
    }


def test_a_save_to_an_oslo_messaging_server_sends_the_whole_object(
    ctx: RequestContext,
) -> None:
    objects.register_all()
    rpc = transport.get_transport(
        f"memory://save-oslo-{uuid.uuid4().hex[:8]}", transport.TransportConfig(wire="oslo")
    )
    api = conductor.ConductorAPI(rpc, owns_transport=True)
    captured: list[dict[str, Any]] = []

    def stub(context: Any, method: str, kwargs: dict[str, Any], **options: Any) -> Any:
        captured.append(kwargs["objinst"])
        return options["future"]

    api._client.start_call = stub  # type: ignore[method-assign,assignment]
    try:
        obj = objects.Instance(
            ctx, id=4, uuid=str(uuid.uuid4()), host="h", state="active", vcpus=1, memory_mb=1
        )
        obj.obj_reset_changes()
        obj.obj_revision = 3
        obj.host = "other"
        api.object_action_async(ctx, obj, "save", [], {}, obj._obj_manifest())
        api.object_action_async(ctx, obj, "refresh", [], {}, obj._obj_manifest())
    finally:
        api.close()
    assert [set(p[DATA]) for p in captured] == [set(obj.__dict__) & set(obj.fields)] * 2
