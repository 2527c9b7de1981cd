"""Futures of remotable calls, pending objects, and ``wait_all``.

Every ``_async`` twin returns an :class:`ObjectFuture` (a ``concurrent.futures.Future``,
so ``concurrent.futures.as_completed`` and ``asyncio.wrap_future`` work on it) or, for
``get``-style class methods, a *pending object*: an instance whose fields are not there
yet. Reading or setting a field of a pending object waits for its load; ``obj.wait()``
waits for the load and for the object's outstanding instance-method futures.

The transport resolves its futures on its I/O thread. Our own future is resolved in a
done-callback *after* the reply has been applied to the object, so a caller that sees
the future done also sees the object updated.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, overload

from objects._primitive import _KEY_NAME
from objects.storage import StoredRecord

if TYPE_CHECKING:
    from objects.context import Context

__all__ = ["ObjectFuture", "PendingObjectMixin", "PendingState", "wait_all"]

T = TypeVar("T")

#: ``concurrent.futures``' state of a future with a result or an exception.
_FINISHED = "FINISHED"
_CANCELLED = ("CANCELLED", "CANCELLED_AND_NOTIFIED")
_DONE = (*_CANCELLED, _FINISHED)
_NOTHING_REPORTED: frozenset[int] = frozenset()
#: ``concurrent.futures``' states of a future that is not done.
_NOT_DONE = ("PENDING", "RUNNING")


class _FutureCondition(threading.Condition):
    """The Condition of an :class:`ObjectFuture`: what ``Future()`` makes, built lighter.

    Over an RLock as there (``Future.set_result`` on a finished future formats its error
    with ``repr(self)``, which takes the Condition again), with the lock's methods looked
    up when called instead of bound at construction: those five bound methods were a
    quarter of the objects the garbage collector walked over a pipelined get.
    """

    _lock: Any
    #: No thread waits yet: the deque Condition.wait appends to is made by the first wait
    #: (most futures of a pipelined get are resolved before anyone waits; one object fewer
    #: per call for the garbage collector). notify/notify_all and the transport's resolve
    #: read an empty tuple as no waiters.
    _waiters: Any = ()

    def __init__(self) -> None:  # NOTE: Condition.__init__'s work, for an RLock
        self._lock = threading.RLock()

    def wait(self, timeout: float | None = None) -> bool:
        if type(self._waiters) is tuple:  # the caller holds the lock (else wait raises)
            self._waiters = collections.deque()
        return super().wait(timeout)

    def _at_fork_reinit(self) -> None:  # Condition's clears the deque in place
        self._lock._at_fork_reinit()
        self._waiters = ()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return bool(self._lock.acquire(blocking, timeout))

    def release(self) -> None:
        self._lock.release()

    def _release_save(self) -> Any:
        return self._lock._release_save()

    def _acquire_restore(self, state: Any) -> None:
        self._lock._acquire_restore(state)

    def _is_owned(self) -> bool:
        return bool(self._lock._is_owned())


class ObjectFuture(Future[T], Generic[T]):
    """A ``concurrent.futures.Future`` with ``wait(timeout=None)`` returning the result.

    Awaitable in asyncio code (``await inst.save_async()``): the awaiting task sleeps
    until the future resolves, without blocking its event loop.
    """

    def __init__(self) -> None:
        # NOTE: Future.__init__ with a lighter Condition (see _FutureCondition);
        # tests/objects/test_futures.py checks that it sets what Future.__init__ sets.
        self._condition = _FutureCondition()
        self._state = "PENDING"
        self._result = None
        self._exception = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[Future[T]], object]] = []

    def wait(self, timeout: float | None = None) -> T:
        """Block until resolved; return the result or raise the failure.

        Raises:
            TimeoutError: not resolved within ``timeout`` seconds.
        """
        return self.result(timeout)

    # NOTE: a finished future never changes again, so done() and the result of a
    # successful one are read without taking the Condition (Future's own take it every
    # time: a pipelined caller polls done() and then waits, several times per call).
    # Anything else (pending, cancelled, failed) goes through Future's own methods.

    def done(self) -> bool:
        return self._state in _DONE

    def result(self, timeout: float | None = None) -> T:
        if self._state == _FINISHED and self._exception is None:
            return self._result  # type: ignore[return-value]
        return super().result(timeout)

    def __await__(self) -> Generator[Any, None, T]:
        yield from _until_done(self)
        if self.cancelled():  # asyncio's own cancellation, as asyncio.wrap_future gives
            import asyncio

            raise asyncio.CancelledError()
        return self.result()


def _until_done(future: Future[Any]) -> Generator[Any, None, None]:
    """Suspend the awaiting task until ``future`` is done; the loop is woken with
    ``call_soon_threadsafe`` from whatever thread resolves it.

    Cancelling the awaiting task stops this wait only: ``future`` (and the request behind
    it) is left alone.
    """
    if future.done():
        yield from _let_the_loop_run()
        return
    import asyncio

    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    wakeups = _loop_wakeups(loop)

    def wake(_: Future[Any]) -> None:
        wakeups.wake(waiter)

    # It only schedules a wake-up, so it may run on the thread that resolves the future
    # (a transport's I/O thread) instead of being handed to a callback thread.
    wake.__transport_inline__ = True  # type: ignore[attr-defined]
    future.add_done_callback(wake)
    yield from waiter.__await__()


class _LoopWakeups:
    """Wakes the tasks of one event loop that await futures resolved on other threads:
    all the wake-ups of a burst in one ``call_soon_threadsafe``.

    NOTE: ``call_soon_threadsafe`` writes to the loop's self-pipe every time: a transport
    resolving a batch of 256 replies woke the loop 256 times, a system call each and the
    loop's read of them (a pipelined get_async cost 76-83 us of client CPU awaited from
    asyncio, 43-47 waited for by a thread). The first wake-up of a burst schedules one
    drain on the loop; the ones before it runs join its list.
    """

    __slots__ = ("_loop", "_lock", "_waiters")

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._waiters: list[Any] = []

    def wake(self, waiter: Any) -> None:
        with self._lock:
            self._waiters.append(waiter)
            if len(self._waiters) > 1:
                return  # a drain is scheduled already and takes this one too
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop closed meanwhile: nobody waits any more
            with self._lock:
                self._waiters.clear()

    def _drain(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _set_waiter(waiter)


#: This thread's event loop and its :class:`_LoopWakeups` (a loop runs on one thread).
_this_thread = threading.local()


def _loop_wakeups(loop: Any) -> _LoopWakeups:
    kept: tuple[Any, _LoopWakeups] | None = getattr(_this_thread, "wakeups", None)
    if kept is None or kept[0] is not loop:
        kept = _this_thread.wakeups = (loop, _LoopWakeups(loop))
    return kept[1]


def _let_the_loop_run() -> Generator[Any, None, None]:
    """Let the event loop run its other tasks once, as ``asyncio.sleep(0)`` does.

    NOTE: an await of something already done would go on at once: a task awaiting gets
    one after the other, each answered before ``get_async`` returned (``memory://``
    answers a conductor in this process on the caller's thread), never gave the loop
    back, and other tasks waited for all of them (a loop lag of 0.3 s in bench.py)."""
    if in_event_loop():
        yield  # a bare yield: the task is run again on the loop's next turn


def _set_waiter(waiter: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)


def in_event_loop() -> bool:
    """Whether this thread is running an asyncio event loop (where blocking is a bug)."""
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and asyncio._get_running_loop() is not None


def done_future(fn: Callable[[], T]) -> ObjectFuture[T]:
    """Run ``fn`` now; a future already holding its result or its exception."""
    future: ObjectFuture[T] = ObjectFuture()
    try:
        result = fn()
    except BaseException as exc:  # noqa: BLE001 - the future carries it to the caller
        future.set_exception(exc)
    else:
        future.set_result(result)
    return future


@overload
def chain(source: Future[Any], convert: Callable[[Any], T]) -> ObjectFuture[T]: ...


@overload
def chain(
    source: Future[Any], convert: Callable[[Any], T], into: Future[T] | None
) -> Future[T]: ...


def chain(
    source: Future[Any], convert: Callable[[Any], T], into: Future[T] | None = None
) -> Future[T]:
    """A future resolved with ``convert(source.result())`` once ``source`` resolves.

    ``convert`` runs in ``source``'s done-callback (the transport's I/O thread); its
    exception, like ``source``'s, becomes the new future's exception.

    Args:
        into: the future to resolve (default: a new :class:`ObjectFuture`).
    """
    out: Future[T] = into if into is not None else ObjectFuture()

    def _done(done: Future[Any]) -> None:
        try:
            exc = done.exception()
            if exc is not None:
                out.set_exception(exc)
                return
            value = convert(done.result())
        except BaseException as err:  # noqa: BLE001 - the future carries it
            out.set_exception(err)
            return
        out.set_result(value)

    _done.__transport_inline__ = True  # type: ignore[attr-defined]  # never blocks
    source.add_done_callback(_done)
    return out


class PendingState:
    """What is in flight on one object: its load and its instance-method futures.

    A new operation drops the futures that succeeded and the failures ``wait()`` has
    already raised; an unobserved failure stays until ``wait()`` reports it.
    """

    __slots__ = ("lock", "load", "ops", "reported")

    def __init__(self, load: Future[Any] | None = None) -> None:
        self.lock = threading.Lock()
        self.load = load
        # NOTE: shared empty containers until the first op: most objects (a get_async's)
        # never have one, and a list and a set fewer per object in flight is less for
        # the garbage collector to walk (see ObjectFuture).
        self.ops: Sequence[Future[Any]] = ()
        self.reported: AbstractSet[int] = _NOTHING_REPORTED

    def add_op(self, future: Future[Any]) -> None:
        with self.lock:
            if not self.ops:
                self.ops = [future]  # the usual case: nothing older to forget
                return
            reported = self.reported
            ops = [f for f in self.ops if not _forgettable(f, reported)]
            if reported:
                self.reported = {id(f) for f in ops if id(f) in reported}
            ops.append(future)
            self.ops = ops

    def futures(self) -> list[Future[Any]]:
        with self.lock:
            found = list(self.ops)
        if self.load is not None:
            found.insert(0, self.load)
        return found

    def in_flight(self) -> list[Future[Any]]:
        with self.lock:
            # _state read without each future's Condition (see _forgettable)
            return [f for f in self.ops if f._state not in _DONE]

    def wait_load(self, timeout: float | None = None, objname: str = "The object") -> None:
        """Wait for the load; raise its failure.

        Raises:
            WouldBlockEventLoop: the load is in flight and this thread runs an event loop.
        """
        load = self.load
        if load is not None:
            if not load.done() and in_event_loop():
                _refuse_to_block(objname)
            load.result(timeout)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the load and every op; raise the first failure (load first)."""
        load = self.load
        if load is not None and not self.ops:
            # NOTE: the usual case (a get_async's load, nothing else). A finished future
            # never changes again, so its outcome is read without its Condition: the
            # general path below takes it four times (exception, done, cancelled,
            # exception again): measured 3.5 against 0.3 us of CPU per finished load.
            if load._state != _FINISHED:
                if timeout != 0 and in_event_loop():
                    _refuse_to_block("The object")
                with contextlib.suppress(TimeoutError, concurrent.futures.CancelledError):
                    load.exception(timeout)
            if load._state == _FINISHED:
                exc = load._exception
                if exc is not None:
                    raise exc
                return
            if load.cancelled():
                raise concurrent.futures.CancelledError()
            raise TimeoutError(f"1 operation(s) on the object still pending after {timeout}s")
        pending = self.futures()
        if not pending:
            return
        if timeout != 0 and in_event_loop() and not all(f.done() for f in pending):
            _refuse_to_block("The object")
        if len(pending) == 1:
            # NOTE: the usual case (a get_async's load). Waiting on the future itself
            # costs half of concurrent.futures.wait, which builds a waiter and an Event
            # and hooks them into every future (measured: 29 against 60 us of CPU per
            # blocked wait). A cancellation is raised below, like a failure.
            with contextlib.suppress(TimeoutError, concurrent.futures.CancelledError):
                pending[0].exception(timeout)
            not_done = {f for f in pending if not f.done()}
        else:
            _, not_done = concurrent.futures.wait(pending, timeout)
        if not_done:
            raise TimeoutError(
                f"{len(not_done)} operation(s) on the object still pending after {timeout}s"
            )
        for future in pending:
            if future.cancelled() and future is not self.load:
                # The caller's own cancel stopped its wait for that call, nothing more:
                # not a failure of the object (the request may still have run; its reply,
                # when it comes, is applied all the same).
                continue
            exc = future.exception()
            if exc is not None:
                if future is not self.load:
                    with self.lock:
                        self.reported = {*self.reported, id(future)}
                raise exc


def _refuse_to_block(objname: str) -> None:
    from objects.exception import WouldBlockEventLoop

    raise WouldBlockEventLoop(objname=objname)


def _forgettable(future: Future[Any], reported: AbstractSet[int]) -> bool:
    # NOTE: read without the future's Condition: a finished or cancelled future never
    # changes again, and a pending one read a moment too early is only kept once more
    # (done(), cancelled() and exception() took that lock three times per old future).
    state = future._state
    if state == _FINISHED:
        return future._exception is None or id(future) in reported
    return state in _CANCELLED


P = TypeVar("P", bound="PendingObjectMixin")


class PendingObjectMixin:
    """The pending-object half of ``VersionedObject``: loads and calls still in flight.

    State lives in ``_obj_pending`` (``None`` on an object with nothing in flight, so
    the hot paths pay one attribute read).
    """

    _obj_pending: PendingState | None = None
    _context: Context | None = None
    obj_revision: int | None = None
    if TYPE_CHECKING:
        fields: ClassVar[dict[str, Any]]
        _changed_fields: set[str]
        _obj_snapshots: dict[str, Any]

        @classmethod
        def obj_name(cls) -> str: ...

        def _obj_load_primitive(self, primitive: dict[str, Any]) -> None: ...

    @classmethod
    def _obj_new_pending(cls: type[P], context: Context, source: Future[Any] | None = None) -> P:
        """A new instance, empty until its load future resolves.

        With ``source`` (a future of the loaded object), a done-callback absorbs it and
        then resolves the load future. Without, the caller resolves the load future
        itself, through ``_obj_absorb_loaded`` as the call's ``then`` step: one future for
        the whole call (what an indirection API that ``resolves_given_futures`` does).
        """
        obj = cls.__new__(cls)
        d = obj.__dict__
        d["_context"] = context
        d["_changed_fields"] = set()
        d["_obj_snapshots"] = {}
        # NOTE: the load future resolves with None, not with the object: a result pointing
        # back at the object would make object -> state -> load -> object a reference cycle,
        # and every pending object would then live until the cyclic garbage collector ran
        # (measured: the collector's passes cost more than the rest of a get_async).
        load: ObjectFuture[None] = ObjectFuture()
        d["_obj_pending"] = PendingState(load)
        if source is None:
            return obj

        def absorb(done: Future[Any]) -> None:
            try:
                exc = done.exception()
                if exc is None:
                    obj._obj_absorb_loaded(done.result())
            except BaseException as err:  # noqa: BLE001 - the load future carries it
                exc = err
            if exc is None:
                load.set_result(None)
            else:
                load.set_exception(exc)

        absorb.__transport_inline__ = True  # type: ignore[attr-defined]  # never blocks
        source.add_done_callback(absorb)
        return obj

    def _obj_absorb_loaded(self, loaded: Any) -> None:
        """Take the fields of ``loaded`` (the call's result); returns None (see above).

        ``loaded`` is the loaded object, its primitive as it came over the wire (see
        ``takes_primitive`` below), read straight into this object with no copy in
        between, or its record (``takes_record``), loaded as ``_from_record`` loads it.
        """
        kind = type(loaded)
        if kind is dict and _KEY_NAME in loaded:
            self._obj_load_primitive(loaded)
        elif kind is StoredRecord and loaded.cls is type(self):
            # Built for this object alone, then published with one dict update (a reader
            # on another thread never sees half of it), its state taken without a copy.
            self.__dict__.update(loaded.build(self._context).__dict__)
        else:
            if kind is StoredRecord:
                loaded = loaded.build(self._context)
            objname = self.obj_name()
            if not isinstance(loaded, PendingObjectMixin) or loaded.obj_name() != objname:
                from objects.exception import ObjectActionError

                raise ObjectActionError(
                    action="load", reason=f"expected a {objname} object, got {loaded!r}"
                )
            self._obj_absorb(loaded)
        # NOTE: loaded, with nothing else in flight (no operation can start before its
        # load is done): the object lets go of its pending state, so a caller keeping
        # thousands of loaded objects does not keep each one's finished future, Condition
        # and locks, and the garbage collector has that much less to walk. Whoever is
        # waiting holds the state itself; the next operation makes a new one.
        d = self.__dict__
        state = d.get("_obj_pending")
        if state is not None and not state.ops and state.load is not None:
            # NOTE: the load's state read as done() reads it, without taking its lock
            # (it may change right after either way: a cancel, or the resolve to come).
            if state.load._state in _NOT_DONE:
                del d["_obj_pending"]

    #: An indirection API may hand this ``then`` step the reply's primitive instead of the
    #: object rebuilt from it (``IndirectionAPI``): the object is then built only once.
    _obj_absorb_loaded.takes_primitive = True  # type: ignore[attr-defined]
    #: ...or a record of its table (``objects.storage.StoredRecord``), which it loads as
    #: ``_from_record`` does: a stock get answered in the conductor's own process.
    _obj_absorb_loaded.takes_record = True  # type: ignore[attr-defined]

    def _obj_absorb(self, loaded: PendingObjectMixin) -> None:
        # Build the whole state first, then publish it with one dict update so a reader on
        # another thread never sees half of it.
        src = loaded.__dict__
        values: dict[str, Any]
        if type(loaded) is type(self) and "_obj_pending" not in src:
            # The usual case (the reply is at our own version): take everything.
            values = dict(src)
            values["_changed_fields"] = set(loaded._changed_fields)
            values["_obj_snapshots"] = dict(loaded._obj_snapshots)
        else:
            fields = self.fields
            values = {k: v for k, v in src.items() if k in fields}
            values["_changed_fields"] = set(loaded._changed_fields).intersection(fields)
            values["_obj_snapshots"] = {
                k: v for k, v in loaded._obj_snapshots.items() if k in fields
            }
            if loaded.obj_revision is not None:
                values["obj_revision"] = loaded.obj_revision
        context = self._context
        if context is not None:
            values["_context"] = context
        elif "_context" not in values:
            values["_context"] = loaded._context
        self.__dict__.update(values)

    def _obj_pending_state(self) -> PendingState:
        state = self.__dict__.get("_obj_pending")
        if state is None:
            state = PendingState()
            self.__dict__["_obj_pending"] = state
        return state

    def _obj_wait_load(self) -> None:
        state = self._obj_pending
        if state is not None and state.load is not None:
            state.wait_load(objname=self.obj_name())

    def _obj_before_op(self) -> None:
        # NOTE: a new remotable call waits for the object's load and for the calls already
        # in flight on it, so it sends the state they produced (their revision, their
        # fields) rather than racing them into a ConcurrentUpdate.
        state = self._obj_pending
        if state is None:
            return
        state.wait_load(objname=self.obj_name())
        in_flight = state.in_flight()
        if in_flight and in_event_loop():
            _refuse_to_block(self.obj_name())
        for future in in_flight:
            try:
                future.exception()
            except BaseException:  # noqa: BLE001 - cancelled; wait() reports it
                pass

    def __await__(self: P) -> Generator[Any, None, P]:
        """``await obj``: like :meth:`wait`, without blocking the event loop."""
        state = self._obj_pending
        if state is None:
            yield from _let_the_loop_run()
        else:
            for future in state.futures():
                yield from _until_done(future)
            state.wait(0)
        return self

    def wait(self: P, timeout: float | None = None) -> P:
        """Wait for everything pending on this object; returns it.

        Raises:
            TimeoutError: still pending after ``timeout`` seconds.
            Exception: the first failure (the load's, else the earliest call's); a second
                ``wait()`` raises the same one.
        """
        state = self._obj_pending
        if state is not None:
            state.wait(timeout)
        return self


def wait_all(items: Iterable[Any], timeout: float | None = None) -> list[Any]:
    """Wait for many futures and pending objects, then raise the first failure.

    Everything is waited for before a failure is raised, so no operation is still
    running when this returns or raises.

    Args:
        items: futures and versioned objects, in any mix.
        timeout: overall deadline in seconds (``None``: no limit).

    Returns:
        For each item in order: a future's result, or the object itself.

    Raises:
        TimeoutError: something was still pending after ``timeout``.
        Exception: the first failure in ``items`` order.
    """
    items = list(items)
    futures: list[Future[Any]] = []
    for item in items:
        if isinstance(item, Future):
            futures.append(item)
            continue
        if not hasattr(type(item), "_obj_pending"):
            raise TypeError(
                f"wait_all takes futures and versioned objects, got {type(item).__name__}"
            )
        state = item.__dict__.get("_obj_pending")
        if state is not None:
            futures.extend(state.futures())
    deadline = None if timeout is None else time.monotonic() + timeout
    if futures:
        _, not_done = concurrent.futures.wait(futures, timeout)
        if not_done:
            raise TimeoutError(
                f"{len(not_done)} of {len(futures)} operation(s) still pending after {timeout}s"
            )
    results: list[Any] = []
    first: BaseException | None = None
    for item in items:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            if isinstance(item, Future):
                results.append(item.result(remaining))
            else:
                results.append(item.wait(remaining))
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after all are waited for
            if first is None:
                first = exc
            results.append(None)
    if first is not None:
        raise first
    return results
