"""The conductor: runs remotable object methods against the database, over RPC.

Compute side::

    import conductor, objects
    objects.register_all()
    conductor.connect("amqp://guest:guest@127.0.0.1:5672//")
    inst = objects.Instance.get_async(ctx, 42)

Service side: ``conductor serve`` (see ``conductor --help``) or, in-process,
``conductor.Conductor(transport_url, database_url).start()``.

``import conductor`` loads only what a compute process uses (the RPC client); SQLAlchemy
and alembic load the first time ``conductor.Conductor`` (or ``conductor.db``) is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conductor.api import ConductorAPI, connect

if TYPE_CHECKING:
    from conductor.service import Conductor

__all__ = ["Conductor", "ConductorAPI", "connect"]


def __getattr__(name: str) -> Any:
    if name == "Conductor":
        from conductor.service import Conductor

        return Conductor
    raise AttributeError(f"module 'conductor' has no attribute {name!r}")
