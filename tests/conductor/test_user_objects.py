"""A user's own object (examples/widgets.py, the README's example) served by the conductor."""

from __future__ import annotations

import importlib
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import conductor
import objects
from objects import base, exception
from objects.context import RequestContext
from objects.fixture import isolated_registry
from tests.brokers import delete_queues
from tests.conductor.processes import REPO, child_env, serve, unique_topic


@pytest.fixture
def widgets() -> Iterator[Any]:
    objects.register_all()
    # The example registers Widget at import; other tests expect no Widget afterwards.
    with isolated_registry():
        module = importlib.import_module("examples.widgets")
        if base.VersionedObjectRegistry.obj_classes().get("Widget", [None])[0] is not module.Widget:
            base.VersionedObjectRegistry.register(module.Widget)
        yield module


@pytest.fixture
def conductor_with_widgets(database_url: str, widgets: Any) -> Iterator[str]:
    url = f"memory://widgets-{uuid.uuid4().hex[:8]}"
    service = conductor.Conductor(url, database_url)
    service.start()
    client = conductor.connect(url, timeout=20)
    try:
        yield url
    finally:
        client.close()
        service.stop()
        base.set_indirection_api(None)


def test_user_object_is_created_read_and_queried_through_the_conductor(
    conductor_with_widgets: str, widgets: Any
) -> None:
    ctx = RequestContext()
    small = widgets.Widget(ctx, name=f"w-{uuid.uuid4().hex[:6]}", size=2)
    big = widgets.Widget(ctx, name=f"w-{uuid.uuid4().hex[:6]}", size=40)
    objects.wait_all([small.create_async(), big.create_async()])

    loaded = widgets.Widget.get_async(ctx, big.id).wait()
    assert loaded.size == 40 and loaded.name == big.name
    loaded.size = 41
    loaded.save()
    assert widgets.Widget.total_size(ctx) == 43
    with pytest.raises(exception.DuplicateEntry):
        widgets.Widget(ctx, name=small.name, size=1).create()


def test_user_object_compute_side_never_opens_the_database(widgets: Any) -> None:
    # No conductor connected and no storage: the body would need a database, and there is none.
    ctx = RequestContext()
    with pytest.raises(exception.DatabaseNotAvailable):
        widgets.Widget.get(ctx, 1)


@pytest.mark.rabbit
def test_conductor_serve_objects_serves_the_users_module(
    broker_url: str, shared_database_url: str, widgets: Any
) -> None:
    topic = unique_topic("test-widgets")
    with serve(broker_url, shared_database_url, topic, "--objects", "examples.widgets"):
        script = (
            "import conductor, examples.widgets as w\n"
            "from objects.context import RequestContext\n"
            f"c = conductor.connect({broker_url!r}, topic={topic!r}, timeout=30)\n"
            "ctx = RequestContext()\n"
            f"x = w.Widget(ctx, name='served-{uuid.uuid4().hex[:6]}', size=5); x.create()\n"
            "y = w.Widget.get_async(ctx, x.id); y.wait(); y.size = 6; y.save_async(); y.wait()\n"
            "print(w.Widget.get(ctx, x.id).size)\n"
            "c.close()\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(),
            cwd=REPO,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "6"
    delete_queues(broker_url, [topic, f"{topic}.{socket.gethostname()}"])
