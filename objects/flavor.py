"""``Flavor``: a named hardware template (vCPUs, memory, disk)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from objects import fields
from objects.base import VersionedObject, remotable, remotable_classmethod
from objects.persistent import PersistentObject, reads_record

if TYPE_CHECKING:
    from objects.context import Context
    from objects.futures import ObjectFuture
    from objects.storage import Record

__all__ = ["Flavor"]


class Flavor(PersistentObject, VersionedObject):
    """A flavor, stored in the ``flavors`` table.

    Version history:
        1.0: initial version.
    """

    VERSION = "1.0"

    fields = {
        "id": fields.IntegerField(read_only=True),
        "flavorid": fields.StringField(),
        "name": fields.StringField(),
        "vcpus": fields.IntegerField(),
        "memory_mb": fields.IntegerField(),
        "root_gb": fields.IntegerField(),
    }

    if TYPE_CHECKING:  # the twins are made at class creation; declared here for type checkers
        # The fields' Python types (the field descriptors are made at class creation too).
        id: int
        flavorid: str
        name: str
        vcpus: int
        memory_mb: int
        root_gb: int

        @classmethod
        def get_async(cls, context: Context, id: int) -> Flavor: ...
        @classmethod
        def get_by_flavorid_async(cls, context: Context, flavorid: str) -> ObjectFuture[Flavor]: ...
        def create_async(self) -> ObjectFuture[None]: ...

    # NOTE: the bodies say which row; @reads_record makes the Flavor from it (and lets
    # the conductor answer from the row alone).
    @remotable_classmethod
    @reads_record(by="id")
    def get(cls, context: Context, id: int) -> Record:
        """The flavor with this database id. Raises ``NotFound``."""
        return cls._db_get_record(context, id)

    @remotable_classmethod
    @reads_record
    def get_by_flavorid(cls, context: Context, flavorid: str) -> Record:
        """The flavor with this public flavor id. Raises ``NotFound``."""
        return cls._db_get_by_record(context, flavorid=flavorid)

    @remotable
    def create(self) -> None:
        """Insert this flavor; afterwards it has its ``id``."""
        self._db_create()
