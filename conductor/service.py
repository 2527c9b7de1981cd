"""The conductor service: an RPC server on a topic, backed by a database."""

from __future__ import annotations

import enum
import logging
import socket
import threading
from typing import Any, cast

import transport
from conductor import db
from conductor.manager import ConductorManager
from objects import base
from objects.context import RequestContext

LOG = logging.getLogger(__name__)

DEFAULT_WORKERS = 8


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
    """

    BACKPORT_THROUGH_INDIRECTION = False

    def __init__(self, allow_admin_context: bool = False) -> None:
        self.allow_admin_context = allow_admin_context

    def deserialize_context(self, context: dict[str, Any]) -> RequestContext:
        ctx = super().deserialize_context(context)
        if ctx.is_admin and not self.allow_admin_context:
            raise PermissionError(
                "the request context claims admin, which this conductor does not accept; "
                "send a context without is_admin, or start the conductor with "
                "--allow-admin-context if its callers may elevate"
            )
        return ctx


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
        quorum_queues: bool = False,
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
        self.quorum_queues = quorum_queues
        self.state = State.NEW
        self._lock = threading.Lock()
        self._engine: db.Engine | None = None
        self._transport: transport.Transport | None = None
        self._rpc_server: transport.RPCServer | None = None
        self._manager: ConductorManager | None = None

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
                manager = ConductorManager(
                    engine,
                    serialize_transactions=engine.dialect.name == "sqlite",
                )
                rpc_transport = transport.get_transport(
                    self.transport_url, transport.TransportConfig(quorum_queues=self.quorum_queues)
                )
                # Duck-typed: objects never imports transport's Serializer ABC.
                serializer = cast(
                    "transport.Serializer", ConductorSerializer(self.allow_admin_context)
                )
                try:
                    rpc_server = transport.RPCServer(
                        rpc_transport,
                        transport.Target(topic=self.topic, server=self.server),
                        [manager],
                        serializer=serializer,
                        executor="threading",
                        max_workers=self.workers,
                    )
                    rpc_server.start()
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

    def stop(self) -> None:
        """Stop consuming, finish in-flight requests, close connections. Idempotent."""
        with self._lock:
            if self.state is not State.RUNNING:
                self.state = State.STOPPED
                return
            self.state = State.STOPPED
            rpc_server, rpc_transport, engine = self._rpc_server, self._transport, self._engine
            self._rpc_server = self._transport = self._engine = None
        try:
            if rpc_server is not None:
                rpc_server.stop()
                rpc_server.wait()
        finally:
            if rpc_transport is not None:
                rpc_transport.cleanup()
            if engine is not None:
                engine.dispose()
            LOG.info("conductor %s stopped", self.server)

    def _rpc_server_endpoints(self) -> list[ConductorManager]:
        """The endpoints being served (for tests that drive the manager directly)."""
        return [self._manager] if self._manager is not None else []

    def __enter__(self) -> Conductor:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
