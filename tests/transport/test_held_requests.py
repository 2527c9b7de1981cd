"""Requests a server holds behind busy workers get heartbeats, so the caller's monitor
(which looks for a server that froze holding its request) never mistakes them for lost.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import transport
from transport import RPCClient, Target

from .conftest import MakeTransport, Servers


class Slow:
    def __init__(self) -> None:
        self.started = threading.Event()

    def slow(self, ctxt: Any, seconds: float) -> float:
        self.started.set()
        time.sleep(seconds)
        return seconds

    def echo(self, ctxt: Any, value: Any) -> Any:
        return value


def test_a_request_held_behind_a_busy_worker_is_not_taken_for_lost(
    tp: transport.Transport, topic: str, servers: Servers, make_transport: MakeTransport
) -> None:
    endpoint = Slow()
    servers.start(make_transport(), Target(topic=topic), [endpoint], max_workers=1)
    client = RPCClient(tp, Target(topic=topic), timeout=30, call_monitor_interval=0.1)
    busy = client.call_async({}, "slow", seconds=4.0)
    assert endpoint.started.wait(10)
    held = client.call_async({}, "echo", value="held")  # waits in the server for 4 s
    assert held.result(20) == "held"
    assert busy.result(20) == 4.0
