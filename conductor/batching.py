"""Many requests, one transaction, few statements: the bodies of a batch run side by side.

A batch is the requests that arrived in one message. Each request's method body runs in
its own greenlet. When a body asks the storage for a row by id, an update or an insert,
its greenlet parks the call and hands control back; once every body has parked or
finished, the parked calls go to the database together (one query by ids per table,
one ``UPDATE ... FROM unnest(...)`` and one ``INSERT ... SELECT FROM unnest(...)`` per
column set) and each body resumes with its own row or its
own error. Bodies are ordinary blocking code and never know. Plain gets by id, the
commonest request, skip the greenlets: the conductor fetches their rows up front in one
query and runs them first, one after the other. On SQLite (no round trips to save) every
body but a create or a save runs that way: those still share one INSERT or UPDATE of
many rows (``json_each`` of the rows' JSON document).

The requests of a batch were in flight together, so any order between them is one they
could have run in; each body's own statements keep their order. Two writes to one row
never share a statement: the second waits for the next round and sees the first.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import greenlet

from conductor import db
from conductor.db.storage import SQLStorage, not_found
from objects import exception
from objects.storage import Record

__all__ = ["Batch", "BatchStorage"]


#: Instance methods whose writes gain from the rounds on SQLite (see gains_from_rounds).
_ROUND_WRITES = frozenset({"create", "save"})


class _Parked:
    """One storage call waiting for its round."""

    __slots__ = ("kind", "objname", "args", "owner", "result", "error", "direct")

    def __init__(self, kind: str, objname: str, args: tuple[Any, ...], owner: greenlet.greenlet):
        self.kind = kind
        self.objname = objname
        self.args = args
        self.owner = owner
        self.result: Any = None
        self.error: BaseException | None = None
        self.direct = False  # not done in the round: the body runs the call itself


class Batch:
    """Runs the bodies of one batch in greenlets and their storage calls in rounds.

    Args:
        tx: the batch's transaction.
    """

    def __init__(self, tx: db.Transaction) -> None:
        self.tx = tx
        self._parked: list[_Parked] = []
        self._driver: greenlet.greenlet | None = None
        self._live: list[greenlet.greenlet] = []
        self._primed: dict[tuple[str, int], Record | None] = {}

    @property
    def coalesces_writes(self) -> bool:
        """Whether every body gains from the rounds on this database (PostgreSQL, where
        each statement is a round trip); on SQLite only some do (see
        :meth:`gains_from_rounds`)."""
        return SQLStorage(self.tx).has_bulk_statements

    @staticmethod
    def gains_from_rounds(call: Any) -> bool:
        """Whether a request (a ``transport.BatchCall``) gains from running side by side
        on SQLite, where running alone costs no round trips: a create or a save does, its
        statement joining the round's one INSERT or UPDATE of many rows (an Instance row
        in about 30 us instead of 70, in 11 instead of 55); a get does not."""
        return bool(
            call.method == "object_action" and call.kwargs.get("objmethod") in _ROUND_WRITES
        )

    def prime(self, objname: str, ids: Sequence[int]) -> None:
        """Fetch these rows now, in one query, for the bodies that run alone."""
        found = SQLStorage(self.tx).get_many(objname, ids)
        for id_ in ids:
            self._primed[(objname, id_)] = found.get(id_)

    def primed(self, objname: str, id: int) -> Record | None:
        """A row :meth:`prime` fetched, while bodies that run alone are running; None
        when it was not asked for.

        Raises:
            NotFound: it was asked for, and is not there.
        """
        key = (objname, id)
        if key not in self._primed:
            return None
        record = self._primed[key]
        if record is None:
            raise not_found(objname, id)
        return dict(record)

    def run(
        self, bodies: Sequence[Callable[[], Any]], alone: Sequence[bool] | None = None
    ) -> list[tuple[bool, Any]]:
        """Run every body; ``(True, result)`` or ``(False, exception)`` for each, in order.

        Bodies marked ``alone`` (gets the caller primed, say) run first, one after the
        other, without a greenlet: switching costs more than they would gain. The others
        run side by side. An error of a round (a statement that failed for several bodies
        at once) is raised from here, after the bodies still parked have been unwound.
        """
        driver = self._driver = greenlet.getcurrent()
        outcomes: list[tuple[bool, Any]] = [(False, None)] * len(bodies)
        alone = alone or [False] * len(bodies)

        def job(index: int, body: Callable[[], Any]) -> Callable[[], None]:
            def main() -> None:
                try:
                    outcomes[index] = (True, body())
                except Exception as exc:  # noqa: BLE001 - the body's own outcome
                    outcomes[index] = (False, exc)

            return main

        for index, body in enumerate(bodies):
            if alone[index]:
                contextvars.copy_context().run(job(index, body))
        # Rows fetched before now may have been written since.
        self._primed.clear()
        side_by_side = [index for index in range(len(bodies)) if not alone[index]]
        self._live = _take_greenlets(len(side_by_side), driver)
        try:
            for g, index in zip(self._live, side_by_side, strict=True):
                # Each body gets a copy of our contextvars context (the transport's request
                # variables live in it), and sets its own variables in it.
                g.gr_context = contextvars.copy_context()
                g.switch(job(index, bodies[index]))
            while self._parked:
                parked, self._parked = self._parked, []
                self._round(parked)
                for item in parked:
                    item.owner.switch()
        except BaseException:
            self._unwind()
            raise
        finally:
            self._driver = None
            _give_back(self._live)
            self._live = []
        return outcomes

    def park(self, kind: str, objname: str, *args: Any) -> _Parked:
        """From a body: wait for the next round to run this call (see BatchStorage)."""
        current = greenlet.getcurrent()
        item = _Parked(kind, objname, args, current)
        self._parked.append(item)
        assert self._driver is not None
        self._driver.switch()
        return item

    def in_body(self) -> bool:
        """Whether the caller is one of the bodies (not the driver, not another thread)."""
        driver = self._driver
        return driver is not None and greenlet.getcurrent() is not driver

    def _unwind(self) -> None:
        # Bodies still parked end with GreenletExit, running their finally blocks here,
        # on the thread that owns them.
        for g in self._live:
            if not g.dead:
                g.throw()
        self._parked = []

    def _round(self, parked: list[_Parked]) -> None:
        storage = SQLStorage(self.tx)
        groups: dict[tuple[Any, ...], list[_Parked]] = {}
        for item in parked:
            if item.kind == "get":
                key: tuple[Any, ...] = ("get", item.objname)
            elif item.kind == "create":
                key = ("create", item.objname, tuple(sorted(item.args[0])))
            else:  # update
                _, values, expected = item.args
                key = ("update", item.objname, tuple(sorted(values)), expected is not None)
            groups.setdefault(key, []).append(item)
        for key, items in groups.items():
            if key[0] == "create":
                self._creates(storage, items)
            elif key[0] == "update":
                self._updates(storage, items)
        for key, items in groups.items():
            if key[0] == "get":
                self._gets(storage, items)

    @staticmethod
    def _gets(storage: SQLStorage, items: list[_Parked]) -> None:
        objname = items[0].objname
        found = storage.get_many(objname, [item.args[0] for item in items])
        for item in items:
            record = found.get(item.args[0])
            if record is None:
                item.error = not_found(objname, item.args[0])
            else:
                item.result = dict(record)

    @staticmethod
    def _creates(storage: SQLStorage, items: list[_Parked]) -> None:
        if len(items) == 1:
            items[0].direct = True
            return
        try:
            records = storage.create_many(items[0].objname, [item.args[0] for item in items])
        except exception.ObjectValueError:
            # One body's bad value: let each body insert its own row and get its own error.
            for item in items:
                item.direct = True
            return
        for item, record in zip(items, records, strict=True):
            item.result = record

    @staticmethod
    def _updates(storage: SQLStorage, items: list[_Parked]) -> None:
        if len(items) == 1:
            items[0].direct = True
            return
        # Distinct rows per statement; a second write to a row runs on its own after the
        # first, as the body would have seen it run alone.
        first: dict[int, _Parked] = {}
        for item in items:
            if item.args[0] in first:
                item.direct = True
            else:
                first[item.args[0]] = item
        batch = list(first.values())
        try:
            records = storage.update_many(batch[0].objname, [item.args for item in batch])
        except exception.ObjectValueError:
            for item in batch:
                item.direct = True
            return
        for item, record in zip(batch, records, strict=True):
            if record is None:
                item.direct = True  # missing, stale or a clock behind: the body finds out
            else:
                item.result = record


# NOTE: starting a new greenlet costs about 8 us (its first switch sets up a fresh
# frame stack), ten times a switch. Each thread keeps a few finished greenlets for its
# next batch; few, because each keeps the frame stack its deepest body grew (tens of KB),
# and 256 of them on each of 8 worker threads held about 30 MB.
_POOL_MAX = 32
_pools = threading.local()
_DONE = object()


def _loop(job: Callable[[], None] | None) -> None:
    while job is not None:
        job()
        # Hold nothing of the finished body while waiting in the pool.
        job = None
        job = greenlet.getcurrent().parent.switch(_DONE)


def _take_greenlets(count: int, driver: greenlet.greenlet) -> list[greenlet.greenlet]:
    pool: list[greenlet.greenlet] = getattr(_pools, "free", None) or []
    taken = pool[:count]
    _pools.free = pool[count:]
    taken += [greenlet.greenlet(_loop) for _ in range(count - len(taken))]
    for g in taken:
        g.parent = driver
    return taken


def _give_back(used: list[greenlet.greenlet]) -> None:
    free: list[greenlet.greenlet] = getattr(_pools, "free", None) or []
    room = _POOL_MAX - len(free)
    # A finished body's greenlet waits in _loop for its next job; one that died (unwound)
    # is dropped.
    kept = [g for g in used[:room] if g and not g.dead]
    for g in kept:
        g.gr_context = None  # the body's variables (its storage, its request) go now
    free.extend(kept)
    _pools.free = free


class BatchStorage(SQLStorage):
    """``context.db`` of one request in a batch: gets, creates and updates wait for the
    batch's next round; everything else runs at once in the batch's transaction.

    Each request has its own :class:`~conductor.db.writes.WriteTracker` (``writes``).
    """

    def __init__(
        self, batch: Batch, *, project_id: str | None = None, scoped: bool = False
    ) -> None:
        # NOTE: the rounds run unscoped statements for many requests at once; a scoped
        # request must run alone (the unit of work sees to it), so only its primed gets, made
        # for everyone, need the check below.
        super().__init__(batch.tx, project_id=project_id, scoped=scoped)
        self._batch = batch

    def get(self, objname: str, id: int) -> Record:
        if not self._batch.in_body():
            record = self._batch.primed(objname, id)
            if record is not None and not self.visible(objname, record):
                raise not_found(objname, id)
            return record if record is not None else super().get(objname, id)
        item = self._batch.park("get", objname, id)
        return self._finish(item, lambda: super(BatchStorage, self).get(objname, id))

    def create(self, objname: str, values: Mapping[str, Any]) -> Record:
        if not self._batch.in_body():
            return super().create(objname, values)
        item = self._batch.park("create", objname, dict(values))
        record = self._finish(item, lambda: super(BatchStorage, self).create(objname, values))
        self.writes.wrote = True
        return record

    def update(
        self,
        objname: str,
        id: int,
        values: Mapping[str, Any],
        expected_revision: int | None = None,
    ) -> Record:
        if not self._batch.in_body():
            return super().update(objname, id, values, expected_revision)
        item = self._batch.park("update", objname, id, dict(values), expected_revision)

        def alone() -> Record:
            return super(BatchStorage, self).update(objname, id, values, expected_revision)

        record = self._finish(item, alone)
        self.writes.wrote = True
        return record

    @staticmethod
    def _finish(item: _Parked, alone: Callable[[], Record]) -> Record:
        if item.error is not None:
            raise item.error
        if item.direct:
            return alone()
        return item.result  # type: ignore[no-any-return]
