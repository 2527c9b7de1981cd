"""A compute process at another object version than the conductor (rolling upgrade).

Run as ``python peer_client.py MODE TRANSPORT_URL TOPIC INSTANCE_ID`` where MODE is
``old`` (Instance 1.0: no tags, no metadata) or ``ahead`` (Instance 1.3: an extra
``description`` field the conductor does not know). It registers only its own classes,
reads the instance with ``get_async``, changes ``host`` and saves, then prints one JSON
line describing what it saw.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import conductor
from objects import base, fields
from objects.context import RequestContext


@base.VersionedObjectRegistry.register
class Flavor(base.VersionedObject):
    VERSION = "1.0"
    fields = {
        "id": fields.IntegerField(read_only=True),
        "flavorid": fields.StringField(),
        "name": fields.StringField(),
        "vcpus": fields.IntegerField(),
        "memory_mb": fields.IntegerField(),
        "root_gb": fields.IntegerField(),
    }


_V10_FIELDS: dict[str, Any] = {
    "id": fields.IntegerField(read_only=True),
    "uuid": fields.UUIDField(),
    "host": fields.StringField(nullable=True),
    "state": fields.EnumField(["building", "active", "stopped", "error", "deleted"]),
    "vcpus": fields.IntegerField(),
    "memory_mb": fields.IntegerField(),
    "flavor": fields.ObjectField("Flavor", nullable=True),
    "task_state": fields.StringField(nullable=True),
    "created_at": fields.DateTimeField(nullable=True),
    "updated_at": fields.DateTimeField(nullable=True),
}


class _InstanceMethods(base.VersionedObject):
    """Remotable declarations only: with a conductor connected, bodies never run here."""

    if TYPE_CHECKING:  # the async twin ``remotable_classmethod`` adds

        @classmethod
        def get_async(cls, context: Any, id: int) -> Any: ...

    @base.remotable_classmethod
    def get(cls, context: Any, id: int) -> Any:
        raise AssertionError("runs on the conductor")

    @base.remotable
    def save(self) -> None:
        raise AssertionError("runs on the conductor")


def define(mode: str) -> type[_InstanceMethods]:
    if mode == "old":

        @base.VersionedObjectRegistry.register
        class Instance(_InstanceMethods):
            VERSION = "1.0"
            fields = dict(_V10_FIELDS)
            obj_relationships = {"flavor": [("1.0", "1.0")]}

        return Instance

    @base.VersionedObjectRegistry.register
    class Instance(_InstanceMethods):  # type: ignore[no-redef]
        VERSION = "1.3"
        fields = {
            **_V10_FIELDS,
            "tags": fields.ListOfStringsField(default=[]),
            "metadata": fields.DictOfStringsField(default={}),
            "description": fields.StringField(nullable=True),
        }
        obj_relationships = {"flavor": [("1.0", "1.0")]}

        def obj_make_compatible(self, primitive: dict[str, Any], target_version: str) -> None:
            super().obj_make_compatible(primitive, target_version)
            minor = int(target_version.split(".")[1])
            if minor < 3:
                primitive.pop("description", None)
            if minor < 2:
                primitive.pop("metadata", None)
            if minor < 1:
                primitive.pop("tags", None)

    return Instance


def main() -> int:
    mode, transport_url, topic, instance_id = sys.argv[1:5]
    instance_cls = define(mode)
    client = conductor.connect(transport_url, topic=topic, timeout=30)
    try:
        ctx = RequestContext(user_id="peer")
        inst: Any = instance_cls.get_async(ctx, int(instance_id))
        inst.wait()
        seen = {
            "version": inst.VERSION,
            "host_before": inst.host,
            "has_tags": inst.obj_attr_is_set("tags"),
            "has_metadata": inst.obj_attr_is_set("metadata"),
        }
        inst.host = f"{mode}-host"
        if mode == "ahead":
            inst.description = "only the newer client knows this field"
        inst.save_async()
        inst.wait()
        seen["host_after"] = inst.host
        seen["changes_after_save"] = sorted(inst.obj_what_changed())
        if mode == "ahead":
            seen["description_after"] = inst.description
        print(json.dumps(seen), flush=True)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
