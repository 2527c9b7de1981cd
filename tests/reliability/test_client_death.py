"""A compute process dies with calls pending: its reply queue expires, nobody else notices."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from objects import base
from objects.context import RequestContext
from tests.conductor.processes import REPO, child_env
from tests.reliability import faults, served

pytestmark = [pytest.mark.rabbit, pytest.mark.slow]

EXPIRES = 3.0


def test_dead_clients_reply_queue_expires_and_other_callers_are_unaffected(
    broker_vhost: faults.Vhost, database_url: str, topic: str
) -> None:
    url = broker_vhost.url
    with served.as_process(url, database_url, topic) as s:
        probe = served.import_probe()
        ctx = RequestContext(user_id="survivor")
        # Given a healthy caller, whose reply queue expires by default once it is gone
        assert probe.Probe.echo(ctx, "hi") == "hi"
        own = s.client._client.transport.reply_address
        assert broker_vhost.queues()[own]["arguments"]["x-expires"] == 60_000

        # When another compute process puts calls in flight and is SIGKILLed
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.dying_client",
                url,
                topic,
                str(EXPIRES),
                "12",
                "1.5",
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
            cwd=REPO,
        )
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line.startswith("READY "), line
            dead_queue = line.split()[1]
            assert dead_queue in broker_vhost.queues()
            child.kill()
        finally:
            child.kill()
            child.wait()
            if child.stdout is not None:
                child.stdout.close()

        # Then the conductor still answers the survivor while it finishes the dead one's work
        futures = [probe.Probe.echo_async(ctx, i) for i in range(100)]
        assert [f.result(timeout=30) for f in futures] == list(range(100))

        # ... the dead caller's reply queue (and the replies sent to it) expires
        deadline = time.monotonic() + EXPIRES + 30
        while dead_queue in (queues := broker_vhost.queues()):
            assert time.monotonic() < deadline, queues[dead_queue]
            time.sleep(0.5)
        assert own in queues

        # ... the conductor is up, nothing logged as a failure, and it still serves
        assert s.process is not None and s.process.proc.poll() is None
        assert " ERROR " not in s.process.output and "Traceback" not in s.process.output
        assert probe.Probe.echo(ctx, "still here") == "still here"
    base.set_indirection_api(None)
