"""Requests that arrive in one message run in one transaction, each with its own outcome."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import conductor
import objects
from conductor import db
from conductor.db.models import ConductorRequest
from objects import base, exception
from objects.base import VersionedObjectSerializer
from objects.context import RequestContext
from transport.dispatcher import RPCDispatcher


@pytest.fixture
def service(database_url: str) -> Iterator[conductor.Conductor]:
    objects.register_all()
    svc = conductor.Conductor(f"memory://batch-{uuid.uuid4().hex[:8]}", database_url, workers=2)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def dispatcher(service: conductor.Conductor) -> RPCDispatcher:
    return RPCDispatcher(service._rpc_server_endpoints(), VersionedObjectSerializer())


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext(user_id="batch")


@contextlib.contextmanager
def client(service: conductor.Conductor) -> Iterator[None]:
    """The objects call this conductor for the block."""
    api = conductor.connect(service.transport_url, timeout=20)
    try:
        yield
    finally:
        api.close()
        base.set_indirection_api(None)


def created(ctx: RequestContext, service: conductor.Conductor, n: int, **kw: Any) -> list[Any]:
    with client(service):
        made = []
        for _ in range(n):
            inst = objects.Instance(
                ctx, uuid=str(uuid.uuid4()), host="b", state="building", vcpus=1, memory_mb=1, **kw
            )
            inst.create()
            made.append(inst)
        return made


def get_request(ctx: RequestContext, id_: int) -> tuple[Any, ...]:
    return (
        uuid.uuid4().hex,
        ctx.to_dict(),
        "object_class_action_versions",
        {
            "objname": "Instance",
            "objmethod": "get",
            "object_versions": {"Instance": "1.2", "Flavor": "1.0"},
            "args": [id_],
            "kwargs": {},
        },
        None,
        "1.0",
    )


def action_request(
    ctx: RequestContext, inst: Any, method: str, rid: str | None = None
) -> tuple[Any, ...]:
    return (
        rid or uuid.uuid4().hex,
        ctx.to_dict(),
        "object_action",
        {
            "objinst": inst.obj_to_primitive(),
            "objmethod": method,
            "args": [],
            "kwargs": {},
            "object_versions": {"Instance": "1.2", "Flavor": "1.0"},
        },
        None,
        "1.0",
    )


def count_statements(service: conductor.Conductor) -> list[str]:
    seen: list[str] = []
    sa.event.listen(
        service._engine, "before_cursor_execute", lambda conn, cur, stmt, *a: seen.append(stmt)
    )
    return seen


def count_calls(service: conductor.Conductor, starting: str) -> list[str]:
    """The statements starting with ``starting`` the service hands SQLAlchemy, one per
    ``Connection.execute`` call (however many rows, or cursor executions, it takes)."""
    seen: list[str] = []

    def before_execute(conn: Any, clause: Any, *args: Any) -> None:
        text = str(clause.compile(dialect=conn.dialect))
        if text.lstrip().upper().startswith(starting.upper()):
            seen.append(text)

    sa.event.listen(service._engine, "before_execute", before_execute)
    return seen


def on_postgresql(service: conductor.Conductor) -> bool:
    assert service._engine is not None, "the service is running"
    return service._engine.dialect.name == "postgresql"


def test_gets_in_one_message_are_one_query_and_keep_their_own_outcomes(
    service: conductor.Conductor, dispatcher: RPCDispatcher, ctx: RequestContext
) -> None:
    made = created(ctx, service, 5)
    statements = count_statements(service)
    requests = [get_request(ctx, inst.id) for inst in made] + [get_request(ctx, 10**9)]

    outcomes = dispatcher.dispatch_batch(requests, redelivered=False)

    assert [ok for ok, _ in outcomes] == [True] * 5 + [False]
    assert [v["versioned_object.data"]["uuid"] for _, v in outcomes[:5]] == [i.uuid for i in made]
    assert isinstance(outcomes[5][1], exception.NotFound)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1  # the batched IN query answers the miss too


def verbs(statements: list[str], verb: str) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith(verb)]


def test_saves_in_one_message_share_one_update(
    service: conductor.Conductor, dispatcher: RPCDispatcher, ctx: RequestContext
) -> None:
    made = created(ctx, service, 4, tags=["a"], metadata={"k": "v"})
    for i, inst in enumerate(made):
        inst.host = f"saved-{i}"
        inst.tags = ["b", str(i)]
    gone = action_request(ctx, made[3], "save")
    gone[3]["objinst"]["versioned_object.data"]["id"] = 10**9
    statements = count_statements(service)

    outcomes = dispatcher.dispatch_batch(
        [action_request(ctx, inst, "save") for inst in made[:3]] + [gone], redelivered=False
    )

    assert [ok for ok, _ in outcomes] == [True, True, True, False]
    assert isinstance(outcomes[3][1], exception.NotFound)
    updates = verbs(statements, "UPDATE")
    # One statement for the three rows (SQLite too); the miss is not in its result, and
    # learns why on its own (its UPDATE matches nothing, then a SELECT says NotFound).
    assert len(updates) == 2
    with client(service):
        for i, inst in enumerate(made[:3]):
            again = objects.Instance.get(ctx, inst.id)
            assert (again.host, again.tags, again.metadata) == (
                f"saved-{i}",
                ["b", str(i)],
                {"k": "v"},
            )
            assert again.updated_at > inst.updated_at


def test_creates_in_one_message_share_one_insert(
    service: conductor.Conductor, dispatcher: RPCDispatcher, ctx: RequestContext
) -> None:
    host = f"h-{uuid.uuid4().hex[:6]}"
    fresh = [
        objects.Instance(
            ctx,
            uuid=str(uuid.uuid4()),
            host=host,
            state="building",
            vcpus=1 + i,
            memory_mb=1,
            tags=[str(i)],
            metadata={},
        )
        for i in range(5)
    ]
    statements = count_statements(service)
    inserts = count_calls(service, "INSERT INTO instances")

    outcomes = dispatcher.dispatch_batch(
        [action_request(ctx, inst, "create") for inst in fresh], redelivered=False
    )

    assert all(ok for ok, _ in outcomes)
    if on_postgresql(service):
        assert len(verbs(statements, "INSERT INTO INSTANCES")) == 1
    # SQLite too: one call for the rows (SQLAlchemy hands SQLite the rows one by one, in
    # that call, to keep their order), not one call per request.
    assert len(inserts) == 1
    # Each request's reply carries its own row: ids in order of the requests.
    with client(service):
        listed = objects.InstanceList.get_by_host(ctx, host)
        assert sorted((i.vcpus, i.uuid) for i in listed) == [
            (1 + i, f.uuid) for i, f in enumerate(fresh)
        ]
        ids = [dict(updates)["id"] for _, (updates, _) in outcomes]
        assert ids == sorted(ids)
        assert [objects.Instance.get(ctx, id_).uuid for id_ in ids] == [f.uuid for f in fresh]


def test_a_stale_save_in_a_batch_fails_alone(
    service: conductor.Conductor, dispatcher: RPCDispatcher, ctx: RequestContext
) -> None:
    a, b = created(ctx, service, 2)
    stale = a.obj_clone()
    a.host = "first"
    b.host = "other"
    stale.host = "stale"
    outcomes = dispatcher.dispatch_batch(
        [
            action_request(ctx, a, "save"),
            action_request(ctx, stale, "save"),
            action_request(ctx, b, "save"),
        ],
        redelivered=False,
    )
    assert [ok for ok, _ in outcomes] == [True, False, True]
    assert isinstance(outcomes[1][1], exception.ConcurrentUpdate)


def test_a_failing_write_sends_the_batch_request_by_request_and_loses_nothing(
    service: conductor.Conductor, dispatcher: RPCDispatcher, ctx: RequestContext
) -> None:
    (existing,) = created(ctx, service, 1)
    host = f"h-{uuid.uuid4().hex[:6]}"
    fresh = [
        objects.Instance(
            ctx,
            uuid=str(uuid.uuid4()),
            host=host,
            state="building",
            vcpus=1,
            memory_mb=1,
            tags=[],
            metadata={},
        )
        for _ in range(3)
    ]
    clash = objects.Instance(
        ctx,
        uuid=existing.uuid,
        host=host,
        state="building",
        vcpus=1,
        memory_mb=1,
        tags=[],
        metadata={},
    )
    requests = [
        action_request(ctx, fresh[0], "create"),
        action_request(ctx, clash, "create"),
        action_request(ctx, fresh[1], "create"),
        action_request(ctx, fresh[2], "create"),
    ]

    outcomes = dispatcher.dispatch_batch(requests, redelivered=False)

    assert [ok for ok, _ in outcomes] == [True, False, True, True]
    assert isinstance(outcomes[1][1], exception.DuplicateEntry)
    with client(service):
        assert len(objects.InstanceList.get_by_host(ctx, host)) == 3


def test_a_redelivered_batch_is_answered_from_stored_results(
    service: conductor.Conductor, dispatcher: RPCDispatcher, ctx: RequestContext
) -> None:
    host = f"h-{uuid.uuid4().hex[:6]}"
    fresh = [
        objects.Instance(
            ctx,
            uuid=str(uuid.uuid4()),
            host=host,
            state="building",
            vcpus=1,
            memory_mb=1,
            tags=[],
            metadata={},
        )
        for _ in range(3)
    ]
    requests = [
        action_request(ctx, inst, "create", rid=f"req-{uuid.uuid4().hex}") for inst in fresh
    ]

    first = dispatcher.dispatch_batch(requests, redelivered=False)
    again = dispatcher.dispatch_batch(requests, redelivered=True)

    assert first == again
    engine = db.create_engine(service.database_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                sa.select(sa.func.count())
                .select_from(ConductorRequest)
                .where(ConductorRequest.request_id.in_([r[0] for r in requests]))
            )
            assert stored.scalar_one() == 3
            rows = conn.execute(
                sa.text("SELECT count(*) FROM instances WHERE host = :h"), {"h": host}
            )
            assert rows.scalar_one() == 3
    finally:
        engine.dispose()
