"""A user's object module for the reliability suite, served with
``conductor serve --objects tests.reliability.probe_objects``.

``Probe`` has no table: its remotable methods sleep, echo and report what the conductor
saw, so tests can hold a request open for as long as they need or look at the context.
"""

from __future__ import annotations

import time
from typing import Any

from objects import base, fields


@base.VersionedObjectRegistry.register
class Probe(base.VersionedObject):
    """Remotable helpers that need no database."""

    VERSION = "1.0"
    fields = {"name": fields.StringField(nullable=True)}

    @base.remotable_classmethod
    def sleep(cls, context: Any, seconds: float) -> float:
        """Hold the request for ``seconds``; return them."""
        time.sleep(seconds)
        return seconds

    @base.remotable_classmethod
    def echo(cls, context: Any, value: Any) -> Any:
        return value

    @base.remotable_classmethod
    def whoami(cls, context: Any) -> dict[str, Any]:
        """The identity the conductor ran the request with."""
        return {"user_id": context.user_id, "is_admin": context.is_admin}

    @base.remotable_classmethod
    def fail(cls, context: Any) -> None:
        """Raise from a few frames down, so a leaked traceback would show these names."""
        _deep_frame_marker_one()

    @classmethod
    def not_remotable(cls, context: Any) -> str:
        """A plain classmethod: callers must never reach it."""
        raise AssertionError("a non-remotable method ran for a remote caller")


def _deep_frame_marker_one() -> None:
    _deep_frame_marker_two()


def _deep_frame_marker_two() -> None:
    raise RuntimeError("probe failure on purpose")
