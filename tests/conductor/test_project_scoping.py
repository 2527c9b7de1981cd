"""Opt-in project scoping: with it on, a context sees and changes only its own project's
rows (tables with a ``project_id`` column: the built-in ``instances``), unless it is an
admin context. Off (the default), every context sees every row, as before."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import conductor
import objects
from conductor import cli, db
from objects import base, exception
from objects.context import RequestContext

A = RequestContext(user_id="alice", project_id="project-a")
B = RequestContext(user_id="bob", project_id="project-b")
ADMIN = RequestContext(user_id="root", project_id="project-ops", is_admin=True)


def serving(database_url: str, **options: Any) -> Iterator[conductor.Conductor]:
    objects.register_all()
    url = f"memory://scope-{uuid.uuid4().hex[:8]}"
    service = conductor.Conductor(url, database_url, workers=2, allow_admin_context=True, **options)
    service.start()
    client = conductor.connect(url, timeout=20)
    try:
        yield service
    finally:
        client.close()
        service.stop()
        base.set_indirection_api(None)


@pytest.fixture
def scoped(database_url: str) -> Iterator[conductor.Conductor]:
    yield from serving(database_url, project_scoping=True)


@pytest.fixture
def unscoped(database_url: str) -> Iterator[conductor.Conductor]:
    yield from serving(database_url)


def create(ctx: RequestContext, host: str) -> Any:
    inst = objects.Instance(
        ctx, uuid=str(uuid.uuid4()), host=host, state="building", vcpus=1, memory_mb=64
    )
    inst.create()
    return inst


def as_context(inst: Any, ctx: RequestContext) -> Any:
    """The same object, sent by another context (a caller that got hold of it)."""
    inst._context = ctx
    return inst


def project_of(service: conductor.Conductor, inst_id: int) -> Any:
    engine = db.create_engine(service.database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT project_id FROM instances WHERE id = :i"), {"i": inst_id}
            ).scalar_one()
    finally:
        engine.dispose()


def test_with_scoping_another_project_cannot_read_list_save_or_destroy_a_row(
    scoped: conductor.Conductor,
) -> None:
    host = f"scoped-{uuid.uuid4().hex[:6]}"
    mine = create(A, host)
    theirs = create(B, host)
    assert project_of(scoped, mine.id) == "project-a"

    # B cannot read A's row, by id, uuid or list
    with pytest.raises(exception.NotFound):
        objects.Instance.get(B, mine.id)
    with pytest.raises(exception.NotFound):
        objects.Instance.get_by_uuid(B, mine.uuid)
    assert [i.id for i in objects.InstanceList.get_by_host(B, host)] == [theirs.id]
    assert [i.id for i in objects.InstanceList.get_all(B, filters={"host": host})] == [theirs.id]
    assert [i.id for i in objects.InstanceList.get_by_host(A, host)] == [mine.id]
    # ... nor save or destroy it (NotFound: B does not learn that the row exists)
    stolen = as_context(objects.Instance.get(A, mine.id), B)
    stolen.task_state = "hijacked"
    with pytest.raises(exception.NotFound):
        stolen.save()
    stolen = as_context(objects.Instance.get(A, mine.id), B)
    with pytest.raises(exception.NotFound):
        stolen.destroy()
    assert objects.Instance.get(A, mine.id).task_state is None

    # Batched (several requests in one message) the same holds
    futures = [objects.Instance.get_async(B, mine.id), objects.Instance.get_async(B, theirs.id)]
    with pytest.raises(exception.NotFound):
        futures[0].wait(timeout=20)
    assert futures[1].wait(timeout=20).id == theirs.id


def test_with_scoping_an_admin_context_reads_and_changes_every_project(
    scoped: conductor.Conductor,
) -> None:
    host = f"admin-{uuid.uuid4().hex[:6]}"
    mine, theirs = create(A, host), create(B, host)

    assert {i.id for i in objects.InstanceList.get_by_host(ADMIN, host)} == {mine.id, theirs.id}
    fetched = objects.Instance.get(ADMIN, mine.id)
    fetched.task_state = "by-admin"
    fetched.save()
    assert objects.Instance.get(A, mine.id).task_state == "by-admin"
    objects.Instance.get(ADMIN, theirs.id).destroy()
    with pytest.raises(exception.NotFound):
        objects.Instance.get(B, theirs.id)


def test_without_scoping_every_context_sees_every_row_as_before(
    unscoped: conductor.Conductor,
) -> None:
    host = f"open-{uuid.uuid4().hex[:6]}"
    mine = create(A, host)

    assert objects.Instance.get(B, mine.id).uuid == mine.uuid
    assert [i.id for i in objects.InstanceList.get_by_host(B, host)] == [mine.id]
    stolen = as_context(objects.Instance.get(A, mine.id), B)
    stolen.task_state = "shared"
    stolen.save()
    assert objects.Instance.get(A, mine.id).task_state == "shared"
    assert project_of(unscoped, mine.id) == "project-a"  # recorded anyway, for later


def test_conductor_serve_takes_the_flag_and_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert cli._build_parser().parse_args(["serve"]).project_scoping is False
    assert cli._build_parser().parse_args(["serve", "--project-scoping"]).project_scoping is True
    monkeypatch.setenv("CONDUCTOR_PROJECT_SCOPING", "1")
    assert cli._build_parser().parse_args(["serve"]).project_scoping is True


def test_with_scoping_batched_gets_and_saves_of_another_project_are_not_found(
    scoped: conductor.Conductor,
) -> None:
    # Several requests in one message: the conductor runs them in one transaction, and
    # fetches the gets' rows for all of them in one query
    from conductor.service import ConductorSerializer
    from transport.dispatcher import RPCDispatcher

    dispatcher = RPCDispatcher(
        scoped._rpc_server_endpoints(), ConductorSerializer(allow_admin_context=True)
    )
    mine, theirs = create(A, "batch-a"), create(B, "batch-b")
    versions = {"Instance": "1.2", "Flavor": "1.0"}

    def get(ctx: RequestContext, id_: int) -> tuple[Any, ...]:
        return (
            uuid.uuid4().hex,
            ctx.to_dict(),
            "object_class_action_versions",
            {
                "objname": "Instance",
                "objmethod": "get",
                "object_versions": versions,
                "args": [id_],
                "kwargs": {},
            },
            None,
            "1.0",
        )

    def save(ctx: RequestContext, inst: Any) -> tuple[Any, ...]:
        inst.task_state = f"by-{ctx.project_id}"
        return (
            uuid.uuid4().hex,
            ctx.to_dict(),
            "object_action",
            {
                "objinst": inst.obj_to_primitive(),
                "objmethod": "save",
                "args": [],
                "kwargs": {},
                "object_versions": versions,
            },
            None,
            "1.0",
        )

    gets = dispatcher.dispatch_batch(
        [get(B, mine.id), get(B, theirs.id), get(A, mine.id)], redelivered=False
    )
    assert isinstance(gets[0][1], exception.NotFound)
    assert gets[1][0] and gets[2][0]
    saves = dispatcher.dispatch_batch(
        [save(B, objects.Instance.get(A, mine.id)), save(B, objects.Instance.get(B, theirs.id))],
        redelivered=False,
    )
    assert isinstance(saves[0][1], exception.NotFound)
    assert saves[1][0]
    assert objects.Instance.get(A, mine.id).task_state is None


@pytest.mark.rabbit
def test_conductor_serve_with_the_flag_scopes_requests(
    broker_url: str, shared_database_url: str
) -> None:
    from tests.brokers import delete_queues
    from tests.conductor.processes import serve, unique_topic

    objects.register_all()
    topic = unique_topic()
    try:
        with serve(
            broker_url,
            shared_database_url,
            topic,
            "--project-scoping",
            "--allow-admin-context",
            server="solo",
        ):
            api = conductor.connect(broker_url, topic=topic, timeout=30)
            try:
                mine = create(A, f"serve-{uuid.uuid4().hex[:6]}")
                with pytest.raises(exception.NotFound):
                    objects.Instance.get(B, mine.id)
                assert objects.Instance.get(ADMIN, mine.id).uuid == mine.uuid
            finally:
                api.close()
                base.set_indirection_api(None)
    finally:
        delete_queues(broker_url, [topic, f"{topic}.solo"])
