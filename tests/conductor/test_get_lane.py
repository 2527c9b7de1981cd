"""The lane (``conductor.lane``): stock gets by id answered straight from their rows.

Every answer of the lane is compared with the ordinary path's (the same requests through
a serializer the lane does not answer for), alone and in batches, on SQLite and
PostgreSQL; every request that is not provably a stock get must take the ordinary path.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from typing import Any

import pytest
import sqlalchemy

import objects
import transport
from conductor import db, lane
from conductor.db.storage import SQLStorage
from conductor.manager import ConductorManager, ConductorManagerV3
from conductor.metrics import Metrics
from conductor.namespaces import ObjectForm
from conductor.service import ConductorSerializer
from objects import base, exception, indirection
from objects.context import RequestContext
from objects.fixture import isolated_registry
from objects.instance import Instance as BuiltinInstance
from objects.persistent import fetches_by_id, reads_record
from objects.versioned import OVO_REVISION_FIELD
from tests.conductor.lanes import (
    OrdinarySerializer,
    dispatcher,
    get_request,
    inline_wire_form,
    new_manager,
    same,
)
from transport.dispatcher import RPCDispatcher


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext(user_id="u", project_id="p1")


@pytest.fixture
def rows(manager: ConductorManager, ctx: RequestContext) -> dict[str, Any]:
    def create(obj: Any) -> Any:
        updates, _ = manager.object_action(ctx, obj, "create", [], {})
        obj._obj_apply_updates(updates)
        return obj

    flavor = create(
        objects.Flavor(ctx, flavorid="f1", name="m1.tiny", vcpus=1, memory_mb=512, root_gb=1)
    )
    full = create(
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
        )
    )
    # NULLs: no host, flavor or task state; empty JSON lists and dicts.
    bare = create(objects.Instance(ctx, uuid=str(uuid.uuid4()), vcpus=1, memory_mb=1))
    unicode = create(
        objects.Instance(
            ctx,
            uuid=str(uuid.uuid4()),
            host="nœud-☃",
            vcpus=3,
            memory_mb=3,
            tags=["é", ""],
            metadata={"k": 'v\n"q"'},
        )
    )
    return {"flavor": flavor, "full": full, "bare": bare, "unicode": unicode}


@pytest.fixture
def ordinary_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ``objname.objmethod`` of every request that ran the ordinary way."""
    ran: list[str] = []
    handle = indirection.handle_class_action

    def counted(context: Any, objname: str, objmethod: str, *args: Any) -> Any:
        ran.append(f"{objname}.{objmethod}")
        return handle(context, objname, objmethod, *args)

    monkeypatch.setattr(indirection, "handle_class_action", counted)
    return ran


# -- the same answers ---------------------------------------------------------------------


def test_the_lane_answers_a_batch_of_gets_as_the_ordinary_path_does(
    manager: ConductorManager,
    ctx: RequestContext,
    rows: dict[str, Any],
    ordinary_runs: list[str],
) -> None:
    ids = [rows[name].id for name in ("full", "bare", "unicode", "full")] + [10**9]
    requests = [get_request(ctx, id_) for id_ in ids]
    requests.append(get_request(ctx, rows["flavor"].id, objname="Flavor"))

    fast = dispatcher(manager).dispatch_batch(requests, redelivered=False)
    assert ordinary_runs == []  # every one answered from its row
    slow = dispatcher(manager, OrdinarySerializer()).dispatch_batch(requests, redelivered=False)
    assert len(ordinary_runs) == len(requests)

    same(fast, slow)
    data = fast[1][1]["versioned_object.data"]
    assert data["host"] is None and data["flavor"] is None and data["task_state"] is None
    assert data["tags"] == [] and data["metadata"] == {}
    full = fast[0][1]["versioned_object.data"]
    assert full["flavor"]["versioned_object.data"]["name"] == "m1.tiny"
    assert full["metadata"] == {"a": "b", "c": "d"} and full[OVO_REVISION_FIELD] == 1
    missing = fast[4][1]
    assert isinstance(missing, exception.NotFound) and missing.kwargs["id"] == 10**9


def test_the_lane_answers_a_lone_get_as_the_ordinary_path_does(
    manager: ConductorManager,
    ctx: RequestContext,
    rows: dict[str, Any],
    ordinary_runs: list[str],
) -> None:
    def lone(serializer: Any, id_: int) -> tuple[bool, Any]:
        rid, c, method, args, ns, version = get_request(ctx, id_)
        try:
            return True, dispatcher(manager, serializer).dispatch(
                rid, c, method, args, ns, version, False
            )[1]
        except exception.ObjectsError as exc:
            return False, exc

    for id_ in (rows["full"].id, rows["bare"].id, rows["unicode"].id, 10**9):
        fast = lone(ConductorSerializer(), id_)
        assert ordinary_runs == []
        same([fast], [lone(OrdinarySerializer(), id_)])
        ordinary_runs.clear()


def test_a_mixed_message_keeps_its_order_and_each_request_its_own_outcome(
    manager: ConductorManager,
    ctx: RequestContext,
    rows: dict[str, Any],
    ordinary_runs: list[str],
) -> None:
    answered = dispatcher(manager).dispatch_batch([get_request(ctx, rows["full"].id)])[0][1]
    # as the caller reads it: from the reply's JSON
    inst = objects.Instance.obj_from_primitive(json.loads(json.dumps(answered)), ctx)
    inst.host = "moved"
    save = (
        uuid.uuid4().hex,
        ctx.to_dict(),
        "object_action",
        {
            "objinst": inst.obj_to_primitive(),
            "objmethod": "save",
            "args": [],
            "kwargs": {},
            "object_versions": dict(objects.Instance._obj_manifest()),
        },
        None,
        "1.0",
    )
    requests = [
        get_request(ctx, rows["bare"].id),
        get_request(ctx, 10**9),
        get_request(ctx, rows["full"].uuid, objmethod="get_by_uuid"),
        save,
        get_request(ctx, 10**9 + 1),
        ("r-bad", ctx.to_dict(), "no_such_method", {}, None, "1.0"),
        get_request(ctx, rows["unicode"].id),
    ]

    outcomes = dispatcher(manager).dispatch_batch(requests, redelivered=False)

    assert ordinary_runs == ["Instance.get_by_uuid"]
    assert [ok for ok, _ in outcomes] == [True, False, True, True, False, False, True]
    assert outcomes[0][1]["versioned_object.data"]["id"] == rows["bare"].id
    assert [outcomes[i][1].kwargs["id"] for i in (1, 4)] == [10**9, 10**9 + 1]
    assert isinstance(outcomes[1][1], exception.NotFound)
    assert outcomes[2][1]["versioned_object.data"]["uuid"] == rows["full"].uuid
    assert outcomes[3][1][1] is None  # the save's [updates, result]
    assert outcomes[6][1]["versioned_object.data"]["id"] == rows["unicode"].id


def test_a_row_only_the_object_can_answer_for_takes_the_ordinary_path(
    engine: db.Engine,
    manager: ConductorManager,
    ctx: RequestContext,
    rows: dict[str, Any],
    ordinary_runs: list[str],
) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE instances SET state = 'melting' WHERE id = {rows['full'].id}")
    outcomes = dispatcher(manager).dispatch_batch(
        [get_request(ctx, rows["full"].id), get_request(ctx, rows["bare"].id)]
    )
    assert ordinary_runs == ["Instance.get"]
    assert isinstance(outcomes[0][1], exception.ObjectValueError)
    assert outcomes[1][0] is True


# -- what leaves the lane -----------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        "older manifest",
        "kwargs",
        "string id",
        "bool id",
        "id out of range",
        "no manifest",
        "extra argument",
    ],
)
def test_requests_that_are_not_provably_stock_gets_take_the_ordinary_path(
    manager: ConductorManager,
    ctx: RequestContext,
    rows: dict[str, Any],
    ordinary_runs: list[str],
    change: str,
) -> None:
    request = list(get_request(ctx, rows["full"].id))
    args = request[3] = dict(request[3])
    if change == "older manifest":
        args["object_versions"] = {"Instance": "1.1", "Flavor": "1.0"}
    elif change == "kwargs":
        args["args"], args["kwargs"] = [], {"id": rows["full"].id}
    elif change == "string id":
        args["args"] = [str(rows["full"].id)]
    elif change == "bool id":
        args["args"] = [True]
    elif change == "id out of range":
        args["args"] = [2**70]
    elif change == "no manifest":
        args["object_versions"] = {}
    else:
        args["extra"] = 1
    for alone in ([tuple(request)], [tuple(request)] * 2):
        ordinary_runs.clear()
        outcomes = dispatcher(manager).dispatch_batch(alone)
        if change != "extra argument":  # that one is refused before any method runs
            # (each ran once or, after its batch fell back, twice)
            assert len(ordinary_runs) >= len(alone)
        slow = dispatcher(manager, OrdinarySerializer()).dispatch_batch(alone)
        same(outcomes, slow)
    if change == "older manifest":
        assert outcomes[0][1]["versioned_object.version"] == "1.1"
        assert "metadata" not in outcomes[0][1]["versioned_object.data"]


def test_an_admin_context_is_still_refused(
    manager: ConductorManager, ctx: RequestContext, rows: dict[str, Any]
) -> None:
    admin = {**ctx.to_dict(), "is_admin": True}
    outcomes = dispatcher(manager).dispatch_batch(
        [get_request(admin, rows["full"].id), get_request(ctx, rows["full"].id)]
    )
    assert isinstance(outcomes[0][1], PermissionError)
    assert outcomes[1][0] is True
    rid, c, method, args, ns, version = get_request(admin, rows["full"].id)
    with pytest.raises(PermissionError):
        dispatcher(manager).dispatch(rid, c, method, args, ns, version)
    allowing = RPCDispatcher([manager], ConductorSerializer(allow_admin_context=True))
    ok, value = allowing.dispatch_batch([get_request(admin, rows["full"].id)])[0]
    assert ok and value["versioned_object.data"]["id"] == rows["full"].id


def test_project_scoping_turns_the_lane_off(engine: db.Engine, rows: dict[str, Any]) -> None:
    scoped = new_manager(engine, project_scoping=True)
    other = RequestContext(user_id="u", project_id="p2")
    outcomes = dispatcher(scoped).dispatch_batch(
        [get_request(other, rows["full"].id), get_request(other, rows["bare"].id)]
    )
    assert all(isinstance(value, exception.NotFound) for _, value in outcomes)
    own = RequestContext(user_id="u", project_id="p1")
    ok, value = dispatcher(scoped).dispatch_batch([get_request(own, rows["full"].id)])[0]
    assert ok and value["versioned_object.data"]["id"] == rows["full"].id


def test_a_nova_style_request_answered_in_nova_form_takes_the_ordinary_path(
    manager: ConductorManager,
    ctx: RequestContext,
    rows: dict[str, Any],
    ordinary_runs: list[str],
) -> None:
    v3 = ConductorManagerV3(manager, ObjectForm("nova", "nova_object"))
    served = RPCDispatcher([v3], ConductorSerializer(object_namespaces={"nova": "nova_object"}))
    outcomes = served.dispatch_batch(
        [get_request(ctx, rows["full"].id, version="3.0") for _ in range(2)]
    )
    assert ordinary_runs == ["Instance.get"] * 2
    assert outcomes[0][1]["nova_object.data"]["id"] == rows["full"].id
    # Our own form at 3.x (no foreign namespace configured) takes the lane.
    ordinary_runs.clear()
    outcomes = dispatcher(manager).dispatch_batch(
        [get_request(ctx, rows["full"].id, version="3.0")]
    )
    assert ordinary_runs == []
    assert outcomes[0][1]["versioned_object.data"]["id"] == rows["full"].id


def test_a_class_registered_in_place_of_the_built_in_one_answers_itself(
    manager: ConductorManager,
    ctx: RequestContext,
    rows: dict[str, Any],
    ordinary_runs: list[str],
) -> None:
    served = dispatcher(manager)
    assert served.dispatch_batch([get_request(ctx, rows["full"].id)])[0][0]
    assert ordinary_runs == []

    @base.VersionedObjectRegistry.register
    class Instance(BuiltinInstance):
        @classmethod
        def _from_record(cls, context: Any, record: Any) -> Any:
            return super()._from_record(context, {**record, "host": "from-subclass"})

    ok, value = served.dispatch_batch([get_request(ctx, rows["full"].id)])[0]
    assert ok and value["versioned_object.data"]["host"] == "from-subclass"
    assert ordinary_runs == ["Instance.get"]

    @base.VersionedObjectRegistry.register
    class Instance2(BuiltinInstance):  # same name and version: replaces the one above
        @classmethod
        def obj_name(cls) -> str:
            return "Instance"

        @base.remotable_classmethod
        @reads_record
        def get(cls, context: Any, id: int) -> Any:
            return {**cls._db_get_record(context, id), "host": "unmarked"}

    assert not fetches_by_id(Instance2, "get")
    ok, value = served.dispatch_batch([get_request(ctx, rows["full"].id)])[0]
    assert ok and value["versioned_object.data"]["host"] == "unmarked"


def test_a_newer_class_leaves_callers_of_the_older_manifest_to_the_ordinary_path(
    manager: ConductorManager,
    ctx: RequestContext,
    rows: dict[str, Any],
    ordinary_runs: list[str],
) -> None:
    old_manifest = dict(objects.Instance._obj_manifest())

    @base.VersionedObjectRegistry.register
    class Instance(BuiltinInstance):
        VERSION = "1.3"

    ok, value = dispatcher(manager).dispatch_batch(
        [get_request(ctx, rows["full"].id, versions=old_manifest)]
    )[0]
    assert ok and value["versioned_object.version"] == "1.2"
    assert ordinary_runs == ["Instance.get"]
    ok, value = dispatcher(manager).dispatch_batch([get_request(ctx, rows["full"].id)])[0]
    assert ok and value["versioned_object.version"] == "1.3"
    assert ordinary_runs == ["Instance.get"]  # the new manifest is ours: the lane


def test_an_in_memory_sqlite_database_is_read_on_its_one_connection(
    ordinary_runs: list[str],
) -> None:
    engine = db.create_engine("sqlite://")
    try:
        with isolated_registry():
            objects.register_all()
            db.Base.metadata.create_all(engine)
            manager = new_manager(engine)
            ctx = RequestContext(user_id="u", project_id="p")
            inst = objects.Instance(ctx, uuid=str(uuid.uuid4()), vcpus=1, memory_mb=1, tags=["t"])
            updates, _ = manager.object_action(ctx, inst, "create", [], {})
            requests = [get_request(ctx, updates["id"]), get_request(ctx, 10**9)]

            fast = dispatcher(manager).dispatch_batch(requests)
            rid, c, method, args, _, _ = requests[0]
            lone = dispatcher(manager).dispatch(rid, c, method, args, None, "1.0")
            # Never inline: the lane cannot keep a connection of its own
            assert dispatcher(manager).dispatch_inline(rid, c, method, args, None, "1.0") is None
            assert ordinary_runs == []
            slow = dispatcher(manager, OrdinarySerializer()).dispatch_batch(requests)

            same(fast, slow)
            assert lone == (False, slow[0][1])
            manager.close()
    finally:
        engine.dispose()


def test_reads_record_by_accepts_only_known_keys() -> None:
    with pytest.raises(ValueError, match="only"):
        reads_record(by="uuid")
    assert fetches_by_id(BuiltinInstance, "get")
    assert not fetches_by_id(BuiltinInstance, "get_by_uuid")
    assert not fetches_by_id(BuiltinInstance, "save")


# -- metrics, logs, outages ---------------------------------------------------------------


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in metrics.registry.collect():
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_each_message_and_request_once(
    engine: db.Engine, ctx: RequestContext, rows: dict[str, Any]
) -> None:
    metrics = Metrics()
    counted = new_manager(engine, metrics=metrics)
    served = dispatcher(counted)
    # A message of gets only, a mixed one, a lone get.
    served.dispatch_batch([get_request(ctx, rows["full"].id), get_request(ctx, 10**9)])
    served.dispatch_batch(
        [
            get_request(ctx, rows["bare"].id),
            get_request(ctx, rows["full"].uuid, objmethod="get_by_uuid"),
            get_request(ctx, rows["full"].uuid, objmethod="get_by_uuid"),
        ]
    )
    served.dispatch_batch(
        [get_request(ctx, rows["bare"].id), get_request(ctx, "x"), get_request(ctx, "y")]
    )
    rid, c, method, args, ns, version = get_request(ctx, rows["full"].id)
    served.dispatch(rid, c, method, args, ns, version)

    got = _samples(metrics)

    def requests(method: str, outcome: str) -> float:
        key = (("objmethod", method), ("objname", "Instance"), ("outcome", outcome))
        return got.get(("conductor_requests_total", key), 0)

    assert requests("get", "ok") == 3 + 1
    assert requests("get", "NotFound") == 1
    assert requests("get", "ObjectValueError") == 2
    assert requests("get_by_uuid", "ok") == 2
    assert got[("conductor_batch_size_count", ())] == 4  # one per message
    assert got[("conductor_batch_size_sum", ())] == 2 + 3 + 3 + 1
    assert got[("conductor_requests_in_flight", ())] == 0
    counted.close()


def test_an_unreachable_database_fails_each_get_with_database_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = db.create_engine("postgresql+psycopg://u:pw@127.0.0.1:1/none?connect_timeout=2")
    try:
        with isolated_registry():
            objects.register_all()
            metrics = Metrics()
            served = dispatcher(ConductorManager(engine, metrics=metrics))
            ctx = RequestContext(user_id="u", project_id="p")
            outcomes = served.dispatch_batch([get_request(ctx, 1), get_request(ctx, 2)])
            assert [type(value) for _, value in outcomes] == [exception.DatabaseError] * 2
            assert "127.0.0.1" not in str(outcomes[0][1])
            rid, c, method, args, _, _ = get_request(ctx, 3)
            with caplog.at_level("WARNING", logger="conductor.lane"):
                with pytest.raises(exception.DatabaseError):
                    served.dispatch(rid, c, method, args, None, "1.0")
            assert [r for r in caplog.records if "Instance.get failed" in r.getMessage()]
            key = (
                "conductor_requests_total",
                (("objmethod", "get"), ("objname", "Instance"), ("outcome", "DatabaseError")),
            )
            assert _samples(metrics)[key] == 3
    finally:
        engine.dispose()


@pytest.fixture
def lane_connections(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every connection the lane opens from now on (its ``_Kept``: ``.connection``)."""
    made: list[Any] = []
    connect = lane._Connections._connect

    def recorded(self: Any) -> Any:
        kept = connect(self)
        made.append(kept)
        return kept

    monkeypatch.setattr(lane._Connections, "_connect", recorded)
    return made


# Ending another connection's session is PostgreSQL's (pg_terminate_backend).
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_connection_lost_while_idle_costs_no_request(
    engine: db.Engine,
    manager: ConductorManager,
    ctx: RequestContext,
    rows: dict[str, Any],
    lane_connections: list[Any],
) -> None:
    connects = lane_connections
    served = dispatcher(manager)
    assert served.dispatch_batch([get_request(ctx, rows["full"].id)])[0][0]
    assert served.dispatch_batch([get_request(ctx, rows["bare"].id)])[0][0]
    assert len(connects) == 1  # kept
    with engine.connect() as conn:
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        conn.commit()

    ok, value = served.dispatch_batch([get_request(ctx, rows["full"].id)])[0]

    assert ok and value["versioned_object.data"]["id"] == rows["full"].id
    assert len(connects) == 2  # the dead one dropped, the read run again on a new one


# The lane reads PostgreSQL's timestamps in a session time zone of its own (UTC).
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_timestamps_are_the_ordinary_answer_whatever_the_session_time_zone(
    engine: db.Engine,
    ctx: RequestContext,
    rows: dict[str, Any],
    ordinary_runs: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    elsewhere = db.create_engine(engine.url)

    @sqlalchemy.event.listens_for(elsewhere, "connect")
    def set_zone(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.execute("SET TIME ZONE 'Asia/Kolkata'")
        dbapi_connection.commit()

    counted = new_manager(elsewhere)
    try:
        ids = [rows[name].id for name in ("full", "bare", "unicode")]
        requests = [get_request(ctx, id_) for id_ in ids]
        fast = dispatcher(counted).dispatch_batch(requests)
        lone = dispatcher(counted).dispatch_batch(requests[:1])
        assert ordinary_runs == []
        slow = dispatcher(counted, OrdinarySerializer()).dispatch_batch(requests)
        same(fast, slow)
        same(lone, slow[:1])
        stamp = fast[0][1]["versioned_object.data"]["created_at"]
        assert stamp.endswith("+00:00") and stamp == rows["full"].created_at.isoformat(
            timespec="microseconds"
        )
        # The lane's records are the storage's, value for value and type for type
        reader = counted._lane._reader  # type: ignore[union-attr]
        with db.transaction_scope(elsewhere) as tx:
            stored = SQLStorage(tx).get_many("Instance", ids)
        for many in (False, True):
            read = reader.fetch("Instance", ids if many else ids[:1])
            for id_, record in read.items():
                assert record == stored[id_]
                assert [type(v) for v in record.values()] == [type(v) for v in stored[id_].values()]
                created = record["created_at"]
                assert created.tzinfo is dt.UTC and created.utcoffset() == dt.timedelta(0)
        # Timestamps in another zone (a session not in UTC) are converted as ever
        rows_of = reader._rows  # type: ignore[union-attr]
        zone = dt.timezone(dt.timedelta(hours=5, minutes=30))

        def elsewhere_rows(*args: Any) -> list[Any]:
            return [
                tuple(v.astimezone(zone) if isinstance(v, dt.datetime) else v for v in row)
                for row in rows_of(*args)
            ]

        monkeypatch.setattr(reader, "_rows", elsewhere_rows)
        for many in (False, True):
            read = reader.fetch("Instance", ids if many else ids[:1])
            for id_, record in read.items():
                assert record == stored[id_]
                assert record["updated_at"].tzinfo is dt.UTC
    finally:
        counted.close()
        elsewhere.dispose()


# -- inline (transport.InlineEndpoint: a lone get on the consuming thread) -----------------


def test_a_lone_get_answered_inline_is_the_ordinary_answer(
    engine: db.Engine,
    manager: ConductorManager,
    ctx: RequestContext,
    rows: dict[str, Any],
    ordinary_runs: list[str],
) -> None:
    served = dispatcher(manager)
    assert served.answers_inline
    for id_ in (rows["full"].id, rows["unicode"].id, 10**9):
        rid, c, method, args, ns, version = get_request(ctx, id_)
        answered = served.dispatch_inline(rid, c, method, args, ns, version)
        assert answered is not None and ordinary_runs == []
        slow = dispatcher(manager, OrdinarySerializer()).dispatch_batch(
            [(rid, c, method, args, ns, version)]
        )
        if answered[0]:
            answered = (True, inline_wire_form(answered[1], objects.Instance, ctx))
        same([answered], slow)
        ordinary_runs.clear()
    # What is not a stock get, or not for our serializer, is left to a worker
    rid, c, method, args, ns, version = get_request(ctx, rows["full"].id, objmethod="get_all")
    assert served.dispatch_inline(rid, c, method, args, ns, version) is None
    rid, c, method, args, ns, version = get_request(ctx, rows["full"].id)
    plain = dispatcher(manager, OrdinarySerializer())
    assert plain.dispatch_inline(rid, c, method, args, ns, version) is None
    admin = {**ctx.to_dict(), "is_admin": True}
    assert served.dispatch_inline(rid, admin, method, args, ns, version) is None
    assert ordinary_runs == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # inline reads are PG's
def test_an_inline_read_cut_short_is_left_to_a_worker_and_inline_reads_pause(
    engine: db.Engine,
    manager: ConductorManager,
    ctx: RequestContext,
    rows: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = Metrics()
    counted = new_manager(engine, metrics=metrics)
    served = dispatcher(counted)
    rid, c, method, args, ns, version = get_request(ctx, rows["full"].id)
    answered = served.dispatch_inline(rid, c, method, args, ns, version)
    assert answered is not None and answered[0]
    assert answered[1].wire() is not None  # as the server sends it: counted then
    with engine.connect() as locker:
        # Given a table another session holds locked: the inline read waits for it
        locker.exec_driver_sql("LOCK TABLE instances IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        left = served.dispatch_inline(rid, c, method, args, ns, version)
        waited = time.monotonic() - started
        # Then it is cut at INLINE_TIMEOUT and left to a worker...
        assert left is None
        assert lane.INLINE_TIMEOUT <= waited < lane.INLINE_TIMEOUT + 1.0
        # ...and the next inline reads are not even tried for a while
        started = time.monotonic()
        assert served.dispatch_inline(rid, c, method, args, ns, version) is None
        assert time.monotonic() - started < 0.05
        locker.rollback()
    # The worker's read (the ordinary lane) answers as ever
    assert served.dispatch_batch([(rid, c, method, args, ns, version)])[0][0]
    key = (
        "conductor_requests_total",
        (("objmethod", "get"), ("objname", "Instance"), ("outcome", "ok")),
    )
    assert _samples(metrics)[key] == 2  # the one left is counted by its worker only
    monkeypatch.setattr(lane, "INLINE_BACKOFF", 0.0)
    counted._lane._reader._inline_after = 0.0  # type: ignore[union-attr]
    assert served.dispatch_inline(rid, c, method, args, ns, version) is not None
    counted.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_sqlite_inline_read_never_waits_for_the_conductors_transaction_lock(
    engine: db.Engine, ctx: RequestContext, rows: dict[str, Any]
) -> None:
    """SQLite: a write holds the conductor's transaction lock, maybe for long; an inline
    read (on the caller's thread, in one process) leaves the get to a worker instead."""
    lock = threading.Lock()
    lane_ = lane.StockGets(engine, lock=lock)
    request = get_request(ctx, rows["full"].id)[:4]
    try:
        assert lane_.serve_inline(request) is not None
        with lock:
            started = time.monotonic()
            assert lane_.serve_inline(request) is None
            assert time.monotonic() - started < 0.05
            assert lane_._reader.inline_ready()  # type: ignore[attr-defined]  # no backoff
        assert lane_.serve_inline(request) is not None
    finally:
        lane_.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_sqlite_inline_read_waits_for_a_locked_file_at_most_its_bound(
    engine: db.Engine, ctx: RequestContext, rows: dict[str, Any]
) -> None:
    """The engine's connections wait up to SQLITE_BUSY_TIMEOUT_MS for a lock; the inline
    read's own connection no longer than INLINE_TIMEOUT (in WAL mode only a checkpoint or
    recovery makes a reader wait at all)."""
    lane_ = lane.StockGets(engine)
    request = get_request(ctx, rows["full"].id)[:4]
    try:
        assert lane_.serve_inline(request) is not None
        (kept,) = lane_._reader._inline  # type: ignore[attr-defined]
        (busy,) = kept.cursor.execute("PRAGMA busy_timeout").fetchone()
        assert busy == int(lane.INLINE_TIMEOUT * 1000)
        with engine.connect() as other:
            (pooled,) = other.exec_driver_sql("PRAGMA busy_timeout").one()
        assert pooled > busy
    finally:
        lane_.close()


# -- SQLite: a batch read as one JSON row ---------------------------------------------------


#: The JSON read is SQLite's (PostgreSQL sends a batch's ids as one array).
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def ordinary_reads(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The ids of every batch read the ordinary way (a transaction, SQLStorage.get_many)."""
    ordinary: list[list[int]] = []
    fetch = lane._Transactions.fetch

    def counted(self: Any, objname: str, ids: list[int]) -> Any:
        ordinary.append(ids)
        return fetch(self, objname, ids)

    monkeypatch.setattr(lane._Transactions, "fetch", counted)
    return ordinary


@sqlite_only
def test_a_sqlite_batch_is_read_as_one_row_and_gives_the_storages_records(
    engine: db.Engine, rows: dict[str, Any], ordinary_reads: list[list[int]]
) -> None:
    steps: list[str] = []
    reader = lane._Connections(engine)
    try:
        ids = [rows[name].id for name in ("full", "bare", "unicode")] + [10**9]
        got = reader.fetch("Instance", ids)
        reader._free[0].connection.set_trace_callback(steps.append)
        again = reader.fetch("Instance", list(reversed(ids)))
    finally:
        reader.close()
    assert ordinary_reads == []  # no row held a REAL or a BLOB
    assert len(steps) == 1 and "json_group_array" in steps[0]  # one statement, one row
    with db.transaction_scope(engine) as tx:
        expected = SQLStorage(tx).get_many("Instance", ids)
    assert got == again == expected and sorted(got) == sorted(ids[:3])
    for id_, record in expected.items():  # types too: bool, datetime, parsed JSON
        assert [type(v) for v in got[id_].values()] == [type(v) for v in record.values()]


@sqlite_only
@pytest.mark.parametrize(
    ("column", "value"),
    [("vcpus", "2.5"), ("memory_mb", "1e300"), ("host", "X'00ff'"), ("host", "X''")],
    ids=["real", "huge-real", "blob", "empty-blob"],
)
def test_a_sqlite_row_json_cannot_carry_exactly_is_read_the_ordinary_way(
    engine: db.Engine,
    rows: dict[str, Any],
    ordinary_reads: list[list[int]],
    column: str,
    value: str,
) -> None:
    """SQLite keeps what it is given whatever the column's type: a REAL (JSON would round
    it to 15 digits) or a BLOB (json_array refuses it) sends the batch the ordinary way,
    which gives it as the storage does."""
    odd = rows["bare"].id
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE instances SET {column} = {value} WHERE id = {odd}")
    ids = [rows["full"].id, odd]
    reader = lane._Connections(engine)
    try:
        got = reader.fetch("Instance", ids)
    finally:
        reader.close()
    assert ordinary_reads == [ids]
    with db.transaction_scope(engine) as tx:
        assert got == SQLStorage(tx).get_many("Instance", ids)


@sqlite_only
def test_an_sqlite_without_json_functions_reads_the_ordinary_way(
    engine: db.Engine, rows: dict[str, Any]
) -> None:
    """Before SQLite 3.38 the JSON functions were a build option: without them every
    batch reads the ordinary way, and the JSON read is not tried again."""
    ids = [rows["full"].id, rows["bare"].id]
    reader = lane._Connections(engine)
    try:
        reader.fetch("Instance", ids)
        plan = reader._plans["Instance"]
        sql = plan.many[0].replace("json_group_array(", "json_group_array_missing(", 1)
        reader._plans["Instance"] = plan._replace(many=(sql, plan.many[1]))
        got = reader.fetch("Instance", ids)
        assert reader._json_missing
        tried: list[str] = []
        rows_of = reader._rows

        def counted(sql: str, *rest: Any) -> Any:
            tried.append(sql)
            return rows_of(sql, *rest)

        reader._rows = counted  # type: ignore[method-assign, assignment]
        assert reader.fetch("Instance", ids) == got
    finally:
        reader.close()
    assert tried == []  # not tried again
    with db.transaction_scope(engine) as tx:
        assert got == SQLStorage(tx).get_many("Instance", ids)


def test_a_rows_local_form_is_given_only_when_its_reply_surely_fits(
    manager: ConductorManager, ctx: RequestContext, rows: dict[str, Any]
) -> None:
    """The record goes to a caller in this process only when its reply, made the wire's
    way, would surely be within the size limit; otherwise the primitive goes, and the
    wire's own check says whether it fits."""
    rid, c, method, args, ns, version = get_request(ctx, rows["full"].id)
    answered = dispatcher(manager).dispatch_inline(rid, c, method, args, ns, version)
    assert answered is not None and answered[0]
    answer = answered[1]
    size = len(json.dumps(answer.wire()))
    assert answer.local(None) is not None
    assert answer.local(size + 2 * lane._PRIMITIVE_EXTRA_BYTES) is not None
    assert answer.local(size) is None


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_lanes_reads_use_the_key_however_large_the_table_has_grown(
    engine: db.Engine,
    manager: ConductorManager,
    ctx: RequestContext,
    rows: dict[str, Any],
    lane_connections: list[Any],
) -> None:
    """psycopg prepares a statement it ran five times, and PostgreSQL keeps a prepared
    statement's generic plan until the table is analyzed (never, without autovacuum):
    reads planned while ``instances`` held a few rows would scan every row of it later."""
    served = dispatcher(manager)
    ids = [rows["full"].id, rows["bare"].id, rows["unicode"].id]
    for _ in range(15):  # prepared, then planned generically, while the table is tiny
        assert served.dispatch_batch([get_request(ctx, ids[0])])[0][0]
        assert all(ok for ok, _ in served.dispatch_batch([get_request(ctx, i) for i in ids]))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO instances (uuid, state, vcpus, memory_mb, revision, created_at, tags,"
            " metadata) SELECT gen_random_uuid()::text, 'grown', 1, 64, 1, now(), '[]', '{}'"
            " FROM generate_series(1, 20000)"
        )

    assert served.dispatch_batch([get_request(ctx, ids[0])])[0][0]
    assert all(ok for ok, _ in served.dispatch_batch([get_request(ctx, i) for i in ids]))
    (kept,) = lane_connections
    connection = kept.connection
    prepared = connection.execute(
        "SELECT name, statement FROM pg_prepared_statements WHERE statement LIKE '%instances%'"
    ).fetchall()
    assert prepared  # the lane's reads are prepared statements
    for name, statement in prepared:
        args = ", ".join(
            f"ARRAY[{ids[0]}]::bigint[]" if "ANY" in statement else str(ids[0])
            for _ in range(statement.count("$"))
        )
        plan = "\n".join(row[0] for row in connection.execute(f"EXPLAIN EXECUTE {name}({args})"))
        assert "Seq Scan" not in plan, f"{statement}:\n{plan}"


# -- a message's gets in parts ------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 63, 64, 70, 96, 200, 250, 1024])
def test_gets_are_split_into_about_equal_parts_of_about_part(count: int) -> None:
    items = list(range(count))
    parts = lane._parts(items)
    assert [item for part in parts for item in part] == items  # each once, in order
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1 or len(parts) == 1
    assert max(sizes) <= lane.PART * 3 // 2  # never much more than a part
    if count >= lane.PART * 3 // 2:
        assert min(sizes) >= lane.PART * 2 // 3  # nor many small ones


def test_a_messages_gets_are_answered_in_parts_each_sent_before_the_next_is_read(
    manager: ConductorManager,
    ctx: RequestContext,
    rows: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    ordinary_runs: list[str],
) -> None:
    """A long message's first replies go out while the rest are read: its caller's
    process takes them in meanwhile (the pipelined get's throughput, issue 13)."""
    ids = [rows[name].id for name in ("full", "bare", "unicode")] + [10**9]
    requests = [get_request(ctx, ids[i % len(ids)]) for i in range(200)]
    steps: list[tuple[str, int]] = []
    sent: dict[str, tuple[bool, Any]] = {}
    reader = manager._lane._reader  # type: ignore[union-attr]
    fetch = reader.fetch

    def read(objname: str, wanted: list[int]) -> Any:
        steps.append(("read", len(wanted)))
        return fetch(objname, wanted)

    def answer_now(answers: Any) -> None:
        steps.append(("sent", len(answers)))
        sent.update(answers)

    monkeypatch.setattr(reader, "fetch", read)
    monkeypatch.setattr(transport, "answer_now", answer_now)

    fast = dispatcher(manager).dispatch_batch(requests, redelivered=False)

    assert ordinary_runs == []
    # 200 gets: three parts (67, 67, 66); the last goes back with the message's outcomes.
    assert steps == [("read", 67), ("sent", 67), ("read", 67), ("sent", 67), ("read", 66)]
    order = [request[0] for request in requests]
    assert list(sent) == order[:134]
    assert [sent[rid] for rid in order[:134]] == fast[:134]  # what went early is the answer
    slow = dispatcher(manager, OrdinarySerializer()).dispatch_batch(requests, redelivered=False)
    same(fast, slow)
