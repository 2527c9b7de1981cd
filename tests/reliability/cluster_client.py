"""One compute process of the cluster test: WRITES creates and saves, many in flight.

Run as ``python -m tests.reliability.cluster_client URL TOPIC WRITES IN_FLIGHT TIMEOUT MARKER``.
Keeps IN_FLIGHT writes pending until WRITES were sent; every other write is a save of an
instance created earlier whose previous write has succeeded (saves of one instance never
race), the rest are creates. Prints ``progress N`` as
writes finish, then one JSON line: every write as ``[kind, uuid, value, start, end,
outcome]`` (wall-clock times; outcome ``ok`` or the error's type and message).
"""

from __future__ import annotations

import faulthandler
import json
import logging
import signal
import sys
import threading
import time
import uuid
from concurrent import futures as cf
from typing import Any

import conductor
import objects
from objects.context import RequestContext


def main() -> int:
    url, topic, writes, in_flight, timeout, marker = sys.argv[1:7]
    total, most = int(writes), int(in_flight)
    objects.register_all()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(threadName)s %(name)s %(message)s"
    )
    faulthandler.register(signal.SIGUSR1)  # the test asks for every thread's stack on a hang
    client = conductor.connect(url, topic=topic, timeout=float(timeout))
    ctx = RequestContext(user_id="cluster", project_id="cluster")
    lock = threading.Condition()
    idle: list[Any] = []  # created instances with no save in flight
    records: list[list[Any]] = []
    pending: list[cf.Future[Any]] = []
    finished = 0

    def track(
        kind: str, inst: Any, value: str | None, future: cf.Future[Any], start: float
    ) -> None:
        def done(f: cf.Future[Any]) -> None:
            nonlocal finished
            end = time.time()
            exc = f.exception()
            outcome = "ok" if exc is None else f"{type(exc).__name__}: {exc}"[:300]
            with lock:
                records.append([kind, inst.uuid, value, start, end, outcome])
                if exc is None:
                    idle.append(inst)  # free for a later save (a failed write's is retired:
                    # its state on the conductor is unknown, a later save would be stale)
                finished += 1
                lock.notify_all()
                if finished % 10 == 0 or finished == total:
                    print(f"progress {finished}", flush=True)  # under the lock: whole lines

        future.add_done_callback(done)
        pending.append(future)

    print("ready", flush=True)
    for step in range(total):

        def room(sent: int = step) -> bool:
            return sent - finished < most

        with lock:
            lock.wait_for(room)
            inst = idle.pop(0) if idle and step % 2 == 1 else None
        start = time.time()
        if inst is None:
            inst = objects.Instance(
                ctx, uuid=str(uuid.uuid4()), host=marker, state="building", vcpus=1, memory_mb=64
            )
            track("create", inst, None, inst.create_async(), start)
        else:
            value = f"{marker}-{step}"
            inst.task_state = value
            track("save", inst, value, inst.save_async(), start)
    # Every future ends within its timeout; the last callbacks may still be running.
    with lock:
        lock.wait_for(lambda: finished == total, timeout=float(timeout) + 15)
        print(json.dumps({"records": records, "unfinished": total - finished}), flush=True)
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
