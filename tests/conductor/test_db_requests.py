"""Exactly-once helpers: request results stored in the request's own transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy.orm import Session, sessionmaker

from conductor import db
from conductor.db import requests
from objects import exception


@pytest.fixture
def factory(migrated_database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = db.create_engine(migrated_database_url)
    try:
        yield db.session_factory(engine)
    finally:
        engine.dispose()


def test_an_unknown_request_id_is_not_found(factory: sessionmaker[Session]) -> None:
    with db.session_scope(factory) as session:
        assert requests.lookup_result(session, "req-unknown") == (False, None)


def test_a_stored_result_is_found_after_commit(factory: sessionmaker[Session]) -> None:
    result = {"updates": {"host": "h", "obj_revision": 3}, "result": [1, "two", None]}
    with db.session_scope(factory) as session:
        requests.store_result(session, "req-1", result)
        assert requests.lookup_result(session, "req-1") == (True, result)

    with db.session_scope(factory) as session:
        assert requests.lookup_result(session, "req-1") == (True, result)


def test_a_stored_none_result_is_told_apart_from_an_unknown_id(
    factory: sessionmaker[Session],
) -> None:
    with db.session_scope(factory) as session:
        requests.store_result(session, "req-none", None)

    with db.session_scope(factory) as session:
        assert requests.lookup_result(session, "req-none") == (True, None)


def test_a_result_stored_in_a_rolled_back_transaction_is_gone(
    factory: sessionmaker[Session],
) -> None:
    with pytest.raises(RuntimeError), db.session_scope(factory) as session:
        db.SQLStorage(session).create(
            "Flavor", {"flavorid": "f", "name": "n", "vcpus": 1, "memory_mb": 1, "root_gb": 1}
        )
        requests.store_result(session, "req-rolled-back", {"ok": True})
        raise RuntimeError("the method body failed after writing")

    with db.session_scope(factory) as session:
        assert requests.lookup_result(session, "req-rolled-back") == (False, None)
        assert db.SQLStorage(session).query("Flavor") == []


def test_storing_the_same_request_id_twice_raises_duplicate_entry(
    factory: sessionmaker[Session],
) -> None:
    with db.session_scope(factory) as session:
        requests.store_result(session, "req-twice", 1)

    with pytest.raises(exception.DuplicateEntry) as caught, db.session_scope(factory) as session:
        requests.store_result(session, "req-twice", 2)

    assert caught.value.kwargs["objname"] == requests.OBJNAME
    with db.session_scope(factory) as session:
        assert requests.lookup_result(session, "req-twice") == (True, 1)


def test_a_result_json_cannot_encode_raises_object_value_error(
    factory: sessionmaker[Session],
) -> None:
    with pytest.raises(exception.ObjectValueError), db.session_scope(factory) as session:
        requests.store_result(session, "req-set", {1, 2})


def test_prune_forgets_only_old_results(factory: sessionmaker[Session]) -> None:
    with db.session_scope(factory) as session:
        requests.store_result(session, "req-old", "old")
        requests.store_result(session, "req-new", "new")
        table = db.get_table("Instance").metadata.tables["conductor_requests"]
        session.execute(
            sqlalchemy.update(table)
            .where(table.c.request_id == "req-old")
            .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
        )

    with db.session_scope(factory) as session:
        removed = requests.prune(session, older_than_seconds=3600)

    assert removed == 1
    with db.session_scope(factory) as session:
        assert requests.lookup_result(session, "req-old") == (False, None)
        assert requests.lookup_result(session, "req-new") == (True, "new")


def test_many_results_stored_at_once_read_back_as_stored(factory: sessionmaker[Session]) -> None:
    results: list[tuple[str, Any] | tuple[str, Any, str | None]] = [
        ("req-m1", [{"updated_at": "2026-01-01T00:00:00.000001+00:00", "obj_revision": 2}, None]),
        ("req-m2", None, "d" * 64),
        ("req-m3", {'quote"s': "back\\slash", "unicode": "é✓", "n": [1.5, True, None]}, None),
        ("req-m4", "plain", "e" * 64),
    ]
    with db.session_scope(factory) as session:
        requests.store_results(session, results)

    with db.session_scope(factory) as session:
        found = requests.find_many(session, [r[0] for r in results])
    assert {rid: (s.result, s.digest) for rid, s in found.items()} == {
        item[0]: (item[1], item[2] if len(item) > 2 else None) for item in results
    }
    with db.session_scope(factory) as session:
        assert requests.lookup_result(session, "req-m2") == (True, None)


def test_results_stored_on_a_connection_are_stored_as_through_a_session(
    factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A connection (the lanes') takes the driver's own statement where it can: the rows
    # must be the very ones the session's statement writes.
    now = dt.datetime(2031, 1, 1, 12, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    monkeypatch.setattr(requests, "utcnow", lambda: now)
    results: list[tuple[str, Any] | tuple[str, Any, str | None]] = [
        ("a", [{"x": "é\u2028", "n": 1.5, "b": 2**70}, None], "d" * 64),
        ("b", None),
        ("c", {"k": [True, None]}, None),
    ]
    with db.session_scope(factory) as session:
        requests.store_results(session, results)
        requests.store_results(session.connection(), [(f"{r[0]}-c", *r[1:]) for r in results])
    with db.session_scope(factory) as session:
        raw = session.execute(
            sqlalchemy.text(
                "SELECT request_id, CAST(result AS TEXT), digest, CAST(created_at AS TEXT) "
                "FROM conductor_requests ORDER BY request_id"
            )
        ).all()
    by_id = {row[0]: tuple(row[1:]) for row in raw}
    assert len(by_id) == 6
    for item in results:
        assert by_id[item[0]] == by_id[f"{item[0]}-c"]


def test_storing_many_with_a_known_request_id_raises_duplicate_entry_and_stores_none(
    factory: sessionmaker[Session],
) -> None:
    with db.session_scope(factory) as session:
        requests.store_result(session, "req-known", 1)

    with pytest.raises(exception.DuplicateEntry), db.session_scope(factory) as session:
        requests.store_results(session, [("req-fresh", 2), ("req-known", 3)])

    with db.session_scope(factory) as session:
        assert requests.lookup_result(session, "req-fresh") == (False, None)
        assert requests.lookup_result(session, "req-known") == (True, 1)


def test_storing_many_refuses_a_result_json_cannot_encode(factory: sessionmaker[Session]) -> None:
    with pytest.raises(exception.ObjectValueError), db.session_scope(factory) as session:
        requests.store_results(session, [("req-ok", 1), ("req-set", {1, 2})])
