"""The Storage contract (objects/storage.py), run against every implementation.

``SQLStorage`` runs on SQLite and, when CONDUCTOR_TEST_DATABASE_URL is set, PostgreSQL.
``objects.fixture.MemoryStorage`` runs the same tests when it is importable, so the
in-memory double the object tests use provably behaves like the real thing.
"""

from __future__ import annotations

import datetime as dt
import importlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conductor import db
from objects import exception
from objects.storage import Storage
from tests.conductor.conftest import BACKENDS, database_for

IMPLEMENTATIONS = [f"sql-{backend}" for backend in BACKENDS]
try:  # another helper writes objects/fixture.py; include it once it is there
    _fixture: Any = importlib.import_module("objects.fixture")
    IMPLEMENTATIONS.append("memory")
except ImportError:
    _fixture = None


#: For behaviour only SQLStorage promises (see the NOTE on each use).
sql_only = pytest.mark.parametrize(
    "storage", [i for i in IMPLEMENTATIONS if i.startswith("sql-")], indirect=True
)


@pytest.fixture(params=IMPLEMENTATIONS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "memory":
        import objects

        objects.register_all()  # MemoryStorage takes its columns from the registered classes
        yield _fixture.MemoryStorage()
        return
    url = database_for(request.param.removeprefix("sql-"), request, tmp_path, migrated=True)
    engine = db.create_engine(url)
    try:
        with db.session_scope(db.session_factory(engine)) as session:
            yield db.SQLStorage(session)
    finally:
        engine.dispose()


def instance_values(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "host": "node-1",
        "state": "building",
        "vcpus": 2,
        "memory_mb": 2048,
        # The objects apply field defaults before create; SQL's server defaults for
        # these are covered in test_db_engine.py.
        "tags": [],
        "metadata": {},
    }
    values.update(overrides)
    return values


# -- create / get -------------------------------------------------------------------------


def test_create_returns_the_whole_row_with_id_revision_and_aware_timestamps(
    storage: Storage,
) -> None:
    record = storage.create("Instance", instance_values(host="node-7"))

    assert isinstance(record["id"], int)
    assert record["revision"] == 1
    assert record["host"] == "node-7"
    assert record["tags"] == [] and record["metadata"] == {}
    for name in ("created_at", "updated_at"):
        assert isinstance(record[name], dt.datetime)
        assert record[name].utcoffset() == dt.timedelta(0)
    assert abs(record["created_at"] - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


def test_create_gives_each_row_a_new_increasing_id(storage: Storage) -> None:
    ids = [storage.create("Instance", instance_values())["id"] for _ in range(3)]

    assert ids == sorted(set(ids))


def test_get_returns_what_create_returned(storage: Storage) -> None:
    created = storage.create(
        "Instance",
        instance_values(tags=["a", "b"], metadata={"k": "v"}, flavor={"name": "m1", "vcpus": 2}),
    )

    assert storage.get("Instance", created["id"]) == created


def test_get_of_a_missing_id_raises_not_found_with_its_fields(storage: Storage) -> None:
    with pytest.raises(exception.NotFound) as caught:
        storage.get("Instance", 424242)

    assert caught.value.kwargs["objname"] == "Instance"
    assert caught.value.kwargs["id"] == 424242


# NOTE: MemoryStorage answers an unknown object name with NotFound (its tables appear on
# first use); only SQLStorage knows which names have tables.
@sql_only
def test_unknown_object_name_raises_unsupported_object(storage: Storage) -> None:
    with pytest.raises(exception.UnsupportedObjectError):
        storage.get("NoSuchThing", 1)


def test_get_by_returns_the_lowest_id_matching_every_field(storage: Storage) -> None:
    first = storage.create("Instance", instance_values(host="h", state="active"))
    storage.create("Instance", instance_values(host="h", state="active"))
    storage.create("Instance", instance_values(host="other", state="active"))

    assert storage.get_by("Instance", host="h", state="active")["id"] == first["id"]
    assert storage.get_by("Instance", uuid=first["uuid"]) == first


def test_get_by_without_a_match_raises_not_found(storage: Storage) -> None:
    storage.create("Instance", instance_values(host="h"))

    with pytest.raises(exception.NotFound):
        storage.get_by("Instance", host="nowhere")


def test_create_with_a_taken_unique_key_raises_duplicate_entry(storage: Storage) -> None:
    taken = storage.create("Instance", instance_values())

    with pytest.raises(exception.DuplicateEntry) as caught:
        storage.create("Instance", instance_values(uuid=taken["uuid"]))

    assert caught.value.kwargs["objname"] == "Instance"
    assert "uuid" in caught.value.kwargs["columns"]


def test_create_refuses_unknown_fields(storage: Storage) -> None:
    with pytest.raises(exception.ObjectValueError):
        storage.create("Instance", instance_values(no_such_field=1))

    assert storage.query("Instance") == []


# NOTE: MemoryStorage stores whatever it is given (the objects' fields have coerced values
# before they reach a storage); SQLStorage refuses what a PostgreSQL column would refuse,
# on SQLite too, so both databases fail the same way.
@sql_only
@pytest.mark.parametrize(
    "bad",
    [{"vcpus": "many"}, {"state": None}, {"host": 12}, {"vcpus": True}, {"host": "h" * 256}],
    ids=["wrong-type", "null-in-not-null", "int-for-string", "bool-for-int", "too-long"],
)
def test_create_refuses_values_the_columns_refuse(storage: Storage, bad: dict[str, Any]) -> None:
    with pytest.raises(exception.ObjectValueError):
        storage.create("Instance", instance_values(**bad))

    assert storage.query("Instance") == []


def test_create_of_other_built_in_objects(storage: Storage) -> None:
    flavor = storage.create(
        "Flavor",
        {"flavorid": "m1.small", "name": "small", "vcpus": 1, "memory_mb": 512, "root_gb": 1},
    )
    node = storage.create(
        "ComputeNode",
        {"host": "node-1", "vcpus": 8, "vcpus_used": 0, "memory_mb": 8192, "memory_mb_used": 0},
    )

    assert storage.get_by("Flavor", flavorid="m1.small") == flavor
    assert storage.get_by("ComputeNode", host="node-1") == node
    assert flavor["revision"] == node["revision"] == 1


# -- query ----------------------------------------------------------------------------------


def test_query_returns_rows_ordered_by_id_and_filters_by_equality(storage: Storage) -> None:
    a = storage.create("Instance", instance_values(host="h1"))
    b = storage.create("Instance", instance_values(host="h2"))
    c = storage.create("Instance", instance_values(host="h1"))

    assert [r["id"] for r in storage.query("Instance")] == [a["id"], b["id"], c["id"]]
    assert [r["id"] for r in storage.query("Instance", {"host": "h1"})] == [a["id"], c["id"]]
    assert storage.query("Instance", {"host": "h1", "uuid": b["uuid"]}) == []


def test_query_with_a_list_filter_means_in(storage: Storage) -> None:
    a = storage.create("Instance", instance_values(host="h1", state="active"))
    storage.create("Instance", instance_values(host="h2", state="stopped"))
    c = storage.create("Instance", instance_values(host="h3", state="error"))

    found = storage.query("Instance", {"state": ["active", "error"]})
    assert [r["id"] for r in found] == [a["id"], c["id"]]
    assert [r["id"] for r in storage.query("Instance", {"host": ("h3",)})] == [c["id"]]
    assert storage.query("Instance", {"host": []}) == []


def test_query_with_none_matches_null(storage: Storage) -> None:
    unplaced = storage.create("Instance", instance_values(host=None))
    placed = storage.create("Instance", instance_values(host="h1"))

    assert [r["id"] for r in storage.query("Instance", {"host": None})] == [unplaced["id"]]
    both = storage.query("Instance", {"host": [None, "h1"]})
    assert [r["id"] for r in both] == [unplaced["id"], placed["id"]]


def test_query_pages_with_limit_and_marker(storage: Storage) -> None:
    ids = [storage.create("Instance", instance_values())["id"] for _ in range(7)]

    pages: list[list[int]] = []
    marker = None
    while True:
        page = storage.query("Instance", limit=3, marker=marker)
        if not page:
            break
        pages.append([r["id"] for r in page])
        marker = page[-1]["id"]

    assert pages == [ids[0:3], ids[3:6], ids[6:7]]
    assert storage.query("Instance", limit=0) == []


def test_query_on_an_unknown_field_raises_object_value_error(storage: Storage) -> None:
    with pytest.raises(exception.ObjectValueError):
        storage.query("Instance", {"colour": "blue"})


# -- update ---------------------------------------------------------------------------------


def test_update_writes_only_the_given_fields_and_bumps_revision(storage: Storage) -> None:
    created = storage.create("Instance", instance_values(host="h1", task_state="spawning"))

    updated = storage.update(
        "Instance", created["id"], {"host": "h2", "tags": ["x"]}, expected_revision=1
    )

    assert updated["revision"] == 2
    assert updated["host"] == "h2" and updated["tags"] == ["x"]
    assert updated["task_state"] == "spawning" and updated["uuid"] == created["uuid"]
    assert updated["created_at"] == created["created_at"]
    assert storage.get("Instance", created["id"]) == updated


def test_updated_at_strictly_increases_with_every_update(storage: Storage) -> None:
    record = storage.create("Instance", instance_values())
    stamps = [record["updated_at"]]

    for i in range(25):
        record = storage.update("Instance", record["id"], {"vcpus": i + 1})
        stamps.append(record["updated_at"])

    assert all(later > earlier for earlier, later in zip(stamps, stamps[1:], strict=False))
    assert all(s.tzinfo is not None for s in stamps)
    assert record["revision"] == 26


def test_update_with_a_stale_revision_raises_and_writes_nothing(storage: Storage) -> None:
    created = storage.create("Instance", instance_values(host="h1"))
    storage.update("Instance", created["id"], {"host": "h2"}, expected_revision=1)

    with pytest.raises(exception.ConcurrentUpdate) as caught:
        storage.update("Instance", created["id"], {"host": "stale"}, expected_revision=1)

    assert caught.value.kwargs == {
        "objname": "Instance",
        "id": created["id"],
        "expected": 1,
        "actual": 2,
    }
    after = storage.get("Instance", created["id"])
    assert after["host"] == "h2" and after["revision"] == 2


def test_update_of_a_missing_row_raises_not_found(storage: Storage) -> None:
    with pytest.raises(exception.NotFound):
        storage.update("Instance", 999_999, {"host": "h"})
    with pytest.raises(exception.NotFound):
        storage.update("Instance", 999_999, {"host": "h"}, expected_revision=1)


def test_update_onto_a_taken_unique_key_raises_duplicate_entry(storage: Storage) -> None:
    a = storage.create("Instance", instance_values())
    b = storage.create("Instance", instance_values())

    with pytest.raises(exception.DuplicateEntry):
        storage.update("Instance", b["id"], {"uuid": a["uuid"]})


def test_update_refuses_unknown_fields(storage: Storage) -> None:
    created = storage.create("Instance", instance_values())

    with pytest.raises(exception.ObjectValueError):
        storage.update("Instance", created["id"], {"colour": "blue"})

    assert storage.get("Instance", created["id"])["revision"] == 1


@sql_only
def test_update_refuses_values_the_columns_refuse(storage: Storage) -> None:
    created = storage.create("Instance", instance_values())

    with pytest.raises(exception.ObjectValueError):
        storage.update("Instance", created["id"], {"memory_mb": "lots"})
    with pytest.raises(exception.ObjectValueError):
        storage.update("Instance", created["id"], {"tags": {"not", "json"}})

    assert storage.get("Instance", created["id"])["revision"] == 1


# -- delete ---------------------------------------------------------------------------------


def test_delete_removes_the_row(storage: Storage) -> None:
    created = storage.create("Instance", instance_values())

    storage.delete("Instance", created["id"], expected_revision=1)

    with pytest.raises(exception.NotFound):
        storage.get("Instance", created["id"])
    with pytest.raises(exception.NotFound):
        storage.delete("Instance", created["id"])


def test_delete_with_a_stale_revision_raises_and_keeps_the_row(storage: Storage) -> None:
    created = storage.create("Instance", instance_values())
    storage.update("Instance", created["id"], {"host": "h9"})

    with pytest.raises(exception.ConcurrentUpdate) as caught:
        storage.delete("Instance", created["id"], expected_revision=1)

    assert caught.value.kwargs["actual"] == 2
    assert storage.get("Instance", created["id"])["host"] == "h9"


# -- get_many -------------------------------------------------------------------------------


def test_get_many_returns_found_rows_by_id_and_leaves_out_missing_ones(storage: Storage) -> None:
    a = storage.create("Instance", instance_values())
    b = storage.create("Instance", instance_values())

    found = storage.get_many("Instance", [b["id"], 999_999, a["id"], b["id"]])

    assert found == {a["id"]: a, b["id"]: b}
    assert storage.get_many("Instance", []) == {}
