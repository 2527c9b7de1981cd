"""A done-callback of an object's future or of a pending object may call the conductor and
wait: callbacks never run on a transport I/O thread. Embedded and RabbitMQ + PostgreSQL."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from typing import Any

import objects
from objects.context import RequestContext


def test_a_blocking_conductor_call_inside_a_done_callback_succeeds(stack: str) -> None:
    ctx = RequestContext(user_id="u1", project_id="p1")
    inst = objects.Instance(
        ctx, uuid=str(uuid.uuid4()), host="cb-host", state="building", vcpus=1, memory_mb=64
    )
    inst.create()
    seen: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def on_done(future: Any) -> None:
        seen.put(threading.current_thread().name)
        try:
            loaded = objects.Instance.get(ctx, future.result().id)  # a blocking call
            loaded.task_state = "from-callback"
            loaded.save()
            seen.put(loaded.host)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            seen.put(exc)

    started = time.monotonic()
    objects.Instance.get_by_uuid_async(ctx, inst.uuid).add_done_callback(on_done)
    thread = seen.get(timeout=20)
    assert seen.get(timeout=20) == "cb-host"
    assert time.monotonic() - started < 10
    assert "-io-" not in thread
    inst.refresh()
    assert inst.task_state == "from-callback"


def test_a_save_future_callback_reads_the_object_it_saved(stack: str) -> None:
    ctx = RequestContext(user_id="u1", project_id="p1")
    inst = objects.Instance(
        ctx, uuid=str(uuid.uuid4()), host="h0", state="building", vcpus=1, memory_mb=64
    )
    inst.create()
    inst.host = "h1"
    seen: queue.SimpleQueue[Any] = queue.SimpleQueue()
    # The object is updated before its future resolves, so a callback sees the saved state
    # and may refresh it from the conductor.
    inst.save_async().add_done_callback(
        lambda f: seen.put((f.exception(), inst.obj_what_changed(), inst.refresh() or inst.host))
    )
    exc, changed, host = seen.get(timeout=20)
    assert exc is None and changed == set() and host == "h1"
