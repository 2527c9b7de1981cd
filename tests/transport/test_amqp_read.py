"""The AMQP driver's I/O loop reads frames the way py-amqp would, whatever the socket
holds at the moment: parts of a frame, several frames, frames larger than a read."""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

import pytest

pytest.importorskip("amqp")

from amqp.transport import TCPTransport  # noqa: E402

from transport.drivers import amqp as driver  # noqa: E402


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


class _Raw:
    """What _drain uses of a py-amqp connection, around a real py-amqp TCP transport."""

    def __init__(self, sock: socket.socket) -> None:
        transport: Any = TCPTransport.__new__(TCPTransport)
        transport.sock = sock
        transport._read_buffer = b""
        transport._quick_recv = sock.recv
        transport.raise_on_initial_eintr = True
        transport.connected = True
        self.transport = transport
        self.frames: list[tuple[int, int, bytes]] = []

    def blocking_read(self, timeout: float | None) -> None:  # py-amqp's way (TLS sockets)
        self.on_inbound_frame(self.transport.read_frame())

    def on_inbound_frame(self, frame: tuple[int, int, bytes]) -> None:
        kind, channel, payload = frame
        self.frames.append((kind, channel, bytes(payload)))


@pytest.fixture
def pair():
    ours, broker = socket.socketpair()
    yield ours, broker
    ours.close()
    broker.close()


def test_frames_split_anywhere_come_out_whole_and_in_order(pair):
    ours, broker = pair
    raw = _Raw(ours)
    frames = [(1, 1, b"method"), (2, 1, b"h" * 14), (3, 1, b"body" * 10), (8, 0, b"")]
    wire = b"".join(_frame(*f) for f in frames)
    for cut in range(1, len(wire)):
        raw.frames.clear()
        broker.sendall(wire[:cut])
        driver._drain(raw)
        done = len(raw.frames)
        assert raw.frames == frames[:done]
        broker.sendall(wire[cut:])
        driver._drain(raw)
        assert raw.frames == frames, cut
        assert raw.transport._read_buffer == b""
        assert not driver._buffered_frame(raw)


def test_a_frame_larger_than_one_read(pair):
    ours, broker = pair
    ours.setblocking(True)
    raw = _Raw(ours)
    big = bytes(range(256)) * ((driver._READ_SIZE * 3) // 256)
    wire = _frame(3, 2, big) + _frame(1, 2, b"next")
    sent = 0
    while sent < len(wire):  # the socket buffer holds less than the frame
        sent += broker.send(wire[sent : sent + 60_000])
        driver._drain(raw)
    assert raw.frames == [(3, 2, big), (1, 2, b"next")]


def test_nothing_to_read_returns_at_once(pair):
    ours, _ = pair
    raw = _Raw(ours)
    driver._drain(raw)
    assert raw.frames == []


def test_a_closed_connection_is_an_error(pair):
    ours, broker = pair
    raw = _Raw(ours)
    broker.close()
    with pytest.raises(ConnectionError):
        driver._drain(raw)
    assert raw.transport.connected is False


def test_a_frame_without_its_end_octet_is_a_broken_connection(pair):
    ours, broker = pair
    raw = _Raw(ours)
    broker.sendall(_frame(1, 1, b"method")[:-1] + b"\x00")
    with pytest.raises(ConnectionError, match="0xce"):
        driver._drain(raw)
    assert raw.frames == []
    assert raw.transport.connected is False


def test_frames_beyond_one_turn_wait_for_the_next(pair):
    ours, broker = pair
    raw = _Raw(ours)
    count = driver._FRAMES_PER_TURN + 5
    broker.sendall(b"".join(_frame(8, 0, b"") for _ in range(count)))
    driver._drain(raw)
    assert len(raw.frames) == driver._FRAMES_PER_TURN
    # What was read ahead is a whole frame: the loop drains it before waiting in select.
    assert driver._buffered_frame(raw)
    driver._drain(raw)
    assert len(raw.frames) == count


class _CountingSocket:
    """A socket whose reads are counted (``_drain`` only calls ``recv`` on it)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reads = 0

    def recv(self, size: int, flags: int = 0) -> bytes:
        self.reads += 1
        return self.sock.recv(size, flags)


def test_a_read_that_takes_less_than_it_asked_ends_the_turn(pair):
    """A reply's frames are read with one system call: a read that took less than it
    asked for is not followed by one that finds nothing (a system call that lets the
    woken caller take the GIL only to give it back). What comes later is read on the
    next turn, after select."""
    ours, broker = pair
    counting = _CountingSocket(ours)
    raw = _Raw(ours)
    raw.transport.sock = counting
    message = [(1, 1, b"method"), (2, 1, b"h" * 14), (3, 1, b"body" * 200)]
    broker.sendall(b"".join(_frame(*f) for f in message))
    driver._drain(raw)
    assert raw.frames == message
    assert counting.reads == 1
    broker.sendall(_frame(8, 0, b""))
    driver._drain(raw)
    assert raw.frames[-1] == (8, 0, b"")
    assert counting.reads == 2


def test_commands_run_whether_or_not_the_wake_socket_is_read():
    """The I/O loop reads the wake socket only when select saw it readable; a command
    queued meanwhile runs at once all the same, and its wake byte is read on the next
    turn."""
    io = driver._IOThread("test-io", lambda: None)
    try:
        ran: list[int] = []
        io.post(lambda: ran.append(1))
        io.run_commands(woken=False)
        assert ran == [1]
        assert io.wake_r.recv(16) == b"\0"  # left for the turn select reports it on
        io.post(lambda: ran.append(2))
        io.run_commands(woken=True)
        assert ran == [1, 2]
        with pytest.raises(BlockingIOError):
            io.wake_r.recv(16)
    finally:
        io.close()


class _Adder:
    def add(self, ctxt: dict[str, Any], a: int, b: int) -> int:
        return a + b


@pytest.mark.rabbit
@pytest.mark.parametrize("transport_url", ["rabbit"], indirect=True)
def test_replies_are_acknowledged_together_and_soon(make_transport, topic, servers):
    """Replies are acknowledged in one frame per batch, and the last ones within
    _REPLY_ACK_AFTER seconds even when no more come: none stay unacknowledged (a
    RabbitMQ driver matter: memory:// has no acknowledgement frames)."""
    from transport import RPCClient, Target

    server_tp, client_tp = make_transport(), make_transport()
    servers.start(server_tp, Target(topic=topic), [_Adder()])
    client = RPCClient(client_tp, Target(topic=topic), timeout=20)
    futures = [client.call_async({}, "add", a=i, b=1) for i in range(300)]
    assert [f.wait(timeout=20) for f in futures] == [i + 1 for i in range(300)]
    assert client.call({}, "add", a=1, b=1) == 2
    sub = client_tp._driver._reply_sub
    assert sub is not None
    assert sub.unacked < driver._REPLY_ACK_EVERY
    deadline = time.monotonic() + 10 * driver._REPLY_ACK_AFTER + 1
    while sub.unacked and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sub.unacked == 0


# -- deliveries taken from the frames (_Intake) -----------------------------------------


def _deliver_frame(
    channel: int, consumer_tag: str, delivery_tag: int, redelivered: bool = False
) -> tuple[int, int, bytes]:
    from amqp.serialization import dumps

    args = dumps("sLbss", (consumer_tag, delivery_tag, redelivered, "", "some_queue"))
    return (1, channel, struct.pack(">HH", 60, 60) + args)


def _header_frame(
    channel: int,
    size: int,
    content_type: str | None = "application/json",
    encoding: str | None = None,
) -> tuple[int, int, bytes]:
    """A content header as py-amqp writes it (class 60, weight 0, the body size, the
    properties given, a delivery mode and headers after them)."""
    from amqp.basic_message import Message

    properties: dict[str, Any] = {"delivery_mode": 2, "application_headers": {"x": 1}}
    if content_type is not None:
        properties["content_type"] = content_type
    if encoding is not None:
        properties["content_encoding"] = encoding
    return (
        2,
        channel,
        struct.pack(">HHQ", 60, 0, size) + Message(**properties)._serialize_properties(),
    )


class _Inner:
    """py-amqp's frame handler and connection, as far as the intake sees them."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, int, bytes]] = []
        self.bytes_recv = 0

    def __call__(self, frame: Any) -> bool:
        kind, channel, buf = frame
        self.frames.append((kind, channel, bytes(buf)))
        return True


class _Channel:
    """What the intake reads of a py-amqp channel, and how a delivery settles on it."""

    def __init__(self, channel_id: int, tags: list[str]) -> None:
        self.channel_id = channel_id
        self.callbacks: dict[str, Any] = {tag: None for tag in tags}
        self.is_closing = False
        self.settled: list[tuple[str, int, bool]] = []

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.settled.append(("ack", tag, multiple))

    def basic_reject(self, tag: int, requeue: bool) -> None:
        self.settled.append(("reject", tag, requeue))


def _intake(decode: bool = False) -> tuple[Any, _Inner, _Channel, list[Any]]:
    inner = _Inner()
    got: list[Any] = []
    channel = _Channel(5, ["reply-tag"])
    intake = driver._Intake(inner, inner)
    intake.watch(channel, got.append, decode=decode)
    return intake, inner, channel, got


def test_a_watched_delivery_is_taken_from_its_frames_whatever_their_number():
    intake, inner, channel, got = _intake()
    body = b'{"id": "x", "t": "r", "v": 1}' * 10
    intake(_deliver_frame(5, "reply-tag", 7))
    intake(_header_frame(5, len(body)))
    for at in range(0, len(body), 64):  # body frames of 64 bytes
        intake((3, 5, memoryview(body[at : at + 64])))
    intake(_deliver_frame(5, "reply-tag", 8, redelivered=True))
    intake(_header_frame(5, 0, content_type=None))  # an empty body: no body frame comes
    assert [(d.delivery_tag, d.body, d.content_type) for d in got] == [
        (7, body, "application/json"),
        (8, b"", None),
    ]
    assert [d.delivery_info["redelivered"] for d in got] == [False, True]
    assert inner.frames == []  # py-amqp saw none of it
    assert inner.bytes_recv == 2 + 2 + len(range(0, len(body), 64))  # counted, for heartbeats
    got[0].ack()
    got[1].requeue()
    got[1].reject(requeue=False)
    assert channel.settled == [("ack", 7, False), ("reject", 8, True), ("reject", 8, False)]


@pytest.mark.parametrize(
    ("encoding", "decode", "expected"),
    [
        (None, True, "é".encode()),
        ("utf-8", True, "é".encode()),  # decoded and encoded again: the same bytes
        ("binary", True, "é".encode()),  # no such codec: kept
        ("latin-1", True, "é".encode().decode("latin-1")),  # as py-amqp's auto_decode
        ("latin-1", False, "é".encode()),  # replies are read as bytes
    ],
)
def test_a_body_is_decoded_as_py_amqp_decodes_it(encoding, decode, expected):
    intake, _, _, got = _intake(decode=decode)
    body = "é".encode()
    intake(_deliver_frame(5, "reply-tag", 1))
    intake(_header_frame(5, len(body), encoding=encoding))
    intake((3, 5, body))
    assert got[0].body == expected


def test_frames_not_of_a_watched_consumer_go_to_py_amqp():
    intake, inner, channel, got = _intake()
    other_channel = [_deliver_frame(6, "reply-tag", 1), _header_frame(6, 2), (3, 6, b"{}")]
    other_tag = [_deliver_frame(5, "cancelled-tag", 2), _header_frame(5, 2), (3, 5, b"{}")]
    not_a_delivery = [(1, 5, struct.pack(">HH", 20, 40) + b"\x00\xc8\x00\x00\x00\x00")]
    heartbeat = [(8, 0, b"")]
    for frame in other_channel + other_tag + not_a_delivery + heartbeat:
        intake(frame)
    channel.is_closing = True  # py-amqp ignores a closing channel's deliveries
    closing = [_deliver_frame(5, "reply-tag", 3), _header_frame(5, 2), (3, 5, b"{}")]
    for frame in closing:
        intake(frame)
    assert got == []
    assert inner.frames == [
        (kind, channel_id, bytes(buf))
        for kind, channel_id, buf in other_channel
        + other_tag
        + not_a_delivery
        + heartbeat
        + closing
    ]


def test_a_delivery_py_amqp_began_before_the_channel_was_watched_ends_there():
    inner = _Inner()
    got: list[Any] = []
    intake = driver._Intake(inner, inner)
    intake(_deliver_frame(5, "reply-tag", 1))  # not watched yet: py-amqp's
    intake.watch(_Channel(5, ["reply-tag"]), got.append, decode=False)
    intake(_header_frame(5, 2))
    intake((3, 5, b"{}"))
    assert got == []
    assert [kind for kind, _, _ in inner.frames] == [1, 2, 3]


def test_a_frame_out_of_order_in_a_delivery_is_a_broken_connection():
    intake, _, _, got = _intake()
    intake(_deliver_frame(5, "reply-tag", 1))
    with pytest.raises(ConnectionError):
        intake((3, 5, b"{}"))  # a body before its header
    intake(_deliver_frame(5, "reply-tag", 2))  # the next delivery starts afresh
    intake(_header_frame(5, 2))
    with pytest.raises(ConnectionError):
        intake(_deliver_frame(5, "reply-tag", 3))  # a method before the body
    assert got == []


@pytest.mark.rabbit
@pytest.mark.parametrize("transport_url", ["rabbit"], indirect=True)
def test_deliveries_over_rabbitmq_skip_py_amqps_and_kombus_layers(
    make_transport, topic, servers, monkeypatch
):
    """Once the queues are consumed, replies come through the intake, not through
    py-amqp's Basic.Deliver (_deliver_reply), and requests reach the server as the
    intake's deliveries, not kombu's messages; both are acknowledged as before."""
    from transport import RPCClient, Target

    server_tp, client_tp = make_transport(), make_transport()
    servers.start(server_tp, Target(topic=topic), [_Adder()])
    client = RPCClient(client_tp, Target(topic=topic), timeout=20)
    assert client.call({}, "add", a=1, b=1) == 2  # the reply queue is consumed by now
    kinds: list[str] = []
    server_driver = server_tp._driver
    original_deliver = server_driver._deliver

    def deliver(sub: Any, message: Any) -> None:
        kinds.append(type(message).__name__)
        original_deliver(sub, message)

    monkeypatch.setattr(server_driver, "_deliver", deliver)
    calls = {"_deliver_reply": 0, "_take_reply": 0}
    amqp_driver = client_tp._driver
    for name in calls:
        original = getattr(amqp_driver, name)

        def counted(*args: Any, _name: str = name, _original: Any = original) -> Any:
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(amqp_driver, name, counted)
    futures = [client.call_async({}, "add", a=i, b=1) for i in range(50)]
    assert [f.wait(timeout=20) for f in futures] == [i + 1 for i in range(50)]
    assert client.call({}, "add", a=2, b=2) == 4
    assert calls["_deliver_reply"] == 0
    assert calls["_take_reply"] >= 1  # replies may share a message (a batch)
    assert kinds and set(kinds) == {"_Delivery"}
    assert server_driver._subs[0].channel is not None
    sub = client_tp._driver._reply_sub
    deadline = time.monotonic() + 10 * driver._REPLY_ACK_AFTER + 1
    while sub.unacked and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sub.unacked == 0
