"""Broker housekeeping shared by the test folders."""

from __future__ import annotations

from collections.abc import Iterable


def delete_queues(url: str, names: Iterable[str]) -> None:
    """Delete these queues on the broker at ``url``; names that never existed are fine."""
    import kombu  # tests only: the transport itself imports kombu in one module

    with kombu.Connection(url) as conn:
        channel = conn.channel()
        for name in names:
            try:
                channel.queue_delete(name)
            except Exception:  # a queue that never existed closes the channel on some brokers
                channel = conn.channel()
        channel.close()
