"""Security: no pickle, only @remotable reachable, no remote tracebacks, no admin by
claim, no credentials in logs or error messages.

TLS is not exercised here: the project's RabbitMQ has no TLS listener and its PostgreSQL
runs with ``ssl = off`` (see the suite's report for what a TLS deployment needs).
"""

from __future__ import annotations

import ast
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from objects.context import RequestContext
from tests.conductor.processes import REPO, child_env, conductor_command
from tests.reliability import faults, served
from tests.reliability.rawpeer import envelope, rebuild_error

PRODUCT = ("objects", "transport", "conductor")
CODE_LOADING = {
    "pickle",
    "_pickle",
    "cPickle",
    "cloudpickle",
    "dill",
    "jsonpickle",
    "marshal",
    "shelve",
    "yaml",
}


def product_modules() -> list[Path]:
    return sorted(p for pkg in PRODUCT for p in (REPO / pkg).rglob("*.py"))


def test_no_product_module_imports_pickle_or_another_code_loading_format() -> None:
    offenders = []
    for path in product_modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
                names = [
                    a.value
                    for a in node.args
                    if isinstance(a, ast.Constant) and isinstance(a.value, str)
                ]
            offenders += [
                f"{path}:{getattr(node, 'lineno', 0)} {n}"
                for n in names
                if n.split(".")[0] in CODE_LOADING
            ]
    assert len(product_modules()) > 20
    assert offenders == []


def test_the_amqp_consumer_accepts_json_only() -> None:
    source = (REPO / "transport" / "drivers" / "amqp.py").read_text()
    accepts = [
        n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.keyword) and n.arg == "accept"
    ]
    assert accepts, "kombu consumers must pass an explicit accept list"
    for keyword in accepts:
        assert ast.unparse(keyword.value) == "[_JSON]"
    assert '_JSON = "application/json"' in source


def test_a_remote_failure_reaches_the_caller_typed_and_without_a_traceback(
    sqlite_url: str, topic: str
) -> None:
    with served.in_process(sqlite_url, topic) as s:
        probe = served.import_probe()
        with pytest.raises(RuntimeError, match="probe failure on purpose") as caught:
            probe.Probe.fail(RequestContext(user_id="curious"))
        assert "Traceback" not in str(caught.value) and "_deep_frame" not in str(caught.value)

        # On the wire: class, module, message, args, kwargs; no frames, no file names.
        request = envelope(
            "object_class_action_versions",
            {
                "objname": "Probe",
                "objmethod": "fail",
                "object_versions": {},
                "args": [],
                "kwargs": {},
            },
        )
        request["reply_to"] = s.peer.reply_address
        s.peer.send_json(request)
        reply = s.peer.reply(request["id"])
        assert set(reply["exc"]) == {"class", "module", "message", "args", "kwargs"}
        wire = json.dumps(reply)
        for leak in ("Traceback", 'File \\"', "_deep_frame_marker", "probe_objects", ".py"):
            assert leak not in wire, leak
        assert isinstance(rebuild_error(reply), RuntimeError)


def test_a_context_cannot_claim_admin_unless_the_conductor_allows_it(
    sqlite_url: str, topic: str
) -> None:
    probe = served.import_probe()
    user = RequestContext(user_id="mallory", project_id="p")
    with served.in_process(sqlite_url, topic):
        assert probe.Probe.whoami(user) == {"user_id": "mallory", "is_admin": False}
        with pytest.raises(PermissionError, match="--allow-admin-context"):
            probe.Probe.whoami(user.elevated())
        with pytest.raises(PermissionError):
            probe.Probe.whoami({**user.to_dict(), "is_admin": True})
    with served.in_process(sqlite_url, topic, allow_admin_context=True):
        assert probe.Probe.whoami(user.elevated()) == {"user_id": "mallory", "is_admin": True}


@pytest.mark.rabbit
def test_conductor_serve_refuses_admin_contexts_unless_started_with_the_flag(
    broker_url: str, database_url: str, topic: str
) -> None:
    probe = served.import_probe()
    admin = RequestContext(user_id="ops", is_admin=True)
    with served.as_process(broker_url, database_url, topic, "--allow-admin-context"):
        assert probe.Probe.whoami(admin) == {"user_id": "ops", "is_admin": True}
    with served.as_process(broker_url, database_url, f"{topic}-strict"):
        with pytest.raises(PermissionError):
            probe.Probe.whoami(admin)


def run_serve(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*conductor_command(), "serve", "--log-level", "DEBUG", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        cwd=REPO,
    )


def assert_clean_failure(out: subprocess.CompletedProcess[str], *secrets: str) -> str:
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked:\n{text}"
    assert "Traceback" not in text, text
    return text


def test_unreachable_database_fails_in_one_line_without_its_password() -> None:
    secret = f"DbS3cret{uuid.uuid4().hex[:6]}"
    out = run_serve(
        "--transport-url",
        "amqp://guest:BrokerS3cret@127.0.0.1:1//",
        "--database-url",
        f"postgresql+psycopg://postgres:{secret}@127.0.0.1:1/x",
        "--topic",
        "never-served",
    )
    text = assert_clean_failure(out, secret, "BrokerS3cret")
    assert "no database answers at 127.0.0.1:1" in text and "--database-url" in text


def test_unsupported_broker_url_is_reported_without_its_password(sqlite_url: str) -> None:
    secret = f"Br0kerS3cret{uuid.uuid4().hex[:6]}"
    out = run_serve(
        "--transport-url",
        f"stomp://guest:{secret}@127.0.0.1:61613//",
        "--database-url",
        sqlite_url,
        "--topic",
        "never-served",
    )
    text = assert_clean_failure(out, secret)
    assert "could not start" in text and "'stomp'" in text


@pytest.fixture
def broker_user(broker_vhost: faults.Vhost) -> Iterator[tuple[str, str]]:
    """A RabbitMQ user of this test's own with a password that appears nowhere else."""
    name, password = f"rel-{uuid.uuid4().hex[:8]}", f"PwS3cret{uuid.uuid4().hex}"
    faults.rabbitmqctl("add_user", name, password)
    faults.rabbitmqctl("set_permissions", "-p", broker_vhost.name, name, ".*", ".*", ".*")
    try:
        yield name, password
    finally:
        faults.rabbitmqctl("delete_user", name)


@pytest.mark.rabbit
def test_passwords_never_appear_in_serve_output_working_or_failing(
    broker_vhost: faults.Vhost, broker_user: tuple[str, str], database_url: str, topic: str
) -> None:
    from urllib.parse import urlsplit, urlunsplit

    name, password = broker_user
    parts = urlsplit(broker_vhost.url)
    good = urlunsplit(parts._replace(netloc=f"{name}:{password}@{parts.hostname}:{parts.port}"))
    db_secret = f"PgS3cret{uuid.uuid4().hex}"
    db_url = database_url
    if db_url.startswith("postgresql"):  # trust auth ignores it; it still sits in the URL
        db_url = db_url.replace("postgres@", f"postgres:{db_secret}@", 1)

    # A conductor that works, at DEBUG, serving requests
    with served.as_process(good, db_url, topic, "--log-level", "DEBUG") as s:
        probe = served.import_probe()
        assert probe.Probe.echo(RequestContext(), "x") == "x"
        out = s.output()
    assert password not in out and db_secret not in out
    assert "serving topic" in out

    # A conductor whose broker refuses its credentials
    wrong = good.replace(password, f"Wrong{password}")
    failed = run_serve("--transport-url", wrong, "--database-url", db_url, "--topic", topic)
    assert_clean_failure(failed, password, db_secret)
