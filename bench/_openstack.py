"""The OpenStack path, as nova does it: oslo.versionedobjects remotable methods whose
indirection API is an oslo.messaging RPC client to a conductor endpoint.

- ``Instance`` / ``Flavor`` here are oslo.versionedobjects objects with the same fields
  (and versions) as ours; they read and write the very same ``instances`` table through
  SQLAlchemy ORM sessions, nova-style (get the row, set attributes, commit).
- ``serve()`` is the conductor: an oslo.messaging RPC server (rabbit driver, threading
  executor) whose endpoint implements ``object_class_action_versions`` and
  ``object_action`` like ``nova.conductor.manager.ConductorManager``.
- ``OpenStackWorker`` is the compute side: ``VersionedObjectIndirectionAPI`` over an
  ``RPCClient`` (like ``nova.conductor.rpcapi.ConductorAPI``), or with ``local`` set, no
  indirection at all (OVO's direct database path, on SQLite). OVO has no futures, so
  pipelining is a thread pool with N workers.

This module imports oslo (and so eventlet); it only ever runs in its own processes.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from oslo_config import cfg
from oslo_context import context as oslo_context
from oslo_versionedobjects import base, fields
from sqlalchemy import orm

from bench import _common

_db: InstanceDB | None = None


class _Row:
    """ORM row of ``instances`` (mapped imperatively onto the reflected table)."""


class InstanceDB:
    """nova.db.api in miniature: the three calls the objects need, each its own transaction."""

    def __init__(self, url: str) -> None:
        kwargs: dict[str, Any] = {}
        if url.startswith("postgresql"):
            kwargs = {"pool_size": 10, "max_overflow": 60}  # oslo.db-like pool sizes
        self.engine = sa.create_engine(url, **kwargs)
        self.sqlite = self.engine.dialect.name == "sqlite"
        table = sa.Table("instances", sa.MetaData(), autoload_with=self.engine)
        self.columns = [c.name for c in table.columns]
        registry = orm.registry()
        # "metadata" is fine as a column but not as a mapped attribute name.
        registry.map_imperatively(_Row, table, properties={"metadata_": table.c["metadata"]})
        self.session = orm.sessionmaker(self.engine, expire_on_commit=False)

    def _now(self) -> dt.datetime:
        now = dt.datetime.now(dt.UTC)
        return now.replace(tzinfo=None) if self.sqlite else now

    def instance_get(self, id: int) -> _Row:
        with self.session() as s:
            row = s.get(_Row, id)
            if row is None:
                raise LookupError(f"no instance {id}")
            return row

    def instance_create(self, values: dict[str, Any]) -> _Row:
        with self.session() as s, s.begin():
            now = self._now()
            row = _Row()
            for key, value in values.items():
                setattr(row, "metadata_" if key == "metadata" else key, value)
            row.created_at = now  # type: ignore[attr-defined]
            row.updated_at = now  # type: ignore[attr-defined]
            row.revision = 1  # type: ignore[attr-defined]
            s.add(row)
        return row

    def instance_update(self, id: int, values: dict[str, Any]) -> _Row:
        # nova's instance_update_and_get_original: read the row, change it, commit.
        with self.session() as s, s.begin():
            row = s.get(_Row, id)
            if row is None:
                raise LookupError(f"no instance {id}")
            for key, value in values.items():
                setattr(row, "metadata_" if key == "metadata" else key, value)
            row.updated_at = self._now()  # type: ignore[attr-defined]
            row.revision = row.revision + 1  # type: ignore[attr-defined]
        return row


def _database() -> InstanceDB:
    assert _db is not None, "no database configured in this process"
    return _db


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


@base.VersionedObjectRegistry.register
class Instance(base.VersionedObject):
    VERSION = "1.2"
    fields = {
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
        "tags": fields.ListOfStringsField(),
        "metadata": fields.DictOfStringsField(),
    }
    obj_relationships = {"flavor": [("1.0", "1.0")]}

    @staticmethod
    def _from_db_object(context: Any, inst: Instance, row: _Row) -> Instance:
        for name in inst.fields:
            value = getattr(row, "metadata_" if name == "metadata" else name)
            if name == "flavor" and value is not None:
                value = Flavor(context, **value)
                value.obj_reset_changes()
            setattr(inst, name, value)
        inst._context = context
        inst.obj_reset_changes()
        return inst

    @staticmethod
    def _db_values(changes: dict[str, Any]) -> dict[str, Any]:
        values = dict(changes)
        flavor = values.get("flavor")
        if flavor is not None:
            values["flavor"] = {
                k: getattr(flavor, k) for k in flavor.fields if flavor.obj_attr_is_set(k)
            }
        return values

    @base.remotable_classmethod
    def get(cls, context: Any, id: int) -> Instance:
        return cls._from_db_object(context, cls(), _database().instance_get(id))

    @base.remotable
    def create(self) -> None:
        row = _database().instance_create(self._db_values(self.obj_get_changes()))
        self._from_db_object(self._context, self, row)

    @base.remotable
    def save(self) -> None:
        row = _database().instance_update(self.id, self._db_values(self.obj_get_changes()))
        self._from_db_object(self._context, self, row)


# -- RPC glue, as nova has it ---------------------------------------------------------


def _messaging() -> Any:
    import oslo_messaging

    return oslo_messaging


def _serializer() -> Any:
    om = _messaging()

    serializer: Any = om.Serializer

    class RequestContextSerializer(serializer):  # nova.rpc.RequestContextSerializer
        def __init__(self) -> None:
            self._base = base.VersionedObjectSerializer()

        def serialize_entity(self, ctxt: Any, entity: Any) -> Any:
            return self._base.serialize_entity(ctxt, entity)

        def deserialize_entity(self, ctxt: Any, entity: Any) -> Any:
            return self._base.deserialize_entity(ctxt, entity)

        def serialize_context(self, ctxt: Any) -> dict[str, Any]:
            as_dict: dict[str, Any] = ctxt.to_dict()
            return as_dict

        def deserialize_context(self, ctxt: dict[str, Any]) -> Any:
            return oslo_context.RequestContext.from_dict(ctxt)

    return RequestContextSerializer()


def _transport(config: dict[str, Any]) -> Any:
    om = _messaging()
    conf = cfg.CONF  # oslo.messaging registers some options (tracing) on the global CONF only
    conf([], project="bench")
    om.set_transport_defaults(control_exchange=config["exchange"])
    transport = om.get_rpc_transport(conf, url=config["url"])
    # Reply and fanout queues are not auto-delete in oslo.messaging; let them expire
    # soon after their consumer goes so a run leaves nothing behind.
    conf.set_override("rabbit_transient_queues_ttl", 5, group="oslo_messaging_rabbit")
    return transport


class ConductorEndpoint:
    """nova.conductor.manager.ConductorManager's object methods."""

    def __init__(self) -> None:
        self.target = _messaging().Target(version="3.0")

    def object_class_action_versions(
        self,
        context: Any,
        objname: str,
        objmethod: str,
        object_versions: dict[str, str],
        args: Any,
        kwargs: Any,
    ) -> Any:
        objclass = base.VersionedObject.obj_class_from_name(objname, object_versions[objname])
        result = getattr(objclass, objmethod)(context, *args, **kwargs)
        if isinstance(result, base.VersionedObject):
            return result.obj_to_primitive(
                target_version=object_versions[objname], version_manifest=object_versions
            )
        return result

    def object_action(
        self, context: Any, objinst: Any, objmethod: str, args: Any, kwargs: Any
    ) -> Any:
        oldobj = objinst.obj_clone()
        result = getattr(objinst, objmethod)(*args, **kwargs)
        updates: dict[str, Any] = {}
        for name, field in objinst.fields.items():
            if not objinst.obj_attr_is_set(name):
                continue
            if not oldobj.obj_attr_is_set(name) or getattr(oldobj, name) != getattr(objinst, name):
                updates[name] = field.to_primitive(objinst, name, getattr(objinst, name))
        updates["obj_what_changed"] = objinst.obj_what_changed()
        return updates, result

    def object_backport_versions(
        self, context: Any, objinst: Any, object_versions: dict[str, str]
    ) -> Any:
        target = object_versions[objinst.obj_name()]
        return objinst.obj_to_primitive(target_version=target, version_manifest=object_versions)


class ConductorRPCAPI(base.VersionedObjectIndirectionAPI):
    """nova.conductor.rpcapi.ConductorAPI's object methods."""

    def __init__(self, transport: Any, topic: str) -> None:
        om = _messaging()
        target = om.Target(topic=topic, version="3.0")
        self.client = om.get_rpc_client(transport, target, serializer=_serializer(), timeout=120)

    def object_class_action(
        self, context: Any, objname: str, objmethod: str, objver: str, args: Any, kwargs: Any
    ) -> Any:
        raise NotImplementedError("deprecated in nova too")

    def object_class_action_versions(
        self,
        context: Any,
        objname: str,
        objmethod: str,
        object_versions: dict[str, str],
        args: Any,
        kwargs: Any,
    ) -> Any:
        return self.client.prepare().call(
            context,
            "object_class_action_versions",
            objname=objname,
            objmethod=objmethod,
            object_versions=object_versions,
            args=args,
            kwargs=kwargs,
        )

    def object_action(
        self, context: Any, objinst: Any, objmethod: str, args: Any, kwargs: Any
    ) -> Any:
        return self.client.prepare().call(
            context, "object_action", objinst=objinst, objmethod=objmethod, args=args, kwargs=kwargs
        )

    def object_backport_versions(
        self, context: Any, objinst: Any, object_versions: dict[str, str]
    ) -> Any:
        return self.client.prepare().call(
            context, "object_backport_versions", objinst=objinst, object_versions=object_versions
        )


def serve(config: dict[str, Any]) -> None:
    """The conductor process: serve until a ``quit`` line (or EOF) on stdin."""
    global _db
    om = _messaging()
    _db = InstanceDB(config["database_url"])
    transport = _transport(config)
    target = om.Target(topic=config["topic"], server=config["server"])
    server = om.get_rpc_server(
        transport, target, [ConductorEndpoint()], executor="threading", serializer=_serializer()
    )
    server.start()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if "quit" in line:
            break
    server.stop()
    server.wait()
    transport.cleanup()


class OpenStackWorker:
    """The compute side: workloads on the OVO Instance, pipelined through threads."""

    def __init__(self, config: dict[str, Any]) -> None:
        global _db
        self.transport = None
        if config.get("local"):
            _db = InstanceDB(config["database_url"])
            base.VersionedObject.indirection_api = None
        else:
            self.transport = _transport(config)
            base.VersionedObject.indirection_api = ConductorRPCAPI(self.transport, config["topic"])
        self.ctx = oslo_context.RequestContext(user_id="bench", project_id="bench")
        self.ids: list[int] = list(config["ids"])
        self.cursor = 0
        self.lock = threading.Lock()
        self.created = 0
        self.flavor = Flavor(
            flavorid="bench-ovo", name="m1.bench", vcpus=2, memory_mb=4096, root_gb=20
        )
        self.flavor.id = 1
        self.flavor.obj_reset_changes()

    def _id(self) -> int:
        with self.lock:  # pool threads take ids in turn, so concurrent saves never share a row
            self.cursor = (self.cursor + 7919) % len(self.ids)
            return self.ids[self.cursor]

    def op_get(self, i: int) -> Any:
        return Instance.get(self.ctx, self._id())

    def op_save(self, i: int) -> Any:
        inst = Instance.get(self.ctx, self._id())
        inst.state = _common.STATES[i % 3]
        inst.task_state = f"t{i % 1000}"
        inst.save()
        return inst

    def op_create(self, i: int) -> Any:
        with self.lock:
            self.created += 1
            n = self.created
        inst = Instance(
            self.ctx, uuid=str(uuid.uuid4()), flavor=self.flavor, **_common.instance_values(n)
        )
        inst.create()
        return inst

    def run(self, workload: str, window: int, ops: int, seconds: float | None) -> dict[str, Any]:
        op = {
            "get": self.op_get,
            "get_async": self.op_get,
            "save": self.op_save,
            "create": self.op_create,
        }[workload]
        if workload == "get" or window <= 1:
            return _common.run_sequential(op, ops, seconds)
        with ThreadPoolExecutor(max_workers=window) as pool:
            return _common.run_window(
                lambda i: pool.submit(op, i), lambda f: f.result(), window, ops, seconds
            )

    def handle(self, command: dict[str, Any]) -> Any:
        if command["cmd"] == "run":
            return self.run(
                command["workload"],
                int(command.get("window", 1)),
                int(command["ops"]),
                command.get("seconds"),
            )
        raise ValueError(f"unknown command {command['cmd']!r}")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.cleanup()


def main(config: dict[str, Any]) -> None:
    worker = OpenStackWorker(config)
    try:
        _common.serve_commands(worker.handle)
    finally:
        worker.close()
