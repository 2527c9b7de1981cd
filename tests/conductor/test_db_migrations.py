"""Alembic history: the models and the migrations agree, upgrades keep data, the head check."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from conductor import db
from conductor.db import migration
from conductor.db.models import MANAGED_TABLES, Base
from objects import exception

REPO = Path(__file__).resolve().parents[2]


def _include_object(obj: Any, name: str | None, type_: str, reflected: bool, other: Any) -> bool:
    if type_ == "table":
        return name in MANAGED_TABLES
    table = getattr(obj, "table", None)
    return table is None or table.name in MANAGED_TABLES


def _include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    return type_ != "table" or name in MANAGED_TABLES


def _differences(url: str, metadata: sqlalchemy.MetaData) -> list[Any]:
    engine = db.create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    "compare_server_default": migration.compare_server_default,
                    "include_object": _include_object,
                    "include_name": _include_name,
                },
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_the_models_and_the_migrations_agree(migrated_database_url: str) -> None:
    assert _differences(migrated_database_url, Base.metadata) == []


def test_the_comparison_notices_drift(migrated_database_url: str) -> None:
    # Given models that differ from the migrations in a column, a type and a JSON default
    drifted = sqlalchemy.MetaData()
    for table in Base.metadata.sorted_tables:
        if table.name in MANAGED_TABLES:
            table.to_metadata(drifted)
    instances = drifted.tables["instances"]
    instances.append_column(sqlalchemy.Column("colour", sqlalchemy.String(20), nullable=True))
    instances.c.tags.server_default = sqlalchemy.DefaultClause(sqlalchemy.text("'{}'"))
    drifted.tables["flavors"].c.name.type = sqlalchemy.Integer()

    differences = repr(_differences(migrated_database_url, drifted))

    assert "colour" in differences
    assert "modify_default" in differences and "tags" in differences
    assert "modify_type" in differences and "name" in differences


def test_head_is_the_instance_project_revision_and_history_is_linear() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migration.alembic_config())
    history = [rev.revision for rev in script.walk_revisions()]

    assert db.head_revision() == "0005"
    assert history == ["0005", "0004", "0003", "0002", "0001"]


def test_upgrade_from_0003_keeps_stored_results_which_match_any_request(
    empty_database_url: str,
) -> None:
    from conductor.db import requests

    url = empty_database_url
    # Given a result stored by a conductor of revision 0003 (no digest column yet)
    db.upgrade(url, "0003")
    _raw(
        url,
        "INSERT INTO conductor_requests (request_id, result, created_at) "
        "VALUES ('req-old', '[1, 2]', :now)",
        now=dt.datetime.now(dt.UTC),
    )

    # When the schema goes to 0004 (what `conductor db upgrade` does)
    db.upgrade(url)

    # Then the result is still there, with no digest, and answers whoever asks
    assert db.current_revision(url) == db.head_revision()
    engine = db.create_engine(url)
    try:
        with db.transaction_scope(engine) as tx:
            stored = requests.find(tx.connection, "req-old")
            assert stored == requests.Stored([1, 2], None)
            assert requests.answer("req-old", stored, "f" * 64) == [1, 2]
            requests.store_result(tx.for_write(), "req-new", {"a": 1}, "a" * 64)
        with db.transaction_scope(engine) as tx:
            stored = requests.find(tx.connection, "req-new")
            assert stored == requests.Stored({"a": 1}, "a" * 64)
            with pytest.raises(exception.RequestIdReused, match="req-new"):
                requests.answer("req-new", stored, "b" * 64)
    finally:
        engine.dispose()


def test_the_alembic_folder_is_not_a_package_that_would_shadow_alembic() -> None:
    assert not (REPO / "alembic" / "__init__.py").exists()
    assert not (REPO / "alembic" / "versions" / "__init__.py").exists()


def test_an_empty_database_has_no_revision_and_upgrade_takes_it_to_head(
    empty_database_url: str,
) -> None:
    assert db.current_revision(empty_database_url) is None

    db.upgrade(empty_database_url)

    assert db.current_revision(empty_database_url) == db.head_revision()
    db.check_at_head(empty_database_url)


def test_upgrade_at_head_is_a_no_op_that_keeps_rows(migrated_database_url: str) -> None:
    engine = db.create_engine(migrated_database_url)
    try:
        with db.session_scope(db.session_factory(engine)) as session:
            db.SQLStorage(session).create(
                "Flavor",
                {"flavorid": "f1", "name": "tiny", "vcpus": 1, "memory_mb": 64, "root_gb": 1},
            )
        statements: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            statements.append(statement)

        # upgrade() opens its own engine: listen on every engine for the duration.
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", record)
        try:
            db.upgrade(migrated_database_url)
        finally:
            sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", record)
        with db.session_scope(db.session_factory(engine)) as session:
            assert db.SQLStorage(session).get_by("Flavor", flavorid="f1")["name"] == "tiny"
    finally:
        engine.dispose()

    assert statements, "the listener saw nothing: the test would prove nothing"
    assert db.current_revision(migrated_database_url) == db.head_revision()
    changes = [
        s
        for s in statements
        if s.lstrip().upper().startswith(("CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE"))
    ]
    assert changes == []


def _raw(url: str, sql: str, **params: Any) -> list[Any]:
    engine = db.create_engine(url)
    try:
        with engine.begin() as connection:
            result = connection.execute(sqlalchemy.text(sql), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def test_stepwise_upgrade_keeps_rows_and_fills_the_new_columns(empty_database_url: str) -> None:
    url = empty_database_url
    # Given an Instance 1.0 row written when the schema was at revision 0001
    db.upgrade(url, "0001")
    _raw(
        url,
        "INSERT INTO instances (uuid, host, state, vcpus, memory_mb, created_at, revision) "
        "VALUES ('u-1', 'node-1', 'active', 2, 512, :now, 1)",
        now=dt.datetime(2026, 1, 6, 12, 0, tzinfo=dt.UTC),
    )

    # When the schema goes to 0002 (Instance 1.1), then 0003 (Instance 1.2)
    db.upgrade(url, "0002")
    assert db.current_revision(url) == "0002"
    assert [tuple(r) for r in _raw(url, "SELECT uuid, host FROM instances")] == [("u-1", "node-1")]
    db.upgrade(url, "0003")
    db.upgrade(url)  # (and on to head, which the models below describe)

    # Then the row is still there, with the empty defaults of the new fields
    engine = db.create_engine(url)
    try:
        with db.session_scope(db.session_factory(engine)) as session:
            record = db.SQLStorage(session).get_by("Instance", uuid="u-1")
    finally:
        engine.dispose()
    assert record["tags"] == [] and record["metadata"] == {}
    assert record["host"] == "node-1" and record["revision"] == 1
    assert record["created_at"] == dt.datetime(2026, 1, 6, 12, 0, tzinfo=dt.UTC)


def test_check_at_head_names_the_fixing_command_when_behind(empty_database_url: str) -> None:
    with pytest.raises(db.SchemaNotAtHead) as never_migrated:
        db.check_at_head(empty_database_url)
    db.upgrade(empty_database_url, "0002")
    with pytest.raises(db.SchemaNotAtHead) as behind:
        db.check_at_head(empty_database_url)

    masked = db.mask_url(empty_database_url)
    assert f"conductor db upgrade --database-url {masked}" in str(behind.value)
    assert behind.value.kwargs == {"url": masked, "current": "0002", "head": "0005"}
    assert "empty database" in str(never_migrated.value)
    db.upgrade(empty_database_url)
    db.check_at_head(empty_database_url)


def test_a_database_migrated_by_a_newer_version_is_refused_not_touched(
    empty_database_url: str,
) -> None:
    db.upgrade(empty_database_url)
    _raw(empty_database_url, "UPDATE alembic_version SET version_num = '0099'")

    with pytest.raises(db.SchemaNotAtHead, match="newer version"):
        db.check_at_head(empty_database_url)
    with pytest.raises(db.SchemaNotAtHead, match="newer version"):
        db.upgrade(empty_database_url)
    assert db.current_revision(empty_database_url) == "0099"


def test_upgrade_to_an_unknown_revision_raises_object_value_error(empty_database_url: str) -> None:
    with pytest.raises(exception.ObjectValueError, match="nonesuch"):
        db.upgrade(empty_database_url, "nonesuch")


def test_upgrade_of_an_unreachable_database_raises_database_error_without_the_password() -> None:
    url = "postgresql+psycopg://admin:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=2"

    with pytest.raises(exception.DatabaseError) as caught:
        db.upgrade(url)

    assert "s3cret-pw" not in str(caught.value)
    assert "s3cret-pw" not in repr(caught.value.kwargs)


def test_alembic_cli_upgrades_with_the_root_ini(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_")}
    env["CONDUCTOR_DATABASE_URL"] = url

    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), "upgrade", "head"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert db.current_revision(url) == db.head_revision()


def test_conductors_upgrading_the_same_empty_database_at_once_all_succeed(
    empty_database_url: str,
) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def upgrade() -> None:
        barrier.wait()
        try:
            db.upgrade(empty_database_url)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    db.check_at_head(empty_database_url)


def test_conductor_db_upgrade_takes_a_0003_database_to_head(empty_database_url: str) -> None:
    db.upgrade(empty_database_url, "0003")
    from tests.conductor.processes import child_env, conductor_command

    done = subprocess.run(
        [*conductor_command(), "db", "upgrade", "--database-url", empty_database_url],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )

    assert done.returncode == 0, done.stderr
    assert f"from 0003 to {db.head_revision()}" in done.stdout
    db.check_at_head(empty_database_url)


def test_upgrade_to_0005_leaves_existing_instances_without_a_project(
    empty_database_url: str,
) -> None:
    url = empty_database_url
    db.upgrade(url, "0004")
    _raw(
        url,
        "INSERT INTO instances (uuid, host, state, vcpus, memory_mb, created_at, revision) "
        "VALUES ('u-old', 'h', 'active', 1, 1, :now, 1)",
        now=dt.datetime.now(dt.UTC),
    )

    db.upgrade(url, "0005")

    assert [tuple(r) for r in _raw(url, "SELECT uuid, project_id FROM instances")] == [
        ("u-old", None)
    ]
