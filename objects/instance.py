"""``Instance`` (a virtual machine) and ``InstanceList``."""

from __future__ import annotations

import uuid as uuid_lib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from objects import exception, fields
from objects.base import VersionedObject, remotable, remotable_classmethod
from objects.lists import ObjectListBase
from objects.persistent import PersistentObject, reads_record, saves_changes
from objects.registry import version_tuple

if TYPE_CHECKING:
    import datetime

    from objects.context import Context
    from objects.flavor import Flavor
    from objects.futures import ObjectFuture
    from objects.storage import Record

__all__ = ["INSTANCE_STATES", "Instance", "InstanceList"]

INSTANCE_STATES = ("building", "active", "stopped", "error", "deleted")


class Instance(PersistentObject, VersionedObject):
    """A virtual machine, stored in the ``instances`` table.

    Version history:
        1.0: initial version.
        1.1: added ``tags`` (list of strings, default ``[]``).
        1.2: added ``metadata`` (dict of strings, default ``{}``).
    """

    VERSION = "1.2"

    fields = {
        "id": fields.IntegerField(read_only=True),
        "uuid": fields.UUIDField(),
        "host": fields.StringField(nullable=True),
        "state": fields.EnumField(INSTANCE_STATES, default="building"),
        "vcpus": fields.IntegerField(),
        "memory_mb": fields.IntegerField(),
        "flavor": fields.ObjectField("Flavor", nullable=True),
        "task_state": fields.StringField(nullable=True),
        "created_at": fields.DateTimeField(nullable=True),
        "updated_at": fields.DateTimeField(nullable=True),
        "tags": fields.ListOfStringsField(default=[]),
        "metadata": fields.DictOfStringsField(default={}),
    }

    obj_relationships = {"flavor": [("1.0", "1.0")]}

    def obj_make_compatible(self, primitive: dict[str, Any], target_version: str) -> None:
        super().obj_make_compatible(primitive, target_version)
        target = version_tuple(target_version)
        if target < (1, 2):
            primitive.pop("metadata", None)
        if target < (1, 1):
            primitive.pop("tags", None)

    def obj_load_attr(self, attrname: str) -> None:
        """Load the unset fields from the database (one remotable ``get``)."""
        if self._context is None:
            raise exception.OrphanedObjectError(method="obj_load_attr", objtype=self.obj_name())
        object_id = self.__dict__.get("id")
        if object_id is None:
            raise exception.ObjectActionError(
                action="obj_load_attr",
                reason=f"cannot load {attrname!r} of an Instance that was never created",
            )
        loaded = type(self).get(self._context, object_id)
        d = self.__dict__
        for name in self.fields:
            if name not in d and name in loaded.__dict__:
                self._obj_set_loaded(name, loaded.__dict__[name])
        if self.obj_revision is None:
            # An object that was never read becomes one read now: later saves are
            # checked against this revision.
            self.obj_revision = loaded.obj_revision

    if TYPE_CHECKING:  # the twins are made at class creation; declared here for type checkers
        # The fields' Python types (the field descriptors are made at class creation too).
        id: int
        uuid: str
        host: str | None
        state: str
        vcpus: int
        memory_mb: int
        flavor: Flavor | None
        task_state: str | None
        created_at: datetime.datetime | None
        updated_at: datetime.datetime | None
        tags: list[str]
        metadata: dict[str, str]

        @classmethod
        def get_async(cls, context: Context, id: int) -> Instance: ...
        @classmethod
        def get_by_uuid_async(cls, context: Context, uuid: str) -> ObjectFuture[Instance]: ...
        def create_async(self) -> ObjectFuture[None]: ...
        def save_async(self) -> ObjectFuture[None]: ...
        def destroy_async(self) -> ObjectFuture[None]: ...
        def refresh_async(self) -> ObjectFuture[None]: ...

    # NOTE: the bodies say which row; @reads_record makes the Instance from it (and lets
    # the conductor answer from the row alone).
    @remotable_classmethod
    @reads_record(by="id")
    def get(cls, context: Context, id: int) -> Record:
        """The instance with this database id. Raises ``NotFound``."""
        return cls._db_get_record(context, id)

    @remotable_classmethod
    @reads_record
    def get_by_uuid(cls, context: Context, uuid: str) -> Record:
        """The instance with this UUID. Raises ``NotFound``."""
        return cls._db_get_by_record(context, uuid=fields.UUIDField().coerce(uuid))

    @remotable
    def create(self) -> None:
        """Insert this instance (a UUID is generated when unset; defaults are applied)."""
        if "uuid" not in self.__dict__:
            self.uuid = str(uuid_lib.uuid4())
        self.obj_set_defaults()
        self._db_create()

    @remotable
    @saves_changes
    def save(self) -> None:
        """Write the changed fields; a stale copy raises ``ConcurrentUpdate``."""
        self._db_save()

    @remotable
    def destroy(self) -> None:
        """Delete the instance; a stale copy raises ``ConcurrentUpdate``."""
        self._db_destroy()

    @remotable
    def refresh(self) -> None:
        """Reload the fields from the database; afterwards there are no changes."""
        self._db_refresh()


class InstanceList(ObjectListBase):
    """A list of instances, ordered by id.

    Version history:
        1.0: initial version.
    """

    VERSION = "1.0"

    fields = {"objects": fields.ListOfObjectsField("Instance")}

    obj_relationships = {"objects": [("1.0", "1.2")]}

    @classmethod
    def _make(cls, context: Context, instances: list[Instance]) -> InstanceList:
        result = cls(context, objects=instances)
        result.obj_reset_changes()
        return result

    if TYPE_CHECKING:  # the twins are made at class creation; declared here for type checkers

        @classmethod
        def get_all_async(
            cls,
            context: Context,
            filters: Mapping[str, Any] | None = None,
            limit: int | None = None,
            marker: int | None = None,
        ) -> ObjectFuture[InstanceList]: ...
        @classmethod
        def get_by_host_async(cls, context: Context, host: str) -> ObjectFuture[InstanceList]: ...

    @remotable_classmethod
    def get_all(
        cls,
        context: Context,
        filters: Mapping[str, Any] | None = None,
        limit: int | None = None,
        marker: int | None = None,
    ) -> InstanceList:
        """Instances matching ``filters`` (field -> value; a list means any of them).

        Args:
            filters: equality per field; a list, tuple or set value means IN.
            limit: at most this many.
            marker: only ids above it (the last id of the previous page).

        Raises:
            ObjectValueError: a filter names no Instance field, or limit/marker are bad.
        """
        if filters:
            unknown = sorted(set(filters) - set(Instance.fields))
            if unknown:
                raise exception.ObjectValueError(
                    reason=f"unknown Instance filter field(s) {unknown}"
                )
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise exception.ObjectValueError(
                reason=f"limit must be a non-negative int, got {limit!r}"
            )
        if marker is not None and not isinstance(marker, int):
            raise exception.ObjectValueError(
                reason=f"marker must be an instance id, got {marker!r}"
            )
        return cls._make(context, Instance._db_query(context, filters, limit, marker))

    @remotable_classmethod
    def get_by_host(cls, context: Context, host: str) -> InstanceList:
        """Every instance on ``host``."""
        return cls._make(context, Instance._db_query(context, {"host": host}))
