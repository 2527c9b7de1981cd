"""``ComputeNode``: a hypervisor host and how much of it is used."""

from __future__ import annotations

from typing import TYPE_CHECKING

from objects import fields
from objects.base import VersionedObject, remotable, remotable_classmethod
from objects.persistent import PersistentObject, reads_record, saves_changes

if TYPE_CHECKING:
    from objects.context import Context
    from objects.futures import ObjectFuture
    from objects.storage import Record

__all__ = ["ComputeNode"]


class ComputeNode(PersistentObject, VersionedObject):
    """A compute node, stored in the ``compute_nodes`` table (one row per host).

    Version history:
        1.0: initial version.
    """

    VERSION = "1.0"

    fields = {
        "id": fields.IntegerField(read_only=True),
        "host": fields.StringField(),
        "vcpus": fields.IntegerField(),
        "vcpus_used": fields.IntegerField(),
        "memory_mb": fields.IntegerField(),
        "memory_mb_used": fields.IntegerField(),
    }

    if TYPE_CHECKING:  # the twins are made at class creation; declared here for type checkers
        # The fields' Python types (the field descriptors are made at class creation too).
        id: int
        host: str
        vcpus: int
        vcpus_used: int
        memory_mb: int
        memory_mb_used: int

        @classmethod
        def get_by_host_async(cls, context: Context, host: str) -> ObjectFuture[ComputeNode]: ...
        def create_async(self) -> ObjectFuture[None]: ...
        def save_async(self) -> ObjectFuture[None]: ...

    @remotable_classmethod
    @reads_record
    def get_by_host(cls, context: Context, host: str) -> Record:
        """The node of ``host`` (made from the record). Raises ``NotFound``."""
        return cls._db_get_by_record(context, host=host)

    @remotable
    def create(self) -> None:
        """Insert this node; afterwards it has its ``id``."""
        self._db_create()

    @remotable
    @saves_changes
    def save(self) -> None:
        """Write the changed fields; a stale copy raises ``ConcurrentUpdate``."""
        self._db_save()
