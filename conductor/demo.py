"""``conductor demo``: the embedded default end to end, no servers needed.

An in-process conductor on ``memory://`` and a SQLite file in a temporary directory; a
compute workload creates instances, then reads and saves them with ``get_async`` /
``save_async`` / ``wait`` with many operations in flight.
"""

from __future__ import annotations

import collections
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

import objects
from conductor.api import connect
from conductor.service import Conductor
from objects import exception
from objects.context import RequestContext


class _Progress:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.ops = 0
        self.errors = 0
        self.started = time.perf_counter()
        self._last_print = 0.0

    def phase(self, name: str, done: int, total: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_print < 0.5:
            return
        self._last_print = now
        self.out.write(f"  {name:<28} {done:>6}/{total:<6}\n")
        self.out.flush()


def _pipelined(
    items: Iterable[Any],
    start: Callable[[Any], Any],
    in_flight: int,
    progress: _Progress,
    name: str,
    total: int,
) -> list[Any]:
    """Start one operation per item, keeping at most ``in_flight`` unfinished."""
    window: collections.deque[Any] = collections.deque()
    results: list[Any] = []
    done = 0

    def finish_oldest() -> None:
        nonlocal done
        pending = window.popleft()
        try:
            results.append(pending.wait())
        except exception.ObjectsError as exc:
            progress.errors += 1
            print(f"  error: {exc}", file=progress.out)
        progress.ops += 1
        done += 1
        progress.phase(name, done, total)

    for item in items:
        window.append(start(item))
        if len(window) >= in_flight:
            finish_oldest()
    while window:
        finish_oldest()
    progress.phase(name, done, total, force=True)
    return results


def run(instances: int = 500, in_flight: int = 100, out: TextIO = sys.stdout) -> int:
    """Run the demo; returns the process exit code."""
    objects.register_all()
    progress = _Progress(out)
    with tempfile.TemporaryDirectory(prefix="conductor-demo-") as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'demo.sqlite'}"
        transport_url = f"memory://demo-{uuid.uuid4().hex[:8]}"
        out.write(f"demo: conductor on {transport_url}, database {database_url}\n")
        service = Conductor(transport_url, database_url, topic="conductor", workers=4)
        service.start()
        client = connect(transport_url, topic="conductor", timeout=30.0)
        try:
            ctx = RequestContext(user_id="demo", project_id="demo")
            flavors = []
            for i, (name, vcpus, mem) in enumerate(
                [("m1.small", 1, 2048), ("m1.medium", 2, 4096), ("m1.large", 4, 8192)]
            ):
                flavor = objects.Flavor(
                    ctx, flavorid=str(i + 1), name=name, vcpus=vcpus, memory_mb=mem, root_gb=20
                )
                flavor.create()
                flavors.append(flavor)
                progress.ops += 1

            def create(i: int) -> Any:
                flavor = flavors[i % len(flavors)]
                inst = objects.Instance(
                    ctx,
                    uuid=str(uuid.uuid4()),
                    host=f"node-{i % 10}",
                    state="building",
                    vcpus=flavor.vcpus,
                    memory_mb=flavor.memory_mb,
                    flavor=flavor,
                    tags=["demo"],
                    metadata={"n": str(i)},
                )
                inst.create_async()
                return inst

            created = _pipelined(
                range(instances), create, in_flight, progress, "create_async", instances
            )
            ids = [inst.id for inst in created]

            loaded = _pipelined(
                ids,
                lambda i: objects.Instance.get_async(ctx, i),
                in_flight,
                progress,
                "get_async",
                len(ids),
            )

            def modify_and_save(inst: Any) -> Any:
                inst.state = "active"
                inst.host = "node-7"
                inst.save_async()
                return inst

            _pipelined(loaded, modify_and_save, in_flight, progress, "save_async", len(loaded))

            on_node7 = objects.InstanceList.get_by_host(ctx, "node-7")
            progress.ops += 1
            active = sum(1 for inst in on_node7 if inst.state == "active")

            # A stale copy must not overwrite a newer save.
            first = objects.Instance.get(ctx, ids[0])
            second = objects.Instance.get(ctx, ids[0])
            first.task_state = "rebooting"
            first.save()
            second.task_state = "migrating"
            stale_refused = False
            try:
                second.save()
            except exception.ConcurrentUpdate:
                stale_refused = True
            progress.ops += 4
        finally:
            client.close()
            service.stop()

    elapsed = time.perf_counter() - progress.started
    ok = progress.errors == 0 and active == instances and stale_refused
    out.write(
        f"  {len(on_node7)} instances on node-7 ({active} active); "
        f"stale save refused: {'yes' if stale_refused else 'NO'}\n"
    )
    out.write(
        f"demo: {progress.ops} operations in {elapsed:.2f}s "
        f"({progress.ops / elapsed:,.0f} ops/s), {progress.errors} errors"
        f" -- {'OK' if ok else 'FAILED'}\n"
    )
    return 0 if ok else 1
