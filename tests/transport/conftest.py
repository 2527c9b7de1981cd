"""Fixtures of the transport contract suite.

Every test taking ``transport_url`` (directly or through ``make_transport``) runs on
``memory://`` always and on RabbitMQ when ``CONDUCTOR_TEST_TRANSPORT_URL`` is set. Topics
are unique per test; every queue a test may have created is deleted at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

import transport
from tests.brokers import delete_queues, no_service
from transport import Target

RABBIT_URL = os.environ.get("CONDUCTOR_TEST_TRANSPORT_URL")
PRIORITIES = ("audit", "debug", "info", "warn", "error", "critical", "sample")


def pytest_configure(config: pytest.Config) -> None:
    # kombu/amqp leave sockets to the GC when a connection is dropped under them.
    config.addinivalue_line("filterwarnings", "ignore::ResourceWarning")
    config.addinivalue_line("filterwarnings", "ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(
    params=[
        "memory",
        pytest.param("rabbit", marks=pytest.mark.rabbit),
    ]
)
def transport_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://test-{uuid.uuid4().hex[:12]}"
    if not RABBIT_URL:
        no_service("CONDUCTOR_TEST_TRANSPORT_URL")
    return RABBIT_URL


@pytest.fixture
def is_rabbit(transport_url: str) -> bool:
    return not transport_url.startswith("memory")


@pytest.fixture
def queues() -> Iterator[list[str]]:
    """Names of broker queues to delete after the test (RabbitMQ only)."""
    names: list[str] = []
    yield names
    if RABBIT_URL and names:
        delete_queues(RABBIT_URL, names)


@pytest.fixture
def topic(queues: list[str]) -> str:
    name = f"test_{uuid.uuid4().hex[:12]}"
    queues.extend([name, f"{name}.dead"])
    queues.extend(f"{name}.{server}" for server in ("s1", "s2", "s3", "host"))
    queues.extend(f"{name}.{p}" for p in PRIORITIES)
    queues.extend(f"{name}.{p}.{pool}" for p in PRIORITIES for pool in ("pool1", "pool2"))
    return name


MakeTransport = Callable[..., transport.Transport]


@pytest.fixture
def make_transport(transport_url: str, queues: list[str]) -> Iterator[MakeTransport]:
    """Create transports on the test's broker; all are cleaned up after the test."""
    made: list[transport.Transport] = []

    def make(config: transport.TransportConfig | None = None) -> transport.Transport:
        t = transport.get_transport(transport_url, config)
        made.append(t)
        return t

    yield make
    for t in made:
        t.cleanup()


@pytest.fixture
def tp(make_transport: MakeTransport) -> transport.Transport:
    """The test's default transport."""
    return make_transport()


class Servers:
    """Starts servers and stops every one of them after the test."""

    def __init__(self) -> None:
        self.started: list[transport.RPCServer] = []

    def start(
        self,
        tp: transport.Transport,
        target: Target,
        endpoints: list[object],
        **kwargs: object,
    ) -> transport.RPCServer:
        server = transport.RPCServer(tp, target, endpoints, **kwargs)  # type: ignore[arg-type]
        server.start()
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.started:
            server.stop(timeout=5)
        self.started.clear()


@pytest.fixture
def servers(make_transport: MakeTransport) -> Iterator[Servers]:
    s = Servers()
    yield s
    s.stop_all()
