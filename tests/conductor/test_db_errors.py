"""What callers learn when the database refuses a request: retryable or not, and nothing
about where the database lives.

``DatabaseError`` says "retry later": it is for outages, deadlocks, lock timeouts. A request
that can never succeed (a value of the wrong type, a number out of range, a filter list
longer than a statement can carry) gets ``ObjectValueError`` on every backend. Caller-facing
messages never name the database host or port; the conductor's log keeps them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import conductor
import objects
from conductor import db
from objects import base, exception
from objects.context import RequestContext


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext(user_id="u-err", project_id="p-err")


@pytest.fixture
def running(database_url: str) -> Iterator[conductor.Conductor]:
    objects.register_all()
    url = f"memory://err-{uuid.uuid4().hex[:8]}"
    service = conductor.Conductor(url, database_url, workers=2)
    service.start()
    client = conductor.connect(url, timeout=30)
    try:
        yield service
    finally:
        client.close()
        service.stop()
        base.set_indirection_api(None)


@pytest.fixture
def storage(migrated_database_url: str) -> Iterator[db.SQLStorage]:
    engine = db.create_engine(migrated_database_url)
    try:
        with db.transaction_scope(engine) as tx:
            yield db.SQLStorage(tx)
    finally:
        engine.dispose()


def make(ctx: RequestContext, host: str) -> Any:
    inst = objects.Instance(
        ctx, uuid=str(uuid.uuid4()), host=host, state="building", vcpus=1, memory_mb=64
    )
    inst.create()
    return inst


# -- item 12: errors that can never succeed are not "retry later" ----------------------------


def test_a_filter_list_of_100k_values_is_answered_on_every_backend(
    running: conductor.Conductor, ctx: RequestContext
) -> None:
    made = [make(ctx, f"many-{i}") for i in range(3)]
    ids = list(range(made[0].id - 50_000, made[0].id + 50_000))
    hosts = [f"many-{i}" for i in range(100_000)]

    by_id = objects.InstanceList.get_all(ctx, filters={"id": ids})
    by_host = objects.InstanceList.get_all(ctx, filters={"host": hosts + [None]})

    assert [i.id for i in by_id] == [made[0].id] + [i.id for i in made[1:] if i.id in ids]
    assert sorted(i.host for i in by_host) == ["many-0", "many-1", "many-2"]


@pytest.mark.parametrize("bad_id", [[1], {"a": 1}, 2**70, -(2**70)], ids=repr)
def test_an_id_of_a_bad_type_or_range_is_a_value_error_not_retry_later(
    running: conductor.Conductor, ctx: RequestContext, bad_id: Any
) -> None:
    with pytest.raises(exception.ObjectValueError) as caught:
        objects.Instance.get(ctx, bad_id)

    assert not isinstance(caught.value, exception.DatabaseError)
    assert "retry" not in str(caught.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get("Instance", [1]),
        lambda s: s.get("Instance", 2**70),
        lambda s: s.get_many("Instance", [2**63]),
        lambda s: s.update("Instance", 2**40, {"host": "x"}),
        lambda s: s.delete("Instance", -(2**70)),
        lambda s: s.query("Instance", {"vcpus": 2**70}),
        lambda s: s.query("Instance", {"vcpus": [1, 2**70]}),
        lambda s: s.query("Instance", marker=2**70),
        lambda s: s.query("Instance", limit=2**70),
    ],
    ids=[
        "list id",
        "huge id",
        "huge id in many",
        "update huge id",
        "delete huge id",
        "huge filter",
        "huge in list",
        "huge marker",
        "huge limit",
    ],
)
def test_storage_refuses_values_no_database_takes_with_object_value_error(
    storage: db.SQLStorage, call: Any
) -> None:
    with pytest.raises(exception.ObjectValueError):
        call(storage)


def test_a_statement_the_driver_cannot_bind_is_a_value_error() -> None:
    import sqlalchemy

    from conductor.db.errors import translate_errors

    engine = db.create_engine("sqlite://")
    try:
        with pytest.raises(exception.ObjectValueError), translate_errors(), engine.connect() as c:
            c.execute(sqlalchemy.text("SELECT :v"), {"v": object()})
    finally:
        engine.dispose()


# -- item 15: callers never learn where the database lives -----------------------------------

LEAKS = ("127.0.0.1", "5432", "port", "nowhere-db-host")


def test_an_unreachable_database_error_names_no_host_or_port_but_keeps_them_for_the_log() -> None:
    url = "postgresql+psycopg://u:pw@127.0.0.1:1/none?connect_timeout=2"
    engine = db.create_engine(url)
    try:
        with pytest.raises(exception.DatabaseError) as caught, db.transaction_scope(engine) as tx:
            db.SQLStorage(tx).get("Instance", 1)
    finally:
        engine.dispose()

    public = f"{caught.value} {caught.value.kwargs!r} {caught.value.args!r}"
    assert "127.0.0.1" not in public and "port" not in public, public
    assert "retry later" in public
    assert "127.0.0.1" in db.error_detail(caught.value)  # what the conductor logs


def test_a_database_host_that_does_not_resolve_is_not_named_to_the_caller() -> None:
    engine = db.create_engine(
        "postgresql+psycopg://u@nowhere-db-host.invalid:5432/none?connect_timeout=2"
    )
    try:
        with pytest.raises(exception.DatabaseError) as caught, db.transaction_scope(engine) as tx:
            db.SQLStorage(tx).get("Instance", 1)
    finally:
        engine.dispose()

    public = f"{caught.value} {caught.value.kwargs!r}"
    assert not [leak for leak in LEAKS if leak in public], public


def test_a_long_filter_list_without_a_one_parameter_form_is_refused_clearly_or_answered(
    storage: db.SQLStorage,
) -> None:
    import datetime as dt

    when = [dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i) for i in range(40_000)]
    if storage.has_bulk_statements:  # PostgreSQL: one array parameter for any length
        assert storage.query("Instance", {"created_at": when}) == []
    else:
        with pytest.raises(exception.ObjectValueError, match="at most 30000 values"):
            storage.query("Instance", {"created_at": when})


def test_looking_up_the_stored_results_of_a_huge_batch_fits_the_parameter_limits(
    storage: db.SQLStorage,
) -> None:
    from conductor.db import requests

    unit = storage._unit
    assert isinstance(unit, db.Transaction)  # the fixture's storage runs on a Transaction
    assert requests.find_many(unit.connection, [f"r-{i}" for i in range(70_000)]) == {}
