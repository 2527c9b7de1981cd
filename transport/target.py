"""Where a message goes: :class:`Target`, plus version arithmetic used by client and server."""

from __future__ import annotations

import dataclasses

from transport.exceptions import InvalidTarget

__all__ = ["Target", "version_is_compatible"]


@dataclasses.dataclass(frozen=True)
class Target:
    """Identifies a destination (client side) or what a server consumes (server side).

    All fields are optional as in oslo.messaging; sending needs a ``topic``.

    Attributes:
        topic: the service name; servers of one topic compete for its messages.
        server: one particular server of the topic (``<topic>.<server>`` queue).
        fanout: deliver a cast to every server of the topic.
        version: the API version a client sends, or an endpoint serves (default "1.0").
        namespace: separates endpoints served on one topic.
        exchange: the broker exchange; None means the transport's default.
    """

    topic: str | None = None
    server: str | None = None
    fanout: bool = False
    version: str | None = None
    namespace: str | None = None
    exchange: str | None = None

    def replace(self, **overrides: object) -> Target:
        """Return a copy with some fields replaced (unknown names raise TypeError)."""
        return dataclasses.replace(self, **overrides)  # type: ignore[arg-type]

    def require_topic(self) -> str:
        """Return the topic, or raise :class:`InvalidTarget` when there is none."""
        if not self.topic:
            raise InvalidTarget(target=repr(self), reason="a topic is required to send")
        return self.topic


def _parse(version: str) -> tuple[int, int]:
    try:
        major, _, minor = version.partition(".")
        return int(major), int(minor or 0)
    except ValueError:
        raise ValueError(f"invalid version {version!r}, expected 'MAJOR.MINOR'") from None


def version_is_compatible(have: str | None, wanted: str | None) -> bool:
    """Whether something at version ``have`` can serve a request for ``wanted``.

    Same major, and ``wanted``'s minor not above ``have``'s. None means "1.0".
    """
    have_major, have_minor = _parse(have or "1.0")
    want_major, want_minor = _parse(wanted or "1.0")
    return have_major == want_major and want_minor <= have_minor
