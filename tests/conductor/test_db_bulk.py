"""db.Transaction and the bulk statements a batch of requests uses (create_many, update_many)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from conductor import db
from objects import exception
from tests.conductor.conftest import BACKENDS, database_for


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    url = database_for(request.param, request, tmp_path, migrated=True)
    engine = db.create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def values(i: int, **overrides: Any) -> dict[str, Any]:
    row = {
        "uuid": str(uuid.uuid4()),
        "host": f"bulk-{i}",
        "state": "building",
        "vcpus": 1 + i,
        "memory_mb": 64,
        "tags": [str(i)],
        "metadata": {"i": str(i)},
    }
    row.update(overrides)
    return row


def test_create_many_returns_each_row_for_its_values_in_order(engine: sa.Engine) -> None:
    wanted = [values(i) for i in range(7)]
    with db.transaction_scope(engine) as tx:
        made = db.SQLStorage(tx).create_many("Instance", wanted)
    assert [(r["uuid"], r["vcpus"], r["tags"], r["metadata"]) for r in made] == [
        (v["uuid"], v["vcpus"], v["tags"], v["metadata"]) for v in wanted
    ]
    assert all(r["revision"] == 1 and r["created_at"] is not None for r in made)
    with db.transaction_scope(engine) as tx:
        stored = db.SQLStorage(tx).get_many("Instance", [r["id"] for r in made])
    assert {i: r["uuid"] for i, r in stored.items()} == {r["id"]: r["uuid"] for r in made}


def test_create_many_with_explicit_ids_and_a_clash_writes_nothing(engine: sa.Engine) -> None:
    with db.transaction_scope(engine) as tx:
        made = db.SQLStorage(tx).create_many(
            "Instance", [values(0, id=900_002), values(1, id=900_001)]
        )
    assert [r["id"] for r in made] == [900_002, 900_001]
    clash = [values(2), values(3, uuid=made[0]["uuid"])]
    with pytest.raises(exception.DuplicateEntry), db.transaction_scope(engine) as tx:
        db.SQLStorage(tx).create_many("Instance", clash)
    with db.transaction_scope(engine) as tx:
        assert db.SQLStorage(tx).query("Instance", {"host": "bulk-2"}) == []


def test_update_many_writes_fresh_rows_and_leaves_stale_and_missing_ones(engine: sa.Engine) -> None:
    with db.transaction_scope(engine) as tx:
        a, b, c = db.SQLStorage(tx).create_many("Instance", [values(i) for i in range(3)])
    with db.transaction_scope(engine) as tx:
        storage = db.SQLStorage(tx)
        out = storage.update_many(
            "Instance",
            [
                (a["id"], {"host": "new-a", "flavor": None}, 1),
                (b["id"], {"host": "new-b", "flavor": {"x": "y"}}, 7),  # stale revision
                (10**9, {"host": "nowhere", "flavor": {}}, 1),  # missing
                (c["id"], {"host": "new-c", "flavor": {"name": "m1"}}, 1),
            ],
        )
        assert storage.wrote
    assert out[1] is None and out[2] is None
    assert out[0] is not None and out[3] is not None
    assert (out[0]["host"], out[0]["flavor"], out[0]["revision"]) == ("new-a", None, 2)
    assert out[0]["updated_at"] > a["updated_at"]
    assert (out[3]["host"], out[3]["flavor"], out[3]["tags"]) == ("new-c", {"name": "m1"}, ["2"])
    with db.transaction_scope(engine) as tx:
        rows = db.SQLStorage(tx).get_many("Instance", [a["id"], b["id"], c["id"]])
    assert [rows[i]["host"] for i in (a["id"], b["id"], c["id"])] == ["new-a", "bulk-1", "new-c"]
    with pytest.raises(ValueError), db.transaction_scope(engine) as tx:
        db.SQLStorage(tx).update_many(
            "Instance", [(a["id"], {"host": "x"}, 2), (a["id"], {"host": "y"}, 3)]
        )


def test_a_transaction_that_fails_after_reads_and_writes_keeps_nothing(engine: sa.Engine) -> None:
    with db.transaction_scope(engine) as tx:
        (row,) = db.SQLStorage(tx).create_many("Instance", [values(5)])
    with pytest.raises(RuntimeError), db.transaction_scope(engine) as tx:
        storage = db.SQLStorage(tx)
        assert storage.get("Instance", row["id"])["host"] == "bulk-5"  # a read before any write
        storage.update("Instance", row["id"], {"host": "rolled-back"})
        storage.create("Instance", values(6))
        assert storage.wrote
        raise RuntimeError("the request failed")
    with db.transaction_scope(engine) as tx:
        storage = db.SQLStorage(tx)
        assert storage.get("Instance", row["id"])["host"] == "bulk-5"
        assert storage.query("Instance", {"host": "bulk-6"}) == []
        assert not storage.wrote


def test_a_method_body_may_use_the_session_in_the_same_transaction(engine: sa.Engine) -> None:
    with db.transaction_scope(engine) as tx:
        storage = db.SQLStorage(tx)
        made = storage.create("Instance", values(8))
        count = tx.session.execute(
            sa.text("SELECT count(*) FROM instances WHERE id = :i"), {"i": made["id"]}
        ).scalar_one()
        assert count == 1  # the session sees the protocol's uncommitted row
        tx.session.execute(
            sa.text("UPDATE instances SET host = 'by-session' WHERE id = :i"), {"i": made["id"]}
        )
        assert storage.get("Instance", made["id"])["host"] == "by-session"
    with db.transaction_scope(engine) as tx:
        assert db.SQLStorage(tx).get("Instance", made["id"])["host"] == "by-session"


def _transaction_ends(engine: sa.Engine) -> list[str]:
    """The COMMITs and ROLLBACKs SQLAlchemy hands the driver from now on."""
    sent: list[str] = []
    sa.event.listen(engine, "commit", lambda conn: sent.append("COMMIT"))
    sa.event.listen(engine, "rollback", lambda conn: sent.append("ROLLBACK"))
    return sent


def test_a_transaction_that_only_reads_runs_in_autocommit_and_commits_nothing(
    engine: sa.Engine,
) -> None:
    with db.transaction_scope(engine) as tx:
        made = db.SQLStorage(tx).create("Instance", values(1))
    sent = _transaction_ends(engine)
    with db.transaction_scope(engine) as tx:
        assert db.SQLStorage(tx).get("Instance", made["id"])["uuid"] == made["uuid"]
        if engine.dialect.name == "postgresql":
            dbapi = tx.connection.connection.dbapi_connection
            assert dbapi is not None
            assert dbapi.autocommit  # no BEGIN: each read is its own statement
            assert dbapi.info.transaction_status.name == "IDLE"
    if engine.dialect.name == "postgresql":
        assert "COMMIT" not in sent
    # A read then a write: the write is committed.
    with db.transaction_scope(engine) as tx:
        storage = db.SQLStorage(tx)
        row = storage.get("Instance", made["id"])
        storage.update("Instance", row["id"], {"host": "after-read"}, row["revision"])
    with db.transaction_scope(engine) as tx:
        assert db.SQLStorage(tx).get("Instance", made["id"])["host"] == "after-read"


def test_a_writing_transaction_begins_at_once_and_commits_or_rolls_back_as_one(
    engine: sa.Engine,
) -> None:
    with db.transaction_scope(engine) as tx:
        made = db.SQLStorage(tx).create("Instance", values(2))
    with db.transaction_scope(engine, writing=True) as tx:
        storage = db.SQLStorage(tx)
        row = storage.get("Instance", made["id"])  # inside the transaction already
        if engine.dialect.name == "postgresql":
            dbapi = tx.connection.connection.dbapi_connection
            assert dbapi is not None
            assert not dbapi.autocommit
            assert dbapi.info.transaction_status.name == "INTRANS"
        storage.update("Instance", row["id"], {"host": "written"}, row["revision"])
    with pytest.raises(RuntimeError), db.transaction_scope(engine, writing=True) as tx:
        db.SQLStorage(tx).update("Instance", made["id"], {"host": "rolled-back"})
        raise RuntimeError("the request failed")
    with db.transaction_scope(engine) as tx:
        assert db.SQLStorage(tx).get("Instance", made["id"])["host"] == "written"
    if engine.dialect.name == "postgresql":
        # The pooled connection went back as it came: not in autocommit.
        with engine.connect() as conn:
            assert conn.get_isolation_level() == conn.default_isolation_level


def test_update_many_keeps_awkward_text_and_json_values_exactly(engine: sa.Engine) -> None:
    # The rows travel to PostgreSQL as one JSON document: quotes, backslashes, control
    # characters, non-ASCII text and JSON-looking strings must come back as they went.
    awkward = ['quo"te', "back\\slash", "new\nline\ttab", "caf\u00e9 \u2603 \U0001f600", '{"a": 1}']
    with db.transaction_scope(engine) as tx:
        rows = db.SQLStorage(tx).create_many("Instance", [values(i) for i in range(len(awkward))])
    updates = [
        (
            row["id"],
            {"host": text, "task_state": None, "tags": [text, "null"], "metadata": {text: text}},
            row["revision"],
        )
        for row, text in zip(rows, awkward, strict=True)
    ]
    with db.transaction_scope(engine) as tx:
        out = db.SQLStorage(tx).update_many("Instance", updates)
    with db.transaction_scope(engine) as tx:
        stored = db.SQLStorage(tx).get_many("Instance", [row["id"] for row in rows])
    for record in (*out, *(stored[row["id"]] for row in rows)):
        assert record is not None
        text = record["host"]
        assert text in awkward
        assert (record["task_state"], record["tags"], record["metadata"]) == (
            None,
            [text, "null"],
            {text: text},
        )
    assert sorted(r["host"] for r in out if r is not None) == sorted(awkward)


def test_update_many_refuses_a_value_too_long_for_its_column_and_writes_nothing(
    engine: sa.Engine,
) -> None:
    with db.transaction_scope(engine) as tx:
        a, b = db.SQLStorage(tx).create_many("Instance", [values(i) for i in range(2)])
    with pytest.raises(exception.ObjectValueError), db.transaction_scope(engine) as tx:
        db.SQLStorage(tx).update_many(
            "Instance", [(a["id"], {"state": "active"}, 1), (b["id"], {"state": "x" * 17}, 1)]
        )
    with db.transaction_scope(engine) as tx:
        stored = db.SQLStorage(tx).get_many("Instance", [a["id"], b["id"]])
    assert [stored[i]["state"] for i in (a["id"], b["id"])] == ["building", "building"]


def test_create_many_keeps_awkward_values_and_gives_every_row_the_same_stamps(
    engine: sa.Engine,
) -> None:
    awkward = ['quo"te', "back\\slash", "new\nline", "caf\u00e9 \U0001f600", "null"]
    wanted = [
        values(
            i,
            host=text,
            task_state=None,
            flavor=None if i % 2 else {"name": text, "big": 2**70, "ratio": 0.1},
            tags=[text, "5", ""],
            metadata={text: "null"},
        )
        for i, text in enumerate(awkward)
    ]
    with db.transaction_scope(engine) as tx:
        made = db.SQLStorage(tx).create_many("Instance", wanted)
    with db.transaction_scope(engine) as tx:
        stored = db.SQLStorage(tx).get_many("Instance", [r["id"] for r in made])
    for want, got in zip(wanted, made, strict=True):
        for record in (got, stored[got["id"]]):
            assert (record["host"], record["task_state"], record["flavor"]) == (
                want["host"],
                None,
                want["flavor"],
            )
            assert (record["tags"], record["metadata"]) == (want["tags"], want["metadata"])
            assert record["revision"] == 1
            assert record["created_at"] == record["updated_at"] == made[0]["created_at"]
    assert [r["id"] for r in made] == sorted(r["id"] for r in made)


def test_bulk_writes_keep_a_lone_surrogate_in_a_json_column(engine: sa.Engine) -> None:
    # JSON escapes it where UTF-8 cannot carry it: such rows take the arrays (PostgreSQL)
    # or one statement per row (SQLite), as before the rows went as one document.
    odd = "half \ud800 of a pair"
    with db.transaction_scope(engine) as tx:
        a, b = db.SQLStorage(tx).create_many("Instance", [values(0, tags=[odd]), values(1)])
        out = db.SQLStorage(tx).update_many(
            "Instance", [(a["id"], {"metadata": {"k": odd}}, 1), (b["id"], {"metadata": {}}, 1)]
        )
    assert a["tags"] == [odd]
    assert [r["metadata"] if r else None for r in out] == [{"k": odd}, {}]
    with db.transaction_scope(engine) as tx:
        stored = db.SQLStorage(tx).get_many("Instance", [a["id"], b["id"]])
    assert (stored[a["id"]]["tags"], stored[a["id"]]["metadata"]) == ([odd], {"k": odd})


def test_a_scoped_update_many_writes_only_its_projects_rows(engine: sa.Engine) -> None:
    with db.transaction_scope(engine) as tx:
        mine = db.SQLStorage(tx, project_id="p1").create_many("Instance", [values(0)])[0]
        theirs = db.SQLStorage(tx, project_id="p2").create_many("Instance", [values(1)])[0]
    with db.transaction_scope(engine) as tx:
        out = db.SQLStorage(tx, project_id="p1", scoped=True).update_many(
            "Instance", [(mine["id"], {"host": "x"}, 1), (theirs["id"], {"host": "x"}, 1)]
        )
    assert out[0] is not None and out[0]["host"] == "x" and out[1] is None
    with db.transaction_scope(engine) as tx:
        assert db.SQLStorage(tx).get("Instance", theirs["id"])["host"] == "bulk-1"


def test_bulk_writes_keep_a_nul_in_a_text_whole_or_refuse_it(engine: sa.Engine) -> None:
    # SQLite keeps a NUL in a text (its JSON functions would cut the text there);
    # PostgreSQL refuses it before sending, and the transaction goes on.
    nul = "a\x00b"
    sqlite = engine.dialect.name == "sqlite"
    with db.transaction_scope(engine) as tx:
        storage = db.SQLStorage(tx)
        a, b = storage.create_many("Instance", [values(0), values(1)])
        if sqlite:
            made = storage.create_many("Instance", [values(2, host=nul), values(3)])
            out = storage.update_many(
                "Instance", [(a["id"], {"host": nul}, 1), (b["id"], {"host": "c"}, 1)]
            )
            assert made[0]["host"] == nul
            assert [r["host"] if r else None for r in out] == [nul, "c"]
            assert storage.get("Instance", a["id"])["host"] == nul
        else:
            with pytest.raises(exception.ObjectValueError):
                storage.create_many("Instance", [values(2, host=nul), values(3)])
            with pytest.raises(exception.ObjectValueError):
                storage.update_many(
                    "Instance", [(a["id"], {"host": nul}, 1), (b["id"], {"host": "c"}, 1)]
                )
            assert storage.get("Instance", a["id"])["host"] == "bulk-0"


def test_bulk_reads_and_updates_plan_for_the_table_as_it_is_now(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """psycopg prepares a statement it ran five times, and PostgreSQL keeps a prepared
    statement's generic plan until the table is analyzed (never, without autovacuum):
    a batch update or a read by a list of ids planned while ``instances`` held a few rows
    read every row once it held many (a sequential scan per batch, its cost growing with
    the table)."""
    url = database_for("postgresql", request, tmp_path, migrated=True)
    engine = db.create_engine(url, pool_size=1, max_overflow=0)  # one connection
    try:
        with db.transaction_scope(engine) as tx:
            made = db.SQLStorage(tx).create_many("Instance", [values(i) for i in range(40)])
        ids = [r["id"] for r in made]
        for n in range(15):
            with db.transaction_scope(engine) as tx:
                assert len(db.SQLStorage(tx).get_many("Instance", ids)) == len(ids)
                db.SQLStorage(tx).update_many(
                    "Instance", [(i, {"state": f"s{n}"}, None) for i in ids]
                )
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO instances (uuid, state, vcpus, memory_mb, revision, created_at,"
                    " tags, metadata) SELECT gen_random_uuid()::text, 'grown', 1, 64, 1, now(),"
                    " '[]', '{}' FROM generate_series(1, 20000)"
                )
            )

        with db.transaction_scope(engine) as tx:
            assert len(db.SQLStorage(tx).get_many("Instance", ids)) == len(ids)
            out = db.SQLStorage(tx).update_many(
                "Instance", [(i, {"state": "last"}, None) for i in ids]
            )
            read = tx.connection.execute(
                sa.text(
                    "SELECT seq_scan, seq_tup_read FROM pg_stat_xact_user_tables"
                    " WHERE relname = 'instances'"
                )
            ).one()

        assert [r["state"] for r in out if r is not None] == ["last"] * len(ids)
        assert read.seq_tup_read < 20_000, f"the read and update read {read.seq_tup_read} rows"
    finally:
        engine.dispose()
