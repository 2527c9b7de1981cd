"""The database's ceiling: direct SQLAlchemy in one process, no objects, no RPC.

One ORM session (one transaction) per operation on the same ``instances`` table and
database the conductor uses: ``get`` is ``session.get(Row, id)`` by primary key with the
row's columns read out; ``save`` reads the row, changes two columns, bumps ``revision``
and ``updated_at`` and commits; ``create`` inserts a full row and commits. Sequential
only: one connection, one thread, what the database gives a single caller.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from bench import _common


class _Row:
    """ORM row of ``instances`` (mapped imperatively onto the reflected table)."""


class SQLAWorker:
    def __init__(self, config: dict[str, Any]) -> None:
        self.engine = sa.create_engine(config["database_url"])
        self.sqlite = self.engine.dialect.name == "sqlite"
        table = sa.Table("instances", sa.MetaData(), autoload_with=self.engine)
        self.columns = ["metadata_" if c.name == "metadata" else c.name for c in table.columns]
        orm.registry().map_imperatively(_Row, table, properties={"metadata_": table.c["metadata"]})
        self.session = orm.sessionmaker(self.engine, expire_on_commit=False)
        self.ids: list[int] = list(config["ids"])
        self.cursor = 0
        self.flavor: Any = None
        self.created = 0

    def _id(self) -> int:
        self.cursor = (self.cursor + 7919) % len(self.ids)
        return self.ids[self.cursor]

    def _now(self) -> dt.datetime:
        now = dt.datetime.now(dt.UTC)
        return now.replace(tzinfo=None) if self.sqlite else now

    def op_get(self, i: int) -> dict[str, Any]:
        with self.session() as s:
            row = s.get(_Row, self._id())
            assert row is not None
            return {name: getattr(row, name) for name in self.columns}

    def op_save(self, i: int) -> None:
        with self.session() as s, s.begin():
            row: Any = s.get(_Row, self._id())
            assert row is not None
            row.state = _common.STATES[i % 3]
            row.task_state = f"t{i % 1000}"
            row.updated_at = self._now()
            row.revision = row.revision + 1

    def op_create(self, i: int) -> None:
        self.created += 1
        values = _common.instance_values(self.created)
        if self.flavor is None:
            with self.session() as s:
                self.flavor = s.get(_Row, self.ids[0]).flavor  # type: ignore[union-attr]
        with self.session() as s, s.begin():
            row: Any = _Row()
            for key, value in values.items():
                setattr(row, "metadata_" if key == "metadata" else key, value)
            row.uuid = str(uuid.uuid4())
            row.flavor = self.flavor
            row.created_at = row.updated_at = self._now()
            row.revision = 1
            s.add(row)

    def handle(self, command: dict[str, Any]) -> Any:
        if command["cmd"] == "run":
            op = {"get": self.op_get, "save": self.op_save, "create": self.op_create}[
                command["workload"]
            ]
            return _common.run_sequential(op, int(command["ops"]), command.get("seconds"))
        raise ValueError(f"unknown command {command['cmd']!r}")


def main(config: dict[str, Any]) -> None:
    _common.serve_commands(SQLAWorker(config).handle)
