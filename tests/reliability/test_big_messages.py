"""Messages far over the size limit against a real ``conductor serve`` on RabbitMQ: refused
without ever being read whole, so a burst of them costs the conductor almost no memory.

``CONDUCTOR_BIG_MESSAGE_MB`` (default 24) sets the size of each of the 10 messages; the
figures line prints the conductor's peak RSS before and after.
"""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest

from objects.context import RequestContext
from tests.reliability import served
from tests.reliability.badinput import _class_action
from tests.reliability.rawpeer import envelope, rebuild_error
from transport import exceptions as texc

pytestmark = [pytest.mark.rabbit]

COUNT = 10
SIZE_MB = int(os.environ.get("CONDUCTOR_BIG_MESSAGE_MB", "24"))


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _big(request_id: str, reply_to: str | None) -> bytes:
    env = envelope(
        "object_class_action_versions", _class_action("Probe", "echo", ["x" * (SIZE_MB << 20)])
    )
    env["id"], env["reply_to"] = request_id, reply_to
    return json.dumps(env).encode()


def test_messages_over_the_limit_are_refused_without_being_read_whole(
    broker_url: str, database_url: str, topic: str
) -> None:
    probe = served.import_probe()
    with served.as_process(broker_url, database_url, topic) as s:
        assert s.process is not None
        ctx = RequestContext(user_id="big")
        assert probe.Probe.echo(ctx, "warm") == "warm"
        before = _peak_rss_mb(s.process.proc.pid)
        # Given ten messages of SIZE_MB each, half of them with a reply address
        ids = [uuid.uuid4().hex for _ in range(COUNT)]
        for i, request_id in enumerate(ids):
            s.peer.send(_big(request_id, s.peer.reply_address if i % 2 else None))
        # Then the callers get MessageTooLarge, the others are parked (their first bytes)
        for request_id in ids[1::2]:
            error = rebuild_error(s.peer.reply(request_id, timeout=120))
            assert isinstance(error, texc.MessageTooLarge), error
        parked: list[tuple[bytes, str]] = []
        deadline = time.monotonic() + 60
        while len(parked) < COUNT // 2 and time.monotonic() < deadline:
            parked += s.peer.dead_letters()
            time.sleep(0.2)
        after = _peak_rss_mb(s.process.proc.pid)
        print(
            f"figures: {COUNT} x {SIZE_MB} MB: conductor peak RSS {before:.0f} MB -> {after:.0f} MB"
        )
        assert len(parked) == COUNT // 2
        assert all(len(body) <= 64 * 1024 and "bytes are kept" in reason for body, reason in parked)
        assert probe.Probe.echo(ctx, "alive") == "alive"
        # And the conductor's memory barely moved: no body was ever held whole
        assert after - before < 64, (before, after)
