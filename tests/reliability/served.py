"""A conductor under test, in this process (``memory://``) or as ``conductor serve`` (RabbitMQ),
with a connected client and a view of the conductor's log."""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import conductor
import objects
from objects import base
from tests.conductor.processes import ServeProcess, serve
from tests.reliability import rawpeer

PROBE_MODULE = "tests.reliability.probe_objects"
_LEVEL = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING|ERROR|CRITICAL) ", re.M)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Served:
    """What a test sees of a running conductor: raw peer, client, warnings logged."""

    def __init__(
        self,
        kind: str,
        peer: rawpeer.RawPeer,
        client: conductor.ConductorAPI,
        process: ServeProcess | None = None,
        handler: _Collect | None = None,
    ) -> None:
        self.kind = kind
        self.peer = peer
        self.client = client
        self.process = process
        self._handler = handler

    def records(self) -> list[str]:
        """Every INFO-or-worse record the conductor logged so far (one per bad request)."""
        if self.process is not None:
            return _LEVEL.findall(self.process.output)
        assert self._handler is not None
        return [r.getMessage() for r in self._handler.records]

    def output(self) -> str:
        if self.process is not None:
            return self.process.output
        assert self._handler is not None
        return "\n".join(r.getMessage() for r in self._handler.records)

    def settle_logs(self) -> None:
        """Let a child's last lines reach us (it logs before it replies; the pipe lags)."""
        if self.process is not None:
            time.sleep(0.3)


def import_probe() -> Any:
    import importlib

    objects.register_all()
    module = importlib.import_module(PROBE_MODULE)
    if base.VersionedObjectRegistry.newest("Probe") is not module.Probe:
        base.VersionedObjectRegistry.register(module.Probe)
    return module


@contextlib.contextmanager
def in_process(database_url: str, topic: str, **options: Any) -> Iterator[Served]:
    import_probe()
    url = f"memory://rel-{uuid.uuid4().hex[:10]}"
    handler = _Collect()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)  # what `conductor serve` logs by default
    root.addHandler(handler)
    service = conductor.Conductor(url, database_url, topic, workers=4, **options)
    service.start()
    client = conductor.connect(url, topic=topic, timeout=15)
    peer = rawpeer.MemoryPeer(url, topic)
    try:
        yield Served("memory", peer, client, handler=handler)
    finally:
        peer.close()
        client.close()
        service.stop()
        base.set_indirection_api(None)
        root.removeHandler(handler)
        root.setLevel(level)


@contextlib.contextmanager
def as_process(broker_url: str, database_url: str, topic: str, *extra: str) -> Iterator[Served]:
    import_probe()
    with serve(
        broker_url, database_url, topic, "--objects", PROBE_MODULE, *extra, server="s1"
    ) as proc:
        client = conductor.connect(broker_url, topic=topic, timeout=15)
        peer = rawpeer.RabbitPeer(broker_url, topic)
        try:
            yield Served("rabbit", peer, client, process=proc)
        finally:
            peer.close()
            client.close()
            base.set_indirection_api(None)
