"""A compute process that puts slow calls in flight, says so, and waits to be SIGKILLed.

Run as::

    python -m tests.reliability.dying_client TRANSPORT_URL TOPIC REPLY_QUEUE_EXPIRES CALLS SECONDS
Prints ``READY <reply queue>`` once every call is on the broker.
"""

from __future__ import annotations

import sys
import time

import transport
from conductor.api import ConductorAPI
from objects import base
from objects.context import RequestContext
from tests.reliability.served import import_probe
from transport.config import TransportConfig


def main() -> int:
    url, topic, expires, calls, seconds = sys.argv[1:6]
    probe = import_probe()
    rpc = transport.get_transport(url, TransportConfig(reply_queue_expires=float(expires)))
    api = ConductorAPI(rpc, topic=topic, timeout=120, owns_transport=True)
    base.set_indirection_api(api)
    ctx = RequestContext(user_id="doomed-client")
    futures = [probe.Probe.sleep_async(ctx, float(seconds)) for _ in range(int(calls))]
    assert not any(f.done() for f in futures)
    print(f"READY {rpc.reply_address}", flush=True)
    time.sleep(600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
