"""MemoryStorage keeps the Storage protocol; LocalIndirectionAPI really crosses JSON."""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest

import objects
from objects import base, exception
from objects.context import Context, RequestContext
from objects.fixture import LocalIndirectionAPI, MemoryStorage

VALUES = {
    "uuid": "12345678-1234-5678-1234-567812345678",
    "state": "active",
    "vcpus": 1,
    "memory_mb": 1,
    "tags": [],
    "metadata": {},
}


def test_ids_and_revisions_start_at_one_and_revision_bumps(storage: MemoryStorage) -> None:
    row = storage.create("Instance", VALUES)
    assert (row["id"], row["revision"]) == (1, 1)
    assert row["host"] is None  # nullable columns exist, like in SQL
    assert (
        storage.create("Instance", {**VALUES, "uuid": "22345678-1234-5678-1234-567812345678"})["id"]
        == 2
    )
    updated = storage.update("Instance", 1, {"host": "h"}, expected_revision=1)
    assert updated["revision"] == 2 and updated["host"] == "h"
    assert (
        storage.create(
            "Flavor", {"flavorid": "f", "name": "n", "vcpus": 1, "memory_mb": 1, "root_gb": 1}
        )["id"]
        == 1
    )


def test_timestamps_only_for_classes_with_them_and_strictly_increasing(
    storage: MemoryStorage,
) -> None:
    row = storage.create("Instance", VALUES)
    assert row["created_at"] == row["updated_at"]
    stamps = [storage.update("Instance", 1, {"host": str(i)})["updated_at"] for i in range(20)]
    assert all(a < b for a, b in zip([row["updated_at"], *stamps], stamps, strict=False))
    flavor = storage.create(
        "Flavor", {"flavorid": "f", "name": "n", "vcpus": 1, "memory_mb": 1, "root_gb": 1}
    )
    assert "created_at" not in flavor


def test_errors_follow_the_protocol(storage: MemoryStorage) -> None:
    with pytest.raises(exception.NotFound):
        storage.get("Instance", 1)
    with pytest.raises(exception.NotFound):
        storage.update("Instance", 1, {"host": "x"})
    with pytest.raises(exception.NotFound):
        storage.delete("Instance", 1)
    storage.create("Instance", VALUES)
    with pytest.raises(exception.ConcurrentUpdate):
        storage.update("Instance", 1, {"host": "x"}, expected_revision=5)
    with pytest.raises(exception.ConcurrentUpdate):
        storage.delete("Instance", 1, expected_revision=5)
    with pytest.raises(exception.ObjectValueError, match="bogus"):
        storage.query("Instance", {"bogus": 1})
    with pytest.raises(exception.ObjectValueError, match="bogus"):
        storage.update("Instance", 1, {"bogus": 1})
    with pytest.raises(exception.ObjectValueError, match="needs a value"):
        storage.create("Instance", {"uuid": "32345678-1234-5678-1234-567812345678"})
    with pytest.raises(exception.DuplicateEntry):
        storage.create("Instance", VALUES)
    with pytest.raises(exception.UnsupportedObjectError):
        storage.get("Martian", 1)
    assert storage.get("Instance", 1)["host"] is None


def test_records_are_copies(storage: MemoryStorage) -> None:
    row = storage.create("Instance", {**VALUES, "tags": ["a"]})
    row["tags"].append("mutated")
    assert storage.get("Instance", 1)["tags"] == ["a"]
    assert storage.get_many("Instance", [1, 2]) == {1: storage.get("Instance", 1)}


def test_query_orders_by_id_and_applies_marker_limit_and_in(storage: MemoryStorage) -> None:
    for i in range(5):
        storage.create(
            "Instance", {**VALUES, "uuid": f"00000000-0000-0000-0000-00000000000{i}", "vcpus": i}
        )
    assert [r["id"] for r in storage.query("Instance")] == [1, 2, 3, 4, 5]
    assert [r["id"] for r in storage.query("Instance", marker=2, limit=2)] == [3, 4]
    assert [r["vcpus"] for r in storage.query("Instance", {"vcpus": (0, 4)})] == [0, 4]
    assert storage.get_by("Instance", vcpus=3)["id"] == 4


def test_storage_is_thread_safe(storage: MemoryStorage) -> None:
    row = storage.create("Instance", VALUES)

    def bump() -> None:
        for _ in range(50):
            storage.update("Instance", row["id"], {"host": "x"})

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert storage.get("Instance", row["id"])["revision"] == 201


def test_server_side_context_is_a_fresh_copy_with_the_database(storage: MemoryStorage) -> None:
    seen: list[Any] = []

    class Probe(base.VersionedObject):
        @base.remotable_classmethod
        def where(cls, context: Any) -> str:
            seen.append(context)
            return str(context.has_db)

    base.VersionedObjectRegistry.register(Probe)
    api = LocalIndirectionAPI(storage)
    base.set_indirection_api(api)
    try:
        caller = RequestContext(user_id="u", request_id="req-1")
        assert Probe.where(caller) == "True"
        assert seen[0] is not caller
        assert seen[0].user_id == "u" and seen[0].request_id == "req-1"
        assert not caller.has_db
        assert not seen[0].has_db  # detached again after the call
    finally:
        api.close()


def test_exceptions_come_back_rebuilt_from_their_fields(storage: MemoryStorage) -> None:
    api = LocalIndirectionAPI(storage)
    base.set_indirection_api(api)
    try:
        with pytest.raises(exception.NotFound) as caught:
            objects.Instance.get(RequestContext(), 5)
        assert caught.value.kwargs == {"objname": "Instance", "id": 5}
        assert caught.value.__traceback__ is not None
    finally:
        api.close()


def test_async_twins_run_the_call_on_another_thread(storage: MemoryStorage) -> None:
    served_on: list[str] = []

    class Probe(base.VersionedObject):
        @base.remotable_classmethod
        def where(cls, context: Any) -> None:
            served_on.append(threading.current_thread().name)

    base.VersionedObjectRegistry.register(Probe)
    api = LocalIndirectionAPI(storage)
    base.set_indirection_api(api)
    try:
        Probe.where_async(RequestContext()).wait(5)  # type: ignore[attr-defined]
        Probe.where(RequestContext())
    finally:
        api.close()
    assert served_on[0].startswith("objects-local-api")
    assert served_on[1] == threading.current_thread().name


def test_isolated_registry_forgets_what_was_registered_inside() -> None:
    from objects.fixture import isolated_registry

    with isolated_registry() as registry:
        registry.register(type("Temp", (base.VersionedObject,), {}))
        assert "Temp" in registry.obj_classes()
    assert "Temp" not in base.VersionedObjectRegistry.obj_classes()
    assert "Instance" in base.VersionedObjectRegistry.obj_classes()


class ForeignContext:
    """An OVO-style caller's own context class: identity and ``to_dict()``, no ``db``."""

    def __init__(self) -> None:
        self.user_id = "u"
        self.project_id = "p"
        self.request_id = "req-foreign"
        self.roles = ["reader"]
        self.is_admin = False
        self.auth_token = "not sent"

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "project_id": self.project_id,
            "request_id": self.request_id,
            "roles": self.roles,
            "is_admin": self.is_admin,
        }


def test_a_callers_own_context_class_works_as_it_is(storage: MemoryStorage) -> None:
    # objects.context.Context is a type only: nothing checks a context's class at run time,
    # so a context without ``db`` (it never needs one on the calling side) goes through.
    ctx = cast(Context, ForeignContext())
    api = LocalIndirectionAPI(storage)
    base.set_indirection_api(api)
    try:
        inst = objects.Instance(ctx, **VALUES)
        inst.create()
        again = objects.Instance.get(ctx, inst.id)
        assert again._context is ctx
        assert again.uuid == VALUES["uuid"]
        assert objects.Instance.get_async(ctx, inst.id).wait(5).id == inst.id
    finally:
        api.close()


def test_request_context_is_a_context() -> None:
    context: Context = RequestContext()  # checked by mypy (tests/ is type-checked)
    assert context.to_dict()["request_id"] == context.request_id
