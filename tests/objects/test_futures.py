"""Async twins, pending objects, obj.wait() and objects.wait_all()."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import weakref
from typing import Any

import pytest

import objects
from objects import base, exception
from objects.context import RequestContext
from objects.futures import ObjectFuture
from tests.objects.counters import GatedAPI, make_counter


@pytest.fixture
def counter_cls(registry: Any) -> Any:
    return make_counter(registry)


@pytest.fixture
def gated() -> Any:
    api = GatedAPI()
    base.set_indirection_api(api)
    try:
        yield api
    finally:
        api.release()
        base.set_indirection_api(None)
        api.close()


def test_every_remotable_method_has_an_async_twin(counter_cls: Any) -> None:
    for name in ("get", "get_by_value", "total", "bump", "renumber", "fail"):
        assert callable(getattr(counter_cls, f"{name}_async"))
    assert not hasattr(counter_cls, "not_remotable_async")
    assert objects.Instance.save_async.async_of == "save"


def test_class_twin_returns_a_future_of_the_result(counter_cls: Any, ctx: Any) -> None:
    future = counter_cls.total_async(ctx, [counter_cls.get(ctx, 1)])
    assert isinstance(future, concurrent.futures.Future)
    assert isinstance(future, ObjectFuture)
    assert future.wait(5) == 10
    assert future.result() == 10


def test_get_async_returns_a_pending_instance_that_loads(counter_cls: Any, ctx: Any) -> None:
    counter = counter_cls.get_async(ctx, 2)
    assert type(counter) is counter_cls
    assert counter.value == 20  # reading waits for the load
    assert counter.wait() is counter
    assert counter.obj_what_changed() == set()
    assert counter.obj_revision == 1
    assert counter._context is ctx


def test_pending_can_be_opted_in_for_other_classmethods(counter_cls: Any, ctx: Any) -> None:
    counter = counter_cls.get_by_value_async(ctx, 70)
    assert type(counter) is counter_cls
    assert counter.wait(5).id == 7


def test_pending_object_is_really_pending_until_the_reply(counter_cls: Any, gated: Any) -> None:
    ctx = RequestContext()
    counter = counter_cls.get_async(ctx, 3)
    assert "pending" in repr(counter)
    with pytest.raises(TimeoutError):
        counter.wait(timeout=0.05)
    threading.Timer(0.05, gated.release).start()
    assert counter.value == 30


def test_wait_on_a_lone_load_times_out_then_raises_its_cancellation(
    counter_cls: Any, gated: Any
) -> None:
    # Given a pending object with nothing in flight but its load
    counter = counter_cls.get_async(RequestContext(), 3)
    # When the wait times out, then the load is cancelled
    with pytest.raises(TimeoutError, match="still pending after 0.01s"):
        counter.wait(timeout=0.01)
    counter._obj_pending.load.cancel()
    # Then every wait raises the cancellation
    with pytest.raises(concurrent.futures.CancelledError):
        counter.wait(5)
    with pytest.raises(concurrent.futures.CancelledError):
        counter.wait(0)


def test_setting_a_field_of_a_pending_object_waits_for_the_load(
    counter_cls: Any, gated: Any
) -> None:
    counter = counter_cls.get_async(RequestContext(), 3)
    threading.Timer(0.05, gated.release).start()
    counter.note = "mine"
    assert counter.value == 30  # the assignment waited for the load, then applied
    assert counter.note == "mine"
    assert counter.obj_what_changed() == {"note"}


def test_failed_load_raises_on_read_and_on_every_wait(counter_cls: Any, ctx: Any) -> None:
    counter = counter_cls.get_async(ctx, -1)
    with pytest.raises(exception.NotFound) as first:
        counter.wait(5)
    with pytest.raises(exception.NotFound) as second:
        counter.wait(5)
    assert first.value is second.value
    with pytest.raises(exception.NotFound):
        counter.value  # noqa: B018


def test_a_load_that_returns_no_object_fails_the_pending_object(counter_cls: Any, ctx: Any) -> None:
    odd = counter_cls._obj_new_pending(ctx, counter_cls.get_not_an_object_async(ctx))
    with pytest.raises(exception.ObjectActionError, match="expected a Counter"):
        odd.wait(5)


def test_instance_twin_updates_the_object_before_its_future_resolves(
    counter_cls: Any, ctx: Any
) -> None:
    counter = counter_cls.get(ctx, 1)
    seen: list[Any] = []
    future = counter.bump_async(3)
    future.add_done_callback(lambda f: seen.append(counter.value))
    assert future.wait(5) == 13
    assert counter.value == 13
    assert seen == [13]
    assert counter.wait() is counter


def test_object_wait_raises_the_first_failure_twice(counter_cls: Any, ctx: Any) -> None:
    counter = counter_cls.get(ctx, 1)
    failed = counter.fail_async()
    with pytest.raises(exception.ConcurrentUpdate) as first:
        counter.wait(5)
    with pytest.raises(exception.ConcurrentUpdate) as second:
        counter.wait(5)
    assert first.value is second.value
    assert isinstance(failed.exception(), exception.ConcurrentUpdate)
    # a reported failure is dropped when the next operation starts
    counter.bump_async().wait(5)
    assert counter.wait(5) is counter


def test_callback_failure_becomes_the_futures_exception(counter_cls: Any) -> None:
    from tests.objects.test_remotable import _ScriptedAPI

    base.set_indirection_api(_ScriptedAPI({"value": "garbage"}))
    counter = counter_cls(RequestContext(), id=1, value=1)
    future = counter.bump_async()
    assert isinstance(future.exception(5), exception.ObjectValueError)
    with pytest.raises(exception.ObjectValueError):
        counter.wait(5)


def test_operations_on_one_object_run_in_order(counter_cls: Any, ctx: Any) -> None:
    counter = counter_cls.get(ctx, 1)
    futures = [counter.bump_async(1) for _ in range(5)]
    assert [f.wait(5) for f in futures] == [11, 12, 13, 14, 15]
    assert counter.value == 15


def test_wait_all_waits_for_objects_and_futures(counter_cls: Any, ctx: Any) -> None:
    pending = [counter_cls.get_async(ctx, i) for i in range(1, 4)]
    future = counter_cls.total_async(ctx, [counter_cls.get(ctx, 1)])
    results = objects.wait_all([*pending, future], timeout=5)
    assert results[:3] == pending
    assert results[3] == 10
    assert [c.value for c in pending] == [10, 20, 30]


def test_wait_all_raises_the_first_failure_after_waiting_for_all(
    counter_cls: Any, gated: Any
) -> None:
    ctx = RequestContext()
    good = counter_cls.get_async(ctx, 1)
    bad = counter_cls.get_async(ctx, -1)
    later = counter_cls.get_async(ctx, 2)
    loads = [good._obj_pending.load, later._obj_pending.load]
    threading.Timer(0.05, gated.release).start()
    with pytest.raises(exception.NotFound):
        objects.wait_all([good, bad, later], timeout=5)
    # nothing was left running
    assert all(load.done() for load in loads)
    assert later.value == 20


def test_wait_all_times_out(counter_cls: Any, gated: Any) -> None:
    counter = counter_cls.get_async(RequestContext(), 1)
    with pytest.raises(TimeoutError):
        objects.wait_all([counter], timeout=0.05)
    with pytest.raises(TypeError):
        objects.wait_all([object()])


def test_as_completed_works_on_twin_futures(counter_cls: Any, ctx: Any) -> None:
    counters = [counter_cls.get(ctx, i) for i in range(1, 4)]
    futures = [c.bump_async(100) for c in counters]
    done = list(concurrent.futures.as_completed(futures, timeout=5))
    assert sorted(f.result() for f in done) == [110, 120, 130]


def test_asyncio_can_await_twin_futures(counter_cls: Any, ctx: Any) -> None:
    async def main() -> list[int]:
        futures = [counter_cls.total_async(ctx, [counter_cls.get(ctx, i)]) for i in (1, 2)]
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

    assert asyncio.run(main()) == [10, 20]


def test_local_twin_runs_synchronously_and_returns_a_done_future(counter_cls: Any) -> None:
    ctx = RequestContext()
    counter = counter_cls.get_by_value_async(ctx, 10)
    assert counter.__dict__["value"] == 10  # loaded before the twin returned
    failed = counter_cls(ctx, id=1).fail_async()
    assert failed.done()
    assert isinstance(failed.exception(), exception.ConcurrentUpdate)


def test_finished_pending_objects_and_futures_are_freed_without_the_garbage_collector(
    counter_cls: Any, ctx: Any
) -> None:
    # A reference cycle through the object's futures would keep every pending object
    # alive until a cyclic collection: costly at thousands of calls per second.
    gc.collect()
    gc.disable()
    try:
        counter = counter_cls.get_async(ctx, 2).wait(5)
        future = counter.bump_async(1)
        assert future.wait(5) == 21
        refs = [weakref.ref(counter), weakref.ref(future)]
        del counter, future
        assert [ref() for ref in refs] == [None, None]
    finally:
        gc.enable()


def test_a_loaded_object_lets_go_of_its_load_future(counter_cls: Any, gated: Any) -> None:
    # A caller that keeps thousands of loaded objects should not keep each one's finished
    # future (its Condition, lock and callback lists) and pending state with it.
    counter = counter_cls.get_async(RequestContext(), 2)
    load = weakref.ref(counter._obj_pending.load)
    gated.release()
    assert counter.wait(5) is counter
    gc.collect()
    assert load() is None
    assert counter.value == 20
    assert counter.wait() is counter
    # An operation after the load still finds (and records) its state.
    future = counter.bump_async(1)
    assert future.wait(5) == 21
    assert counter.wait() is counter
    assert counter.value == 21


def test_a_failed_load_keeps_its_failure_for_every_wait(counter_cls: Any, ctx: Any) -> None:
    counter = counter_cls.get_async(ctx, -1)
    with pytest.raises(exception.NotFound):
        counter.wait(5)
    with pytest.raises(exception.NotFound):
        counter.wait(5)
    with pytest.raises(exception.NotFound):
        counter.value  # noqa: B018 - reading waits for the load


def _refuse_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    def copy(self: Any, loaded: Any) -> None:
        raise AssertionError("a built object was copied into the pending one")

    monkeypatch.setattr(base.VersionedObject, "_obj_absorb", copy)


def test_a_pending_object_reads_a_primitive_in_place(
    counter_cls: Any, ctx: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the primitive a conductor replies with, changes and revision included
    sent = counter_cls.get(ctx, 2)
    sent.note = "changed there"
    primitive = sent.obj_to_primitive()
    pending = counter_cls._obj_new_pending(ctx)
    load = pending._obj_pending.load
    _refuse_copy(monkeypatch)
    # When the load's then step is handed the primitive itself
    assert counter_cls._obj_absorb_loaded.takes_primitive is True
    pending._obj_absorb_loaded(primitive)
    load.set_result(None)
    # Then the object holds its state: fields, changes, revision, and its own context
    assert (pending.id, pending.value, pending.note) == (2, 20, "changed there")
    assert pending.obj_what_changed() == {"note"}
    assert pending.obj_revision == 1
    assert pending._context is ctx
    pending.obj_reset_changes()
    assert pending.obj_what_changed() == set()


def test_a_primitive_the_pending_object_cannot_read_raises_and_leaves_it_empty(
    counter_cls: Any, ctx: Any
) -> None:
    primitive = counter_cls.get(ctx, 2).obj_to_primitive()
    pending = counter_cls._obj_new_pending(ctx)
    pending._obj_pending.load.set_result(None)
    before = dict(pending.__dict__)
    # A version from a newer major: the indirection API rebuilds (backports) it instead.
    with pytest.raises(exception.IncompatibleObjectVersion):
        pending._obj_absorb_loaded({**primitive, "versioned_object.version": "2.0"})
    with pytest.raises(exception.ObjectValueError, match="versioned_object.data"):
        pending._obj_absorb_loaded({**primitive, "versioned_object.data": [1]})
    assert pending.__dict__ == before


def test_a_primitive_of_another_class_fails_the_load_with_a_typed_error(
    counter_cls: Any, registry: Any, ctx: Any
) -> None:
    @registry.register
    class Gauge(base.VersionedObject):
        VERSION = "1.0"
        fields = {"value": objects.fields.IntegerField()}

    pending = counter_cls._obj_new_pending(ctx)
    with pytest.raises(exception.ObjectActionError, match="expected a Counter"):
        pending._obj_absorb_loaded(Gauge(ctx, value=1).obj_to_primitive())


def test_a_class_that_builds_its_objects_its_own_way_still_does_for_a_pending_load(
    registry: Any, ctx: Any
) -> None:
    @registry.register
    class Stamped(base.VersionedObject):
        VERSION = "1.0"
        fields = {"value": objects.fields.IntegerField(), "seen": objects.fields.BooleanField()}

        @classmethod
        def _obj_from_data(cls, data: Any, context: Any, changes: Any = None, revision: Any = None):  # type: ignore[no-untyped-def]
            obj = super()._obj_from_data(data, context, changes, revision)
            obj._obj_set_loaded("seen", True)
            return obj

    pending: Any = Stamped._obj_new_pending(ctx)
    load = pending._obj_pending.load
    pending._obj_absorb_loaded(Stamped(ctx, value=3).obj_to_primitive())
    load.set_result(None)
    assert (pending.value, pending.seen) == (3, True)


def test_an_object_future_has_the_state_a_concurrent_future_has() -> None:
    # ObjectFuture builds its state itself (a lighter Condition): a Python whose Future
    # sets more must fail here, not in a caller.
    ours, theirs = vars(ObjectFuture()), vars(concurrent.futures.Future())
    assert ours.keys() == theirs.keys()
    assert {k: v for k, v in ours.items() if k != "_condition"} == {
        k: v for k, v in theirs.items() if k != "_condition"
    }


def test_an_object_future_wakes_every_kind_of_waiter() -> None:
    # Given waiters of each kind concurrent.futures has: result(), wait(), as_completed()
    futures: list[ObjectFuture[Any]] = [ObjectFuture() for _ in range(3)]
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(futures[0].result(5))),
        threading.Thread(target=lambda: results.append(concurrent.futures.wait(futures[1:2], 5))),
        threading.Thread(
            target=lambda: results.extend(concurrent.futures.as_completed(futures[2:], 5))
        ),
    ]
    for thread in threads:
        thread.start()
    # When each future resolves
    futures[0].set_result(1)
    futures[1].set_exception(ValueError("no"))
    futures[2].set_result(3)
    for thread in threads:
        thread.join(5)
    # Then every waiter woke
    assert not any(thread.is_alive() for thread in threads)
    assert 1 in results and futures[2] in results and len(results) == 3


def test_resolving_an_object_future_twice_raises_instead_of_deadlocking() -> None:
    # Future.set_result formats its InvalidStateError with repr(self), which takes the
    # future's Condition again while it is held: a plain lock there would hang for ever.
    future: ObjectFuture[int] = ObjectFuture()
    future.set_result(1)
    with pytest.raises(concurrent.futures.InvalidStateError):
        future.set_result(2)
    assert future.cancel() is False and future.result() == 1


@pytest.mark.parametrize("outcome", ["pending", "result", "none", "failure", "cancelled"])
def test_an_object_future_answers_done_and_result_as_a_concurrent_future(outcome: str) -> None:
    # done() and a success's result() read the finished state without the Condition:
    # every outcome still answers what concurrent.futures.Future answers.
    ours: ObjectFuture[Any] = ObjectFuture()
    theirs: concurrent.futures.Future[Any] = concurrent.futures.Future()
    for future in (ours, theirs):
        if outcome == "result":
            future.set_result([1])
        elif outcome == "none":
            future.set_result(None)
        elif outcome == "failure":
            future.set_exception(ValueError("no"))
        elif outcome == "cancelled":
            future.cancel()
    assert ours.done() == theirs.done()

    def outcome_of(future: concurrent.futures.Future[Any]) -> Any:
        try:
            return ("value", future.result(0.01))
        except BaseException as exc:  # noqa: BLE001 - compared below
            return ("raised", type(exc), str(exc))

    assert outcome_of(ours) == outcome_of(theirs)
    if outcome == "pending":
        ours.set_result(7)
        assert ours.done() and ours.result() == 7 and ours.wait() == 7


def test_an_object_future_condition_makes_its_waiters_on_the_first_wait() -> None:
    # No thread waits yet: nothing to notify, nothing allocated; a wait works as ever.
    future: ObjectFuture[int] = ObjectFuture()
    condition: Any = future._condition
    assert not condition._waiters
    with condition:
        condition.notify_all()  # nobody to wake
        assert condition.wait(0.01) is False  # times out, leaving its deque empty
    assert len(condition._waiters) == 0
    condition._at_fork_reinit()
    assert not condition._waiters
    threading.Timer(0.05, future.set_result, (5,)).start()
    assert future.result(5) == 5


def test_a_burst_of_resolutions_from_another_thread_wakes_the_loop_once() -> None:
    # A transport resolves a batch of replies one after the other on its I/O thread; each
    # awaiting task must wake, but the loop needs waking (a write to its self-pipe) only
    # once for the burst, not once per future.
    futures: list[ObjectFuture[int]] = [ObjectFuture() for _ in range(100)]
    wakeups = 0

    async def main() -> list[int]:
        nonlocal wakeups
        loop = asyncio.get_running_loop()
        threadsafe = loop.call_soon_threadsafe

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal wakeups
            wakeups += 1
            return threadsafe(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign,assignment]
        tasks = [asyncio.ensure_future(_awaited(f)) for f in futures]
        await asyncio.sleep(0)  # every task is waiting now

        def resolve_all() -> None:
            for i, f in enumerate(futures):
                f.set_result(i)

        resolver = threading.Thread(target=resolve_all)
        resolver.start()
        results = await asyncio.gather(*tasks)
        resolver.join()
        return list(results)

    assert asyncio.run(main()) == list(range(100))
    assert 1 <= wakeups <= 10, wakeups  # one per burst (a resolver slower than the loop: a few)


async def _awaited(future: ObjectFuture[int]) -> int:
    return await future


def test_a_future_resolved_after_its_loop_closed_raises_nothing_in_the_resolver() -> None:
    future: ObjectFuture[int] = ObjectFuture()

    async def start_awaiting() -> None:
        asyncio.ensure_future(_awaited(future))
        await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(start_awaiting())
    loop.close()
    future.set_result(1)  # its done-callback finds the loop closed: nobody waits any more
    assert future.result() == 1
