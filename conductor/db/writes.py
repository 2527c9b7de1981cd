"""Write tracking: which request of a transaction wrote, told explicitly.

The conductor stores the result of a request that wrote (for exactly-once replies) and
not of one that only read (run again, it reads again). ``SQLStorage`` tells the request's
:class:`WriteTracker` of every write it makes through the Storage protocol that changed a
row; a write that matched no row (a stale save, a missing row) changes nothing and is
not counted. SQL a method body runs on the ORM session itself cannot be told apart from
reads without parsing it, so a request that asks for ``context.db.session`` counts as
having written (its result is stored; a replay answers from it).
"""

from __future__ import annotations

__all__ = ["WriteTracker"]


class WriteTracker:
    """Whether one request wrote. One per request: a transaction that serves several
    requests (a batch) gives each its own."""

    __slots__ = ("wrote",)

    def __init__(self) -> None:
        #: True once the request changed a row, or asked for the ORM session.
        self.wrote = False
