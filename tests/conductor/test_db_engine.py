"""Engines, sessions and SQLStorage beyond the Storage contract: SQL shape, threads, errors."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import Integer, String, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from conductor import db
from conductor.db import models
from conductor.db.writes import WriteTracker
from objects import exception


class Widget(db.Revisioned, db.Base):
    """A user's own model, as a module loaded with ``conductor serve --objects`` declares it."""

    __tablename__ = "test_widgets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), nullable=False, unique=True)
    size: Mapped[int | None] = mapped_column(Integer, nullable=True)


@pytest.fixture
def engine(migrated_database_url: str) -> Iterator[Engine]:
    engine = db.create_engine(migrated_database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return db.session_factory(engine)


def new_instance(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "host": "node-1",
        "state": "active",
        "vcpus": 1,
        "memory_mb": 256,
    }
    values.update(overrides)
    return values


class StatementLog:
    """The SQL statements an engine runs while the log is open."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: list[str] = []

    def _record(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        self.statements.append(statement.lstrip().split(None, 1)[0].upper())

    def __enter__(self) -> list[str]:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self.statements

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)


# -- engines --------------------------------------------------------------------------------


def test_sqlite_engine_uses_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")
    try:
        with engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA busy_timeout").scalar() == db.engine.SQLITE_BUSY_TIMEOUT_MS
    finally:
        engine.dispose()


def test_plain_postgresql_urls_use_psycopg_3() -> None:
    engine = db.create_engine("postgresql://user:pw@db.example/conductor")
    try:
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


def test_mask_url_hides_the_password() -> None:
    masked = db.mask_url("postgresql+psycopg://admin:s3cret@db.example:5432/conductor")

    assert "s3cret" not in masked
    assert masked == "postgresql+psycopg://admin:***@db.example:5432/conductor"


def test_an_unparseable_url_raises_object_value_error_without_echoing_secrets() -> None:
    with pytest.raises(exception.ObjectValueError) as caught:
        db.create_engine("not a url with s3cret")

    assert "s3cret" not in str(caught.value)


def test_many_threads_write_through_one_engine(factory: sessionmaker[Session]) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(15):
                with db.session_scope(factory) as session:
                    db.SQLStorage(session).create("Instance", new_instance())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    with db.session_scope(factory) as session:
        assert len(db.SQLStorage(session).query("Instance")) == 8 * 15


def test_two_racing_saves_of_one_revision_let_exactly_one_win(
    factory: sessionmaker[Session],
) -> None:
    with db.session_scope(factory) as session:
        row_id = db.SQLStorage(session).create("Instance", new_instance())["id"]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def save(host: str) -> None:
        barrier.wait()
        try:
            with db.session_scope(factory) as session:
                db.SQLStorage(session).update(
                    "Instance", row_id, {"host": host}, expected_revision=1
                )
            outcomes.append("saved")
        except exception.ConcurrentUpdate:
            outcomes.append("conflict")

    threads = [threading.Thread(target=save, args=(h,)) for h in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes) == ["conflict", "saved"]
    with db.session_scope(factory) as session:
        assert db.SQLStorage(session).get("Instance", row_id)["revision"] == 2


# -- the SQL SQLStorage sends -----------------------------------------------------------------


def test_get_many_is_one_select_and_a_successful_update_one_statement(
    engine: Engine, factory: sessionmaker[Session]
) -> None:
    with db.session_scope(factory) as session:
        storage = db.SQLStorage(session)
        ids = [storage.create("Instance", new_instance())["id"] for _ in range(20)]

        with StatementLog(engine) as many:
            found = storage.get_many("Instance", ids)
        with StatementLog(engine) as one_update:
            storage.update("Instance", ids[0], {"host": "h2"}, expected_revision=1)

    assert len(found) == 20
    assert many == ["SELECT"]
    assert one_update == ["UPDATE"]


def test_updated_at_passes_a_row_stamped_by_a_clock_running_ahead(
    factory: sessionmaker[Session],
) -> None:
    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with db.session_scope(factory) as session:
        storage = db.SQLStorage(session)
        row = storage.create("Instance", new_instance())
        table = db.get_table("Instance")
        session.execute(
            sqlalchemy.update(table).where(table.c.id == row["id"]).values(updated_at=ahead)
        )

        updated = storage.update("Instance", row["id"], {"host": "h2"}, expected_revision=1)

    assert updated["updated_at"] > ahead
    assert updated["revision"] == 2


def test_timestamps_keep_microseconds_and_come_back_in_utc(factory: sessionmaker[Session]) -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    stamp = dt.datetime(2026, 5, 1, 14, 30, 15, 123456, tzinfo=plus_two)
    table = db.get_table("Instance")
    with db.session_scope(factory) as session:
        session.execute(
            sqlalchemy.insert(table).values(
                new_instance(uuid="u-stamp", created_at=stamp, updated_at=stamp, revision=1)
            )
        )

    with db.session_scope(factory) as session:
        record = db.SQLStorage(session).get_by("Instance", uuid="u-stamp")

    assert record["created_at"] == stamp
    assert record["created_at"].tzinfo == dt.UTC
    assert record["created_at"].microsecond == 123456


def test_json_columns_read_back_as_written_even_when_spaced_out_by_hand(
    factory: sessionmaker[Session],
) -> None:
    # Rows written by other tools (psql, a migration) may carry blanks around the JSON.
    table = db.get_table("Instance")
    with db.session_scope(factory) as session:
        session.execute(sqlalchemy.insert(table).values(new_instance(uuid="u-json", revision=1)))
        session.execute(
            sqlalchemy.text(
                "UPDATE instances SET tags = :tags, metadata = :meta WHERE uuid = 'u-json'"
            ),
            {"tags": ' [ "a" , "b" ] ', "meta": '{"k": "v\u00e9", "n": "1"}\n'},
        )

    with db.session_scope(factory) as session:
        record = db.SQLStorage(session).get_by("Instance", uuid="u-json")

    assert record["tags"] == ["a", "b"]
    assert record["metadata"] == {"k": "v\u00e9", "n": "1"}


@pytest.mark.parametrize(
    "text", ['{"a":[1,2.5,null,true]}', "[]", '"x"', "0", "-1e3", b'{"b":"\xc3\xa9"}']
)
def test_json_value_reads_what_json_loads_reads(text: str | bytes) -> None:
    assert db.engine.json_value(text) == json.loads(text)
    if isinstance(text, bytes):
        assert db.engine.json_value(memoryview(text)) == json.loads(text)


@pytest.mark.parametrize("text", ['{"a":1} x', "[1,", "", "nope"])
def test_json_value_refuses_what_json_loads_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        db.engine.json_value(text)


# -- wrote --------------------------------------------------------------------------------


def test_wrote_stays_false_for_reads_and_turns_true_on_a_protocol_write(
    factory: sessionmaker[Session],
) -> None:
    with db.session_scope(factory) as session:
        storage = db.SQLStorage(session)
        storage.query("Instance")
        storage.get_many("Instance", [1, 2])
        assert storage.wrote is False

        storage.create("Instance", new_instance())
        assert storage.wrote is True


@pytest.mark.parametrize("how", ["text", "core", "orm"])
def test_wrote_turns_true_when_user_code_writes_through_the_raw_session(
    factory: sessionmaker[Session], how: str
) -> None:
    with db.session_scope(factory) as session:
        db.SQLStorage(session).create("Instance", new_instance(uuid="u-raw"))

    with db.session_scope(factory) as session:
        storage = db.SQLStorage(session)
        if how == "text":
            storage.session.execute(sqlalchemy.text("UPDATE instances SET host = 'raw'"))
        elif how == "core":
            table = db.get_table("Instance")
            storage.session.execute(sqlalchemy.delete(table).where(table.c.uuid == "nobody"))
        else:
            storage.session.add(
                models.Flavor(flavorid="orm", name="orm", vcpus=1, memory_mb=1, root_gb=1)
            )
            storage.session.flush()
        assert storage.wrote is True


def test_the_write_tracker_is_told_explicitly_and_shared_by_whoever_is_handed_it(
    factory: sessionmaker[Session],
) -> None:
    with db.session_scope(factory) as session:
        made = db.SQLStorage(session).create("Instance", new_instance(uuid="u-tracked"))

    with db.session_scope(factory) as session:
        writes = WriteTracker()
        storage = db.SQLStorage(session, writes=writes)
        # A write that matched no row (a stale save, a missing row) changed nothing
        with pytest.raises(exception.ConcurrentUpdate):
            storage.update("Instance", made["id"], {"host": "h"}, expected_revision=7)
        with pytest.raises(exception.NotFound):
            storage.delete("Instance", 10**9)
        assert writes.wrote is False and storage.wrote is False
        # Asking for the ORM session counts as writing: its SQL is not parsed
        storage.session.execute(sqlalchemy.text("SELECT 1"))
        assert writes.wrote is True


def test_orm_writes_keep_the_revision_contract(factory: sessionmaker[Session]) -> None:
    with db.session_scope(factory) as session:
        flavor = models.Flavor(flavorid="f-orm", name="a", vcpus=1, memory_mb=1, root_gb=1)
        session.add(flavor)
        session.flush()
        assert flavor.revision == 1
        flavor.name = "b"
        session.flush()
        assert flavor.revision == 2

    # A stale ORM copy (its revision is behind the row's) must not overwrite.
    with db.session_scope(factory) as session:
        db.SQLStorage(session).update("Flavor", flavor.id, {"name": "c"})
    with pytest.raises(exception.ConcurrentUpdate), db.session_scope(factory) as session:
        stale = session.merge(flavor, load=False)
        stale.name = "stale"
        session.flush()


# -- errors -------------------------------------------------------------------------------


def test_a_database_without_tables_gives_database_error(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'bare.sqlite'}")
    try:
        with (
            pytest.raises(exception.DatabaseError),
            db.session_scope(db.session_factory(engine)) as session,
        ):
            db.SQLStorage(session).get("Instance", 1)
    finally:
        engine.dispose()


def test_an_unreachable_database_gives_database_error() -> None:
    engine = db.create_engine("postgresql+psycopg://u:pw@127.0.0.1:1/none?connect_timeout=2")
    try:
        with (
            pytest.raises(exception.DatabaseError),
            db.session_scope(db.session_factory(engine)) as session,
        ):
            db.SQLStorage(session).get_many("Instance", [1])
    finally:
        engine.dispose()


def test_session_scope_translates_errors_from_user_code(factory: sessionmaker[Session]) -> None:
    with pytest.raises(exception.DatabaseError) as caught, db.session_scope(factory) as session:
        session.execute(sqlalchemy.text("SELECT * FROM no_such_table"))

    assert not isinstance(caught.value.__cause__, exception.ObjectsError)
    assert isinstance(caught.value.__cause__, sqlalchemy.exc.SQLAlchemyError)


# -- users' own models ----------------------------------------------------------------------


def test_a_registered_user_model_is_served_after_ensure_user_tables(
    engine: Engine, factory: sessionmaker[Session]
) -> None:
    db.register_model("TestWidget", Widget)
    db.register_model("TestWidget", Widget)  # registering the same model again is harmless

    assert "test_widgets" in db.ensure_user_tables(engine)
    with db.session_scope(factory) as session:
        storage = db.SQLStorage(session)
        created = storage.create("TestWidget", {"name": "gear", "size": 3})
        updated = storage.update("TestWidget", created["id"], {"size": 4}, expected_revision=1)
        with pytest.raises(exception.DuplicateEntry):
            storage.create("TestWidget", {"name": "gear"})

    assert created == {"id": created["id"], "name": "gear", "size": 3, "revision": 1}
    assert updated["size"] == 4 and updated["revision"] == 2
    assert "test_widgets" not in models.MANAGED_TABLES


def test_register_model_refuses_a_model_without_revision_or_a_taken_name() -> None:
    class Plain(db.Base):
        __tablename__ = "test_plain"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)

    with pytest.raises(exception.ObjectValueError, match="revision"):
        db.register_model("TestPlain", Plain)
    with pytest.raises(exception.ObjectValueError, match="already served"):
        db.register_model("Instance", Widget)
    assert db.registered_models()["Instance"] is models.Instance


def test_omitted_tags_and_metadata_get_the_schema_defaults(factory: sessionmaker[Session]) -> None:
    with db.session_scope(factory) as session:
        record = db.SQLStorage(session).create("Instance", new_instance())

    assert record["tags"] == [] and record["metadata"] == {}


def test_the_package_surface_is_what_all_names() -> None:
    exported = set(db.__all__)

    assert all(hasattr(db, name) for name in exported)
    assert {
        "upgrade",
        "check_at_head",
        "SQLStorage",
        "SchemaNotAtHead",
        "session_factory",
    } <= exported


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22 02:03:25.123456",
        "0001-01-01 00:00:00.000000",
        "9999-12-31 23:59:59.999999",
        "2024-02-29 12:00:00.000001",
        "2026-02-29 12:00:00.000000",  # no such day
        "2026-11-22 24:00:00.000000",  # no such hour
        "2026-11-22T02:03:25.123456",
        "2026-11-22 02:03:25",
        "2026-11-22",
        "2026-11-22 02:03:25.123456+05:30",
        "2026-11-22 02:03:25.123456Z",
        "2026-11-22 02:03:25.1+0530",  # the stored width, with a zone of its own
        "2026-11-22 02:03:25.123+00",
        "2026-11-22 02:03:25.123-01",
        "٢٠٢٦-11-22 02:03:25.123456",  # digits, but not ASCII ones
        "2026-11-22 02:03:25.1234567",
        "garbage",
    ],
)
def test_sqlite_timestamps_read_as_sqlalchemy_and_the_type_read_them(text: str) -> None:
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.types import TypeDecorator

    dialect = sqlite.dialect()
    kind: Any = models.UTCDateTime().dialect_impl(dialect)
    ours: Any = kind.result_processor(dialect, None)
    theirs: Any = TypeDecorator.result_processor(kind, dialect, None)  # the type's own
    assert ours is not theirs and theirs is not None

    def outcome(process: Any) -> tuple[str, Any]:
        try:
            value = process(text)
        except (ValueError, TypeError) as exc:
            return "error", type(exc)
        return repr(value), (value.tzinfo, value.fold)

    assert outcome(ours) == outcome(theirs)
    assert ours(None) is None
