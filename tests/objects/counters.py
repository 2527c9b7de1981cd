"""A small remotable class for the remotable/futures tests (no database needed)."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

from objects import base, exception, fields
from objects.fixture import LocalIndirectionAPI


def make_counter(registry: Any) -> Any:
    @registry.register
    class Counter(base.VersionedObject):
        VERSION = "1.0"
        fields = {
            "id": fields.IntegerField(read_only=True),
            "value": fields.IntegerField(default=0),
            "note": fields.StringField(nullable=True),
        }

        @base.remotable_classmethod
        def get(cls: Any, context: Any, id: int) -> Any:
            if id < 0:
                raise exception.NotFound(f"no Counter {id}", objname="Counter", id=id)
            counter = cls(context, id=id, value=id * 10)
            counter.obj_reset_changes()
            counter.obj_revision = 1
            return counter

        @base.remotable_classmethod(pending=True)
        def get_by_value(cls: Any, context: Any, value: int) -> Any:
            counter = cls(context, id=value // 10, value=value)
            counter.obj_reset_changes()
            return counter

        @base.remotable_classmethod
        def total(cls, context: Any, counters: list[Any]) -> int:
            return sum(c.value for c in counters)

        @base.remotable_classmethod
        def get_not_an_object(cls, context: Any) -> Any:
            return 42

        @base.remotable
        def bump(self, by: int = 1) -> int:
            self.value += by
            self.note = f"bumped by {by}"
            return self.value  # type: ignore[no-any-return]

        @base.remotable
        def renumber(self, new_id: int) -> None:
            # What a storage refresh does: read-only fields come from the server.
            self._obj_set_loaded("id", new_id)
            self.obj_revision = (self.obj_revision or 0) + 1

        @base.remotable
        def fail(self) -> None:
            raise exception.ConcurrentUpdate(objname="Counter", id=self.id, expected=1, actual=2)

        def not_remotable(self) -> str:
            return "local only"

    return Counter


class GatedAPI(LocalIndirectionAPI):
    """A LocalIndirectionAPI whose async calls wait for ``release()`` before running."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()

    def release(self) -> None:
        self.gate.set()

    def _gated(self, fn: Any, *args: Any, **kwargs: Any) -> Future[Any]:
        def run() -> Any:
            if not self.gate.wait(10):
                raise TimeoutError("gate never released")
            return fn(*args, **kwargs)

        return self._pool.submit(run)

    def object_class_action_versions_async(self, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._gated(self.object_class_action_versions, *args)

    def object_action_async(
        self, context: Any, objinst: Any, *args: Any, **kwargs: Any
    ) -> Future[Any]:
        return self._gated(self.object_action, context, objinst.obj_clone(), *args, **kwargs)
