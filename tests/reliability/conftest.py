"""Fixtures of the reliability and security suite: real processes, a broker vhost and a
database of each test's own, so faults injected here touch nothing outside the test.

- ``broker_url``: ``CONDUCTOR_TEST_TRANSPORT_URL`` pointed at a RabbitMQ vhost created for
  the session (``rabbitmqctl add_vhost``) and deleted at its end with every queue in it;
  skips when the variable is unset. Faults are injected with ``rabbitmqctl`` against that
  vhost only (``close_all_connections --vhost``), never against other users of the broker.
- ``database_url``: a migrated database for one test: a PostgreSQL database of its own
  (cloned from a migrated template, dropped after the test) when
  ``CONDUCTOR_TEST_DATABASE_URL`` is set, else a SQLite file.
- ``topic``: a unique topic name.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import no_service
from tests.reliability import faults

DATABASE_ENV = "CONDUCTOR_TEST_DATABASE_URL"
TRANSPORT_ENV = "CONDUCTOR_TEST_TRANSPORT_URL"


def pytest_configure(config: pytest.Config) -> None:
    # kombu/amqp leave sockets to the GC when a connection is dropped under them.
    config.addinivalue_line("filterwarnings", "ignore::ResourceWarning")
    config.addinivalue_line("filterwarnings", "ignore::pytest.PytestUnraisableExceptionWarning")


def _new_vhost() -> Iterator[faults.Vhost]:
    base = os.environ.get(TRANSPORT_ENV)
    if not base:
        no_service(TRANSPORT_ENV)
    vhost = faults.Vhost.create(base)
    try:
        yield vhost
    finally:
        vhost.delete()


@pytest.fixture(scope="session")
def broker_vhost() -> Iterator[faults.Vhost]:
    """The session's own RabbitMQ vhost; skips when no broker is configured."""
    yield from _new_vhost()


@pytest.fixture
def broker_url(broker_vhost: faults.Vhost) -> str:
    """A RabbitMQ URL on a vhost of this session's own; skips when no broker is configured."""
    return broker_vhost.url


@pytest.fixture
def own_vhost() -> Iterator[faults.Vhost]:
    """A vhost for one test whose connections the test may cut (``close_connections``)."""
    yield from _new_vhost()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conductor import db

    path = tmp_path_factory.mktemp("reliability-template") / "template.sqlite"
    db.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _postgres_template() -> Iterator[str | None]:
    if not os.environ.get(DATABASE_ENV):
        yield None
        return
    template = faults.PostgresDatabases.create_template()
    try:
        yield template
    finally:
        faults.PostgresDatabases.drop(template)


@pytest.fixture
def database_url(
    _postgres_template: str | None, _sqlite_template: Path, tmp_path: Path
) -> Iterator[str]:
    """A migrated database of this test's own (PostgreSQL when configured, else SQLite)."""
    if _postgres_template is None:
        path = tmp_path / "conductor.sqlite"
        shutil.copyfile(_sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    name, url = faults.PostgresDatabases.clone(_postgres_template)
    try:
        yield url
    finally:
        faults.PostgresDatabases.drop(name)


@pytest.fixture
def sqlite_url(_sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated SQLite file, for in-process tests about decoding and dispatch."""
    path = tmp_path / "conductor.sqlite"
    shutil.copyfile(_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def postgres_url(database_url: str) -> str:
    """``database_url`` when it is PostgreSQL; skips otherwise (outage tests need a server)."""
    if not database_url.startswith("postgresql"):
        no_service(DATABASE_ENV)
    return database_url


@pytest.fixture
def topic() -> str:
    return f"rel-{uuid.uuid4().hex[:10]}"
