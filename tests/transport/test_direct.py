"""memory://: a call answered on the caller's own thread (``Driver.offer_direct``).

A server in the same process whose endpoint answers a request at once
(``transport.InlineEndpoint``) answers it on the caller's thread: no sender thread, no
broker, no worker, no reply thread. What the caller gives and gets still goes through the
wire's encoding (but where a copy through JSON would read back equal and unshared: vouched
plain arguments, a ``transport.FreshJSON`` result), so everything but the threads is as
through the broker: the endpoint gets a copy, what JSON cannot carry fails the same way,
errors arrive typed (or as ``RemoteError``) as they would, and whatever the endpoint does
not answer, or a server that is busy or stopped, takes the broker's way.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import Future
from typing import Any

import pytest

import transport
from tests.loop_turns import turns_during
from transport import RPCClient, Target
from transport.exceptions import MessageTooLarge, MessageUndeliverable, RemoteError

from .conftest import MakeTransport, Servers


class Private(Exception):
    """Not in any allowed module: reaches the caller as RemoteError."""


class Direct:
    """``get`` is answered inline, except keys starting with ``worker``; ``keep`` holds
    what the endpoint was given and what it answered, to see that they are copies."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.given: list[Any] = []
        self.answered: list[Any] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def serve_inline(
        self, request: transport.RawRequest, serializer: transport.Serializer
    ) -> tuple[bool, Any] | None:
        _, ctxt, method, args = request
        if method != "get" or str(args.get("key", "")).startswith("worker"):
            return None
        self.threads.append(threading.current_thread().name)
        self.given.append((ctxt, args))
        key = args["key"]
        if key == "fail":
            return False, ValueError("no fail")
        if key == "private":
            return False, Private("mine")
        if key == "unencodable":
            return True, {1, 2}
        if str(key).startswith("forms"):
            forms = TwoForms(key, args.get("pad"))
            self.answered.append(forms)
            return True, forms
        if str(key).startswith("fresh"):
            pad = args.get("pad")
            made = transport.FreshJSON({"key": key, "items": [1, 2, 3], "pad": pad, "again": pad})
            self.answered.append(made)
            return True, made
        answer = {"key": key, "items": [1, 2, 3]}
        self.answered.append(answer)
        return True, answer

    def get(self, ctxt: Any, key: Any) -> Any:
        return {"key": key, "by": threading.current_thread().name}

    def block(self, ctxt: Any) -> str:
        self.started.set()
        assert self.release.wait(30)
        return "done"


class TwoForms(transport.InProcessResult):
    """An answer whose local form is itself when its wire form surely fits the limit
    (``fits``), and whose wire form is a fresh dict; ``forms-none`` has neither."""

    def __init__(self, key: str, pad: str | None) -> None:
        self.key = key
        self.pad = pad
        self.local_asked: list[int | None] = []

    def local(self, limit: int | None) -> Any:
        self.local_asked.append(limit)
        if self.key == "forms-none":
            return None
        sample = {"key": self.key, "pad": self.pad, "again": self.pad}
        return self if self.fits(sample, limit, 1000, 2) else None

    def wire(self) -> Any:
        if self.key == "forms-none":
            return None
        return transport.FreshJSON({"key": self.key, "pad": self.pad, "again": self.pad})


@pytest.fixture
def transport_url() -> str:
    return f"memory://direct-{uuid.uuid4().hex[:12]}"


def _vouched(client: RPCClient, ctxt: Any, **kwargs: Any) -> Future[Any]:
    """A call whose arguments its maker vouches are plain (``start_call(plain=True)``)."""
    return client.start_call(ctxt, "get", kwargs, future=Future(), plain=True)


def _client(tp: transport.Transport, topic: str, **kwargs: Any) -> RPCClient:
    return RPCClient(tp, Target(topic=topic), timeout=10, **kwargs)


def _serve(
    tp: transport.Transport,
    topic: str,
    servers: Servers,
    kind: type[Direct] = Direct,
    **kwargs: Any,
) -> tuple[Any, RPCClient]:
    """A server of a :class:`Direct` endpoint (or ``kind``) on ``topic``, and a client of it."""
    endpoint = kind()
    servers.start(tp, Target(topic=topic), [endpoint], **kwargs)
    return endpoint, _client(tp, topic)


def test_a_call_is_answered_on_the_callers_thread_with_copies_both_ways(
    make_transport: MakeTransport, topic: str, servers: Servers
) -> None:
    endpoint = Direct()
    servers.start(make_transport(), Target(topic=topic, server="s1"), [endpoint])
    client = _client(make_transport(), topic)
    ctxt = {"user": "u", "roles": ("a", "b")}
    key = "k1"

    answer = client.call(ctxt, "get", key=key)

    assert answer == {"key": "k1", "items": [1, 2, 3]}
    assert endpoint.threads == [threading.current_thread().name]
    # What the endpoint got is what the broker would have given it: a copy, in JSON's types
    given_ctxt, given_args = endpoint.given[0]
    assert given_ctxt == {"user": "u", "roles": ["a", "b"]} and given_ctxt is not ctxt
    # What the caller got is its own: changing it changes nothing the server holds
    answer["items"].append(4)
    assert endpoint.answered[0] == {"key": "k1", "items": [1, 2, 3]}
    # A server's own target (topic.server) is answered the same way
    own = RPCClient(client.transport, Target(topic=topic, server="s1"), timeout=10)
    assert own.call({}, "get", key="k2") == {"key": "k2", "items": [1, 2, 3]}
    assert len(endpoint.threads) == 2


def test_async_calls_are_answered_before_they_return(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    endpoint, client = _serve(tp, topic, servers)
    future = client.call_async({}, "get", key="k")
    assert future.done() and future.result() == {"key": "k", "items": [1, 2, 3]}


def test_errors_arrive_as_they_would_through_the_broker(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    endpoint, client = _serve(tp, topic, servers)

    with pytest.raises(ValueError, match="no fail"):
        client.call({}, "get", key="fail")
    with pytest.raises(RemoteError) as remote:
        client.call({}, "get", key="private")
    assert str(remote.value.exc_type).endswith("Private")
    # A result JSON cannot carry is the caller's TypeError, as a reply would be
    with pytest.raises(TypeError, match="JSON"):
        client.call({}, "get", key="unencodable")
    # An argument JSON cannot carry fails at the call, before the endpoint is asked
    with pytest.raises(TypeError, match="JSON"):
        client.call({}, "get", key={1, 2})
    assert len(endpoint.given) == 3
    assert endpoint.threads == [threading.current_thread().name] * 3


def test_what_the_endpoint_leaves_goes_through_the_broker_to_a_worker(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    endpoint, client = _serve(tp, topic, servers)

    answer = client.call({}, "get", key="worker-1")
    assert answer["by"].startswith("rpc-")  # a worker of the server's pool
    # A stream never takes the direct way
    (item,) = client.multicall({}, "get", key="k")
    assert item["by"].startswith("rpc-")
    assert len(endpoint.given) == 0


def test_a_busy_server_leaves_calls_to_the_broker(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    """Only while no worker is busy: a call made after one that is still running must not
    overtake the work it may depend on."""
    endpoint, client = _serve(tp, topic, servers, max_workers=2)
    blocked = client.call_async({}, "block")
    assert endpoint.started.wait(10)

    assert client.call({}, "get", key="k")["by"].startswith("rpc-")
    assert endpoint.given == []

    endpoint.release.set()
    assert blocked.wait(10) == "done"
    assert client.call({}, "get", key="k") == {"key": "k", "items": [1, 2, 3]}


def test_a_stopped_server_withdraws_its_offer(
    make_transport: MakeTransport, topic: str, servers: Servers
) -> None:
    endpoint = Direct()
    server = servers.start(make_transport(), Target(topic=topic), [endpoint])
    client = _client(make_transport(), topic)
    assert client.transport.direct_answerer(Target(topic=topic)) is not None

    server.stop(timeout=10)

    assert client.transport.direct_answerer(Target(topic=topic)) is None
    with pytest.raises(MessageUndeliverable):
        client.call({}, "get", key="k")
    assert endpoint.given == []


def test_a_killed_server_withdraws_its_offer_and_others_still_answer(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    first, second = Direct(), Direct()
    killed = servers.start(tp, Target(topic=topic), [first])
    servers.start(tp, Target(topic=topic), [second])
    client = _client(tp, topic)

    killed.kill()

    for n in range(3):
        assert client.call({}, "get", key=f"k{n}") == {"key": f"k{n}", "items": [1, 2, 3]}
    assert len(second.given) == 3 and first.given == []


def test_only_servers_on_the_same_broker_answer(
    make_transport: MakeTransport, topic: str, servers: Servers
) -> None:
    endpoint = Direct()
    other = transport.get_transport(f"memory://other-{uuid.uuid4().hex[:8]}")
    try:
        servers.start(other, Target(topic=topic), [endpoint])
        client = _client(make_transport(), topic)
        with pytest.raises(MessageUndeliverable):
            client.call({}, "get", key="k")
        assert endpoint.given == []
    finally:
        servers.stop_all()
        other.cleanup()


def test_endpoints_without_an_inline_answer_offer_nothing(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    class Plain:
        def get(self, ctxt: Any, key: str) -> str:
            return threading.current_thread().name

    servers.start(tp, Target(topic=topic), [Plain()])
    assert tp.direct_answerer(Target(topic=topic)) is None
    assert _client(tp, topic).call({}, "get", key="k").startswith("rpc-")


def test_awaiting_a_call_answered_at_once_still_lets_other_tasks_run(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    endpoint, client = _serve(tp, topic, servers)

    async def calls() -> None:
        for n in range(20):
            future = client.call_async({}, "get", key=f"k{n}")
            assert future.done()  # answered on this thread, before the await
            assert (await future)["key"] == f"k{n}"

    _, ticks = turns_during(calls)
    assert ticks >= 10
    assert len(endpoint.given) == 20


class KeptContext:
    """A context that keeps its wire dict, as ``RequestContext.wire_dict()`` does."""

    def __init__(self) -> None:
        self.kept = {"user_id": "u", "roles": ["reader"]}

    def to_dict(self) -> dict[str, Any]:
        return dict(self.kept)

    def wire_dict(self) -> dict[str, Any]:
        return self.kept


def test_a_vouched_request_and_a_fresh_result_are_handed_over_without_json(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    """What a JSON copy would give back equal and unshared is handed over as it is: the
    arguments a caller vouched plain, and a result made for its one reply
    (``transport.FreshJSON``). The context is still a copy: the caller's kept dict serves
    all its calls."""
    endpoint, client = _serve(tp, topic, servers)
    ctxt = KeptContext()

    result = _vouched(client, ctxt, key="fresh-1").result(0)

    assert endpoint.threads == [threading.current_thread().name]
    given_ctxt, given_args = endpoint.given[0]
    assert given_args == {"key": "fresh-1"}
    assert given_ctxt == ctxt.kept and given_ctxt is not ctxt.kept
    given_ctxt["roles"].append("admin")  # what a server does to it stays with it
    assert ctxt.kept == {"user_id": "u", "roles": ["reader"]}
    # The caller gets a plain dict, the result's own lists in it: no copy was made
    assert type(result) is dict
    assert result == {"key": "fresh-1", "items": [1, 2, 3], "pad": None, "again": None}
    assert result["items"] is endpoint.answered[0]["items"]
    # A PlainJSON or any other result still comes back as a copy through JSON
    other = _vouched(client, ctxt, key="k").result(0)
    assert other == {"key": "k", "items": [1, 2, 3]}
    assert other["items"] is not endpoint.answered[1]["items"]


def test_what_the_broker_would_refuse_is_refused_on_the_direct_way_too(
    make_transport: MakeTransport, topic: str, servers: Servers
) -> None:
    """The size limit holds both ways: a fresh result over it is the caller's
    MessageTooLarge, as its reply's encode would make it; a vouched request over it takes
    the broker's way, which fails its future with MessageTooLarge; the endpoint sees
    neither."""
    tp = make_transport(transport.TransportConfig(max_message_size=4096))
    endpoint, client = _serve(tp, topic, servers)

    assert _vouched(client, {}, key="fresh-big", pad="x" * 1000).result(10)["pad"] == "x" * 1000
    with pytest.raises(MessageTooLarge):
        # The request is under the limit, its result over (two copies of the pad)
        _vouched(client, {}, key="fresh-big", pad="x" * 2500).result(10)
    assert len(endpoint.given) == 2
    with pytest.raises(MessageTooLarge):
        _vouched(client, {}, key="fresh-big", pad="x" * 5000).result(10)
    assert len(endpoint.given) == 2
    # An integer orjson cannot write takes the broker's way too, answered by a worker
    answer = _vouched(client, {}, key=2**70).result(10)
    assert answer["key"] == 2**70 and answer["by"].startswith("rpc-")
    assert len(endpoint.given) == 2


def test_a_caller_that_takes_local_forms_gets_one_when_it_fits(
    make_transport: MakeTransport, topic: str, servers: Servers
) -> None:
    """An answer in two forms (``transport.InProcessResult``) reaches a caller in this
    process that takes local forms (``start_call(takes_local=True)``) as its local form,
    when that form says it fits the size limit; otherwise, and for every other caller, as
    its wire form, checked as any reply is; with no wire form, a worker answers."""
    tp = make_transport(transport.TransportConfig(max_message_size=4096))
    endpoint, client = _serve(tp, topic, servers)

    def local_call(key: str, pad: str | None = None) -> Future[Any]:
        return client.start_call(
            {},
            "get",
            {"key": key} if pad is None else {"key": key, "pad": pad},
            future=Future(),
            then=lambda value: ("then", value),
            plain=True,
            takes_local=True,
        )

    assert local_call("forms-1").result(0) == ("then", endpoint.answered[0])
    assert endpoint.answered[0].local_asked == [4096]
    # Not taking local forms: the wire form, and local is not even asked
    wire = _vouched(client, {}, key="forms-2").result(0)
    assert wire == {"key": "forms-2", "pad": None, "again": None}
    assert endpoint.answered[1].local_asked == []
    # Too large for its local form to be sure: the wire form, which fits
    near = local_call("forms-3", "x" * 1700).result(0)
    assert near == ("then", {"key": "forms-3", "pad": "x" * 1700, "again": "x" * 1700})
    # ...or does not: the caller's MessageTooLarge, as through the broker
    with pytest.raises(MessageTooLarge):
        local_call("forms-4", "x" * 2500).result(10)
    # No wire form: a worker answers, on its own thread
    by_worker = local_call("forms-none").result(10)
    assert by_worker[0] == "then" and by_worker[1]["by"].startswith("rpc-")


class Local(Direct):
    """Also answers ``get`` of keys starting with ``local`` with their local form alone
    (``serve_local``); ``local-none`` and everything else: None, with nothing done."""

    def __init__(self) -> None:
        super().__init__()
        self.local_given: list[tuple[str, Any, Any]] = []

    def serve_local(
        self, request: transport.RawRequest, serializer: transport.Serializer
    ) -> transport.InProcessResult | None:
        _, ctxt, method, args = request
        self.local_given.append((threading.current_thread().name, ctxt, args))
        key = str(args.get("key", ""))
        if method != "get" or not key.startswith("local") or key == "local-none":
            return None
        forms = TwoForms(key, args.get("pad"))
        self.answered.append(forms)
        return forms


def _serve_local(
    tp: transport.Transport, topic: str, servers: Servers, **kwargs: Any
) -> tuple[Local, RPCClient]:
    endpoint, client = _serve(tp, topic, servers, Local, **kwargs)
    return endpoint, client


def test_a_call_answered_locally_sends_nothing_and_gives_the_local_form(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    """``RPCClient.answer_locally``: the endpoint's ``serve_local`` answers on the
    caller's thread with a copy of the context, and its result's local form is the
    caller's; no inline answer, worker or reply is involved."""
    endpoint, client = _serve_local(tp, topic, servers)
    ctxt = {"user": "u", "roles": ["r"]}
    args = {"key": "local-1"}
    taken = client.answer_locally(ctxt, "get", args)
    assert taken is endpoint.answered[0]
    assert taken.local_asked == [tp.config.max_message_size]
    ((thread, given_ctxt, given_args),) = endpoint.local_given
    assert thread == threading.current_thread().name
    assert given_ctxt == ctxt and given_ctxt is not ctxt
    assert given_ctxt["roles"] is not ctxt["roles"]
    assert given_args == args
    assert endpoint.given == []  # serve_inline was not asked


def test_what_is_not_answered_locally_is_left_as_it_was(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    """None from ``serve_local`` (or no such hook) leaves the call undone: the caller
    sends it as ever, and it is answered the ordinary way."""
    endpoint, client = _serve_local(tp, topic, servers)
    assert client.answer_locally({}, "get", {"key": "local-none"}) is None
    assert client.answer_locally({}, "get", {"key": "k"}) is None
    assert client.call({}, "get", key="k") == {"key": "k", "items": [1, 2, 3]}
    assert len(endpoint.given) == 1

    plain_endpoint, plain_client = _serve(tp, f"{topic}-plain", servers)
    assert plain_client.answer_locally({}, "get", {"key": "local-1"}) is None
    assert plain_endpoint.given == []


def test_a_busy_server_answers_nothing_locally(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    """As for answers on the caller's thread: only while no worker is busy."""
    endpoint, client = _serve_local(tp, topic, servers, max_workers=2)
    blocked = client.call_async({}, "block")
    assert endpoint.started.wait(10)
    assert client.answer_locally({}, "get", {"key": "local-1"}) is None
    assert endpoint.local_given == []
    endpoint.release.set()
    assert blocked.wait(10) == "done"
    assert client.answer_locally({}, "get", {"key": "local-1"}) is endpoint.answered[0]


def test_a_request_near_the_size_limit_is_not_answered_locally(
    make_transport: MakeTransport, topic: str, servers: Servers
) -> None:
    """A request that might not fit the broker's size limit with its envelope around it
    is left to the ordinary way (which refuses it, MessageTooLarge, or sends it); the
    endpoint is not asked. A local form that does not fit is not given either."""
    tp = make_transport(transport.TransportConfig(max_message_size=8192))
    endpoint, client = _serve_local(tp, topic, servers)
    assert client.answer_locally({}, "get", {"key": "local-1", "pad": "x" * 5000}) is None
    assert endpoint.local_given == []
    with pytest.raises(MessageTooLarge):
        _vouched(client, {}, key="local-1", pad="x" * 9000).result(10)
    # Under the request's limit, but its answer's local form says it may not fit
    assert client.answer_locally({}, "get", {"key": "local-2", "pad": "x" * 3700}) is None
    assert endpoint.answered[-1].local_asked == [8192]


def test_serve_local_is_not_an_rpc_method(
    tp: transport.Transport, topic: str, servers: Servers
) -> None:
    _, client = _serve_local(tp, topic, servers)
    with pytest.raises(transport.exceptions.NoSuchMethod):
        client.call(
            {}, "serve_local", request=["r", {}, "get", {"key": "local-1"}], serializer=None
        )
