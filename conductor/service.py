"""The conductor service: an RPC server on a topic, backed by a database."""

from __future__ import annotations

import dataclasses
import enum
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any, cast

import transport
from conductor import db, namespaces
from conductor.manager import ConductorManager, ConductorManagerV3
from conductor.metrics import Metrics, MonitoringServer
from conductor.unit_of_work import ServedContext
from objects import base
from objects._primitive import _KEY_DATA, _KEY_NAME, _KEY_REVISION
from objects.context import RequestContext
from objects.versioned import OVO_REVISION_FIELD

if TYPE_CHECKING:
    from objects.context import Context

LOG = logging.getLogger(__name__)

DEFAULT_WORKERS = 8
#: Request messages a conductor takes from the broker per worker: one running, one ready.
#: NOTE: all a conductor holds is lost to the others while it is frozen (SIGSTOP, a VM
#: paused, swap storms) until the broker drops its connection; 4 per worker (the
#: transport's default) let one frozen conductor hold 32 messages of up to 256 requests
#: each while the other conductors sat idle.
PREFETCH_PER_WORKER = 2


#: Values that are their own primitive (and containers holding only these).
_SCALARS = frozenset((str, int, float, bool, type(None)))


def _all_scalars(values: Any) -> bool:
    scalars = _SCALARS
    for value in values:
        if type(value) not in scalars:
            return False
    return True


#: Keys that make a dict (a part of) an object primitive.
_OBJECT_KEYS = (_KEY_NAME, _KEY_DATA, _KEY_REVISION)


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` holds only scalars, in lists and in dicts with string keys that
    are no object primitive (a bounded walk: anything deeper counts as not plain)."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if depth > 8:
        return False
    if kind is list:
        return all(_plain(item, depth + 1) for item in value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or key in _OBJECT_KEYS or not _plain(item, depth + 1):
                return False
        return True
    return False


def _with_ovo_revisions(value: Any) -> Any:
    """Copy each returned object's revision into its data (``OVO_REVISION_FIELD``), where
    an oslo.versionedobjects caller that declares the field keeps it for its saves; our own
    clients ignore it (not a field of theirs). Objects, lists of objects (``objects``) and
    ``object_action``'s ``[updates, result]`` are walked; nothing deeper."""
    if isinstance(value, dict):
        revision = value.get(_KEY_REVISION)
        data = value.get(_KEY_DATA)
        if isinstance(data, dict):
            if revision is not None:
                data[OVO_REVISION_FIELD] = revision
            items = data.get("objects")
            if isinstance(items, list):
                for item in items:
                    _with_ovo_revisions(item)
    elif isinstance(value, list) and len(value) == 2 and isinstance(value[0], dict):
        _with_ovo_revisions(value[1])
    return value


class ConductorSerializer(base.VersionedObjectSerializer):
    """The conductor's RPC serializer: never calls out, and refuses contexts claiming admin.

    The conductor is the end of the line. The objects' serializer answers an object it
    cannot read by asking the process's indirection API to backport it; in a process that
    also has ``connect()``-ed (tests, the demo) that would be this conductor calling itself
    and waiting on its own workers. Here that backport is off, so the caller gets
    ``IncompatibleObjectVersion`` and backports on its side instead.

    A request context is written by the caller; on the wire ``is_admin`` is just a boolean
    any compute node can set. Unless the deployment says its callers may elevate
    (``allow_admin_context``), a request claiming admin fails with ``PermissionError`` (a
    builtin, so the caller gets it as itself) before any method runs.

    Args:
        allow_admin_context: accept contexts with ``is_admin`` set.
        object_namespaces: foreign object namespaces read as ours, project namespace ->
            serial key prefix (``{"nova": "nova_object"}``; see ``conductor.namespaces``).
    """

    BACKPORT_THROUGH_INDIRECTION = False

    def __init__(
        self, allow_admin_context: bool = False, object_namespaces: dict[str, str] | None = None
    ) -> None:
        self.allow_admin_context = allow_admin_context
        self._forms = {
            form.name_key: form
            for form in (
                namespaces.ObjectForm(ns, prefix)
                for ns, prefix in (object_namespaces or {}).items()
            )
        }

    def answers_stock_gets(self) -> bool:
        """Whether its answer to a stock get is the lane's (``conductor.lane``): the
        record's primitive with the revision copied into its data, in our object form
        (true unless a subclass changes how contexts are read or answers written)."""
        kind = type(self)
        return (
            kind.serialize_entity is ConductorSerializer.serialize_entity
            and kind.deserialize_context is ConductorSerializer.deserialize_context
            and kind.deserialize_entity is ConductorSerializer.deserialize_entity
        )

    def deserialize_context(self, context: dict[str, Any]) -> RequestContext:
        ctx = ServedContext.from_dict(context)
        assert isinstance(ctx, ServedContext)
        ctx.wire_args = []
        if ctx.is_admin and not self.allow_admin_context:
            raise PermissionError(
                "the request context claims admin, which this conductor does not accept; "
                "send a context without is_admin, or start the conductor with "
                "--allow-admin-context if its callers may elevate"
            )
        return ctx

    def serialize_entity(self, context: Context | None, entity: Any) -> Any:
        if _plain(entity):
            # No object and no object primitive anywhere in it (a save's updates and
            # None): it is its own primitive, in every object form.
            return entity
        value = _with_ovo_revisions(super().serialize_entity(context, entity))
        form = getattr(context, "object_form", None)
        return value if form is None else namespaces.to_theirs(value, form)

    def deserialize_entity(self, context: Context | None, entity: Any) -> Any:
        kind = type(entity)
        if (
            kind in _SCALARS
            or (kind is list and _all_scalars(entity))
            or (
                kind is dict
                and not self._forms  # a foreign primitive may need renaming (to_ours)
                and _KEY_NAME not in entity
                and _all_scalars(entity.values())
            )
        ):
            # Its own value (a name, an id, a manifest, empty kwargs): nothing to build.
            if isinstance(context, ServedContext) and context.wire_args is not None:
                context.wire_args.append(entity)
            return entity
        if self._forms and isinstance(entity, (dict, list)):
            entity, form = namespaces.to_ours(entity, self._forms)
            if form is not None and isinstance(context, ServedContext):
                context.object_form = form
        # Keep each argument as it arrived, for the digest of the request's content (see
        # ServedContext); nested values are part of their argument, not recorded again.
        if not isinstance(context, ServedContext) or context.wire_args is None:
            return super().deserialize_entity(context, entity)
        wire = context.wire_args
        context.wire_args = None
        try:
            value = super().deserialize_entity(context, entity)
        finally:
            context.wire_args = wire
        wire.append(entity)
        return value


class State(enum.Enum):
    """Lifecycle: NEW -> RUNNING -> STOPPED (``stop()`` is safe in any state)."""

    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class Conductor:
    """Serves ``object_class_action_versions`` / ``object_action`` /
    ``object_backport_versions`` on ``topic``.

    Args:
        transport_url: where requests arrive (``memory://`` in-process, ``amqp://`` RabbitMQ).
        database_url: a SQLAlchemy URL (``sqlite:///file.db``, ``postgresql+psycopg://...``).
        topic: the topic compute processes ``connect()`` to.
        server: this conductor's name (defaults to the host name); it also consumes
            ``<topic>.<server>``.
        workers: how many requests run at once.
        auto_upgrade: migrate the database to head at start. The CLI's ``serve`` passes
            False and refuses a database that is not at head instead.
        allow_admin_context: accept request contexts that claim admin (``is_admin``);
            refused with ``PermissionError`` by default (see :class:`ConductorSerializer`).
        metrics_port: serve ``/metrics`` and ``/healthz`` on this port (0: any free port,
            see :attr:`metrics_port` once started; None: off). See ``conductor.metrics``.
        metrics_host: the address the metrics port listens on.
        project_scoping: a context reads and changes only its own project's instances
            (rows of tables with a ``project_id`` column); admin contexts see all. Off by
            default: every context sees every row.
        quorum_queues: declare the topic's queues as RabbitMQ quorum queues (replicated on
            a cluster); the same as ``?quorum_queues=true`` in the transport URL. A topic
            whose queue exists as the other type fails ``start()`` with ``QueueMismatch``.
    """

    def __init__(
        self,
        transport_url: str,
        database_url: str,
        topic: str = "conductor",
        *,
        server: str | None = None,
        workers: int = DEFAULT_WORKERS,
        auto_upgrade: bool = True,
        allow_admin_context: bool = False,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        project_scoping: bool = False,
        quorum_queues: bool = False,
        object_namespaces: dict[str, str] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.transport_url = transport_url
        self.database_url = database_url
        self.topic = topic
        self.server = server or socket.gethostname()
        self.workers = workers
        self.auto_upgrade = auto_upgrade
        self.allow_admin_context = allow_admin_context
        self.project_scoping = project_scoping
        self.quorum_queues = quorum_queues
        self.object_namespaces = dict(object_namespaces or {})
        self.state = State.NEW
        self._lock = threading.Lock()
        self._engine: db.Engine | None = None
        self._transport: transport.Transport | None = None
        self._rpc_server: transport.RPCServer | None = None
        self._manager: ConductorManager | None = None
        self._metrics_port = metrics_port
        self._metrics_host = metrics_host
        self._monitoring: MonitoringServer | None = None

    def start(self) -> None:
        """Connect to the database and the broker; returns once consuming."""
        with self._lock:
            if self.state is State.RUNNING:
                return
            if self.state is State.STOPPED:
                raise RuntimeError("a stopped Conductor cannot be started again; make a new one")
            if self.auto_upgrade:
                db.upgrade(self.database_url)
            else:
                db.check_at_head(self.database_url)
            engine = db.create_engine(self.database_url)
            try:
                db.ensure_user_tables(engine)
                metrics = Metrics() if self._metrics_port is not None else None
                manager = ConductorManager(
                    engine,
                    serialize_transactions=engine.dialect.name == "sqlite",
                    metrics=metrics,
                    project_scoping=self.project_scoping,
                )
                rpc_transport = transport.get_transport(
                    self.transport_url,
                    dataclasses.replace(
                        transport.DEFAULT_CONFIG,
                        prefetch_multiplier=PREFETCH_PER_WORKER,
                        quorum_queues=self.quorum_queues,
                    ),
                )
                # Duck-typed: objects never imports transport's Serializer ABC.
                serializer = cast(
                    "transport.Serializer",
                    ConductorSerializer(self.allow_admin_context, self.object_namespaces),
                )
                try:
                    rpc_server = transport.RPCServer(
                        rpc_transport,
                        transport.Target(topic=self.topic, server=self.server),
                        # 1.x: our clients; 3.x: nova-style computes (oslo.messaging).
                        [manager, ConductorManagerV3(manager, self._v3_form())],
                        serializer=serializer,
                        executor="threading",
                        max_workers=self.workers,
                    )
                    rpc_server.start()
                    if metrics is not None:
                        self._monitoring = self._start_monitoring(metrics, engine, rpc_transport)
                except BaseException:
                    rpc_transport.cleanup()
                    raise
            except BaseException:
                engine.dispose()
                raise
            self._engine, self._transport, self._rpc_server = engine, rpc_transport, rpc_server
            self._manager = manager
            self.state = State.RUNNING
            LOG.info(
                "conductor %s serving topic %s on %s with %d workers (database %s)",
                self.server,
                self.topic,
                ";".join(db.mask_url(url) for url in self.transport_url.split(";")),
                self.workers,
                db.mask_url(self.database_url),
            )

    @property
    def metrics_port(self) -> int | None:
        """The port ``/metrics`` and ``/healthz`` are served on (None when off or stopped)."""
        return self._monitoring.port if self._monitoring is not None else None

    def _start_monitoring(
        self, metrics: Metrics, engine: db.Engine, rpc_transport: transport.Transport
    ) -> MonitoringServer:
        broker_url = db.mask_url(self.transport_url)

        def broker() -> None:
            if not rpc_transport.is_connected():
                raise ConnectionError(f"no connection to the broker at {broker_url}")

        def database() -> None:
            with db.translate_errors(), engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")

        monitoring = MonitoringServer(
            metrics,
            [("broker", broker), ("database", database)],
            host=self._metrics_host,
            port=self._metrics_port or 0,
        )
        monitoring.start()
        LOG.info(
            "metrics and health on http://%s:%d/metrics and /healthz",
            self._metrics_host,
            monitoring.port,
        )
        return monitoring

    def stop(self) -> None:
        """Stop consuming, finish in-flight requests, close connections. Idempotent."""
        with self._lock:
            if self.state is not State.RUNNING:
                self.state = State.STOPPED
                return
            self.state = State.STOPPED
            rpc_server, rpc_transport, engine = self._rpc_server, self._transport, self._engine
            self._rpc_server = self._transport = self._engine = None
            monitoring, self._monitoring = self._monitoring, None
        try:
            if monitoring is not None:
                monitoring.stop()
            if rpc_server is not None:
                rpc_server.stop()
                rpc_server.wait()
        finally:
            if rpc_transport is not None:
                rpc_transport.cleanup()
            if self._manager is not None:
                self._manager.close()
            if engine is not None:
                engine.dispose()
            LOG.info("conductor %s stopped", self.server)

    def _v3_form(self) -> namespaces.ObjectForm | None:
        """The form of nova-style (3.x) answers to requests that carry no object: the one
        foreign namespace configured, if exactly one is."""
        if len(self.object_namespaces) != 1:
            return None
        ((namespace, prefix),) = self.object_namespaces.items()
        return namespaces.ObjectForm(namespace, prefix)

    def _rpc_server_endpoints(self) -> list[ConductorManager]:
        """The endpoints being served (for tests that drive the manager directly)."""
        return [self._manager] if self._manager is not None else []

    def __enter__(self) -> Conductor:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
