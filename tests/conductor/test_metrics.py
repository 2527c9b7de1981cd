"""``/metrics`` and ``/healthz``: what monitoring scrapes from a conductor."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

import conductor
import objects
from conductor import db
from objects import base, exception
from objects.context import RequestContext
from tests.brokers import delete_queues
from tests.conductor.conftest import _admin, _new_postgres_database
from tests.conductor.processes import serve, unique_topic


def fetch(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        metric, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', metric))
        if metric.split("{")[0] == name and found == labels:
            return float(value)
    return 0.0


def new_instance(ctx: RequestContext) -> objects.Instance:
    return objects.Instance(
        ctx, uuid=str(uuid.uuid4()), host="n1", state="building", vcpus=1, memory_mb=64
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[conductor.Conductor]:
    objects.register_all()
    url = f"sqlite:///{tmp_path / 'metrics.sqlite'}"
    topic = unique_topic("metrics")
    service = conductor.Conductor(f"memory://{topic}", url, topic, metrics_port=0)
    service.start()
    api = conductor.connect(f"memory://{topic}", topic=topic, timeout=30)
    try:
        yield service
    finally:
        api.close()
        base.set_indirection_api(None)
        service.stop()


def test_metrics_count_requests_by_object_method_and_outcome(
    served: conductor.Conductor,
) -> None:
    ctx = RequestContext(user_id="u", project_id="p")
    port = served.metrics_port
    assert port is not None
    created = [new_instance(ctx) for _ in range(5)]
    for inst in created:
        inst.create()
    pending = [objects.Instance.get_async(ctx, inst.id) for inst in created]
    objects.wait_all(pending)
    with pytest.raises(exception.NotFound):
        objects.Instance.get(ctx, 10**9)

    status, text = fetch(port, "/metrics")
    assert status == 200
    assert (
        sample(
            text, "conductor_requests_total", objname="Instance", objmethod="create", outcome="ok"
        )
        == 5
    )
    assert (
        sample(text, "conductor_requests_total", objname="Instance", objmethod="get", outcome="ok")
        == 5
    )
    assert (
        sample(
            text,
            "conductor_requests_total",
            objname="Instance",
            objmethod="get",
            outcome="NotFound",
        )
        == 1
    )
    assert sample(text, "conductor_request_seconds_count", objname="Instance", objmethod="get") == 6
    assert sample(text, "conductor_batch_size_count") >= 1
    assert sample(text, "conductor_requests_in_flight") == 0
    assert "conductor_replays_total" in text

    status, body = fetch(port, "/healthz")
    assert status == 200, body
    assert "broker: ok" in body and "database: ok" in body


@pytest.mark.rabbit
@pytest.mark.postgres
@pytest.mark.slow
def test_healthz_of_a_real_conductor_says_503_naming_the_database_while_it_is_away(
    broker_url: str, _postgres_database_factory: list[str]
) -> None:
    database = _new_postgres_database(_postgres_database_factory)
    db.upgrade(database)
    name = sqlalchemy.engine.make_url(database).database
    topic = unique_topic("metrics")
    try:
        with serve(broker_url, database, topic, "--metrics-port", "0") as proc:
            match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", proc.output)
            assert match, proc.output
            port = int(match.group(1))
            status, body = fetch(port, "/healthz")
            assert status == 200 and "database: ok" in body and "broker: ok" in body

            _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            _admin(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            )
            started = time.monotonic()
            status, body = fetch(port, "/healthz")
            assert status == 503, body
            assert "database: down" in body and "broker: ok" in body
            assert time.monotonic() - started < 10

            _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            status, body = fetch(port, "/healthz")
            assert status == 200, body
            status, text = fetch(port, "/metrics")
            assert status == 200 and "conductor_requests_in_flight" in text
    finally:
        _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        delete_queues(broker_url, [topic, f"{topic}.{_hostname()}"])


def _hostname() -> str:
    import socket

    return socket.gethostname()


def test_a_batch_that_falls_back_to_one_transaction_per_request_counts_each_request_once(
    served: conductor.Conductor,
) -> None:
    # Given a batch of creates, one of which clashes on a unique key (the batch then runs
    # request by request)
    from conductor.service import ConductorSerializer
    from transport.dispatcher import RPCDispatcher

    ctx = RequestContext(user_id="u", project_id="p")
    existing = new_instance(ctx)
    existing.create()
    clash = new_instance(ctx)
    clash.uuid = existing.uuid
    versions = {"Instance": "1.2", "Flavor": "1.0"}
    requests = [
        (
            uuid.uuid4().hex,
            ctx.to_dict(),
            "object_action",
            {
                "objinst": inst.obj_to_primitive(),
                "objmethod": "create",
                "args": [],
                "kwargs": {},
                "object_versions": versions,
            },
            None,
            "1.0",
        )
        for inst in [new_instance(ctx), clash, new_instance(ctx)]
    ]
    dispatcher = RPCDispatcher(served._rpc_server_endpoints(), ConductorSerializer())

    outcomes = dispatcher.dispatch_batch(requests, redelivered=False)

    # Then each request is counted once, with its own outcome, and none stays in flight
    assert [ok for ok, _ in outcomes] == [True, False, True]
    assert served.metrics_port is not None
    _, text = fetch(served.metrics_port, "/metrics")
    assert (
        sample(
            text, "conductor_requests_total", objname="Instance", objmethod="create", outcome="ok"
        )
        == 1 + 2
    )
    assert (
        sample(
            text,
            "conductor_requests_total",
            objname="Instance",
            objmethod="create",
            outcome="DuplicateEntry",
        )
        == 1
    )
    assert (
        sample(text, "conductor_request_seconds_count", objname="Instance", objmethod="create") == 4
    )
    assert sample(text, "conductor_requests_in_flight") == 0


@pytest.mark.rabbit
@pytest.mark.slow
def test_log_lines_about_a_request_carry_its_id(broker_url: str, shared_database_url: str) -> None:
    objects.register_all()
    topic = unique_topic("logids")
    try:
        with serve(broker_url, shared_database_url, topic, "--log-level", "INFO") as proc:
            api = conductor.connect(broker_url, topic=topic, timeout=30)
            try:
                with pytest.raises(exception.NotFound):
                    objects.Instance.get(RequestContext(project_id="p"), 10**9)
            finally:
                api.close()
                base.set_indirection_api(None)
            deadline = time.monotonic() + 10
            while "NotFound" not in proc.output and time.monotonic() < deadline:
                time.sleep(0.05)
            [line] = [x for x in proc.output.splitlines() if "NotFound" in x]
    finally:
        delete_queues(broker_url, [topic, f"{topic}.{_hostname()}"])
    field = re.search(r"\[([^\]]+)\]", line)
    assert field and field.group(1) != "-", line
    assert f"request {field.group(1)} " in line, line


def test_batch_size_counts_a_message_of_one_request(served: conductor.Conductor) -> None:
    """A lone request is a message of one: the histogram of requests per message shows it
    (an operator reading the mean batch size must not see only the packed messages)."""
    ctx = RequestContext(user_id="u", project_id="p")
    port = served.metrics_port
    assert port is not None
    inst = new_instance(ctx)
    inst.create()
    _, before = fetch(port, "/metrics")
    objects.Instance.get(ctx, inst.id)
    _, after = fetch(port, "/metrics")
    assert (
        sample(after, "conductor_batch_size_count")
        == sample(before, "conductor_batch_size_count") + 1
    )
    assert (
        sample(after, "conductor_batch_size_bucket", le="1.0")
        == sample(before, "conductor_batch_size_bucket", le="1.0") + 1
    )


@pytest.mark.parametrize("form", ["local", "wire"])
def test_a_row_that_does_not_load_is_counted_as_the_error_its_caller_gets(
    served: conductor.Conductor,
    tmp_path: Path,
    form: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stored value the object refuses (a state outside its enum, written by hand) fails
    each get with ObjectValueError, and the conductor counts that error, once, and no
    ``ok``: whether the caller in its process loads the row itself (``local``, the
    embedded get's way) or takes its primitive (``wire``)."""
    from conductor import lane

    if form == "wire":
        monkeypatch.setattr(lane._RowAnswer, "local", lambda self, limit: None)
    ctx = RequestContext(user_id="u", project_id="p")
    inst = new_instance(ctx)
    inst.create()
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'metrics.sqlite'}")
    try:
        with engine.begin() as conn:
            conn.execute(
                sqlalchemy.text("UPDATE instances SET state = 'bogus' WHERE id = :id"),
                {"id": inst.id},
            )
    finally:
        engine.dispose()
    with pytest.raises(exception.ObjectValueError, match="state"):
        objects.Instance.get_async(ctx, inst.id).wait()
    with pytest.raises(exception.ObjectValueError, match="state"):
        objects.Instance.get(ctx, inst.id)

    port = served.metrics_port
    assert port is not None
    _, text = fetch(port, "/metrics")
    labels = {"objname": "Instance", "objmethod": "get"}
    assert sample(text, "conductor_requests_total", **labels, outcome="ObjectValueError") == 2
    assert sample(text, "conductor_requests_total", **labels, outcome="ok") == 0
    assert sample(text, "conductor_request_seconds_count", **labels) == 2
    assert sample(text, "conductor_requests_in_flight") == 0
