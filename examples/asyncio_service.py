"""An asyncio service reading and saving Instances through the conductor.

    python examples/asyncio_service.py                       # embedded: no servers needed
    python examples/asyncio_service.py --transport-url amqp://guest:guest@127.0.0.1:5672// \\
        --topic conductor                                    # against `conductor serve`

Every ``_async`` call returns something awaitable: ``await Instance.get_async(ctx, id)``
gives the loaded object, ``await inst.save_async()`` saves it (the object is updated when
the await returns), and a remote error is raised at the ``await``, typed. Awaiting never
blocks the event loop, so hundreds of calls can be gathered while the loop keeps serving.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

import conductor
import objects
from objects import exception
from objects.context import RequestContext


async def place(ctx: RequestContext, count: int, host: str) -> None:
    """Create ``count`` instances, load them all at once, move them to ``host``."""
    created = [
        objects.Instance(ctx, uuid=str(uuid.uuid4()), state="building", vcpus=1, memory_mb=512)
        for _ in range(count)
    ]
    await asyncio.gather(*(inst.create_async() for inst in created))

    started = time.perf_counter()
    loaded = await asyncio.gather(*(objects.Instance.get_async(ctx, i.id) for i in created))
    took = time.perf_counter() - started
    print(f"loaded {len(loaded)} instances concurrently in {took * 1000:.0f} ms")

    for inst in loaded:
        inst.host = host
        inst.state = "active"
    await asyncio.gather(*(inst.save_async() for inst in loaded))
    on_host = await objects.InstanceList.get_by_host_async(ctx, host)
    print(f"{len(on_host)} instances active on {host}")


async def stale_save(ctx: RequestContext) -> None:
    """Two copies of one instance: the second save is refused, typed, at its await."""
    inst = objects.Instance(ctx, uuid=str(uuid.uuid4()), vcpus=2, memory_mb=1024)
    await inst.create_async()
    mine, theirs = await asyncio.gather(
        objects.Instance.get_async(ctx, inst.id), objects.Instance.get_async(ctx, inst.id)
    )
    theirs.task_state = "migrating"
    await theirs.save_async()
    mine.task_state = "rebooting"
    try:
        await mine.save_async()
    except exception.ConcurrentUpdate:
        await mine.refresh_async()
        print(f"stale save refused; the row says task_state={mine.task_state!r}")


async def main(ctx: RequestContext, count: int) -> None:
    await place(ctx, count, host=f"node-{uuid.uuid4().hex[:6]}")
    await stale_save(ctx)
    try:
        await objects.Instance.get_async(ctx, 10**9)
    except exception.NotFound as exc:
        print(f"typed error at the await: NotFound: {exc}")


@contextlib.contextmanager
def embedded() -> Iterator[str]:
    """An in-process conductor on memory:// and a SQLite file (what `conductor demo` uses)."""
    with tempfile.TemporaryDirectory() as folder:
        url = f"memory://asyncio-example-{uuid.uuid4().hex[:8]}"
        with conductor.Conductor(url, f"sqlite:///{folder}/example.sqlite", topic="conductor"):
            yield url


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport-url", help="a running conductor's broker (default: embedded)")
    parser.add_argument("--topic", default="conductor")
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args(argv)
    objects.register_all()
    ctx = RequestContext(user_id="example", project_id="example")
    with contextlib.ExitStack() as stack:
        url = args.transport_url or stack.enter_context(embedded())
        client = conductor.connect(url, topic=args.topic, timeout=30)
        stack.callback(client.close)
        asyncio.run(main(ctx, args.count))
    print("asyncio example: OK")
    return 0


if __name__ == "__main__":
    sys.exit(run())
