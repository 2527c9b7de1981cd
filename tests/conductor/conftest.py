"""Fixtures of the conductor tests: databases (SQLite always, PostgreSQL when asked) and the broker.

Database fixtures are parametrized over the backends: ``sqlite`` always, ``postgresql``
when ``CONDUCTOR_TEST_DATABASE_URL`` names a server (CI sets it). PostgreSQL tests never
touch the database named in that URL: the session creates ``conductor_test_<random>``
beside it, migrates it, empties its tables before each test, and drops it at the end.

- ``database_url``: a database for one test. SQLite: a fresh file under ``tmp_path`` (not
  yet migrated). PostgreSQL: the session's database, at head, with no rows.
- ``migrated_database_url``: the same, at the alembic head.
- ``shared_database_url``: a migrated database other processes can open too.
- ``empty_database_url``: a database with no tables at all (migration tests); on
  PostgreSQL a database of its own, dropped after the test.
- ``broker_url``: ``CONDUCTOR_TEST_TRANSPORT_URL``; tests using it skip when it is unset.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy.engine import URL, make_url

import conductor
import objects
from conductor import db
from conductor.manager import ConductorManager
from objects import base
from objects.fixture import isolated_registry
from tests.brokers import delete_queues, no_service
from tests.conductor.lanes import new_manager
from tests.conductor.processes import unique_topic

DATABASE_ENV = "CONDUCTOR_TEST_DATABASE_URL"
TRANSPORT_ENV = "CONDUCTOR_TEST_TRANSPORT_URL"
BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get(DATABASE_ENV) else [])


def _server_url() -> URL:
    if not os.environ.get(DATABASE_ENV):
        no_service(DATABASE_ENV)  # a test asked for PostgreSQL by name
    url = make_url(os.environ[DATABASE_ENV])
    if url.drivername in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
    return url


def _admin(sql: str) -> None:
    """Run one statement on the server database, outside a transaction (CREATE/DROP DATABASE)."""
    engine = sqlalchemy.create_engine(
        _server_url(), isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.NullPool
    )
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(sql)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def _postgres_database_factory() -> Iterator[list[str]]:
    """Creates PostgreSQL databases on demand; drops every one left at the session's end."""
    created: list[str] = []
    yield created
    for name in created:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _new_postgres_database(created: list[str]) -> str:
    name = f"conductor_test_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    created.append(name)
    return _server_url().set(database=name).render_as_string(hide_password=False)


def _drop_postgres_database(created: list[str], url: str) -> None:
    name = make_url(url).database
    assert name is not None and name.startswith("conductor_test_")
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    created.remove(name)


@pytest.fixture(scope="session")
def _postgres_session_database(_postgres_database_factory: list[str]) -> str:
    from conductor import db

    url = _new_postgres_database(_postgres_database_factory)
    db.upgrade(url)
    return url


def _empty_postgres_tables(url: str) -> None:
    """Delete every row (alembic's own table aside) so no test sees another's data."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
            tables = (
                connection.exec_driver_sql(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                    "AND tablename <> 'alembic_version'"
                )
                .scalars()
                .all()
            )
            if tables:
                quoted = ", ".join(f'"{t}"' for t in tables)
                connection.exec_driver_sql(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; tests get copies (a copy is much cheaper than a migration)."""
    from conductor import db

    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite"
    db.upgrade(f"sqlite:///{path}")
    return path


def database_for(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, migrated: bool
) -> str:
    """A database on ``backend`` for the requesting test; at head when ``migrated``.

    For fixtures parametrized over their own axis (a pytest fixture cannot ask for a
    parametrized one dynamically), e.g. the Storage contract suite's ``storage``.
    """
    if backend == "sqlite":
        path = tmp_path / "conductor.sqlite"
        if migrated and not path.exists():
            shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("_postgres_session_database")
    _empty_postgres_tables(url)
    return url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database for one test (see the module docstring)."""
    return database_for(request.param, request, tmp_path, migrated=False)


@pytest.fixture
def migrated_database_url(database_url: str, request: pytest.FixtureRequest) -> str:
    """``database_url`` at the alembic head, with no rows."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        if not Path(url.database).exists():
            shutil.copyfile(request.getfixturevalue("_sqlite_template"), url.database)
    return database_url


@pytest.fixture
def shared_database_url(migrated_database_url: str) -> str:
    """A migrated database that separate processes can open (a SQLite file, or PostgreSQL)."""
    return migrated_database_url


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database without any table, for migration tests."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite'}"
        return
    created: list[str] = request.getfixturevalue("_postgres_database_factory")
    url = _new_postgres_database(created)
    try:
        yield url
    finally:
        _drop_postgres_database(created, url)


@pytest.fixture
def broker_url() -> str:
    """The RabbitMQ URL of CONDUCTOR_TEST_TRANSPORT_URL; skips the test when it is unset."""
    url = os.environ.get(TRANSPORT_ENV)
    if not url:
        no_service(TRANSPORT_ENV)
    return url


STACKS = ["embedded", "rabbit-postgresql"]


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A running conductor and a connected client (``conductor.connect``) on the embedded
    default, then on RabbitMQ + PostgreSQL; yields the stack's name."""
    objects.register_all()
    if request.param == "embedded":
        url = f"memory://writes-{uuid.uuid4().hex[:8]}"
        database_url = database_for("sqlite", request, tmp_path, migrated=True)
    else:
        broker = os.environ.get(TRANSPORT_ENV)
        if not broker:
            no_service(TRANSPORT_ENV)
        if not os.environ.get(DATABASE_ENV):
            no_service(DATABASE_ENV)
        url = broker
        database_url = database_for("postgresql", request, tmp_path, migrated=True)
    topic = unique_topic("test-stack")
    server = f"{topic}-srv"
    service = conductor.Conductor(url, database_url, topic=topic, server=server, workers=2)
    service.start()
    client = conductor.connect(url, topic=topic, timeout=30)
    try:
        yield request.param
    finally:
        client.close()
        service.stop()
        base.set_indirection_api(None)
        if request.param != "embedded":
            delete_queues(url, [topic, f"{topic}.{server}"])


@pytest.fixture
def engine(migrated_database_url: str) -> Iterator[db.Engine]:
    """An engine on ``migrated_database_url``, with the built-in objects registered (in a
    registry of the test's own)."""
    with isolated_registry():
        objects.register_all()
        engine = db.create_engine(migrated_database_url)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture
def manager(engine: db.Engine) -> Iterator[ConductorManager]:
    """A conductor manager on ``engine``, closed afterwards."""
    manager = new_manager(engine)
    yield manager
    manager.close()
