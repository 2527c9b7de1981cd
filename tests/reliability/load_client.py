"""One compute process of the load test: many operations in flight for a while.

Run as ``python -m tests.reliability.load_client TRANSPORT_URL TOPIC SECONDS IN_FLIGHT MARKER``.
Keeps IN_FLIGHT creates, gets and saves pending at all times for SECONDS, then prints one
JSON line: operations done, errors (with their types), and this process's RSS at the
start of the measured window and at its end.
"""

from __future__ import annotations

import collections
import json
import sys
import time
import uuid
from concurrent import futures as cf
from typing import Any

import conductor
import objects
from objects.context import RequestContext
from tests.reliability.faults import rss_kib


def main() -> int:
    url, topic, seconds, in_flight, marker = sys.argv[1:6]
    objects.register_all()
    client = conductor.connect(url, topic=topic, timeout=60)
    ctx = RequestContext(user_id="load")
    errors: collections.Counter[str] = collections.Counter()
    samples: dict[str, str] = {}
    made: list[Any] = []
    done = 0
    pending: set[cf.Future[Any]] = set()
    step = 0

    def submit() -> None:
        # A third each: creates, saves of an instance nobody else has in flight, list reads.
        nonlocal step
        step += 1
        future: cf.Future[Any]
        if step % 3 == 0 or not made:
            inst = objects.Instance(
                ctx, uuid=str(uuid.uuid4()), host=marker, state="building", vcpus=1, memory_mb=64
            )
            future = inst.create_async()
            future.add_done_callback(_keep_if_created(made, inst))
        elif step % 3 == 1:
            inst = made.pop(0)
            inst.task_state = f"step-{step}"
            future = inst.save_async()
            future.add_done_callback(_give_back(made, inst))
        else:
            future = objects.InstanceList.get_all_async(ctx, filters={"host": marker}, limit=20)
        pending.add(future)

    def count(f: Any) -> None:
        nonlocal done
        exc = f.exception()
        if exc is None:
            done += 1
        else:
            errors[type(exc).__name__] += 1
            samples.setdefault(type(exc).__name__, repr(exc)[:300])

    start = time.monotonic()
    warm_rss = 0
    while time.monotonic() - start < float(seconds):
        while len(pending) < int(in_flight):
            submit()
        finished, _ = cf.wait(pending, timeout=5, return_when=cf.FIRST_COMPLETED)
        for f in finished:
            pending.discard(f)
            count(f)
        if not warm_rss and time.monotonic() - start > float(seconds) / 4:
            warm_rss = rss_kib_self()
    for f in cf.as_completed(pending, timeout=60):
        count(f)
    print(
        json.dumps(
            {
                "ops": done,
                "errors": dict(errors),
                "samples": samples,
                "rss_warm": warm_rss,
                "rss_end": rss_kib_self(),
            }
        ),
        flush=True,
    )
    client.close()
    return 0


def _keep_if_created(made: list[Any], inst: Any) -> Any:
    def done(future: cf.Future[Any]) -> None:
        if future.exception() is None:
            made.append(inst)

    return done


def _give_back(made: list[Any], inst: Any) -> Any:
    def done(future: cf.Future[Any]) -> None:
        made.append(inst)  # free for the next save, whatever this one's outcome

    return done


def rss_kib_self() -> int:
    import os

    return rss_kib(os.getpid())


if __name__ == "__main__":
    sys.exit(main())
