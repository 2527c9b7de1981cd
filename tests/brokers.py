"""Broker housekeeping shared by the test folders."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import NoReturn


def delete_queues(url: str, names: Iterable[str]) -> None:
    """Delete these queues on the broker at ``url``; names that never existed are fine."""
    from kombu.connection import Connection  # tests only: the transport imports kombu once

    with Connection(url) as conn:
        channel = conn.channel()
        for name in names:
            try:
                channel.queue_delete(name)
            except Exception:  # a queue that never existed closes the channel on some brokers
                channel = conn.channel()
        channel.close()


def no_service(env: str) -> NoReturn:
    """A test needs the server ``env`` names and it is not set: skip on a developer's
    machine, fail in CI (``CI`` set), where a skipped broker or database test would hide
    a capability nobody checked."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"{env} is not set; CI must run the broker and database tests for real")
    pytest.skip(f"{env} is not set (CI sets it)")
