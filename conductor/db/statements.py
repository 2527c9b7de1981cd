"""Prebuilt statements: what SQLStorage sends for each table, built once per table or
column set, so SQLAlchemy's compiled cache (and psycopg's prepared statements) serve
every request.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ColumnElement,
    Enum,
    Integer,
    Select,
    String,
    Table,
    Text,
    TypeDecorator,
    and_,
    any_,
    bindparam,
    cast,
    column,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql

from conductor.db.checks import checker
from conductor.db.engine import json_text
from conductor.db.models import get_table
from objects import exception

__all__ = [
    "PROJECT_COLUMN",
    "TableOps",
    "column_arrays",
    "documents_rows",
    "insert_many_document_statement",
    "insert_many_sqlite_statement",
    "insert_many_statement",
    "row_document",
    "scope_clause",
    "table_ops",
    "update_many_document_statement",
    "update_many_sqlite_statement",
    "update_many_statement",
    "update_statement",
]

#: The column that makes a table's rows belong to a project (see SQLStorage).
PROJECT_COLUMN = "project_id"


@dataclasses.dataclass(frozen=True)
class TableOps:
    """What SQLStorage needs of one table, computed once: statements, columns, checks."""

    table: Table
    names: tuple[str, ...]
    checks: Mapping[str, Callable[[Any], None]]
    timestamps: bool  # has created_at and updated_at
    has_updated_at: bool
    has_project: bool  # has project_id: rows belong to a project (see SQLStorage)
    select_all: Select[Any]
    select_one: Select[Any]
    select_many: Select[Any]
    select_any: Select[Any]
    select_state: Select[Any]
    insert_returning: Any
    insert_returning_ordered: Any

    @classmethod
    def build(cls, table: Table) -> TableOps:
        c = table.c
        checks = {
            col.name: checker(col.type, bool(col.nullable), f"{table.name}.{col.name}")
            for col in table.columns
        }
        select_all = select(table).order_by(c.id)
        state_cols = [c.revision] + ([c.updated_at] if "updated_at" in c else [])
        return cls(
            table=table,
            names=tuple(col.name for col in table.columns),
            checks=checks,
            timestamps="created_at" in c and "updated_at" in c,
            has_updated_at="updated_at" in c,
            has_project=PROJECT_COLUMN in c,
            select_all=select_all,
            select_one=select(table).where(c.id == bindparam("id")),
            select_many=select(table).where(c.id.in_(bindparam("ids", expanding=True))),
            # PostgreSQL: one array parameter, so one statement text for any number of
            # ids (no IN list to render and parse per batch): about 4 us less per row.
            select_any=select(table).where(
                c.id == any_(bindparam("ids", type_=postgresql.ARRAY(BigInteger)))
            ),
            select_state=select(*state_cols).where(c.id == bindparam("id")),
            insert_returning=insert(table).returning(*table.c),
            insert_returning_ordered=insert(table).returning(
                *table.c, sort_by_parameter_order=True
            ),
        )


def scope_clause(table: Table, scope: str | None) -> ColumnElement[bool] | None:
    """The WHERE term of a project scope: None (unscoped), "project" (``project_id =
    :w_project``) or "none" (``project_id IS NULL``, a context without a project)."""
    if scope is None:
        return None
    column = table.c[PROJECT_COLUMN]
    return column.is_(None) if scope == "none" else column == bindparam("w_project")


@functools.lru_cache(maxsize=1024)
def update_statement(
    table: Table,
    columns: tuple[str, ...],
    check_revision: bool,
    set_updated_at: bool,
    scope: str | None = None,
) -> Any:
    """``UPDATE ... SET <columns> WHERE id [AND revision] [AND updated_at <] [AND project]
    RETURNING *`` with bind parameters, built once per column set (see ``update``)."""
    c = table.c
    where: list[ColumnElement[bool]] = [c.id == bindparam("w_id")]
    scoped = scope_clause(table, scope)
    if scoped is not None:
        where.append(scoped)
    if check_revision:
        where.append(c.revision == bindparam("w_revision"))
    values: dict[str, Any] = {name: bindparam(f"v_{name}") for name in columns}
    values["revision"] = c.revision + 1
    if set_updated_at:
        values["updated_at"] = bindparam("v_updated_at")
        where.append(or_(c.updated_at.is_(None), c.updated_at < bindparam("w_now")))
    return update(table).values(values).where(and_(*where)).returning(*table.c)


def _unnest(table: Table, names: Sequence[str]) -> Any:
    """PostgreSQL ``unnest(:a_<name>, ...) AS v(<name>, ...)``: rows from one array
    parameter per column. ``w_id``/``w_revision``/``w_now`` are the row's id, expected
    revision and timestamp; ``v_<column>`` a column's new value (JSON columns as text)."""
    c = table.c

    def array_of(name: str) -> Any:
        if name in ("w_id", "w_revision"):
            return postgresql.ARRAY(Integer)
        if name == "w_now":
            return postgresql.ARRAY(c.updated_at.type)
        column_type = c[name[2:]].type
        return postgresql.ARRAY(Text if isinstance(column_type, JSON) else column_type)

    return (
        func.unnest(*(bindparam(f"a_{n}", type_=array_of(n)) for n in names))
        .table_valued(*names, with_ordinality="w_ord")
        .render_derived(name="v")
    )


def _from_unnest(table: Table, rows: Any, name: str) -> Any:
    column_type = table.c[name].type
    source = rows.c[f"v_{name}"]
    return cast(source, column_type) if isinstance(column_type, JSON) else source


def _returned(table: Table, returning: tuple[str, ...] | None) -> list[Any]:
    """The columns an UPDATE returns: all, or ``returning`` (``id`` first)."""
    if returning is None:
        return list(table.c)
    return [table.c[name] for name in returning]


@functools.lru_cache(maxsize=1024)
def update_many_statement(
    table: Table,
    columns: tuple[str, ...],
    check_revision: bool,
    set_updated_at: bool,
    scope: str | None = None,
    returning: tuple[str, ...] | None = None,
) -> Any:
    """PostgreSQL: ``UPDATE ... FROM unnest(<one array per column>) AS v WHERE id = v.id
    [AND revision = v.revision] [AND updated_at < v.now] RETURNING *``.

    The SQL text does not depend on the number of rows, so SQLAlchemy's compiled cache
    and psycopg's prepared statements serve every batch.
    """
    rows = _unnest(
        table,
        [
            "w_id",
            *(["w_revision"] if check_revision else []),
            *(["w_now"] if set_updated_at else []),
            *(f"v_{n}" for n in columns),
        ],
    )
    values = {name: _from_unnest(table, rows, name) for name in columns}
    now = rows.c.w_now if set_updated_at else None
    ids = bindparam("a_w_id", type_=postgresql.ARRAY(Integer))
    return _update_from(table, rows, values, now, check_revision, scope, returning, ids)


def _update_from(
    table: Table,
    rows: Any,
    values: dict[str, Any],
    now: Any,
    check_revision: bool,
    scope: str | None,
    returning: tuple[str, ...] | None,
    ids: Any,
) -> Any:
    """The ``UPDATE`` of the ``update_many`` statements: each row of ``rows`` (``w_id``,
    ``w_revision`` when ``check_revision``) sets ``values`` and the next revision, and
    ``updated_at`` to ``now`` where it is older (unless ``now`` is None).

    ``ids`` (an array of the rows' ids) is asked for too: ``id = ANY(ids)`` lets the
    planner read the rows by their primary key. NOTE: joined with ``rows`` alone (whose
    number the planner takes to be 100), a table of some thousands of rows was read
    whole for every batch."""
    c = table.c
    values = {**values, "revision": c.revision + 1}
    where: list[ColumnElement[bool]] = [c.id == rows.c.w_id, c.id == any_(ids)]
    scoped = scope_clause(table, scope)
    if scoped is not None:
        where.append(scoped)
    if check_revision:
        where.append(c.revision == rows.c.w_revision)
    if now is not None:
        values["updated_at"] = now
        where.append(or_(c.updated_at.is_(None), c.updated_at < now))
    return update(table).values(values).where(and_(*where)).returning(*_returned(table, returning))


def _documented(column_type: Any) -> bool:
    """Whether a JSON document carries this column's values as they are bound: integers,
    booleans and strings (JSON numbers, booleans, strings), and JSON columns that store
    None as NULL (a JSON null in the document is NULL). Dates, floats, enums and user
    types take the arrays (their bind processors and text forms decide)."""
    if isinstance(column_type, JSON):
        return bool(column_type.none_as_null)
    if isinstance(column_type, (Enum, TypeDecorator)):
        return False
    return isinstance(column_type, (Integer, String, Boolean))


def _field_type(column_type: Any) -> Any:
    # NOTE: strings are read as text without a length: a cast to varchar(n) would cut a
    # longer value silently, where the column's own assignment refuses it.
    return (
        Text()
        if isinstance(column_type, String) and not isinstance(column_type, JSON)
        else column_type
    )


def documents_rows(table: Table, columns: Sequence[str]) -> bool:
    """Whether :func:`update_many_document_statement` can write these columns."""
    return all(_documented(table.c[name].type) for name in columns)


@functools.lru_cache(maxsize=1024)
def update_many_document_statement(
    table: Table,
    columns: tuple[str, ...],
    check_revision: bool,
    set_updated_at: bool,
    scope: str | None = None,
    returning: tuple[str, ...] | None = None,
) -> Any:
    """PostgreSQL: :func:`update_many_statement` with the rows as one JSON document
    (``:rows``, an array of objects with ``w_id``, ``w_revision`` and ``v_<column>``
    keys, see :func:`row_document`) read by ``json_to_recordset``, and one ``:w_now``
    for all rows. Only for columns that :func:`documents_rows` accepts.

    NOTE: psycopg dumps each element of an array parameter in Python (escaping every
    text with a regular expression), about a quarter of the CPU of a batch's update;
    one text parameter from the C JSON encoder costs a fraction of that.
    """
    c = table.c
    fields = [
        column("w_id", BigInteger),
        *([column("w_revision", BigInteger)] if check_revision else []),
        *(column(f"v_{name}", _field_type(c[name].type)) for name in columns),
    ]
    rows = _document_rows(fields)
    values = {name: rows.c[f"v_{name}"] for name in columns}
    now = bindparam("w_now", type_=c.updated_at.type) if set_updated_at else None
    return _update_from(table, rows, values, now, check_revision, scope, returning, _document_ids())


_document_encoder = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
)


def row_document(rows: Sequence[Mapping[str, Any]], **keys: Sequence[Any]) -> str | None:
    """The ``:rows`` JSON document of the ``*_document_statement`` functions: one object
    per row, with its values under ``v_<column>`` and each of ``keys`` (``w_id=[...]``)
    under its own name. None when a text holds a lone surrogate (no UTF-8 for it) or a
    NUL: the statements of one row or of arrays take those, as before.

    NOTE: SQLite's ``->>`` cuts a text at an escaped NUL, and PostgreSQL refuses one with
    a server error (which aborts the transaction, where psycopg refuses it before
    sending).

    Raises:
        ObjectValueError: a value JSON cannot carry (nothing is written).
    """
    items: list[dict[str, Any]] = []
    prefixed: dict[str, str] = {}  # name -> v_name, made once per column
    for row in rows:
        item: dict[str, Any] = {}
        for name, value in row.items():
            key = prefixed.get(name)
            if key is None:
                key = prefixed[name] = f"v_{name}"
            item[key] = value
        items.append(item)
    for key, values in keys.items():
        for item, value in zip(items, values, strict=True):
            item[key] = value
    try:
        text = _document_encoder.encode(items)
    except (TypeError, ValueError) as exc:
        raise exception.ObjectValueError(reason=f"not JSON-compatible: {exc}") from exc
    if "\\u0000" in text:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text


def _document_ids() -> Any:
    """PostgreSQL: ``ARRAY(SELECT (value ->> 'w_id')::bigint FROM json_array_elements(:rows))``,
    the ids of the ``:rows`` JSON document."""
    elements = (
        func.json_array_elements(cast(bindparam("rows", type_=Text), postgresql.JSON))
        .table_valued("value")
        .alias("w_ids")
    )
    return func.array(
        select(cast(literal_column("w_ids.value ->> 'w_id'"), BigInteger))
        .select_from(elements)
        .scalar_subquery()
    )


def _document_rows(fields: list[Any]) -> Any:
    """PostgreSQL: the rows of the ``:rows`` JSON document (see :func:`row_document`) as
    a derived table ``v`` of these typed columns."""
    return (
        func.json_to_recordset(cast(bindparam("rows", type_=Text), postgresql.JSON))
        .table_valued(*fields)
        .render_derived(name="v", with_types=True)
    )


@functools.lru_cache(maxsize=1024)
def insert_many_document_statement(
    table: Table, columns: tuple[str, ...], shared: tuple[str, ...]
) -> Any:
    """PostgreSQL: :func:`insert_many_statement` with the rows as one JSON document
    (``:rows``, see :func:`row_document`; ``w_ord`` numbers them) and the ``shared``
    columns, one value for every row (a batch's revision and timestamps), as ``:s_<column>``
    parameters. Only for columns that :func:`documents_rows` accepts.
    """
    c = table.c
    fields = [
        column("w_ord", BigInteger),
        *(column(f"v_{name}", _field_type(c[name].type)) for name in columns),
    ]
    rows = _document_rows(fields)
    chosen = select(
        *(rows.c[f"v_{name}"] for name in columns),
        *(bindparam(f"s_{name}", type_=c[name].type) for name in shared),
    ).order_by(rows.c.w_ord)
    return insert(table).from_select([*columns, *shared], chosen).returning(*table.c)


def _sqlite_value(table: Table, rows: Any, key: str, name: str) -> Any:
    """SQLite: the ``key`` member of ``json_each``'s row, as column ``name`` stores it:
    ``->>`` for a value, ``->`` for a JSON column's text (a JSON null being NULL)."""
    path = literal(f"$.{key}", Text)
    if isinstance(table.c[name].type, JSON):
        return func.nullif(rows.c.value.op("->")(path), literal("null", Text))
    return rows.c.value.op("->>")(path)


@functools.lru_cache(maxsize=1024)
def update_many_sqlite_statement(
    table: Table,
    columns: tuple[str, ...],
    check_revision: bool,
    set_updated_at: bool,
    scope: str | None = None,
    returning: tuple[str, ...] | None = None,
) -> Any:
    """SQLite: :func:`update_many_document_statement`'s UPDATE, the rows read from the
    document by ``json_each`` (see :func:`insert_many_sqlite_statement`): one statement
    where each row took its own."""
    c = table.c
    rows = func.json_each(bindparam("rows", type_=Text)).table_valued("key", "value")
    values: dict[str, Any] = {
        name: _sqlite_value(table, rows, f"v_{name}", name) for name in columns
    }
    values["revision"] = c.revision + 1
    where: list[ColumnElement[bool]] = [c.id == _sqlite_value(table, rows, "w_id", "id")]
    scoped = scope_clause(table, scope)
    if scoped is not None:
        where.append(scoped)
    if check_revision:
        where.append(c.revision == _sqlite_value(table, rows, "w_revision", "revision"))
    if set_updated_at:
        now = bindparam("w_now", type_=c.updated_at.type)
        values["updated_at"] = now
        where.append(or_(c.updated_at.is_(None), c.updated_at < now))
    return update(table).values(values).where(and_(*where)).returning(*_returned(table, returning))


@functools.lru_cache(maxsize=1024)
def insert_many_sqlite_statement(
    table: Table, columns: tuple[str, ...], shared: tuple[str, ...]
) -> Any:
    """SQLite: :func:`insert_many_document_statement`'s INSERT, the rows read from the
    document by ``json_each`` (``->>`` for a column's value, ``->`` for a JSON column's
    text, a JSON null being NULL), in the document's order: one statement where
    SQLAlchemy would run one per row, and bind each row's values in Python.
    """
    c = table.c
    rows = func.json_each(bindparam("rows", type_=Text)).table_valued("key", "value")
    chosen = select(
        *(_sqlite_value(table, rows, f"v_{name}", name) for name in columns),
        *(bindparam(f"s_{name}", type_=c[name].type) for name in shared),
    ).order_by(rows.c.key)
    return insert(table).from_select([*columns, *shared], chosen).returning(*table.c)


@functools.lru_cache(maxsize=1024)
def insert_many_statement(table: Table, columns: tuple[str, ...]) -> Any:
    """PostgreSQL: ``INSERT ... SELECT ... FROM unnest(...) ORDER BY ordinality RETURNING
    *``, one statement text for any number of rows (see ``create_many`` on the order)."""
    rows = _unnest(table, [f"v_{n}" for n in columns])
    chosen = select(*(_from_unnest(table, rows, n) for n in columns)).order_by(rows.c.w_ord)
    return insert(table).from_select(list(columns), chosen).returning(*table.c)


@functools.cache
def _ops_for_table(table: Table) -> TableOps:
    return TableOps.build(table)


def table_ops(objname: str) -> TableOps:
    return _ops_for_table(get_table(objname))


def column_arrays(
    ops: TableOps, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> dict[str, list[Any]]:
    """The ``a_v_<column>`` array parameters of ``_unnest`` for these rows."""
    params: dict[str, list[Any]] = {}
    for name in columns:
        column_type = ops.table.c[name].type
        if isinstance(column_type, JSON):
            params[f"a_v_{name}"] = [
                None if row[name] is None and column_type.none_as_null else json_text(row[name])
                for row in rows
            ]
        else:
            params[f"a_v_{name}"] = [row[name] for row in rows]
    return params
