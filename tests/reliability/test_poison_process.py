"""Poison messages against a real ``conductor serve`` on RabbitMQ: JSON nested past the
recursion limit and reply addresses no broker takes are parked, never held; the conductor
keeps serving, logs one line each, and its call monitor still works when it is SIGKILLed."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from objects.context import RequestContext
from tests.reliability import served
from tests.reliability.badinput import _class_action
from tests.reliability.rawpeer import envelope
from transport.exceptions import CallMonitorTimeout

pytestmark = [pytest.mark.rabbit]

DEEP = 200_000


def _deep(reply_to: str | None) -> bytes:
    head = json.dumps(
        {
            "id": uuid.uuid4().hex,
            "reply_to": reply_to,
            "method": "object_class_action_versions",
            "ctxt": {},
        }
    )
    return head[:-1].encode() + b',"args":{"objname":' + b"[" * DEEP + b"]" * DEEP + b"}}"


def _long_reply_to() -> bytes:
    env = envelope("object_class_action_versions", _class_action("Probe", "sleep", [0.2]))
    env["reply_to"], env["hb"] = "r" * 300, 0.2
    return json.dumps(env).encode()


def test_poison_messages_are_parked_and_the_call_monitor_survives_them(
    broker_url: str, database_url: str, topic: str
) -> None:
    probe = served.import_probe()
    with served.as_process(broker_url, database_url, topic) as s:
        # Given a conductor (8 workers: 32 prefetched) sent 48 poison messages
        poison = [_deep(None), _deep(s.peer.reply_address), _long_reply_to()] * 16
        before = len(s.records())
        for body in poison:
            s.peer.send(body)
        # Then a normal call is answered at once
        started = time.monotonic()
        ctx = RequestContext(user_id="after")
        assert probe.Probe.echo(ctx, "alive") == "alive"
        assert time.monotonic() - started < 5
        # And every poison message is parked, logged in one line, without a traceback
        parked: list[tuple[bytes, str]] = []
        deadline = time.monotonic() + 20
        while len(parked) < len(poison) and time.monotonic() < deadline:
            parked += s.peer.dead_letters()
            time.sleep(0.1)
        assert sorted(b for b, _ in parked) == sorted(poison)
        s.settle_logs()
        assert len(s.records()) - before <= len(poison)
        assert "Traceback" not in s.output()
        # And the call monitor still works: a caller of a SIGKILLed conductor learns it in
        # seconds (the default 1 s interval, 4 misses), not at its timeout
        future = probe.Probe.sleep_async(ctx, 30)
        time.sleep(2.0)
        assert s.process is not None
        killed_at = time.monotonic()
        s.process.kill()
        with pytest.raises(CallMonitorTimeout):
            future.result(timeout=15)
        assert time.monotonic() - killed_at < 7


def test_refused_admin_claims_are_logged_one_line_each_without_a_traceback(
    broker_url: str, database_url: str, topic: str
) -> None:
    probe = served.import_probe()
    admin = RequestContext(user_id="ops", is_admin=True)
    with served.as_process(broker_url, database_url, topic) as s:
        before = len(s.records())
        for _ in range(5):
            with pytest.raises(PermissionError):
                probe.Probe.whoami(admin)
        s.settle_logs()
        assert len(s.records()) - before == 5
        assert "Traceback" not in s.output()
