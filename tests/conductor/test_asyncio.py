"""asyncio services: every ``_async`` future and every pending object is awaitable, and
awaiting never blocks the event loop. Embedded default and RabbitMQ + PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

import objects
from objects import exception
from objects.context import RequestContext
from tests.brokers import delete_queues
from tests.conductor.processes import REPO, child_env, serve, unique_topic
from tests.loop_turns import turns_during


def new_instance(ctx: RequestContext, **overrides: Any) -> Any:
    values: dict[str, Any] = dict(
        uuid=str(uuid.uuid4()), host="node-1", state="building", vcpus=2, memory_mb=2048
    )
    values.update(overrides)
    return objects.Instance(ctx, **values)


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext(user_id="u1", project_id="p1")


def test_await_every_kind_of_async_call(stack: str, ctx: RequestContext) -> None:
    async def main() -> None:
        inst = new_instance(ctx, host="aio-every")
        assert await inst.create_async() is None
        assert inst.id is not None and not inst.obj_what_changed()

        loaded = await objects.Instance.get_async(ctx, inst.id)
        assert isinstance(loaded, objects.Instance) and loaded.host == "aio-every"

        by_uuid = await objects.Instance.get_by_uuid_async(ctx, inst.uuid)
        assert by_uuid.id == inst.id

        loaded.host = "aio-saved"
        assert await loaded.save_async() is None
        assert not loaded.obj_what_changed()
        assert loaded.updated_at is not None

        await inst.refresh_async()
        assert inst.host == "aio-saved"

        listed = await objects.InstanceList.get_all_async(ctx, filters={"host": "aio-saved"})
        assert [i.id for i in listed] == [inst.id]

        await inst.destroy_async()
        with pytest.raises(exception.NotFound):
            await objects.Instance.get_async(ctx, inst.id)

    asyncio.run(main())


def test_remote_errors_are_raised_typed_at_the_await(stack: str, ctx: RequestContext) -> None:
    async def main() -> None:
        with pytest.raises(exception.NotFound):
            await objects.Instance.get_async(ctx, 10**9)
        with pytest.raises(exception.NotFound):
            await objects.Instance.get_by_uuid_async(ctx, str(uuid.uuid4()))

        inst = new_instance(ctx)
        await inst.create_async()
        stale = await objects.Instance.get_async(ctx, inst.id)
        inst.host = "first"
        await inst.save_async()
        stale.host = "second"
        with pytest.raises(exception.ConcurrentUpdate):
            await stale.save_async()
        assert (await objects.Instance.get_async(ctx, inst.id)).host == "first"

    asyncio.run(main())


def test_gather_of_hundreds_keeps_the_loop_responsive(stack: str, ctx: RequestContext) -> None:
    created = [new_instance(ctx, host="aio-gather") for _ in range(200)]
    objects.wait_all([inst.create_async() for inst in created])
    uuids = {inst.id: inst.uuid for inst in created}

    async def main(ids: list[int]) -> tuple[list[Any], list[float], list[float], float, float]:
        lags: list[float] = []
        ticked: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            # How late the loop runs a task that asked to wake every millisecond.
            while not stop.is_set():
                started = time.perf_counter()
                await asyncio.sleep(0.001)
                ticked.append(time.perf_counter())
                lags.append(ticked[-1] - started - 0.001)

        # Sending the requests is CPU work on the calling thread, and so is the first step
        # of each of gather's tasks; the wait that follows is what must not block the loop.
        # NOTE: by uuid: a get by id is answered before get_async returns when the
        # conductor is in this process (embedded), and would never be in flight.
        pending = [objects.Instance.get_by_uuid_async(ctx, uuids[i]) for i in ids]
        gathering = asyncio.gather(*pending)
        await asyncio.sleep(0)  # each of gather's tasks now waits for its reply
        tick = asyncio.create_task(ticker())
        waited = time.perf_counter()
        loaded = await gathering
        gathered = time.perf_counter()
        stop.set()
        await tick
        return loaded, lags, ticked, gathered, gathered - waited

    # NOTE: the in-process conductor may answer most gets while the loop is still sending
    # them, and the loop's own work on the replies (a step of each of gather's tasks) can
    # then fill the rest of the wait; a blocked loop never ticks while gets are in flight,
    # a busy one does in some of a few tries, with more gets each time.
    all_lags: list[float] = []
    ran_in_flight = False
    for rounds in (5, 5, 10, 10, 20, 20, 40):
        ids = [inst.id for inst in created] * rounds  # 1,000 to 8,000 gets in flight
        loaded, lags, ticked, gathered, wait = asyncio.run(main(ids))
        assert [inst.id for inst in loaded] == ids
        assert all(inst.host == "aio-gather" for inst in loaded)
        all_lags += lags
        if ticked[0] < gathered:
            ran_in_flight = True
            break
    median = sorted(all_lags)[len(all_lags) // 2]
    print(
        f"a wait of {wait * 1000:.1f} ms; loop lag over {len(all_lags)} ticks: "
        f"max {max(all_lags) * 1000:.1f} ms, median {median * 1000:.2f} ms"
    )
    # A loop blocked in a wait for the replies could run nothing else until all were in.
    assert ran_in_flight, "the loop never ran while the gets were in flight"
    # The bound: replies are decoded on other threads of this process, which share the
    # GIL, and CI shares 2 cores with the broker and the database; quiet, the worst lag
    # is a few tens of milliseconds and the median about one.
    assert median < 0.05 and max(all_lags) < 1.0, f"event loop stalled: median {median:.3f} s"


def test_awaiting_gets_one_after_the_other_lets_other_tasks_run(
    stack: str, ctx: RequestContext
) -> None:
    """Every await gives the loop back once, even for a get answered before get_async
    returned (embedded: the conductor in this process answers on the caller's thread),
    so a task awaiting gets in a loop cannot starve the others."""
    created = [new_instance(ctx, host="aio-loop") for _ in range(50)]
    objects.wait_all([inst.create_async() for inst in created])

    async def gets_one_after_the_other() -> int:
        gets = 0
        for _ in range(4):
            for inst in created:
                assert (await objects.Instance.get_async(ctx, inst.id)).id == inst.id
                gets += 1
        return gets

    gets, ticks = turns_during(gets_one_after_the_other)
    # The ticker runs about once per get: each await let it in
    assert ticks >= gets // 2, f"{ticks} ticks during {gets} awaited gets"


def test_reading_a_pending_field_inside_the_loop_says_to_await(
    stack: str, ctx: RequestContext
) -> None:
    inst = new_instance(ctx)
    inst.create()

    async def main() -> None:
        pending = objects.Instance.get_async(ctx, inst.id)
        state = pending._obj_pending  # None once loaded: the reply may already be in
        if state is not None and not state.load.done():
            with pytest.raises(exception.WouldBlockEventLoop, match="await"):
                _ = pending.host
            with pytest.raises(RuntimeError):  # it is also a RuntimeError
                pending.wait()
        loaded = await pending
        assert loaded.host == "node-1"

    asyncio.run(main())


def test_cancelling_the_awaiting_task_stops_the_wait_only(
    stack: str, ctx: RequestContext, caplog: pytest.LogCaptureFixture
) -> None:
    inst = new_instance(ctx)
    inst.create()
    inst.host = "saved-despite-cancel"

    async def main() -> None:
        future = inst.save_async()
        task = asyncio.ensure_future(_await(future))
        await asyncio.sleep(0)
        if task.cancel():
            with pytest.raises(asyncio.CancelledError):
                await task
        else:  # the reply came first (the embedded conductor is quick)
            await task
        # The request was sent: it still runs, and the object tells the truth.
        await asyncio.wrap_future(future)
        assert not inst.obj_what_changed()

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert objects.Instance.get(ctx, inst.id).host == "saved-despite-cancel"
    assert "InvalidStateError" not in caplog.text and "Traceback" not in caplog.text


def test_future_cancel_stops_the_wait_and_the_object_tells_the_truth(
    stack: str, ctx: RequestContext, caplog: pytest.LogCaptureFixture
) -> None:
    inst = new_instance(ctx)
    inst.create()
    inst.host = "cancelled-but-sent"

    async def main() -> None:
        future = inst.save_async()
        cancelled = future.cancel()
        if cancelled:
            with pytest.raises(asyncio.CancelledError):
                await future
        else:  # the reply won the race
            await future

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
        # The request had left: the conductor still runs it. Once its reply is in, the
        # object shows the saved state, and wait() does not report the caller's own cancel.
        deadline = time.monotonic() + 10
        while inst.obj_what_changed() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not inst.obj_what_changed()
        inst.wait(5)
    assert objects.Instance.get(ctx, inst.id).host == "cancelled-but-sent"
    assert "InvalidStateError" not in caplog.text and "Traceback" not in caplog.text


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _run_example(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "examples/asyncio_service.py", "--count", "50", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
        cwd=REPO,
    )


def test_the_asyncio_example_runs_on_the_embedded_default() -> None:
    out = _run_example()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "50 instances active" in out.stdout
    assert "stale save refused" in out.stdout and "NotFound" in out.stdout
    assert out.stdout.strip().endswith("asyncio example: OK")


@pytest.mark.rabbit
@pytest.mark.slow
def test_the_asyncio_example_runs_against_a_real_conductor_serve(
    broker_url: str, shared_database_url: str
) -> None:
    topic = unique_topic("aio-example")
    try:
        with serve(broker_url, shared_database_url, topic, server="aio"):
            out = _run_example("--transport-url", broker_url, "--topic", topic)
    finally:
        delete_queues(broker_url, [topic, f"{topic}.aio"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "50 instances active" in out.stdout and "asyncio example: OK" in out.stdout
