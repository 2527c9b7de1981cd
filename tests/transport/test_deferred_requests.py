"""Requests whose arguments are vouched plain are encoded by the sender thread, in bulk.

``RPCClient.start_call(..., plain=True)`` leaves the envelope to the sender (see
``transport._wire.Deferred``): the caller's thread only copies the context. What a caller
may observe must not change: each call gets its own result or typed error, and what it
changes after the call returns does not reach the server.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest

import transport
from tests.transport.conftest import MakeTransport, Servers
from transport import RPCClient, Target, _wire
from transport._replies import PendingCall
from transport.exceptions import MessageTooLarge


class Echo:
    def echo(self, ctxt: dict[str, Any], value: Any) -> Any:
        return {"ctxt": ctxt, "value": value}

    def add(self, ctxt: dict[str, Any], a: int, b: int) -> int:
        return a + b


class _HeldEncoding:
    """Holds the sender at its bulk encode until released; records the threads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = threading.Event()
        self.threads: set[str] = set()
        original = _wire.encode_group

        def encode_group(bodies: list[Any], limit: int) -> bytes | None:
            self.threads.add(threading.current_thread().name)
            self.release.wait(10)
            return original(bodies, limit)

        monkeypatch.setattr(_wire, "encode_group", encode_group)


def _start(client: RPCClient, ctxt: Any, method: str, **kwargs: Any) -> Future[Any]:
    return client.start_call(ctxt, method, kwargs, future=Future(), plain=True)


def _one_in_flight(tp: transport.Transport) -> None:
    """Register a call as in flight (never sent), so the test's calls queue for the sender
    instead of leaving inline on their caller's thread, as a lone call does."""
    tp.register_call(PendingCall("held", "hold", 60, None, lambda v: v, ()))


def _queued_client(
    tp: transport.Transport, topic: str, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> tuple[RPCClient, _HeldEncoding]:
    """A client of an ``Echo`` server whose calls queue for the sender, which holds them
    at its encode until the test releases it."""
    servers.start(tp, Target(topic=topic), [Echo()])
    client = RPCClient(tp, Target(topic=topic), timeout=20)
    _one_in_flight(tp)
    return client, _HeldEncoding(monkeypatch)


def test_plain_requests_are_encoded_on_the_sender_thread_and_answered_each(
    tp: transport.Transport, topic: str, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, held = _queued_client(tp, topic, servers, monkeypatch)
    encoded_by: set[str] = set()
    encode = _wire.encode

    def watched_encode(*args: Any, **kwargs: Any) -> bytes:
        encoded_by.add(threading.current_thread().name)
        return encode(*args, **kwargs)

    monkeypatch.setattr(_wire, "encode", watched_encode)
    futures = [_start(client, {"user": "u"}, "add", a=i, b=1) for i in range(50)]
    held.release.set()

    assert [f.result(20) for f in futures] == [i + 1 for i in range(50)]
    assert held.threads == {"transport-sender"}
    assert threading.current_thread().name not in encoded_by


def test_what_the_caller_changes_after_the_call_does_not_reach_the_server(
    tp: transport.Transport, topic: str, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, held = _queued_client(tp, topic, servers, monkeypatch)
    ctxt = {"user": "before", "roles": ["reader"]}

    future = _start(client, ctxt, "echo", value="v")
    ctxt["user"] = "after"
    ctxt["roles"].append("admin")  # type: ignore[attr-defined]
    held.release.set()

    assert future.result(20) == {"ctxt": {"user": "before", "roles": ["reader"]}, "value": "v"}


def test_a_deferred_request_over_the_size_limit_fails_alone(
    make_transport: MakeTransport, topic: str, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    tp = make_transport(transport.TransportConfig(max_message_size=2000))
    client, held = _queued_client(tp, topic, servers, monkeypatch)

    small = [_start(client, {}, "echo", value=f"small-{i}") for i in range(3)]
    large = _start(client, {}, "echo", value="y" * 5000)
    held.release.set()

    assert isinstance(large.exception(20), MessageTooLarge)
    assert [f.result(20)["value"] for f in small] == ["small-0", "small-1", "small-2"]


def test_what_orjson_refuses_goes_the_general_way_without_failing_the_batch(
    tp: transport.Transport, topic: str, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, held = _queued_client(tp, topic, servers, monkeypatch)

    big = _start(client, {}, "add", a=2**70, b=1)  # over 64 bits: the stdlib writes it
    surrogate = _start(client, {}, "echo", value="\ud800")  # nobody writes it
    plain = _start(client, {}, "add", a=1, b=1)
    held.release.set()

    assert big.result(20) == 2**70 + 1
    error = surrogate.exception(20)
    assert isinstance(error, TypeError) and "not JSON-serialisable" in str(error)
    assert plain.result(20) == 2


@pytest.mark.parametrize(
    "ctxt",
    [{"load": float("nan")}, {("a", "b"): 1}, {"when": object()}],
    ids=["nan", "tuple key", "object"],
)
def test_a_context_json_cannot_carry_alike_is_encoded_and_refused_at_the_call(
    tp: transport.Transport, topic: str, servers: Servers, ctxt: dict[Any, Any]
) -> None:
    servers.start(tp, Target(topic=topic), [Echo()])
    client = RPCClient(tp, Target(topic=topic), timeout=20)

    with pytest.raises(TypeError, match="not JSON-serialisable"):
        _start(client, ctxt, "add", a=1, b=1)
    assert _start(client, {}, "add", a=1, b=1).result(20) == 2


def test_a_context_offering_its_wire_dict_is_sent_as_it_gives_it(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    class Context:
        def __init__(self) -> None:
            self.kept = {"user": "kept"}

        def to_dict(self) -> dict[str, Any]:
            return {"user": "made"}

        def wire_dict(self) -> dict[str, Any] | None:
            return self.kept

    servers.start(tp, Target(topic=topic), [Echo()])
    client = RPCClient(tp, Target(topic=topic), timeout=20)
    _one_in_flight(tp)

    assert _start(client, Context(), "echo", value=1).result(20)["ctxt"] == {"user": "kept"}


def test_a_deferred_request_nested_too_deep_fails_alone(
    tp: transport.Transport, topic: str, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The depth limit holds as for an encoded request: a vouched envelope nested deeper
    than the server reads fails its own call with TypeError, instead of going out and
    having the server refuse the whole message its batch-mates travel in."""
    client, held = _queued_client(tp, topic, servers, monkeypatch)
    deep: Any = "leaf"
    for _ in range(_wire.MAX_DEPTH + 5):
        deep = [deep]

    small = [_start(client, {}, "echo", value=f"small-{i}") for i in range(3)]
    nested = _start(client, {}, "echo", value=deep)
    held.release.set()

    error = nested.exception(20)
    assert isinstance(error, TypeError) and "deeper than" in str(error)
    assert [f.result(20)["value"] for f in small] == ["small-0", "small-1", "small-2"]
