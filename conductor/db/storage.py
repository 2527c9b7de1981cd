"""SQLStorage: the ``objects.storage.Storage`` seam on SQLAlchemy.

The conductor binds one ``SQLStorage`` to each request's session and hands it to method
bodies as ``context.db``. Hot paths are single Core statements built once per table:
``get`` and ``get_many`` are one SELECT (``WHERE id IN (...)`` for many), ``create`` one
``INSERT ... RETURNING``, ``update`` one ``UPDATE ... WHERE id = ? AND revision = ?
RETURNING``; only a zero-row update or delete pays a second SELECT, to say whether the row
is missing or the caller's copy is stale.

Its parts live next door: the statements in :mod:`conductor.db.statements`, the value
checks in :mod:`conductor.db.checks`, which request wrote in :mod:`conductor.db.writes`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Float,
    Integer,
    Numeric,
    Select,
    String,
    Text,
    any_,
    bindparam,
    delete,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from conductor.db.checks import check_limit
from conductor.db.engine import Transaction, json_text
from conductor.db.errors import translate_errors
from conductor.db.models import utcnow
from conductor.db.statements import (
    PROJECT_COLUMN,
    TableOps,
    column_arrays,
    documents_rows,
    insert_many_document_statement,
    insert_many_sqlite_statement,
    insert_many_statement,
    row_document,
    table_ops,
    update_many_document_statement,
    update_many_sqlite_statement,
    update_many_statement,
    update_statement,
)
from conductor.db.writes import WriteTracker
from objects import exception
from objects.storage import Record

__all__ = ["PROJECT_COLUMN", "SQLStorage"]

_MICROSECOND = dt.timedelta(microseconds=1)
# Stay well below SQLite's 32766 and PostgreSQL's 65535 bound parameters per statement.
_IN_CHUNK = 5000
# What _new_row gives every row of one create_many alike.
_NEW_ROW_SHARED = ("revision", "created_at", "updated_at")
# Storage-owned columns: the caller never writes them.
_MANAGED = frozenset({"id", "revision", "created_at", "updated_at"})
# A filter list longer than this goes to the database as one parameter (PostgreSQL
# ``= ANY(array)``, SQLite ``IN (SELECT value FROM json_each(?))``), never as one bound
# parameter per value: PostgreSQL takes at most 65535 per statement, SQLite 32766 in
# common builds.
_IN_PLAIN_MAX = 1000
# Where no single-parameter form exists (SQLite, a column json_each cannot compare), a
# filter list may hold this many values at most; more are refused as a bad request.
_IN_LIST_MAX = 30_000


def not_found(objname: str, id: int) -> exception.NotFound:
    """The error for a missing row (raised by ``get``, ``update``, ``delete``)."""
    return exception.NotFound(f"{objname} {id} not found", objname=objname, id=id)


class SQLStorage:
    """The Storage protocol (``objects.storage.Storage``) over one transaction.

    Every method runs in the request's transaction (a :class:`~conductor.db.Transaction`,
    or an ORM session); the caller (the conductor, one per request) commits or rolls
    back. Records are dicts keyed by column name, which is the field name. Errors are
    ``objects.exception`` types, never SQLAlchemy's.

    NOTE: after a ``DuplicateEntry`` or ``DatabaseError`` PostgreSQL refuses further
    statements in the transaction; let the error end the request (the service rolls back)
    rather than catching it and writing on.

    Projects: a table with a ``project_id`` column (the built-in ``instances``) keeps
    the project of the request that created each row (``project_id`` here, unless the
    values name one). With ``scoped``, its rows belong to their project: reads, updates
    and deletes see only rows of ``project_id`` (rows without a project when it is None),
    and another project's row is NotFound, exactly as if it did not exist. Tables without
    the column, and SQL a method body runs on ``session`` itself, are not scoped.

    Args:
        unit: the request's ``Transaction`` (statements go straight to its connection
            until a method body asks for ``context.db.session``, then through that
            session) or a ``Session``.
        project_id: the requesting context's project.
        writes: the request's write tracker (a new one when not given).
        scoped: confine the request to ``project_id``'s rows.
    """

    def __init__(
        self,
        unit: Session | Transaction,
        *,
        project_id: str | None = None,
        scoped: bool = False,
        writes: WriteTracker | None = None,
    ) -> None:
        self._unit = unit
        #: Told of every write this storage makes (see :class:`WriteTracker`).
        self.writes = WriteTracker() if writes is None else writes
        self._project_id = project_id
        self._scoped = scoped

    @property
    def session(self) -> Session:
        """An ORM session in the request's transaction, for method bodies that need more
        than the protocol. A request that asks for it counts as having written (see
        :class:`~conductor.db.writes.WriteTracker`)."""
        self.writes.wrote = True
        return self._orm_session()

    def _orm_session(self) -> Session:
        unit = self._unit
        return unit.session if isinstance(unit, Transaction) else unit

    def _connection_only(self) -> Transaction | None:
        """The Transaction when statements go straight to its connection: no method body
        has asked for the ORM session, whose autoflush must then see every statement."""
        unit = self._unit
        return unit if isinstance(unit, Transaction) and not unit.has_session else None

    def _read(self, stmt: Any, params: Any = None) -> Any:
        tx = self._connection_only()
        if tx is not None:
            return tx.connection.execute(stmt, params)
        return self._orm_session().execute(stmt, params)

    def _write(self, stmt: Any, params: Any = None) -> Any:
        tx = self._connection_only()
        if tx is not None:
            return tx.for_write().execute(stmt, params)
        return self._orm_session().execute(stmt, params)

    @property
    def wrote(self) -> bool:
        """Whether this request wrote (see :class:`~conductor.db.writes.WriteTracker`)."""
        return self.writes.wrote

    # -- projects ----------------------------------------------------------------------

    def _scope(self, ops: TableOps) -> str | None:
        """The scope of statements on this table (see ``scope_clause``)."""
        if not (self._scoped and ops.has_project):
            return None
        return "none" if self._project_id is None else "project"

    def _scoped_stmt(self, ops: TableOps, stmt: Any) -> Any:
        scope = self._scope(ops)
        if scope is None:
            return stmt
        column = ops.table.c[PROJECT_COLUMN]
        return stmt.where(column.is_(None) if scope == "none" else column == self._project_id)

    def visible(self, objname: str, record: Record) -> bool:
        """Whether this request may see ``record`` (a row fetched by someone else)."""
        ops = table_ops(objname)
        return self._scope(ops) is None or record.get(PROJECT_COLUMN) == self._project_id

    def _own(self, ops: TableOps, objname: str, values: dict[str, Any], creating: bool) -> None:
        """Stamp a new row with the request's project; refuse moving a row to another
        project when scoped."""
        if not ops.has_project:
            return
        if creating and PROJECT_COLUMN not in values:
            values[PROJECT_COLUMN] = self._project_id
        elif (
            self._scoped and PROJECT_COLUMN in values and values[PROJECT_COLUMN] != self._project_id
        ):
            raise exception.ObjectValueError(
                reason=f"a {objname} of project {self._project_id!r} cannot be given to "
                "another project"
            )

    # -- reads -------------------------------------------------------------------------

    def get(self, objname: str, id: int) -> Record:
        ops = table_ops(objname)
        _check_id(ops, id)
        with translate_errors(objname):
            row = self._read(self._scoped_stmt(ops, ops.select_one), {"id": id}).first()
        if row is None:
            raise not_found(objname, id)
        return dict(zip(ops.names, row, strict=True))

    def get_by(self, objname: str, **equals: Any) -> Record:
        ops = table_ops(objname)
        stmt = ops.select_all.where(*self._conditions(ops, objname, equals)).limit(1)
        stmt = self._scoped_stmt(ops, stmt)
        with translate_errors(objname):
            row = self._read(stmt).first()
        if row is None:
            fields = {**_jsonable(equals), "objname": objname}
            raise exception.NotFound(f"{objname} with {_describe(equals)} not found", **fields)
        return dict(zip(ops.names, row, strict=True))

    def query(
        self,
        objname: str,
        filters: Mapping[str, Any] | None = None,
        limit: int | None = None,
        marker: int | None = None,
    ) -> list[Record]:
        ops = table_ops(objname)
        stmt = ops.select_all
        conditions = self._conditions(ops, objname, filters or {})
        if marker is not None:
            if isinstance(marker, bool) or not isinstance(marker, int):
                raise exception.ObjectValueError(reason=f"marker must be an id, not {marker!r}")
            _check_id(ops, marker)
            conditions.append(ops.table.c.id > marker)
        if conditions:
            stmt = stmt.where(*conditions)
        stmt = self._scoped_stmt(ops, stmt)
        if limit is not None:
            check_limit(limit)
            stmt = stmt.limit(limit)
        names = ops.names
        with translate_errors(objname):
            rows = self._read(stmt).all()
        return [dict(zip(names, row, strict=True)) for row in rows]

    def get_many(self, objname: str, ids: Sequence[int]) -> dict[int, Record]:
        ops = table_ops(objname)
        wanted = list(dict.fromkeys(ids))
        for id_ in wanted:
            _check_id(ops, id_)
        found: dict[int, Record] = {}
        names = ops.names
        with translate_errors(objname):
            stmt = ops.select_any if self.has_bulk_statements else ops.select_many
            stmt = self._scoped_stmt(ops, stmt)
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                for row in self._read(stmt, {"ids": chunk}):
                    record = dict(zip(names, row, strict=True))
                    found[record["id"]] = record
        return found

    # -- writes ------------------------------------------------------------------------

    def create(self, objname: str, values: Mapping[str, Any]) -> Record:
        ops = table_ops(objname)
        row_values = self._new_row(ops, objname, values, utcnow())
        self.writes.wrote = True
        with translate_errors(objname):
            # One prebuilt statement with the values as parameters: SQLAlchemy caches its
            # compiled form per column set, instead of building and keying a new one.
            row = self._write(ops.insert_returning, row_values).one()
        return dict(zip(ops.names, row, strict=True))

    def update(
        self,
        objname: str,
        id: int,
        values: Mapping[str, Any],
        expected_revision: int | None = None,
    ) -> Record:
        ops = table_ops(objname)
        _check_id(ops, id)
        row_values = self._update_values(ops, objname, values)
        now = utcnow() if ops.has_updated_at else None
        # At most a few rounds: the first normally; another only when this process's clock
        # is behind the row's updated_at (written by a conductor whose clock runs ahead).
        for _ in range(3):
            record = self._update_once(ops, objname, id, row_values, expected_revision, now)
            if record is not None:
                return record
            latest = self._state(ops, objname, id, expected_revision)
            now = utcnow() if latest is None else max(utcnow(), latest + _MICROSECOND)
        raise exception.DatabaseError(
            reason=f"could not advance {objname} {id} updated_at past {now}"
        )

    def _update_once(
        self,
        ops: TableOps,
        objname: str,
        id: int,
        row_values: Mapping[str, Any],
        expected_revision: int | None,
        now: dt.datetime | None,
    ) -> Record | None:
        """One ``UPDATE ... RETURNING`` of one row; None when it matched no row (missing,
        another revision, or ``updated_at`` not before ``now``)."""
        scope = self._scope(ops)
        stmt = update_statement(
            ops.table,
            tuple(sorted(row_values)),
            expected_revision is not None,
            now is not None,
            scope,
        )
        params = {f"v_{k}": v for k, v in row_values.items()}
        params["w_id"] = id
        if scope == "project":
            params["w_project"] = self._project_id
        if expected_revision is not None:
            params["w_revision"] = expected_revision
        if now is not None:
            # updated_at must strictly increase per row, whichever clock wrote it last.
            params["v_updated_at"] = now
            params["w_now"] = now
        with translate_errors(objname):
            row = self._write(stmt, params).first()
        if row is None:
            # An UPDATE that matched no row changed nothing: a request that ends with
            # ConcurrentUpdate/NotFound here has not written.
            return None
        self.writes.wrote = True
        return dict(zip(ops.names, row, strict=True))

    @property
    def has_bulk_statements(self) -> bool:
        """Whether this is PostgreSQL: array parameters, and :meth:`update_many` and
        :meth:`create_many` in one statement whatever their rows (SQLite takes one
        statement too where the rows' JSON document can carry them, and one per row
        otherwise)."""
        unit = self._unit
        if isinstance(unit, Transaction):
            return unit.dialect_name == "postgresql"
        return unit.get_bind().dialect.name == "postgresql"

    def update_many(
        self,
        objname: str,
        updates: Sequence[tuple[int, Mapping[str, Any], int | None]],
        returning: Sequence[str] | None = None,
        *,
        also: tuple[Callable[[Any], Any], Callable[[dt.datetime | None], Mapping[str, Any]]]
        | None = None,
    ) -> list[Record | None]:
        """Many :meth:`update` calls on distinct rows, in one statement (see
        :attr:`has_bulk_statements`).

        ``updates`` are ``(id, values, expected_revision)`` with the same columns and all
        or none expecting a revision. Returns, in order, each row after its write, or None
        where the row was not written (missing, another revision, or a clock behind the
        row's ``updated_at``): call :meth:`update` for those to learn which, or retry.

        ``returning``: the columns the records hold (``id`` first; every column when
        None). NOTE: decoding columns nobody reads (JSON ones above all) was a fifth of
        the CPU of a batch of saves.

        ``also`` (PostgreSQL only): ``(wrap, params)`` runs ``wrap(statement)`` with
        ``params(now)`` besides the statement's own (``now``: the ``updated_at`` it
        writes, None without one), where ``wrap`` makes of the ``UPDATE ... RETURNING``
        one statement with the same rows (as ``requests.storing_results`` does).

        Raises:
            ObjectValueError: a value the column would refuse (nothing is written).
        """
        ops = table_ops(objname)
        returned = None if returning is None else tuple(returning)
        if returned is not None and (not returned or returned[0] != "id"):
            raise ValueError("update_many returns the id first")
        check_id = ops.checks["id"]
        for id_, _, _ in updates:
            check_id(id_)
        checked = [self._update_values(ops, objname, values) for _, values, _ in updates]
        columns = tuple(sorted(checked[0])) if checked else ()
        check_revision = bool(updates) and updates[0][2] is not None
        ids = [id for id, _, _ in updates]
        first = checked[0].keys() if checked else None
        if (
            any(v.keys() != first for v in checked)
            or any((rev is not None) != check_revision for _, _, rev in updates)
            or len(set(ids)) != len(ids)
        ):
            raise ValueError("update_many needs distinct ids, one column set, one revision mode")
        if also is not None and not self.has_bulk_statements:
            raise ValueError("update_many(also=...) is for PostgreSQL")
        now = utcnow() if ops.has_updated_at else None
        scope = self._scope(ops)
        params: dict[str, Any]
        document = None
        if documents_rows(ops.table, columns):
            keys: dict[str, list[Any]] = {"w_id": ids}
            if check_revision:
                keys["w_revision"] = [rev for _, _, rev in updates]
            document = row_document(checked, **keys)
        if document is not None:
            build = (
                update_many_document_statement
                if self.has_bulk_statements
                else update_many_sqlite_statement
            )
            stmt = build(ops.table, columns, check_revision, ops.has_updated_at, scope, returned)
            params = {"rows": document}
            if now is not None:
                params["w_now"] = now
        elif not self.has_bulk_statements:
            return [
                self._update_once(ops, objname, id, row_values, expected, now)
                for (id, _, expected), row_values in zip(updates, checked, strict=True)
            ]  # every column: a row at a time, nothing to save by returning fewer
        else:
            stmt = update_many_statement(
                ops.table, columns, check_revision, ops.has_updated_at, scope, returned
            )
            params = {"a_w_id": ids}
            if check_revision:
                params["a_w_revision"] = [rev for _, _, rev in updates]
            if now is not None:
                params["a_w_now"] = [now] * len(ids)
            params.update(column_arrays(ops, columns, checked))
        if scope == "project":
            params["w_project"] = self._project_id
        if also is not None:
            stmt = also[0](stmt)
            params.update(also[1](now))
        with translate_errors(objname):
            rows = self._write(stmt, params).all()
        if rows:
            self.writes.wrote = True
        names = ops.names if returned is None else returned
        written = {row[0]: dict(zip(names, row, strict=True)) for row in rows}
        return [written.get(id) for id in ids]

    def create_many(self, objname: str, values: Sequence[Mapping[str, Any]]) -> list[Record]:
        """Many :meth:`create` calls with the same columns in one INSERT statement.

        Raises:
            ObjectValueError: a value the column would refuse (nothing is written).
            DuplicateEntry: a unique column clashes (nothing is written; the transaction
                is unusable on PostgreSQL).
        """
        ops = table_ops(objname)
        now = utcnow()
        rows = [self._new_row(ops, objname, item, now) for item in values]
        if not rows:
            return []
        columns = tuple(sorted(rows[0]))
        if any(tuple(sorted(r)) != columns for r in rows):
            raise ValueError("create_many needs one column set")
        self.writes.wrote = True
        # The columns every row holds the same value of (_new_row's revision and
        # timestamps) go once; the others, when JSON carries them, as one document.
        shared = tuple(name for name in _NEW_ROW_SHARED if name in columns)
        own = tuple(name for name in columns if name not in shared)
        document = None
        if documents_rows(ops.table, own):
            document = row_document(
                [{name: row[name] for name in own} for row in rows], w_ord=range(len(rows))
            )
        params: Any
        if document is not None:
            if self.has_bulk_statements:
                stmt = insert_many_document_statement(ops.table, own, shared)
            else:
                stmt = insert_many_sqlite_statement(ops.table, own, shared)
            params = {f"s_{name}": rows[0][name] for name in shared}
            params["rows"] = document
        elif not self.has_bulk_statements:
            # insertmanyvalues: INSERT ... RETURNING in parameter order.
            with translate_errors(objname):
                result = self._write(ops.insert_returning_ordered, rows).all()
            return [dict(zip(ops.names, row, strict=True)) for row in result]
        else:
            stmt = insert_many_statement(ops.table, columns)
            params = column_arrays(ops, columns, rows)
        with translate_errors(objname):
            result = self._write(stmt, params).all()
        records = [dict(zip(ops.names, row, strict=True)) for row in result]
        if "id" in columns:
            by_id = {record["id"]: record for record in records}
            return [by_id[row["id"]] for row in rows]
        # NOTE: the rows are inserted in ``ORDER BY`` order, so their serial ids (SQLite:
        # rowids) rise in the order of ``values`` (the assumption SQLAlchemy's own
        # insertmanyvalues makes for PostgreSQL); RETURNING's order itself is not promised.
        return sorted(records, key=lambda record: record["id"])

    def delete(self, objname: str, id: int, expected_revision: int | None = None) -> None:
        ops = table_ops(objname)
        _check_id(ops, id)
        c = ops.table.c
        stmt = delete(ops.table).where(c.id == id)
        if expected_revision is not None:
            stmt = stmt.where(c.revision == expected_revision)
        stmt = self._scoped_stmt(ops, stmt)
        with translate_errors(objname):
            result = self._write(stmt)
        if result.rowcount == 0:
            self._state(ops, objname, id, expected_revision)
            raise not_found(objname, id)
        self.writes.wrote = True

    # -- helpers -----------------------------------------------------------------------

    def _state(
        self, ops: TableOps, objname: str, id: int, expected_revision: int | None
    ) -> dt.datetime | None:
        """After a write matched no row: raise NotFound or ConcurrentUpdate, or return the
        row's ``updated_at`` when neither applies."""
        with translate_errors(objname):
            row = self._read(self._scoped_stmt(ops, ops.select_state), {"id": id}).first()
        if row is None:
            raise not_found(objname, id)
        if expected_revision is not None and row[0] != expected_revision:
            raise exception.ConcurrentUpdate(
                objname=objname, id=id, expected=expected_revision, actual=row[0]
            )
        return row[1] if len(row) > 1 else None

    def _new_row(
        self, ops: TableOps, objname: str, values: Mapping[str, Any], now: dt.datetime
    ) -> dict[str, Any]:
        """A new row's column values: the caller's, checked, plus revision 1 and the
        timestamps the table has."""
        row_values = self._checked(ops, objname, values, creating=True)
        self._own(ops, objname, row_values, creating=True)
        row_values["revision"] = 1
        if ops.timestamps:
            row_values["created_at"] = now
        if ops.has_updated_at:
            row_values["updated_at"] = now
        return row_values

    def _update_values(
        self, ops: TableOps, objname: str, values: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The caller's values for an update, checked; the storage's own columns dropped."""
        row_values = self._checked(ops, objname, values, creating=False)
        if self._scoped and ops.has_project:  # _own refuses a move only when scoped
            self._own(ops, objname, row_values, creating=False)
        return row_values

    @staticmethod
    def _checked(
        ops: TableOps, objname: str, values: Mapping[str, Any], *, creating: bool
    ) -> dict[str, Any]:
        """``values`` checked column by column, in one loop; the storage's own columns
        dropped (an id is accepted on create: an explicit key)."""
        checks = ops.checks
        out: dict[str, Any] = {}
        for name, value in values.items():
            check = checks.get(name)
            if check is None:
                raise exception.ObjectValueError(
                    reason=f"{objname} has no field {name!r} in table {ops.table.name}"
                )
            if name in _MANAGED and not (creating and name == "id"):
                continue  # the storage keeps these
            check(value)
            out[name] = value
        return out

    def _conditions(
        self, ops: TableOps, objname: str, filters: Mapping[str, Any]
    ) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        c = ops.table.c
        for name, value in filters.items():
            if name not in c:
                raise exception.ObjectValueError(
                    reason=f"cannot filter {objname} on unknown field {name!r}"
                )
            column = c[name]
            if isinstance(column.type, JSON):
                raise exception.ObjectValueError(
                    reason=f"cannot filter {objname} on {name!r}: it is a list/dict/object field"
                )
            check = ops.checks[name]
            if isinstance(value, (list, tuple, set, frozenset)):
                present = [v for v in value if v is not None]
                for v in present:
                    check(v)
                condition: ColumnElement[bool] = self._in(objname, column, present)
                if len(present) != len(value):  # None in the list: also match NULL
                    condition = or_(condition, column.is_(None))
                conditions.append(condition)
            elif value is None:
                conditions.append(column.is_(None))
            else:
                check(value)
                conditions.append(column == value)
        return conditions

    def _in(self, objname: str, column: Any, values: list[Any]) -> ColumnElement[bool]:
        """``column IN values``, as one parameter when the list is long (see _IN_PLAIN_MAX)."""
        if len(values) <= _IN_PLAIN_MAX:
            return column.in_(values)  # type: ignore[no-any-return]
        if self.has_bulk_statements:  # PostgreSQL
            array = bindparam(None, values, type_=postgresql.ARRAY(column.type))
            return column == any_(array)  # type: ignore[no-any-return]
        if isinstance(column.type, (Integer, String, Float, Numeric, Boolean)):
            listed: Select[Any] = select(literal_column("value")).select_from(
                func.json_each(bindparam(None, json_text(values), type_=Text))
            )
            return column.in_(listed)  # type: ignore[no-any-return]
        if len(values) > _IN_LIST_MAX:
            raise exception.ObjectValueError(
                reason=f"a filter on {objname}.{column.name} may list at most {_IN_LIST_MAX} "
                f"values, not {len(values)}: split the query"
            )
        return column.in_(values)  # type: ignore[no-any-return]


def _check_id(ops: TableOps, id: Any) -> None:
    """Refuse an id the ``id`` column cannot hold before any statement: the same typed
    error on every database (PostgreSQL would refuse some, SQLite others, differently)."""
    ops.checks["id"](id)


def _describe(equals: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in equals.items()) or "no filter"


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    # Exception kwargs travel over RPC as JSON; keep only what survives it.
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        elif isinstance(value, Iterable) and not isinstance(value, Mapping):
            out[key] = [v for v in value if isinstance(v, (str, int, float, bool))]
    return out
