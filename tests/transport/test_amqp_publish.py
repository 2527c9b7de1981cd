"""The AMQP driver's plain publish writes the frames py-amqp's own ``send_method`` would."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("amqp")

import amqp  # noqa: E402
from amqp import spec  # noqa: E402
from amqp.method_framing import frame_writer  # noqa: E402

from transport.drivers import amqp as driver  # noqa: E402


class _Wire:
    """What py-amqp's frame writer uses of a connection and its transport."""

    def __init__(self) -> None:
        self.frame_max = 131072
        self.bytes_sent = 0
        self.written: list[bytes] = []
        self.frame_writer = frame_writer(self, self)

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))


class _Channel:
    channel_id = 3

    def __init__(self, wire: _Wire) -> None:
        self.connection = wire


def _py_amqp_frames(body: bytes, persistent: bool, expiration: str | None) -> list[bytes]:
    wire = _Wire()
    properties: dict[str, Any] = {
        "content_type": "application/json",
        "content_encoding": "binary",
        "delivery_mode": 2 if persistent else 1,
        "priority": 0,
    }
    if expiration is not None:
        properties["expiration"] = expiration
    channel: Any = amqp.Channel.__new__(amqp.Channel)
    channel.connection, channel.channel_id = wire, 3
    channel.send_method(
        spec.Basic.Publish,
        "Bssbb",
        (0, "ex", "reply_x", False, False),
        amqp.Message(body, **properties),
    )
    return wire.written


@pytest.mark.parametrize("persistent", [True, False])
@pytest.mark.parametrize("ttl", [None, 60.0, 0.25, 86400.5])
def test_a_plain_publish_writes_what_py_amqp_would(
    monkeypatch: pytest.MonkeyPatch, persistent: bool, ttl: float | None
) -> None:
    # Given a publisher socket with nothing to read
    wire = _Wire()
    wire._transport = type("T", (), {"sock": object()})()  # type: ignore[attr-defined]
    monkeypatch.setattr("select.select", lambda r, w, x, t: ([], [], []))
    body = b'{"id":"1","t":"r","v":42}'
    # When the driver publishes plainly
    driver._Publisher._publish_plain(_Channel(wire), "ex", "reply_x", body, ttl, persistent, None)
    # Then the bytes on the wire are py-amqp's own
    expiration = None if ttl is None else str(int(ttl * 1000))
    assert wire.written == _py_amqp_frames(body, persistent, expiration)
    assert wire.bytes_sent == 1
