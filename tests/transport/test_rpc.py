"""RPC contract: call, call_async, cast, multicall, fanout, server targeting, errors."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any

import pytest

import transport
from transport import RPCClient, Target, current_request_id
from transport.exceptions import (
    InvalidTarget,
    MessageUndeliverable,
    MessagingTimeout,
    NoSuchMethod,
    RemoteError,
    UnsupportedVersion,
)

from .conftest import Servers


class CustomError(Exception):
    """An exception from a module the caller did not allow."""


class Calculator:
    def __init__(self, name: str = "calc") -> None:
        self.name = name
        self.casts: list[Any] = []
        self.cast_event = threading.Event()

    def add(self, ctxt: dict[str, Any], a: int, b: int) -> int:
        return a + b

    def whoami(self, ctxt: dict[str, Any]) -> str:
        return self.name

    def echo_context(self, ctxt: dict[str, Any]) -> dict[str, Any]:
        return ctxt

    def request_id(self, ctxt: dict[str, Any]) -> str | None:
        return current_request_id()

    def record(self, ctxt: dict[str, Any], value: Any) -> None:
        self.casts.append(value)
        self.cast_event.set()

    def count(self, ctxt: dict[str, Any], n: int) -> Any:
        for i in range(n):
            yield {"i": i}

    def sleep(self, ctxt: dict[str, Any], seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def fail_key(self, ctxt: dict[str, Any]) -> None:
        raise KeyError("missing")

    def fail_custom(self, ctxt: dict[str, Any]) -> None:
        raise CustomError("custom failure")

    def fail_unsupported(self, ctxt: dict[str, Any]) -> None:
        raise UnsupportedVersion("nested", version="9.9", namespace="x")

    def _private(self, ctxt: dict[str, Any]) -> str:
        return "secret"


def test_call_returns_the_endpoint_result(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic), [Calculator()])
    client = RPCClient(tp, Target(topic=topic), timeout=10)
    assert client.call({}, "add", a=2, b=3) == 5


def test_call_async_returns_a_future_that_resolves_on_its_own(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic), [Calculator()])
    client = RPCClient(tp, Target(topic=topic), timeout=10)
    future = client.call_async({}, "add", a=1, b=1)
    assert isinstance(future, concurrent.futures.Future)
    done, _ = concurrent.futures.wait([future], timeout=10)
    assert done == {future}
    assert future.wait() == 2


def test_hundreds_of_calls_in_flight_resolve_to_their_own_results(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic), [Calculator()], max_workers=8)
    client = RPCClient(tp, Target(topic=topic), timeout=20)
    futures = [client.call_async({}, "add", a=i, b=1000) for i in range(500)]
    assert [f.wait(timeout=20) for f in futures] == [i + 1000 for i in range(500)]


def test_context_travels_as_a_dict_or_through_to_dict(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    class Ctx:
        def to_dict(self) -> dict[str, Any]:
            return {"user_id": "u1", "request_id": "req-1"}

    servers.start(tp, Target(topic=topic), [Calculator()])
    client = RPCClient(tp, Target(topic=topic), timeout=10)
    assert client.call({"user_id": "u0"}, "echo_context") == {"user_id": "u0"}
    assert client.call(Ctx(), "echo_context") == {"user_id": "u1", "request_id": "req-1"}


def test_current_request_id_is_unique_per_request_and_none_outside_dispatch(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic), [Calculator()])
    client = RPCClient(tp, Target(topic=topic), timeout=10)
    future = client.call_async({}, "request_id")
    first = future.wait()
    assert first == future.request_id
    assert client.call({}, "request_id") not in (None, first)
    assert current_request_id() is None


def test_cast_runs_the_method_without_a_reply(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    calc = Calculator()
    servers.start(tp, Target(topic=topic), [calc])
    RPCClient(tp, Target(topic=topic)).cast({}, "record", value=[1, "two"])
    assert calc.cast_event.wait(10)
    assert calc.casts == [[1, "two"]]


def test_multicall_streams_generator_items_and_single_results(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic), [Calculator()])
    client = RPCClient(tp, Target(topic=topic), timeout=10)
    assert list(client.multicall({}, "count", n=4)) == [{"i": i} for i in range(4)]
    assert list(client.multicall({}, "count", n=0)) == []
    assert list(client.multicall({}, "add", a=1, b=2)) == [3]
    # A plain call of a generator method gets the whole list.
    assert client.call({}, "count", n=2) == [{"i": 0}, {"i": 1}]


def test_server_targeted_call_reaches_only_that_server(
    make_transport: Any, topic: str, servers: Servers
) -> None:
    tp1, tp2 = make_transport(), make_transport()
    servers.start(tp1, Target(topic=topic, server="s1"), [Calculator("one")])
    servers.start(tp2, Target(topic=topic, server="s2"), [Calculator("two")])
    client = RPCClient(tp1, Target(topic=topic), timeout=10)
    for _ in range(5):
        assert client.prepare(server="s1").call({}, "whoami") == "one"
        assert client.prepare(server="s2").call({}, "whoami") == "two"
    with pytest.raises(MessageUndeliverable):
        client.prepare(server="s3").call({}, "whoami")


def test_topic_calls_are_shared_between_competing_servers(
    make_transport: Any, topic: str, servers: Servers
) -> None:
    tp1, tp2 = make_transport(), make_transport()
    servers.start(tp1, Target(topic=topic, server="s1"), [Calculator("one")])
    servers.start(tp2, Target(topic=topic, server="s2"), [Calculator("two")])
    client = RPCClient(tp1, Target(topic=topic), timeout=10)
    futures = [client.call_async({}, "sleep", seconds=0.02) for _ in range(4)]
    names = {client.call({}, "whoami") for _ in range(20)}
    concurrent.futures.wait(futures)
    assert names == {"one", "two"}


def test_fanout_cast_reaches_every_started_server(
    make_transport: Any, topic: str, servers: Servers
) -> None:
    calcs = [Calculator(f"c{i}") for i in range(3)]
    for i, calc in enumerate(calcs):
        servers.start(make_transport(), Target(topic=topic, server=f"s{i + 1}"), [calc])
    client = RPCClient(make_transport(), Target(topic=topic))
    client.prepare(fanout=True).cast({}, "record", value="hello")
    for calc in calcs:
        assert calc.cast_event.wait(10)
        assert calc.casts == ["hello"]


def test_fanout_cast_to_nobody_is_dropped_quietly(tp: transport.Transport, topic: str) -> None:
    RPCClient(tp, Target(topic=topic, fanout=True)).cast({}, "record", value=1)


def test_call_to_a_fanout_target_is_refused_locally(tp: transport.Transport, topic: str) -> None:
    client = RPCClient(tp, Target(topic=topic, fanout=True))
    with pytest.raises(InvalidTarget):
        client.call({}, "add", a=1, b=2)


def test_sending_without_a_topic_is_refused(tp: transport.Transport) -> None:
    with pytest.raises(InvalidTarget):
        RPCClient(tp, Target()).cast({}, "add")


def test_call_to_a_topic_nobody_consumes_fails_fast(tp: transport.Transport, topic: str) -> None:
    client = RPCClient(tp, Target(topic=topic), timeout=30)
    started = time.monotonic()
    with pytest.raises(MessageUndeliverable):
        client.call({}, "add", a=1, b=2)
    with pytest.raises(MessageUndeliverable):
        client.cast({}, "add", a=1, b=2)
    assert time.monotonic() - started < 5


def test_call_times_out_with_messaging_timeout(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic), [Calculator()])
    client = RPCClient(tp, Target(topic=topic), timeout=0.3)
    started = time.monotonic()
    with pytest.raises(MessagingTimeout) as info:
        client.call({}, "sleep", seconds=1.5)
    assert 0.25 < time.monotonic() - started < 1.4
    assert info.value.kwargs == {"method": "sleep", "timeout": 0.3}
    assert isinstance(info.value, TimeoutError)
    # prepare() overrides the timeout per call.
    assert client.prepare(timeout=10).call({}, "sleep", seconds=0.01) == 0.01


def test_future_wait_with_a_short_timeout_leaves_the_call_pending(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic), [Calculator()])
    future = RPCClient(tp, Target(topic=topic), timeout=10).call_async({}, "sleep", seconds=0.5)
    with pytest.raises(TimeoutError):
        future.wait(timeout=0.05)
    assert future.wait(timeout=10) == 0.5


def test_remote_exceptions_of_allowed_modules_come_back_as_their_type(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic), [Calculator()])
    client = RPCClient(tp, Target(topic=topic), timeout=10)
    with pytest.raises(KeyError):
        client.call({}, "fail_key")
    with pytest.raises(UnsupportedVersion) as info:
        client.call({}, "fail_unsupported")
    assert info.value.kwargs == {"version": "9.9", "namespace": "x"}
    assert str(info.value) == "nested"


def test_other_remote_exceptions_become_remote_error_without_traceback(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic), [Calculator()])
    client = RPCClient(tp, Target(topic=topic), timeout=10)
    with pytest.raises(RemoteError) as info:
        client.call({}, "fail_custom")
    assert info.value.exc_type == f"{__name__}.CustomError"
    assert info.value.value == "custom failure"
    assert "Traceback" not in str(info.value)
    allowed = client.prepare(allowed_remote_exmods=[__name__])
    with pytest.raises(CustomError, match="custom failure"):
        allowed.call({}, "fail_custom")


def test_unknown_and_private_methods_raise_no_such_method(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic), [Calculator()])
    client = RPCClient(tp, Target(topic=topic), timeout=10)
    with pytest.raises(NoSuchMethod):
        client.call({}, "nope")
    with pytest.raises(NoSuchMethod):
        client.call({}, "_private")


class V11:
    target = Target(version="1.1")

    def which(self, ctxt: Any) -> str:
        return "v1.1"


class V20:
    target = Target(version="2.0")

    def which(self, ctxt: Any) -> str:
        return "v2.0"


class Admin:
    target = Target(namespace="admin", version="1.0")

    def which(self, ctxt: Any) -> str:
        return "admin"


def test_endpoints_are_chosen_by_namespace_and_version(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic), [V11(), V20(), Admin()])
    client = RPCClient(tp, Target(topic=topic), timeout=10)
    assert client.call({}, "which") == "v1.1"  # no version means 1.0
    assert client.prepare(version="1.1").call({}, "which") == "v1.1"
    assert client.prepare(version="2.0").call({}, "which") == "v2.0"
    assert client.prepare(namespace="admin").call({}, "which") == "admin"
    with pytest.raises(UnsupportedVersion):
        client.prepare(version="1.2").call({}, "which")
    with pytest.raises(UnsupportedVersion):
        client.prepare(version="3.0").call({}, "which")
    with pytest.raises(UnsupportedVersion):
        client.prepare(namespace="other").call({}, "which")


def test_version_cap_is_enforced_on_the_caller(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    servers.start(tp, Target(topic=topic), [V11()])
    client = RPCClient(tp, Target(topic=topic, version="1.1"), version_cap="1.0", timeout=10)
    assert not client.can_send_version()
    assert client.can_send_version("1.0")
    assert not client.can_send_version("2.0")
    with pytest.raises(UnsupportedVersion):
        client.call({}, "which")
    assert client.prepare(version_cap="1.5").call({}, "which") == "v1.1"
    assert RPCClient(tp, Target(topic=topic)).can_send_version("7.3")


def test_a_changed_target_or_version_cap_is_checked_again(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    # Given a client that has called once (the check of its target is remembered)
    servers.start(tp, Target(topic=topic), [V11()])
    client = RPCClient(tp, Target(topic=topic, version="1.1"), timeout=10)
    assert client.call({}, "which") == "v1.1"
    # When its version cap, then its target, change
    client.version_cap = "1.0"
    with pytest.raises(UnsupportedVersion):
        client.call({}, "which")
    client.version_cap = None
    assert client.call({}, "which") == "v1.1"
    client.target = Target(version="1.1")
    # Then each change is checked before anything is sent
    with pytest.raises(InvalidTarget):
        client.call({}, "which")


def test_answered_calls_leave_no_timers_behind(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    # A long timeout: each answered call's deadline would otherwise wait in the timer heap
    # for two minutes, megabytes at thousands of calls a second.
    servers.start(tp, Target(topic=topic), [Calculator()])
    client = RPCClient(tp, Target(topic=topic), timeout=120)
    for round_ in range(6):
        futures = [client.call_async({}, "add", a=i, b=round_) for i in range(500)]
        assert [f.wait(timeout=20) for f in futures] == [i + round_ for i in range(500)]
    assert tp.calls_in_flight == 0
    # 3000 calls answered; what is left is at most one compaction's slack.
    assert len(tp._replies._timers) <= 1024 + 500
    # A call still in flight keeps its deadline: it times out as before.
    slow = RPCClient(tp, Target(topic=topic), timeout=0.5).call_async({}, "sleep", seconds=2)
    for _ in range(3):
        for f in [client.call_async({}, "add", a=1, b=1) for _ in range(500)]:
            f.wait(timeout=20)
    with pytest.raises(MessagingTimeout):
        slow.wait(timeout=20)
