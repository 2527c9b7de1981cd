"""The conductor service: an RPC server on a topic, backed by a database."""

from __future__ import annotations

import enum
import logging
import socket
import threading

import transport
from conductor import db
from conductor.manager import ConductorManager
from objects import base

LOG = logging.getLogger(__name__)

DEFAULT_WORKERS = 8


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
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.transport_url = transport_url
        self.database_url = database_url
        self.topic = topic
        self.server = server or socket.gethostname()
        self.workers = workers
        self.auto_upgrade = auto_upgrade
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
                manager = ConductorManager(db.session_factory(engine))
                rpc_transport = transport.get_transport(self.transport_url)
                try:
                    rpc_server = transport.RPCServer(
                        rpc_transport,
                        transport.Target(topic=self.topic, server=self.server),
                        [manager],
                        serializer=base.VersionedObjectSerializer(),
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
                db.mask_url(self.transport_url),
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
