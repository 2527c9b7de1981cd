"""Quorum queues and declaring queues ahead, from the conductor's side: ``conductor serve
--quorum-queues`` (env ``CONDUCTOR_QUORUM_QUEUES``), ``conductor declare-queues``,
``Conductor(quorum_queues=True)`` and ``connect(quorum_queues=True)``."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

import conductor
import objects
from objects import base
from objects.context import RequestContext
from tests.brokers import delete_queues
from tests.conductor.processes import REPO, ServeProcess, child_env, conductor_command, serve
from tests.transport.test_queue_options import queue_depth, queue_type
from transport import exceptions as texc

pytestmark = [pytest.mark.rabbit]


@pytest.fixture
def topic(broker_url: str) -> Iterator[str]:
    name = f"test-qopt-{uuid.uuid4().hex[:10]}"
    yield name
    delete_queues(
        broker_url, [name, f"{name}.dead"] + [f"{name}.{s}" for s in ("c1", "c2", "agent")]
    )


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*conductor_command(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or child_env(),
        cwd=REPO,
    )


def test_declare_queues_cli_makes_the_topic_queue_hold_casts(broker_url: str, topic: str) -> None:
    out = run_cli(
        "declare-queues",
        "--transport-url",
        broker_url,
        "--topic",
        topic,
        "--server",
        "agent",
        "--quorum-queues",
    )
    assert out.returncode == 0, out.stderr
    assert topic in out.stdout
    assert queue_type(broker_url, topic) == "quorum"
    assert queue_type(broker_url, f"{topic}.agent") == "quorum"
    assert queue_depth(broker_url, topic) == 0
    # Asking again with other options names the mismatch instead of a traceback.
    again = run_cli("declare-queues", "--transport-url", broker_url, "--topic", topic)
    assert again.returncode == 1
    assert "x-queue-type" in again.stderr and topic in again.stderr
    assert "Traceback" not in again.stderr


@pytest.mark.slow
def test_serve_quorum_queues_flag_and_a_classic_serve_on_the_same_topic(
    broker_url: str, shared_database_url: str, topic: str
) -> None:
    with serve(broker_url, shared_database_url, topic, "--quorum-queues", server="c1"):
        assert queue_type(broker_url, topic) == "quorum"
        assert queue_type(broker_url, f"{topic}.c1") == "quorum"
        # A second conductor without the flag: exits 1 with one line naming queue and fix.
        proc = ServeProcess(
            [
                "--transport-url",
                broker_url,
                "--database-url",
                shared_database_url,
                "--topic",
                topic,
                "--server",
                "c2",
            ],
            child_env(),
        )
        code = proc.proc.wait(60)
        proc.kill()
        assert code == 1, proc.output
        assert "x-queue-type" in proc.output and "--quorum-queues" in proc.output
        assert topic in proc.output
        assert "Traceback" not in proc.output


@pytest.mark.slow
def test_serve_takes_quorum_queues_from_the_environment(
    broker_url: str, shared_database_url: str, topic: str
) -> None:
    env = child_env()
    env["CONDUCTOR_QUORUM_QUEUES"] = "true"
    proc = ServeProcess(
        [
            "--transport-url",
            broker_url,
            "--database-url",
            shared_database_url,
            "--topic",
            topic,
            "--server",
            "c1",
        ],
        env,
    )
    try:
        proc.wait_ready()
        assert queue_type(broker_url, topic) == "quorum"
    finally:
        assert proc.terminate() == 0, proc.output


def test_conductor_and_connect_take_quorum_queues(
    broker_url: str, shared_database_url: str, topic: str
) -> None:
    objects.register_all()
    service = conductor.Conductor(
        broker_url, shared_database_url, topic, server="c1", quorum_queues=True
    )
    service.start()
    api = conductor.connect(broker_url, topic=topic, timeout=30, quorum_queues=True)
    try:
        assert queue_type(broker_url, topic) == "quorum"
        assert api._transport.config.quorum_queues is True
        ctx = RequestContext(user_id="u", project_id="p")
        inst = objects.Instance(
            ctx, uuid=str(uuid.uuid4()), host="h", state="building", vcpus=1, memory_mb=64
        )
        inst.create()
        assert objects.Instance.get(ctx, inst.id).uuid == inst.uuid
    finally:
        api.close()
        base.set_indirection_api(None)
        service.stop()


def test_a_classic_conductor_on_a_quorum_topic_fails_to_start_typed(
    broker_url: str, shared_database_url: str, topic: str
) -> None:
    objects.register_all()
    first = conductor.Conductor(
        broker_url, shared_database_url, topic, server="c1", quorum_queues=True
    )
    first.start()
    try:
        second = conductor.Conductor(broker_url, shared_database_url, topic, server="c2")
        started = time.monotonic()
        with pytest.raises(texc.QueueMismatch, match="quorum"):
            second.start()
        assert time.monotonic() - started < 10
        second.stop()
    finally:
        first.stop()
