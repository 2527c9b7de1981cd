"""The persistence seam between remotable method bodies and the conductor.

Method bodies of the built-in domain (``Instance.get``, ``save``, ...) never import a
database library: they call ``context.db``, an object with this interface, which the
conductor binds to the request's transaction (``conductor.db.storage.SQLStorage``).
Tests use :class:`objects.fixture.MemoryStorage`, a dict-backed implementation.

Records are plain dicts keyed by field name. Scalar fields hold Python values
(``int``, ``str``, ``bool``, ``float``, timezone-aware ``datetime``); list, dict and
nested-object fields hold JSON-compatible values (a nested object as its field dict).
Every record also carries ``"revision"``: an integer the storage bumps on every
update, used for optimistic concurrency. Tables with ``created_at``/``updated_at``
columns get them set by the storage (``updated_at`` strictly increases per row).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

Record = dict[str, Any]


class StoredRecord(NamedTuple):
    """A record of ``cls`` as a stock get read it from its table, handed in the
    conductor's own process to the pending object that asked for it, which loads it
    (``cls._from_record``) instead of a primitive made from it and read back.

    Nothing else holds ``record`` or any list or dict in it. ``settle``, when given, is
    told how the load went (None, or the error it raises): the answer is counted as what
    its caller got.
    """

    cls: type[Any]
    record: Record
    settle: Callable[[BaseException | None], None] | None = None

    def build(self, context: Any) -> Any:
        """The object of ``context`` loaded from the record (``cls._from_record``)."""
        settle = self.settle
        if settle is None:
            return self.cls._from_record(context, self.record)
        try:
            built = self.cls._from_record(context, self.record)
        except Exception as exc:
            settle(exc)
            raise
        settle(None)
        return built


class Storage(Protocol):
    """What a remotable method body may ask of the database. Object names are
    ``obj_name()`` strings ("Instance"); the storage maps them to tables."""

    def get(self, objname: str, id: int) -> Record:
        """The row with this id. Raises ``NotFound``."""
        ...

    def get_by(self, objname: str, **equals: Any) -> Record:
        """The first row (lowest id) matching all ``field == value``. Raises ``NotFound``."""
        ...

    def query(
        self,
        objname: str,
        filters: Mapping[str, Any] | None = None,
        limit: int | None = None,
        marker: int | None = None,
    ) -> list[Record]:
        """Rows ordered by id. ``filters``: field -> value (equality) or a list/tuple/set
        (IN). ``marker``: only ids greater than it. Unknown filter fields raise
        ``ObjectValueError``."""
        ...

    def create(self, objname: str, values: Mapping[str, Any]) -> Record:
        """Insert a row; returns it with ``id``, ``revision`` and timestamps set."""
        ...

    def update(
        self,
        objname: str,
        id: int,
        values: Mapping[str, Any],
        expected_revision: int | None = None,
    ) -> Record:
        """Write only ``values``; returns the whole row after the write. When
        ``expected_revision`` is given and differs from the row's, raises
        ``ConcurrentUpdate`` and writes nothing. Raises ``NotFound``."""
        ...

    def delete(self, objname: str, id: int, expected_revision: int | None = None) -> None:
        """Delete the row. Raises ``NotFound`` / ``ConcurrentUpdate`` as ``update``."""
        ...

    def get_many(self, objname: str, ids: Sequence[int]) -> dict[int, Record]:
        """Rows for these ids in one query; missing ids are simply absent."""
        ...
