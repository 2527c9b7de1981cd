"""Real fault injection for the reliability suite: RabbitMQ vhosts, PostgreSQL databases.

Every fault is scoped to resources the test created: connections are cut per vhost
(``rabbitmqctl close_all_connections --vhost``), a database outage blocks and terminates
the connections of one database the test owns. Other users of the same broker and
database server never notice.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy
from sqlalchemy.engine import URL, make_url

RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"


def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    """Run ``rabbitmqctl``; raise AssertionError with its output when it fails."""
    if not Path(RABBITMQCTL).exists():
        raise AssertionError(
            "rabbitmqctl is needed to inject broker faults; run the suite on the broker's host"
        )
    out = subprocess.run(
        [RABBITMQCTL, "-q", *args], capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {out.stdout}{out.stderr}")
    return out.stdout


class Vhost:
    """A RabbitMQ virtual host of the test's own; deleting it deletes all its queues."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url

    @classmethod
    def create(cls, base_url: str) -> Vhost:
        parts = urlsplit(base_url)
        name = f"conductor-rel-{uuid.uuid4().hex[:10]}"
        rabbitmqctl("add_vhost", name)
        user = parts.username or "guest"
        rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        return cls(name, urlunsplit(parts._replace(path=f"/{name}")))

    def delete(self) -> None:
        rabbitmqctl("delete_vhost", self.name)

    def close_connections(self, reason: str = "reliability test") -> int:
        """Close every client connection of this vhost on the broker side; return how many."""
        before = self.connection_count()
        rabbitmqctl("close_all_connections", "--vhost", self.name, reason)
        return before

    def connection_count(self) -> int:
        out = rabbitmqctl("list_connections", "--formatter", "json", "vhost")
        return sum(1 for c in json.loads(out or "[]") if c.get("vhost") == self.name)

    def queues(self) -> dict[str, dict[str, Any]]:
        """``{name: {"messages": n, "consumers": n, "arguments": {key: value}}}``."""
        out = rabbitmqctl(
            "list_queues",
            "-p",
            self.name,
            "--formatter",
            "json",
            "name",
            "messages",
            "consumers",
            "arguments",
        )
        found: dict[str, dict[str, Any]] = {}
        for q in json.loads(out or "[]"):
            arguments = {a[0]: a[-1] for a in q.get("arguments") or []}
            found[q["name"]] = {
                "messages": q["messages"],
                "consumers": q["consumers"],
                "arguments": arguments,
            }
        return found

    def wait_for_connections(self, count: int, timeout: float = 30.0) -> None:
        """Wait until at least ``count`` connections are open again (clients reconnected)."""
        deadline = time.monotonic() + timeout
        while self.connection_count() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {count} connections after {timeout}s")
            time.sleep(0.5)


class PostgresDatabases:
    """Databases beside the one ``CONDUCTOR_TEST_DATABASE_URL`` names; nothing touches that one."""

    @staticmethod
    def server_url() -> URL:
        url = make_url(os.environ["CONDUCTOR_TEST_DATABASE_URL"])
        if url.drivername in {"postgresql", "postgres"}:
            url = url.set(drivername="postgresql+psycopg")
        return url

    @classmethod
    def admin(cls, sql: str, *params: Any) -> list[Any]:
        """Run one statement on the server's own database in autocommit; return its rows."""
        engine = sqlalchemy.create_engine(
            cls.server_url(), isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.NullPool
        )
        try:
            with engine.connect() as connection:
                result = connection.exec_driver_sql(sql, params if params else ())
                return list(result.all()) if result.returns_rows else []
        finally:
            engine.dispose()

    @classmethod
    def url_of(cls, name: str) -> str:
        return cls.server_url().set(database=name).render_as_string(hide_password=False)

    @classmethod
    def create_template(cls) -> str:
        from conductor import db

        name = f"conductor_test_rel_{uuid.uuid4().hex[:10]}"
        cls.admin(f'CREATE DATABASE "{name}"')
        db.upgrade(cls.url_of(name))
        return name

    @classmethod
    def clone(cls, template: str) -> tuple[str, str]:
        name = f"conductor_test_rel_{uuid.uuid4().hex[:10]}"
        cls.admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name, cls.url_of(name)

    @classmethod
    def drop(cls, name: str) -> None:
        assert name.startswith("conductor_test_rel_"), name
        cls.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        cls.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @classmethod
    def backends(cls, name: str) -> int:
        rows = cls.admin("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", name)
        return int(rows[0][0])

    @classmethod
    @contextlib.contextmanager
    def outage(cls, name: str) -> Iterator[None]:
        """The database is unreachable inside the block: new connections are refused and
        every open one is terminated (what a restart of the server does to its clients).
        Connections are allowed again on exit, whatever happened inside."""
        assert name.startswith("conductor_test_rel_"), name
        cls.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            cls.admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                name,
            )
            yield
        finally:
            cls.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (from /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def count_rows(database_url: str, sql: str, **params: Any) -> int:
    """``SELECT count(*) ...`` on the test's database, straight through SQLAlchemy."""
    engine = sqlalchemy.create_engine(database_url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.connect() as connection:
            return int(connection.execute(sqlalchemy.text(sql), params).scalar_one())
    finally:
        engine.dispose()


def query(database_url: str, sql: str, **params: Any) -> list[Any]:
    engine = sqlalchemy.create_engine(database_url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sqlalchemy.text(sql), params).all())
    finally:
        engine.dispose()
