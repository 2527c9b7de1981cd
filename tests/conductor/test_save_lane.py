"""The save lane (``conductor.save_lane``): stock saves written straight from their
primitives.

Every answer of the lane is compared with the ordinary path's (the same saves of twin
rows, through a serializer the lanes do not answer for, at the same clock), alone and in
batches, on SQLite and PostgreSQL; its stored results answer replays on either path, and
every request that is not provably a stock save takes the ordinary path.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

import objects
from conductor import db, save_lane, unit_of_work
from conductor.db import requests as db_requests
from conductor.db import storage as db_storage
from conductor.manager import ConductorManager
from conductor.metrics import Metrics
from conductor.service import ConductorSerializer
from objects import exception, indirection
from objects.context import RequestContext
from objects.fixture import isolated_registry
from objects.persistent import save_primitive
from tests.conductor.lanes import (
    OrdinarySerializer,
    dispatcher,
    get_request,
    new_manager,
    same,
)

DATA = "versioned_object.data"


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext(user_id="u", project_id="p1", roles=["member"])


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[dt.datetime]:
    """The time every update writes as ``updated_at`` (set it per phase)."""
    now = [dt.datetime(2031, 1, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)]
    monkeypatch.setattr(db_storage, "utcnow", lambda: now[0])
    return now


@pytest.fixture
def ordinary_saves(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ``objname.objmethod`` of every object action that ran the ordinary way."""
    ran: list[str] = []
    handle = indirection.handle_object_action

    def counted(context: Any, objinst: Any, objmethod: str, *args: Any) -> Any:
        ran.append(f"{objinst.obj_name()}.{objmethod}")
        return handle(context, objinst, objmethod, *args)

    monkeypatch.setattr(indirection, "handle_object_action", counted)
    return ran


def create(manager: ConductorManager, ctx: RequestContext, obj: Any) -> Any:
    updates, _ = manager.object_action(ctx, obj, "create", [], {})
    obj._obj_apply_updates(updates)
    return obj


def new_instance(manager: ConductorManager, ctx: RequestContext, **values: Any) -> Any:
    flavor = create(
        manager,
        ctx,
        objects.Flavor(
            ctx, flavorid=uuid.uuid4().hex, name="m1", vcpus=1, memory_mb=512, root_gb=1
        ),
    )
    fields: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "host": "node-1",
        "state": "active",
        "vcpus": 2,
        "memory_mb": 1024,
        "flavor": flavor,
        "task_state": "spawning",
        "tags": ["x", "y"],
        "metadata": {"a": "b"},
    }
    fields.update(values)
    return create(manager, ctx, objects.Instance(ctx, **fields))


def save_request(
    ctx: RequestContext | dict[str, Any],
    obj: Any,
    *,
    request_id: str | None = None,
    reduced: bool = True,
    versions: dict[str, str] | None = None,
    objmethod: str = "save",
) -> tuple[Any, ...]:
    primitive = save_primitive(obj) if reduced else None
    if primitive is None:
        primitive = obj.obj_to_primitive()
    return (
        request_id or uuid.uuid4().hex,
        ctx.to_dict() if isinstance(ctx, RequestContext) else ctx,
        "object_action",
        {
            "objinst": primitive,
            "objmethod": objmethod,
            "args": [],
            "kwargs": {},
            "object_versions": (dict(type(obj)._obj_manifest()) if versions is None else versions),
        },
        None,
        "1.0",
    )


def changes(obj: Any, step: int) -> None:
    """The changes a test makes to one copy (the same for its twin)."""
    if step == 0:
        obj.host = "node-2"
        obj.state = "stopped"
    elif step == 1:
        obj.tags = ["z"]
        obj.metadata = {"a": "b", "c": "é"}
    elif step == 2:
        obj.task_state = None
        obj.vcpus = 8
    else:
        obj.host = obj.host  # set to what it is: written, but not sent back
        obj.memory_mb = 4096


def twins(manager: ConductorManager, ctx: RequestContext, count: int) -> list[list[Any]]:
    """Two lists of ``count`` instances with the same values (one per path)."""
    return [[new_instance(manager, ctx) for _ in range(count)] for _ in range(2)]


def rows(manager: ConductorManager, instances: list[Any]) -> list[dict[str, Any]]:
    with db.transaction_scope(manager._work.engine) as tx:
        found = db_storage.SQLStorage(tx).get_many("Instance", [i.id for i in instances])
    return [
        {k: v for k, v in found[i.id].items() if k not in ("id", "uuid", "flavor", "created_at")}
        for i in instances
    ]


# -- the same answers ---------------------------------------------------------------------


def test_the_lane_answers_a_batch_of_saves_as_the_ordinary_path_does(
    manager: ConductorManager,
    ctx: RequestContext,
    clock: list[dt.datetime],
    ordinary_saves: list[str],
) -> None:
    lane_copies, ordinary_copies = twins(manager, ctx, 4)
    for rnd in range(2):
        for copies in (lane_copies, ordinary_copies):
            for step, obj in enumerate(copies):
                changes(obj, (step + rnd) % 4)
        clock[0] += dt.timedelta(seconds=1)
        ordinary_saves.clear()
        fast = dispatcher(manager).dispatch_batch(
            [save_request(ctx, obj) for obj in lane_copies], redelivered=False
        )
        assert ordinary_saves == []  # every one written by the lane
        slow = dispatcher(manager, OrdinarySerializer()).dispatch_batch(
            [save_request(ctx, obj) for obj in ordinary_copies], redelivered=False
        )
        assert len(ordinary_saves) == 4
        same(fast, slow)
        assert all(ok for ok, _ in fast)
        for copies, outcomes in ((lane_copies, fast), (ordinary_copies, slow)):
            for obj, (_, (updates, result)) in zip(copies, outcomes, strict=True):
                assert result is None
                obj._obj_apply_updates(updates)
        assert rows(manager, lane_copies) == rows(manager, ordinary_copies)
        updates = fast[0][1][0]
        assert updates["obj_revision"] == 2 + rnd and updates["obj_what_changed"] == []
        assert "updated_at" in updates
        assert [obj.obj_revision for obj in lane_copies] == [2 + rnd] * 4


def test_the_lane_answers_a_lone_save_as_the_ordinary_path_does(
    manager: ConductorManager,
    ctx: RequestContext,
    clock: list[dt.datetime],
    ordinary_saves: list[str],
) -> None:
    (fast_obj,), (slow_obj,) = twins(manager, ctx, 1)
    ordinary_saves.clear()

    def lone(serializer: Any, obj: Any) -> tuple[bool, Any]:
        rid, c, method, args, ns, version = save_request(ctx, obj)
        try:
            return True, dispatcher(manager, serializer).dispatch(
                rid, c, method, args, ns, version, False
            )[1]
        except exception.ObjectsError as exc:
            return False, exc

    for step in range(4):
        changes(fast_obj, step)
        changes(slow_obj, step)
        clock[0] += dt.timedelta(seconds=1)
        fast = lone(ConductorSerializer(), fast_obj)
        assert ordinary_saves == []
        slow = lone(OrdinarySerializer(), slow_obj)
        assert ordinary_saves == ["Instance.save"]
        ordinary_saves.clear()
        same([fast], [slow])
        fast_obj._obj_apply_updates(fast[1][0])
        slow_obj._obj_apply_updates(slow[1][0])
    # Fields the row holds as they were sent are not sent back; updated_at is.
    assert "host" not in fast[1][0] and "memory_mb" not in fast[1][0]
    assert set(fast[1][0]) == {"updated_at", "obj_what_changed", "obj_revision"}


def test_conflicts_and_missing_rows_fail_each_save_as_the_ordinary_path_does(
    manager: ConductorManager,
    ctx: RequestContext,
    clock: list[dt.datetime],
    ordinary_saves: list[str],
) -> None:
    lane_copies, ordinary_copies = twins(manager, ctx, 3)
    requests: list[list[Any]] = [[], []]
    for which, copies in enumerate((lane_copies, ordinary_copies)):
        stale, gone, fine = copies
        # Another writer saved the stale one's row; the missing one's row is deleted.
        other = objects.Instance.obj_from_primitive(
            manager.object_class_action_versions(ctx, "Instance", "get", {}, [stale.id], {}),
            ctx,
        )
        other.host = "elsewhere"
        manager.object_action(ctx, other, "save", [], {})
        manager.object_action(ctx, gone, "destroy", [], {})
        for obj in copies:
            obj.host = "mine"
        requests[which] = [save_request(ctx, obj) for obj in copies]
    ordinary_saves.clear()

    fast = dispatcher(manager).dispatch_batch(requests[0], redelivered=False)
    assert ordinary_saves == []
    slow = dispatcher(manager, OrdinarySerializer()).dispatch_batch(requests[1], redelivered=False)
    # The same errors, of other rows.
    assert [ok for ok, _ in fast] == [ok for ok, _ in slow] == [False, False, True]
    for (_, error), (_, ordinary), obj in zip(fast[:2], slow[:2], lane_copies, strict=False):
        assert type(error) is type(ordinary)
        assert error.kwargs == dict(ordinary.kwargs, id=obj.id)
    same(fast[2:], slow[2:])
    assert [type(value) for _, value in fast[:2]] == [
        exception.ConcurrentUpdate,
        exception.NotFound,
    ]
    assert fast[0][1].kwargs["expected"] == 1 and fast[0][1].kwargs["actual"] == 2
    assert fast[2][0] and fast[2][1][0]["obj_revision"] == 2


def test_a_mixed_message_keeps_its_order_and_each_request_its_own_outcome(
    manager: ConductorManager,
    ctx: RequestContext,
    ordinary_saves: list[str],
) -> None:
    first, second = new_instance(manager, ctx), new_instance(manager, ctx)
    first.host = "a"
    second.host = "b"
    also_first = objects.Instance.obj_from_primitive(first.obj_to_primitive(), ctx)
    also_first.state = "error"
    flavor = objects.Flavor(ctx, flavorid="fx", name="x", vcpus=1, memory_mb=1, root_gb=1)
    ordinary_saves.clear()
    requests = [
        save_request(ctx, first),
        get_request(ctx, second.id),
        save_request(ctx, flavor, objmethod="create", reduced=False),
        save_request(ctx, also_first),  # a second save of the first row
        ("r-bad", ctx.to_dict(), "no_such_method", {}, None, "1.0"),
        save_request(ctx, second),
    ]

    outcomes = dispatcher(manager).dispatch_batch(requests, redelivered=False)

    assert ordinary_saves == ["Flavor.create", "Instance.save"]
    assert [ok for ok, _ in outcomes] == [True, True, True, False, False, True]
    assert outcomes[0][1][0]["obj_revision"] == 2
    assert outcomes[1][1][DATA]["id"] == second.id
    assert isinstance(outcomes[3][1], exception.ConcurrentUpdate)  # after the first
    assert outcomes[5][1][0]["obj_revision"] == 2


# -- exactly once -------------------------------------------------------------------------


def test_a_save_written_by_the_lane_is_answered_from_its_stored_result_on_replay(
    manager: ConductorManager, ctx: RequestContext, ordinary_saves: list[str]
) -> None:
    obj = new_instance(manager, ctx)
    obj.host = "once"
    request = save_request(ctx, obj)
    ordinary_saves.clear()
    rid, c, method, args, ns, version = request
    ((ok, first),) = dispatcher(manager).dispatch_batch([request], redelivered=False)
    assert ok and ordinary_saves == []
    with db.transaction_scope(manager._work.engine) as tx:
        stored = db_requests.find(tx.connection, rid)
    assert stored is not None and stored.result == first and stored.digest

    # Redelivered, and resent as a new message, on both paths, in batches and alone.
    for serializer in (ConductorSerializer(), OrdinarySerializer()):
        served = dispatcher(manager, serializer)
        for redelivered in (True, False):
            other = save_request(ctx, new_instance_changed(manager, ctx))
            answers = served.dispatch_batch([request, other], redelivered=redelivered)
            assert answers[0] == (True, first)
            assert answers[1][0]
            assert served.dispatch(rid, c, method, args, ns, version, redelivered) == (
                False,
                first,
            )
    assert ordinary_saves.count("Instance.save") >= 2  # the ordinary path replayed it too
    # Written once: the row is at revision 2.
    row = manager.object_class_action_versions(ctx, "Instance", "get", {}, [obj.id], {})
    assert row["versioned_object.revision"] == 2


def new_instance_changed(manager: ConductorManager, ctx: RequestContext) -> Any:
    obj = new_instance(manager, ctx)
    obj.host = "other"
    return obj


def test_a_save_written_the_ordinary_way_is_answered_by_the_lane_on_replay(
    manager: ConductorManager, ctx: RequestContext, ordinary_saves: list[str]
) -> None:
    obj = new_instance(manager, ctx)
    obj.task_state = "resizing"
    request = save_request(ctx, obj)
    ordinary_saves.clear()
    ((ok, first),) = dispatcher(manager, OrdinarySerializer()).dispatch_batch(
        [request], redelivered=False
    )
    assert ok and ordinary_saves == ["Instance.save"]
    ordinary_saves.clear()
    for redelivered in (True, False):
        assert dispatcher(manager).dispatch_batch([request], redelivered=redelivered) == [
            (True, first)
        ]
    assert ordinary_saves == []


def test_the_same_request_id_with_other_content_is_refused(
    manager: ConductorManager, ctx: RequestContext
) -> None:
    obj = new_instance(manager, ctx)
    obj.host = "first"
    request = save_request(ctx, obj)
    assert dispatcher(manager).dispatch_batch([request], redelivered=False)[0][0]
    obj.host = "second"  # the same copy (same revision), other content, the same id
    reused = save_request(ctx, obj, request_id=request[0])
    for serializer in (ConductorSerializer(), OrdinarySerializer()):
        for redelivered in (True, False):
            ((ok, error),) = dispatcher(manager, serializer).dispatch_batch(
                [reused], redelivered=redelivered
            )
            assert not ok and isinstance(error, exception.RequestIdReused)
    # Another user sending the same content under the same id is another request.
    stranger = save_request(
        RequestContext(user_id="v", project_id="p1", roles=["member"]),
        objects.Instance.obj_from_primitive(request[3]["objinst"], ctx),
        request_id=request[0],
    )
    ((ok, error),) = dispatcher(manager).dispatch_batch([stranger], redelivered=True)
    assert not ok and isinstance(error, exception.RequestIdReused)


def test_a_request_id_stored_before_rolls_the_lane_back_as_a_clash(
    manager: ConductorManager, ctx: RequestContext, ordinary_saves: list[str]
) -> None:
    """A save whose request id is stored already (by another request) while its row is
    still at its revision: the lane's write of results clashes (on PostgreSQL inside the
    update's own statement), nothing of it stays, and the ordinary path answers."""
    taken, other = new_instance(manager, ctx), new_instance(manager, ctx)
    taken.host = other.host = "clash"
    requests = [save_request(ctx, taken), save_request(ctx, other)]
    with db.transaction_scope(manager._work.engine) as tx:
        db_requests.store_result(tx.for_write(), requests[0][0], ["someone else's"], "0" * 64)
    ordinary_saves.clear()
    outcomes = dispatcher(manager).dispatch_batch(requests, redelivered=False)
    assert set(ordinary_saves) == {"Instance.save"}  # (the batch's own retries aside)
    assert not outcomes[0][0] and isinstance(outcomes[0][1], exception.RequestIdReused)
    assert outcomes[1][0] and outcomes[1][1][0]["obj_revision"] == 2
    assert [row["host"] for row in rows(manager, [taken, other])] == ["node-1", "clash"]


def test_a_failing_batch_rolls_back_and_runs_the_ordinary_way(
    manager: ConductorManager,
    ctx: RequestContext,
    ordinary_saves: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    copies = [new_instance(manager, ctx) for _ in range(3)]
    for obj in copies:
        obj.host = "after"
    calls: list[int] = []
    ordinary_saves.clear()
    store = db_requests.store_results

    def clash(session: Any, results: Any) -> None:
        calls.append(len(results))
        if len(calls) == 1:  # the lane's: its updates must be rolled back
            raise exception.DuplicateEntry(objname="ConductorRequest", keys=["request_id"])
        store(session, results)

    if manager._work.engine.dialect.name == "postgresql":
        # The lane stores its results with the update itself (requests.storing_results):
        # the clash comes once that statement ran.
        update_many = db_storage.SQLStorage.update_many

        def clash_after(self: db_storage.SQLStorage, *args: Any, **kwargs: Any) -> Any:
            records = update_many(self, *args, **kwargs)
            if kwargs.get("also") is not None:
                calls.append(len(records))
                if len(calls) == 1:
                    raise exception.DuplicateEntry(objname="ConductorRequest", keys=["request_id"])
            return records

        monkeypatch.setattr(db_storage.SQLStorage, "update_many", clash_after)
    else:
        monkeypatch.setattr(db_requests, "store_results", clash)
    outcomes = dispatcher(manager).dispatch_batch(
        [save_request(ctx, obj) for obj in copies], redelivered=False
    )
    assert all(ok for ok, _ in outcomes)
    assert ordinary_saves == ["Instance.save"] * 3
    assert [updates["obj_revision"] for _, (updates, _) in outcomes] == [2, 2, 2]
    assert calls[0] == 3


CONTEXTS: list[dict[str, Any]] = [
    {"user_id": "u", "project_id": "p1", "request_id": "r", "roles": ["b", "a"], "is_admin": False},
    {"user": "é", "tenant": "t", "roles": []},  # oslo.context's names; no request id
    {"user_id": "", "user": "v", "project_id": None, "project": "", "roles": ["\u2028", "x"]},
    {"user_id": 5, "roles": ["a"]},  # not strings: the ordinary digest writes them
    {"user_id": True, "roles": ["a"]},  # equal to 1, but another text
    {"user_id": 1, "roles": ["a"]},
    {"roles": ["a", 1]},
    {"user_id": ["u"]},
    {},
]

VALUES: list[Any] = [
    "node-2",
    'q"\\\n\x00',
    "\ud800",
    7,
    2**70,
    -0.0,
    1.5,
    float("nan"),
    float("inf"),
    True,
    None,
    ["z", 1],
    {"a": "b", "c": "é"},
    {1: 2},
]


def test_the_lane_digests_a_save_as_the_unit_of_work_does() -> None:
    """``save_digest`` is ``unit_of_work._digest`` of the context ``from_dict`` makes and
    of the arguments' values as they arrived, byte for byte, whatever their types and
    order; one message's contexts keep their own identities."""
    heads: dict[Any, str] = {}
    for number, (ctxt, value) in enumerate((ctxt, value) for ctxt in CONTEXTS for value in VALUES):
        data = {"id": number, "host": value}
        primitive = {
            "versioned_object.name": "Instance",
            "versioned_object.namespace": "objects",
            "versioned_object.version": "1.2",
            "versioned_object.data": data,
            "versioned_object.changes": ["host"],
            "versioned_object.revision": 3,
        }
        args: dict[str, Any] = {
            "objinst": primitive,
            "objmethod": "save",
            "args": [],
            "kwargs": {},
            "object_versions": {"Instance": "1.2", "Flavor": "1.0"},
        }
        for order in (args, dict(reversed(args.items()))):
            expected = unit_of_work._digest(
                "object_action", RequestContext.from_dict(ctxt), list(order.values())
            )
            assert save_lane.save_digest(ctxt, order, heads) == expected
            assert save_lane.save_digest(ctxt, order, {}) == expected


# -- the ordinary path, whenever in doubt ---------------------------------------------


def test_saves_that_are_not_provably_stock_take_the_ordinary_path(
    manager: ConductorManager, ctx: RequestContext, ordinary_saves: list[str]
) -> None:
    def one(request: tuple[Any, ...]) -> tuple[bool, Any]:
        ordinary_saves.clear()
        (outcome,) = dispatcher(manager).dispatch_batch([request], redelivered=False)
        assert ordinary_saves, request
        return outcome

    obj = new_instance(manager, ctx)
    obj.host = "h"
    # The whole object, not the changed fields only.
    assert one(save_request(ctx, obj, reduced=False))[0]
    obj.obj_reset_changes()
    obj.obj_revision = 2
    # A nested object changed.
    obj.flavor = objects.Flavor.obj_from_primitive(obj.flavor.obj_to_primitive(), ctx)
    obj.flavor.name = "renamed"
    obj.flavor.obj_reset_changes()
    obj.obj_reset_changes()
    obj.flavor = obj.flavor
    assert one(save_request(ctx, obj))[0]
    obj.obj_reset_changes()
    obj.obj_revision = 3
    # Another manifest; no revision; nothing changed; an admin context; another method.
    obj.host = "i"
    older = dict(objects.Instance._obj_manifest(), Instance="1.1")
    assert one(save_request(ctx, obj, versions=older))[0]
    obj.obj_revision = 4
    obj.host = "j"
    unread = save_request(ctx, obj)
    del unread[3]["objinst"]["versioned_object.revision"]
    ok, error = one(unread)
    assert not ok and isinstance(error, exception.ObjectActionError)
    nothing = save_request(ctx, obj)
    nothing[3]["objinst"].pop("versioned_object.changes")
    nothing[3]["objinst"][DATA] = {"id": obj.id}
    assert one(nothing)[0]
    admin = dict(ctx.to_dict(), is_admin=True)
    ((ok, error),) = dispatcher(manager).dispatch_batch([save_request(admin, obj)])
    assert not ok and isinstance(error, PermissionError)  # refused, as ever
    assert one(save_request(ctx, obj, objmethod="refresh"))[0]
    # A ComputeNode saves the same way (@saves_changes): the lane writes it.
    ordinary_saves.clear()
    node = create(
        manager,
        ctx,
        objects.ComputeNode(ctx, host="cn-1", vcpus=4, vcpus_used=0, memory_mb=8, memory_mb_used=0),
    )
    node.vcpus_used = 2
    ordinary_saves.clear()
    ((ok, (updates, _)),) = dispatcher(manager).dispatch_batch([save_request(ctx, node)])
    assert ok and updates["obj_revision"] == 2 and ordinary_saves == []


def test_project_scoping_turns_the_lane_off(
    engine: db.Engine, ctx: RequestContext, ordinary_saves: list[str]
) -> None:
    scoped = new_manager(engine, project_scoping=True)
    obj = new_instance(scoped, ctx)
    obj.host = "scoped"
    ordinary_saves.clear()
    ((ok, _),) = dispatcher(scoped).dispatch_batch([save_request(ctx, obj)])
    assert ok and ordinary_saves == ["Instance.save"]
    scoped.close()


def test_a_value_the_column_refuses_fails_as_the_ordinary_path_says(
    manager: ConductorManager, ctx: RequestContext, ordinary_saves: list[str]
) -> None:
    obj = new_instance(manager, ctx)
    obj.host = "x" * 100_000
    fast = dispatcher(manager).dispatch_batch([save_request(ctx, obj)], redelivered=False)
    twin = new_instance(manager, ctx)
    twin.host = "x" * 100_000
    slow = dispatcher(manager, OrdinarySerializer()).dispatch_batch(
        [save_request(ctx, twin)], redelivered=False
    )
    assert [ok for ok, _ in fast] == [ok for ok, _ in slow]
    if not fast[0][0]:
        assert type(fast[0][1]) is type(slow[0][1])


# -- metrics ----------------------------------------------------------------------------


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in metrics.registry.collect():
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_each_message_and_request_once(
    engine: db.Engine, ctx: RequestContext
) -> None:
    metrics = Metrics()
    counted = new_manager(engine, metrics=metrics)
    served = dispatcher(counted)
    a, b, c = (new_instance(counted, ctx) for _ in range(3))
    before = _samples(metrics)
    for obj in (a, b, c):
        obj.host = "m"
    stale = objects.Instance.obj_from_primitive(a.obj_to_primitive(), ctx)
    get = get_request(ctx, c.id)
    replayed = save_request(ctx, b)
    # Saves only (one of them then stale); saves with a get; saves with a get_by_uuid
    # left to the ordinary path; a lone save; a redelivered one.
    served.dispatch_batch([save_request(ctx, a), replayed], redelivered=False)
    stale.host = "late"
    c.state = "error"
    served.dispatch_batch([save_request(ctx, stale), save_request(ctx, c), get])
    by_uuid = dict(get[3], objmethod="get_by_uuid", args=[c.uuid])
    c.obj_revision = 2
    c.state = "stopped"
    served.dispatch_batch([save_request(ctx, c), (uuid.uuid4().hex, *get[1:3], by_uuid, *get[4:])])
    c.obj_revision = 3
    c.task_state = "t"
    rid, cx, method, args, ns, version = save_request(ctx, c)
    served.dispatch(rid, cx, method, args, ns, version, False)
    served.dispatch_batch([replayed], redelivered=True)

    got = _samples(metrics)

    def requests(method: str, outcome: str) -> float:
        key = (("objmethod", method), ("objname", "Instance"), ("outcome", outcome))
        name = "conductor_requests_total"
        return got.get((name, key), 0) - before.get((name, key), 0)

    def total(name: str) -> float:
        return got[(name, ())] - before.get((name, ()), 0)

    assert requests("save", "ok") == 2 + 1 + 1 + 1 + 1
    assert requests("save", "ConcurrentUpdate") == 1
    assert requests("get", "ok") == 1
    assert requests("get_by_uuid", "ok") == 1
    assert total("conductor_batch_size_count") == 5  # one per message
    assert total("conductor_batch_size_sum") == 2 + 3 + 2 + 1 + 1
    assert total("conductor_replays_total") == 1
    assert got[("conductor_requests_in_flight", ())] == 0
    counted.close()


def test_an_unreachable_database_fails_each_save_with_database_error() -> None:
    engine = db.create_engine("postgresql+psycopg://u:pw@127.0.0.1:1/none?connect_timeout=2")
    try:
        with isolated_registry():
            objects.register_all()
            metrics = Metrics()
            served = dispatcher(ConductorManager(engine, metrics=metrics))
            ctx = RequestContext(user_id="u", project_id="p")
            saves = []
            for id_ in (1, 2):
                obj = objects.Instance(ctx, id=id_)
                obj.obj_reset_changes()
                obj.obj_revision = 1
                obj.host = "h"
                saves.append(save_request(ctx, obj))
            outcomes = served.dispatch_batch(saves)
            assert [type(value) for _, value in outcomes] == [exception.DatabaseError] * 2
            key = (
                "conductor_requests_total",
                (("objmethod", "save"), ("objname", "Instance"), ("outcome", "DatabaseError")),
            )
            assert _samples(metrics)[key] == 2  # counted once, by the ordinary path
            assert _samples(metrics)[("conductor_requests_in_flight", ())] == 0
    finally:
        engine.dispose()


def test_update_many_returns_the_columns_asked_for(
    manager: ConductorManager, ctx: RequestContext
) -> None:
    a, b = new_instance(manager, ctx), new_instance(manager, ctx)
    with db.transaction_scope(manager._work.engine) as tx:
        storage = db_storage.SQLStorage(tx)
        records = storage.update_many(
            "Instance",
            [(a.id, {"host": "ra"}, 1), (b.id, {"host": "rb"}, 5)],
            returning=("id", "revision", "host"),
        )
        assert records == [{"id": a.id, "revision": 2, "host": "ra"}, None]
        with pytest.raises(ValueError):
            storage.update_many("Instance", [(b.id, {"host": "x"}, 1)], returning=("host",))


def test_the_gets_of_a_message_are_answered_before_its_saves_are_written(
    broker_url: str, migrated_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message that holds gets and saves: its gets' replies leave when the gets are
    answered, not when the saves' transaction commits (over the broker, where no call
    takes the in-process direct path)."""
    import threading

    import conductor
    from objects import base
    from tests.brokers import delete_queues
    from tests.conductor.processes import unique_topic

    gate, writing = threading.Event(), threading.Event()
    serve = save_lane.StockSaves.serve

    def held(self: Any, requests: Any, *args: Any, **kwargs: Any) -> Any:
        if any(method == "object_action" for _, _, method, _ in requests):
            writing.set()
            assert gate.wait(timeout=30)
        return serve(self, requests, *args, **kwargs)

    objects.register_all()
    topic = unique_topic("test-gets-first")
    # More workers than messages: no message waits for a worker a held one has.
    service = conductor.Conductor(broker_url, migrated_database_url, topic=topic, workers=32)
    service.start()
    client = conductor.connect(broker_url, topic=topic, timeout=30)
    try:
        ctx = RequestContext(user_id="u", project_id="p1")
        made = [
            objects.Instance(
                ctx, uuid=str(uuid.uuid4()), host="h", state="building", vcpus=1, memory_mb=64
            )
            for _ in range(40)
        ]
        objects.wait_all([inst.create_async() for inst in made])
        to_save, to_get = made[:20], made[20:]
        monkeypatch.setattr(save_lane.StockSaves, "serve", held)

        # Saves and gets interleaved: every message of several requests holds both.
        saves, gets = [], []
        for saved, got in zip(to_save, to_get, strict=True):
            saved.host = "moved"
            saves.append(saved.save_async())
            gets.append(objects.Instance.get_async(ctx, got.id))
        try:
            for got, inst in zip(gets, to_get, strict=True):
                got.wait(timeout=10)
                assert (got.id, got.host) == (inst.id, "h")
            assert writing.is_set() and not any(f.done() for f in saves)
        finally:
            gate.set()
        objects.wait_all(saves)
        assert {inst.id: inst.host for inst in objects.InstanceList.get_all(ctx)} == {
            **{inst.id: "moved" for inst in to_save},
            **{inst.id: "h" for inst in to_get},
        }
    finally:
        gate.set()
        client.close()
        service.stop()
        base.set_indirection_api(None)
        delete_queues(broker_url, [topic, f"{topic}.{service.server}"])
