"""Engines and sessions: the only place the conductor opens a database.

``create_engine`` knows the two databases we support: SQLite (the embedded default, a file
in WAL mode shared by the conductor's worker threads) and PostgreSQL through psycopg 3.
``session_scope`` runs one request's transaction: commit on success, roll back on error,
SQLAlchemy errors translated to ``objects.exception`` types.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any, TypeVar, cast

import orjson
import sqlalchemy
from sqlalchemy import event, pool
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from conductor.db.errors import mask_url, translate_errors
from objects import exception

__all__ = [
    "DEFAULT_MAX_OVERFLOW",
    "DEFAULT_POOL_SIZE",
    "SQLITE_BUSY_TIMEOUT_MS",
    "ConductorSession",
    "create_engine",
    "Transaction",
    "session_factory",
    "session_scope",
    "transaction_scope",
]

#: Connections kept open per engine; size it to the conductor's worker count.
DEFAULT_POOL_SIZE = 10
#: Extra connections allowed under bursts, closed again when returned.
DEFAULT_MAX_OVERFLOW = 20
#: How long an SQLite writer waits for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 30_000

_U = TypeVar("_U", "Session", "Transaction")


def _normalize(url: str | URL) -> URL:
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise exception.ObjectValueError(
            reason=f"cannot parse database URL {mask_url(url)!r}: use sqlite:///PATH or "
            "postgresql+psycopg://USER:PASSWORD@HOST/DB"
        ) from exc
    # Plain postgresql:// would pick psycopg2, which we do not ship; we ship psycopg 3.
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def json_text(value: Any) -> str:
    # Both drivers encode JSON columns with this; a value json refuses is the caller's
    # mistake, so say so in our terms instead of a TypeError from deep in the driver.
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise exception.ObjectValueError(reason=f"not JSON-compatible: {exc}") from exc


_json_decoder = json.JSONDecoder()
_json_scan = _json_decoder.scan_once  # type: ignore[attr-defined]  # set in __init__
_DIGITS = b"0123456789"
#: Digits a text holds at most for orjson to read it: an integer of 19 digits or more may
#: be outside the 64 bits orjson reads as integers (it makes such a one a float).
_ORJSON_DIGITS = 18


def json_value(data: str | bytes | memoryview | float | None) -> Any:
    """Both drivers decode JSON columns with this: the value ``json.loads`` reads from
    the UTF-8 text, or its error.

    orjson reads it where it provably gives the same value (about twice as fast on a
    row's small texts): it reads valid JSON as the stdlib does except integers outside
    64 bits, so a text with more than 18 digits in all goes to the stdlib, as does
    whatever orjson refuses (NaN and Infinity, lone surrogates, invalid UTF-8 or JSON:
    the stdlib's error then). There the stored text we wrote (:func:`json_text`) is read
    by the stdlib's scanner alone (``json.loads`` also sniffs the encoding and matches
    whitespace), anything else by ``json``'s own decoding. SQLite hands a JSON number
    back as a number (the column has numeric affinity); it is its own value.
    """
    if data is None:  # NULL (the lane reads its rows' JSON columns with this alone)
        return None
    text = None
    if type(data) is bytes:
        raw = data
    elif type(data) is str:
        text = data
        try:
            raw = data.encode()
        except UnicodeEncodeError:  # a lone surrogate: the stdlib's to read
            return _stdlib_value(data)
    elif isinstance(data, (int, float)):
        return data
    elif isinstance(data, str):
        return _stdlib_value(data)  # a subclass: as it is
    else:
        raw = bytes(cast("memoryview", data))  # a buffer (memoryview, bytearray)
    if len(raw) - len(raw.translate(None, _DIGITS)) <= _ORJSON_DIGITS:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return _stdlib_value(raw.decode("utf-8") if text is None else text)


def _stdlib_value(text: str) -> Any:
    try:
        value, end = _json_scan(text, 0)
    except StopIteration:
        end = -1
    if end != len(text):
        return _json_decoder.decode(text)
    return value


def _is_sqlite_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or str(url.database).startswith("file::memory:")


def _on_sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # WAL lets readers run while one writer commits; NORMAL sync is durable across
        # application crashes (not power loss mid-checkpoint), the usual WAL trade-off.
        _use_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _use_wal(cursor: Any) -> None:
    # NOTE: switching a database to WAL needs it to itself, and SQLite answers "database
    # is locked" at once (no busy wait) while another connection holds a lock, e.g. a
    # conductor migrating the same fresh file. The mode is persistent: once any
    # connection has switched, the others find it set.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def create_engine(
    url: str | URL,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
    echo: bool = False,
) -> Engine:
    """An engine for ``url``, set up for many worker threads.

    SQLite (``sqlite:///path``): WAL journal, a busy timeout so concurrent writers wait
    instead of failing, foreign keys on, connections shareable across threads.
    ``sqlite://`` (in memory) uses one shared connection. PostgreSQL: ``postgresql://`` is
    taken to mean psycopg 3 (``postgresql+psycopg://``).

    Args:
        url: the database URL.
        pool_size: connections kept open (about the number of concurrent requests).
        max_overflow: extra connections allowed under bursts.
        echo: log every statement (debugging).

    Raises:
        ObjectValueError: the URL cannot be parsed.
    """
    parsed = _normalize(url)
    kwargs: dict[str, Any] = {
        "echo": echo,
        "json_serializer": json_text,
        "json_deserializer": json_value,
    }
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {
            "check_same_thread": False,
            "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
        }
        if _is_sqlite_memory(parsed):
            # One connection, or every checkout would see its own empty database.
            kwargs["poolclass"] = pool.StaticPool
        else:
            kwargs.update(pool_size=pool_size, max_overflow=max_overflow)
    else:
        kwargs.update(
            pool_size=pool_size,
            max_overflow=max_overflow,
            # Servers and proxies drop idle connections; recycle before they do.
            pool_recycle=1800,
            # NOTE: psycopg prepares a statement it has run five times, and PostgreSQL
            # keeps a prepared statement's generic plan until the table is analyzed
            # (never, without autovacuum). Planned while a table held a few rows, a
            # batch update or a read by a list of ids scanned the whole table once it
            # held many: a save's PostgreSQL CPU went 41 -> 252 us as 45,000 rows came.
            # Unprepared, every statement is planned for the tables as they are. (The
            # get lane prepares its reads by primary key on connections of its own.)
            connect_args={"prepare_threshold": None},
        )
    with translate_errors():
        engine = sqlalchemy.create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _on_sqlite_connect)
    return engine


class ConductorSession(Session):
    """The conductor's ORM session (which requests wrote is told explicitly to a
    :class:`~conductor.db.writes.WriteTracker`, not recorded by the session)."""


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A factory of :class:`ConductorSession` bound to ``engine``.

    Objects stay readable after commit (``expire_on_commit=False``): the service builds
    its reply from them after the transaction has ended.
    """
    factory = sessionmaker(bind=engine, class_=ConductorSession, expire_on_commit=False)
    return cast("sessionmaker[Session]", factory)


def session_scope(factory: sessionmaker[Session]) -> contextlib.AbstractContextManager[Session]:
    """One transaction: commit when the block succeeds, roll back when it raises.

    SQLAlchemy errors, from the block or from the commit, come out as
    ``objects.exception`` types (see :mod:`conductor.db.errors`).
    """
    return _unit_scope(factory())


@contextlib.contextmanager
def _unit_scope(unit: _U) -> Iterator[_U]:
    try:
        with translate_errors():
            yield unit
            unit.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            unit.rollback()
        raise
    finally:
        with contextlib.suppress(Exception):
            unit.close()


class Transaction:
    """One request's unit of work on one pooled connection, cheaper than a Session.

    The conductor's own statements are Core statements on :attr:`connection`; an ORM
    :attr:`session` is made only when a method body asks for one. On PostgreSQL the
    transaction begins at the first write: reads before it run in autocommit, which
    saves the BEGIN and COMMIT round trips of a request that only reads. Under READ
    COMMITTED (PostgreSQL's default) every statement sees its own snapshot either way, so
    a request that reads and then writes sees what it would inside one transaction;
    every write of a request is in one transaction. SQLite (no round trips, and reads
    take no locks before the first write) always runs one ordinary transaction.

    Use :func:`transaction_scope` rather than making one by hand.
    """

    def __init__(self, engine: Engine, *, writing: bool = False) -> None:
        self._engine = engine
        #: the database's name in SQLAlchemy terms: "postgresql" or "sqlite"
        self.dialect_name: str = engine.dialect.name
        self._connection: Connection | None = None
        # Only PostgreSQL begins lazily; elsewhere the transaction is there from the start.
        # ``writing``: a unit that writes anyway begins at once (no switch from autocommit
        # to the default isolation level and back on the pooled connection).
        self._writing = writing or self.dialect_name != "postgresql"
        self._session: Session | None = None

    @property
    def connection(self) -> Connection:
        """The connection, checked out of the pool on first use (for reads)."""
        conn = self._connection
        if conn is None:
            conn = self._engine.connect()
            if not self._writing:
                conn.execution_options(isolation_level="AUTOCOMMIT")
            self._connection = conn
        return conn

    def for_write(self) -> Connection:
        """The connection, inside the transaction (begun now if it was not yet)."""
        conn = self.connection
        if not self._writing:
            # Nothing to commit yet: reads ran in autocommit. Leave it for the default
            # isolation level; the next statement begins the transaction.
            conn.commit()
            conn.execution_options(isolation_level=conn.default_isolation_level)
            self._writing = True
        return conn

    @property
    def has_session(self) -> bool:
        """Whether a method body asked for the ORM session."""
        return self._session is not None

    @property
    def session(self) -> Session:
        """An ORM session in this transaction, for method bodies that need more than
        the Storage protocol (made on first use; the transaction begins then)."""
        if self._session is None:
            self._session = ConductorSession(bind=self.for_write(), expire_on_commit=False)
        return self._session

    def commit(self) -> None:
        if self._session is not None:
            self._session.flush()
        if self._connection is not None and self._writing:
            self._connection.commit()
        # NOTE: reads before the first write run in autocommit (PostgreSQL): nothing to
        # commit, and closing the connection costs no more than committing would.

    def rollback(self) -> None:
        if self._connection is not None:
            self._connection.rollback()

    def close(self) -> None:
        session, self._session = self._session, None
        conn, self._connection = self._connection, None
        try:
            if session is not None:
                session.close()
        finally:
            if conn is not None:
                conn.close()


def transaction_scope(
    engine: Engine, *, writing: bool = False
) -> contextlib.AbstractContextManager[Transaction]:
    """One :class:`Transaction`: commit when the block succeeds, roll back when it raises.

    ``writing``: the block writes whatever it reads first, so the transaction begins with
    its first statement (on PostgreSQL, instead of reading in autocommit until the first
    write).

    SQLAlchemy errors, from the block or from the commit, come out as
    ``objects.exception`` types (see :mod:`conductor.db.errors`).
    """
    return _unit_scope(Transaction(engine, writing=writing))
