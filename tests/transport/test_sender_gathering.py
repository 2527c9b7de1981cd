"""The sender gathers a batch while many calls are in flight, and no longer than needed."""

from __future__ import annotations

import threading
import time
from typing import Any

from transport import Target, _sender


class _Recorder:
    """The part of a driver the sender uses: records when each message went out."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes]] = []
        self.transient: list[bool] = []
        self.done = threading.Event()

    def send(
        self,
        target: Target,
        body: bytes,
        *,
        ttl: float | None = None,
        call: bool = False,
        transient: bool = False,
    ) -> None:
        self.sent.append((time.monotonic(), body))
        self.transient.append(transient)
        self.done.set()

    def try_send(self, *args: Any, **kwargs: Any) -> bool:
        return False


def _sender_with(in_flight: int, driver: _Recorder) -> _sender.Sender:
    # 20,000 calls in flight: a pause of 0.2 s (10 us each, under the 1 s cap)
    return _sender.Sender(
        driver,  # type: ignore[arg-type]
        max_batch=100_000,
        max_bytes=1 << 30,
        in_flight=lambda: in_flight,
        linger=1.0,
    )


def _first_message(in_flight: int, count: int) -> tuple[float, list[bytes]]:
    """Queue ``count`` requests with ``in_flight`` calls in flight: how long until the
    first message went out, and every message sent by the time it did."""
    driver = _Recorder()
    sender = _sender_with(in_flight, driver)
    target = Target(topic="t")
    try:
        started = time.monotonic()
        for i in range(count):
            sender.submit(target, b'{"id":"%d"}' % i, None, lambda error: None, call=True)
        assert driver.done.wait(5)
        return driver.sent[0][0] - started, [body for _, body in driver.sent]
    finally:
        sender.close()


def test_the_pause_ends_once_a_quarter_of_the_calls_in_flight_are_queued() -> None:
    took, bodies = _first_message(20_000, 5_000)
    assert took < 0.15, f"published after {took:.3f}s, not once 5,000 of 20,000 were queued"
    assert sum(body.count(b'"id"') for body in bodies) == 5_000


def test_fewer_queued_wait_out_the_pause_and_leave_together() -> None:
    took, bodies = _first_message(20_000, 100)
    assert took >= 0.15, f"published after {took:.3f}s, before the pause ended"
    assert len(bodies) == 1 and bodies[0].count(b'"id"') == 100


def test_reads_queued_with_writes_leave_in_messages_of_their_own() -> None:
    """A message is transient only when every request in it may be lost with the broker
    (``transient``: reads); queued together, reads and writes are packed apart."""
    driver = _Recorder()
    sender = _sender_with(20_000, driver)
    target = Target(topic="t")
    try:
        for i in range(6):
            body = b'{"id":"%d"}' % i
            sender.submit(target, body, None, lambda error: None, call=True, transient=i % 2 == 0)
        deadline = time.monotonic() + 5
        while sum(body.count(b'"id"') for _, body in driver.sent) < 6:
            assert time.monotonic() < deadline, "not every request was published"
            time.sleep(0.01)
    finally:
        sender.close()
    packed = {flag: body for flag, (_, body) in zip(driver.transient, driver.sent, strict=True)}
    assert len(driver.sent) == 2
    assert [packed[True].count(b'"id":"%d"' % i) for i in range(6)] == [1, 0, 1, 0, 1, 0]
    assert [packed[False].count(b'"id":"%d"' % i) for i in range(6)] == [0, 1, 0, 1, 0, 1]
