"""What an operator sees when the ``conductor`` command cannot do its job: one line naming
the fix, within seconds, never a traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy.engine import make_url

from tests.brokers import no_service
from tests.conductor.conftest import DATABASE_ENV, _server_url
from tests.conductor.processes import REPO, child_env
from tests.conductor.test_cli import run_cli

#: Every failure below must be reported within this many seconds.
FAIL_WITHIN = 8.0


def _timed(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    out = run_cli(*args, timeout=60)
    return out, time.monotonic() - started


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    assert "Traceback" not in text
    return lines[0]


def _postgres_url(**parts: object) -> str:
    if not os.environ.get(DATABASE_ENV):
        no_service(DATABASE_ENV)
    return _server_url().set(**parts).render_as_string(hide_password=False)  # type: ignore[arg-type]


def test_db_upgrade_of_a_missing_postgres_database_says_createdb() -> None:
    url = _postgres_url(database="conductor_test_no_such_db", password="s3cret-pw")
    out, took = _timed("db", "upgrade", "--database-url", url)
    assert out.returncode == 1
    line = _one_line(out.stderr)
    assert "createdb" in line and "conductor_test_no_such_db" in line
    assert "--database-url" in line and "CONDUCTOR_DATABASE_URL" in line
    assert "s3cret-pw" not in out.stderr + out.stdout
    assert took < FAIL_WITHIN


def test_db_upgrade_of_a_closed_port_names_host_and_port() -> None:
    url = _postgres_url(port=1)
    out, took = _timed("db", "upgrade", "--database-url", url)
    assert out.returncode == 1
    line = _one_line(out.stderr)
    assert f"{make_url(url).host}:1" in line and "--database-url" in line
    assert took < FAIL_WITHIN


def test_db_upgrade_of_an_unwritable_sqlite_folder_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'db.sqlite'}"
    out, took = _timed("db", "upgrade", "--database-url", url)
    assert out.returncode == 1
    line = _one_line(out.stderr)
    assert "folder must exist" in line
    assert took < FAIL_WITHIN


def test_db_upgrade_of_a_database_from_a_newer_release_says_run_that_release(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite"
    url = f"sqlite:///{path}"
    assert run_cli("db", "upgrade", "--database-url", url).returncode == 0
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    out, took = _timed("db", "upgrade", "--database-url", url)
    assert out.returncode == 1
    line = _one_line(out.stderr)
    assert "9999" in line and "newer version" in line
    assert took < FAIL_WITHIN


def test_serve_with_a_misspelt_database_name_says_createdb_not_retry_later() -> None:
    url = _postgres_url(database="conductor_test_typo_db")
    out, took = _timed("serve", "--transport-url", "memory://", "--database-url", url)
    assert out.returncode == 1
    assert "createdb" in out.stderr and "retry later" not in out.stderr
    assert "Traceback" not in out.stderr
    assert took < FAIL_WITHIN


def test_log_level_lists_its_choices_and_refuses_a_bad_one() -> None:
    out = run_cli("serve", "--log-level", "chatty")
    assert out.returncode == 2
    assert "DEBUG" in out.stderr and "WARNING" in out.stderr and "chatty" in out.stderr.lower()


def test_version_and_python_dash_m_are_the_same_cli() -> None:
    version = run_cli("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("conductor ")
    module = subprocess.run(
        [sys.executable, "-m", "conductor", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        cwd=REPO,
    )
    assert module.returncode == 0 and module.stdout == version.stdout


@pytest.mark.parametrize("module", ["conductor", "objects", "transport"])
def test_the_compute_side_imports_neither_sqlalchemy_nor_alembic(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in ('sqlalchemy', 'alembic', 'psycopg') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _migrated_sqlite(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert run_cli("db", "upgrade", "--database-url", url).returncode == 0
    return url


def _error_line(text: str) -> str:
    errors = [line for line in text.splitlines() if " ERROR " in line]
    assert len(errors) == 1, text
    assert "Traceback" not in text
    return errors[0]


def test_serve_with_a_wrong_broker_password_fails_at_once_naming_the_fix(
    tmp_path: Path,
) -> None:
    broker = os.environ.get("CONDUCTOR_TEST_TRANSPORT_URL")
    if not broker:
        no_service("CONDUCTOR_TEST_TRANSPORT_URL")
    parts = urlsplit(broker)
    wrong = parts._replace(
        netloc=f"nobody-{os.getpid()}:Wr0ngPw@{parts.hostname}:{parts.port or 5672}"
    )
    out, took = _timed(
        "serve", "--transport-url", urlunsplit(wrong), "--database-url", _migrated_sqlite(tmp_path)
    )
    assert out.returncode == 1
    line = _error_line(out.stdout + out.stderr)
    assert (
        "refused user" in line and "--transport-url" in line and "CONDUCTOR_TRANSPORT_URL" in line
    )
    assert "Wr0ngPw" not in out.stdout + out.stderr
    assert took < FAIL_WITHIN


def test_serve_against_a_closed_broker_port_names_host_and_port(tmp_path: Path) -> None:
    out, took = _timed(
        "serve",
        "--transport-url",
        "amqp://guest:guest@127.0.0.1:1//",
        "--database-url",
        _migrated_sqlite(tmp_path),
    )
    assert out.returncode == 1
    line = _error_line(out.stdout + out.stderr)
    assert "no broker answers at 127.0.0.1:1" in line and "--transport-url" in line
    assert took < FAIL_WITHIN
