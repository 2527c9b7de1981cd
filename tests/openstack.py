"""The real oslo.messaging (rabbit driver) on the test broker, for the interop tests.

Each :class:`Oslo` builds its own ``cfg.ConfigOpts`` and oslo transport; ``close()``
cleans the transport up and deletes the reply and fanout queues oslo declared.
"""

from __future__ import annotations

import warnings
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.brokers import delete_queues

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # eventlet's deprecation warning, imported by oslo
    import oslo_messaging as om
    from oslo_config import cfg
    from oslo_messaging import opts as om_opts
    from oslo_messaging._drivers import amqp as om_amqp
    from oslo_messaging._drivers import common as om_common

__all__ = [
    "ConductorRPCAPI",
    "ContextSerializer",
    "NovaFlavor",
    "NovaObjectSerializer",
    "Oslo",
    "OvoInstance",
    "om",
    "om_amqp",
    "om_common",
    "oslo_context",
    "oslo_url",
    "ovo_base",
]


def oslo_url(url: str) -> str:
    """The test broker's URL as oslo.messaging writes it (``rabbit://``)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="rabbit", query=""))


class Oslo:
    """One oslo.messaging RPC transport on the broker at ``url`` (ours, amqp://...)."""

    def __init__(
        self,
        url: str,
        control_exchange: str | None = None,
        allowed_remote_exmods: list[str] | None = None,
    ) -> None:
        self.conf = cfg.ConfigOpts()
        self.conf([], project="conductor-tests", default_config_files=[], default_config_dirs=[])
        # Some options (tracing, metrics) oslo.messaging registers on the global CONF only.
        for group, opts in om_opts.list_opts():
            self.conf.register_opts(opts, group=group)
        for group in ("oslo_messaging_tracing", "oslo_messaging_metrics"):
            if group in cfg.CONF:
                opts = [info["opt"] for info in cfg.CONF[group]._group._opts.values()]
                self.conf.register_opts(opts, group=group)
        self.transport = om.get_rpc_transport(
            self.conf, url=oslo_url(url), allowed_remote_exmods=allowed_remote_exmods
        )
        # Reply and fanout queues expire soon after the test even if a delete is missed.
        self.conf.set_override("rabbit_transient_queues_ttl", 10, group="oslo_messaging_rabbit")
        if control_exchange is not None:
            self.conf.set_override("control_exchange", control_exchange)
            self.transport._driver._default_exchange = control_exchange
        self.url = url
        self.servers: list[Any] = []
        self.queues: list[str] = []

    def client(self, topic: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", 10)
        target_kwargs = {
            k: kwargs.pop(k) for k in ("server", "fanout", "version", "namespace") if k in kwargs
        }
        return om.get_rpc_client(self.transport, om.Target(topic=topic, **target_kwargs), **kwargs)

    def server(self, topic: str, endpoints: list[Any], server: str = "s1", **kwargs: Any) -> Any:
        made = om.get_rpc_server(
            self.transport,
            om.Target(topic=topic, server=server),
            endpoints,
            **kwargs,
        )
        made.start()
        self.servers.append(made)
        return made

    def close(self) -> None:
        for server in self.servers:
            server.stop()
            server.wait()
        driver = self.transport._driver
        reply_q = getattr(driver, "_reply_q", None)
        self.transport.cleanup()
        names = list(self.queues)
        if reply_q:
            names.append(reply_q)
        if names:
            delete_queues(self.url, names)


# -- a compute process built the OpenStack way -------------------------------------------

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from oslo_context import context as oslo_context
    from oslo_versionedobjects import base as ovo_base
    from oslo_versionedobjects import fields as ovo_fields


@ovo_base.VersionedObjectRegistry.register
class OvoInstance(ovo_base.VersionedObject):  # type: ignore[misc]
    """An oslo.versionedobjects Instance as a nova-style compute defines it: the fields it
    needs of ours (same name and version), plus ``obj_revision`` for optimistic saves."""

    VERSION = "1.2"
    fields = {
        "id": ovo_fields.IntegerField(read_only=True),
        "uuid": ovo_fields.UUIDField(),
        "host": ovo_fields.StringField(nullable=True),
        "state": ovo_fields.StringField(),
        "vcpus": ovo_fields.IntegerField(),
        "memory_mb": ovo_fields.IntegerField(),
        "task_state": ovo_fields.StringField(nullable=True),
        "obj_revision": ovo_fields.IntegerField(nullable=True),
    }

    @classmethod
    def obj_name(cls) -> str:
        return "Instance"

    @classmethod
    @ovo_base.remotable  # type: ignore[untyped-decorator]
    def get(cls, context: Any, id: int) -> OvoInstance:
        raise AssertionError("runs on the conductor")

    @ovo_base.remotable  # type: ignore[untyped-decorator]
    def create(self) -> None:
        raise AssertionError("runs on the conductor")

    @ovo_base.remotable  # type: ignore[untyped-decorator]
    def save(self) -> None:
        raise AssertionError("runs on the conductor")


class NovaObject(ovo_base.VersionedObject):  # type: ignore[misc]
    """nova's object base: its own serial keys (``nova_object.*``) and namespace."""

    OBJ_SERIAL_NAMESPACE = "nova_object"
    OBJ_PROJECT_NAMESPACE = "nova"


class NovaObjectSerializer(ovo_base.VersionedObjectSerializer):  # type: ignore[misc]
    OBJ_BASE_CLASS = NovaObject


@ovo_base.VersionedObjectRegistry.register
class NovaFlavor(NovaObject):
    """A Flavor as nova defines its objects (namespace ``nova``)."""

    VERSION = "1.0"
    fields = {
        "id": ovo_fields.IntegerField(read_only=True),
        "flavorid": ovo_fields.StringField(),
        "name": ovo_fields.StringField(),
        "vcpus": ovo_fields.IntegerField(),
        "memory_mb": ovo_fields.IntegerField(),
        "root_gb": ovo_fields.IntegerField(),
    }

    @classmethod
    def obj_name(cls) -> str:
        return "Flavor"

    @classmethod
    @ovo_base.remotable  # type: ignore[untyped-decorator]
    def get_by_flavorid(cls, context: Any, flavorid: str) -> NovaFlavor:
        raise AssertionError("runs on the conductor")

    @ovo_base.remotable  # type: ignore[untyped-decorator]
    def create(self) -> None:
        raise AssertionError("runs on the conductor")


class ContextSerializer(om.Serializer):  # type: ignore[misc]  # nova.rpc.RequestContextSerializer
    def __init__(self, base: Any = None) -> None:
        self._base = base or ovo_base.VersionedObjectSerializer()

    def serialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return self._base.serialize_entity(ctxt, entity)

    def deserialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return self._base.deserialize_entity(ctxt, entity)

    def serialize_context(self, ctxt: Any) -> dict[str, Any]:
        return dict(ctxt.to_dict())

    def deserialize_context(self, ctxt: dict[str, Any]) -> Any:
        return oslo_context.RequestContext.from_dict(ctxt)


class ConductorRPCAPI(ovo_base.VersionedObjectIndirectionAPI):  # type: ignore[misc]
    """nova.conductor.rpcapi.ConductorAPI's object methods, over oslo.messaging."""

    def __init__(self, oslo: Oslo, topic: str, serializer: Any = None) -> None:
        self.client = om.get_rpc_client(
            oslo.transport,
            om.Target(topic=topic, version="3.0"),
            serializer=ContextSerializer(serializer),
            timeout=30,
        )

    def object_class_action(self, *args: Any) -> Any:
        raise NotImplementedError("deprecated in nova too")

    def object_class_action_versions(
        self,
        context: Any,
        objname: str,
        objmethod: str,
        object_versions: Any,
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

    def object_backport_versions(self, context: Any, objinst: Any, object_versions: Any) -> Any:
        return self.client.prepare().call(
            context, "object_backport_versions", objinst=objinst, object_versions=object_versions
        )
