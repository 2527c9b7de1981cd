"""Bad input sent straight to a conductor's queue: typed error or dead letter, logged once,
and the conductor keeps serving.

Runs against an in-process conductor on ``memory://`` always, and against a real
``conductor serve`` on RabbitMQ (raw kombu publishes) when the broker is configured.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from objects.context import RequestContext
from tests.reliability import served
from tests.reliability.badinput import CASES, Case, pickle_case
from tests.reliability.rawpeer import rebuild_error
from transport import exceptions as texc


@pytest.fixture(params=["memory", pytest.param("rabbit", marks=pytest.mark.rabbit)])
def conductor_under_test(
    request: pytest.FixtureRequest, database_url: str, topic: str
) -> Iterator[served.Served]:
    if request.param == "memory":
        with served.in_process(database_url, topic) as s:
            yield s
    else:
        broker_url = request.getfixturevalue("broker_url")
        with served.as_process(broker_url, database_url, topic) as s:
            yield s


def assert_still_serving(s: served.Served) -> None:
    probe = served.import_probe()
    assert probe.Probe.echo(RequestContext(user_id="after"), {"ok": [1, 2]}) == {"ok": [1, 2]}


def wait_dead_letters(
    s: served.Served, count: int, timeout: float = 15.0
) -> list[tuple[bytes, str]]:
    found: list[tuple[bytes, str]] = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        found += s.peer.dead_letters()
        if len(found) < count:
            time.sleep(0.05)
    return found


def send_case(s: served.Served, case: Case) -> tuple[str, bytes]:
    request_id = uuid.uuid4().hex
    reply_to = s.peer.reply_address if case.with_reply else None
    body = case.build(reply_to, request_id)
    s.peer.send(body, case.content_type)
    return request_id, body


def check_case(s: served.Served, case: Case) -> None:
    before = len(s.records())
    request_id, body = send_case(s, case)
    if case.expect is not None:
        error = rebuild_error(s.peer.reply(request_id))
        assert not isinstance(error, texc.RemoteError), (case.name, error)
        assert isinstance(error, case.expect), (case.name, type(error), error)
        assert wait_dead_letters(s, 0, timeout=0) == []
    else:
        parked = wait_dead_letters(s, 1)
        assert len(parked) == 1, case.name
        if "bytes are kept" in parked[0][1]:
            # Over the size limit on RabbitMQ: never read whole, its first bytes parked.
            assert len(parked[0][0]) < len(body) and body.startswith(parked[0][0]), case.name
        else:
            assert [b for b, _ in parked] == [body], case.name  # parked as sent: nothing lost
        assert parked[0][1], "a dead letter says why it was rejected"
    s.settle_logs()
    logged = s.records()[before:]
    assert len(logged) == 1, (case.name, logged)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_request_gets_a_typed_error_or_a_dead_letter_and_is_logged_once(
    sqlite_url: str, topic: str, case: Case
) -> None:
    # One conductor per case in-process (cheap); the run below sends the whole catalogue
    # to one conductor (a real `conductor serve` on RabbitMQ and PostgreSQL in CI).
    with served.in_process(sqlite_url, topic) as s:
        check_case(s, case)
        assert_still_serving(s)


def test_every_bad_request_in_a_row_leaves_the_conductor_serving(
    conductor_under_test: served.Served,
) -> None:
    # Given a conductor that has just been sent the whole catalogue back to back
    s = conductor_under_test
    for case in CASES:
        check_case(s, case)
    # Then normal calls still work, many at once
    probe = served.import_probe()
    ctx = RequestContext(user_id="after")
    futures = [probe.Probe.echo_async(ctx, i) for i in range(50)]
    assert [f.result(timeout=30) for f in futures] == list(range(50))


@pytest.mark.rabbit
def test_pickle_content_type_is_dead_lettered_and_never_unpickled(
    broker_url: str, database_url: str, topic: str, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    with served.as_process(broker_url, database_url, topic) as s:
        check_case(s, pickle_case(str(marker)))
        assert_still_serving(s)
    assert not marker.exists(), "the conductor unpickled a message"
