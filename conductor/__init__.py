"""The conductor: runs remotable object methods against the database, over RPC.

Compute side::

    import conductor, objects
    objects.register_all()
    conductor.connect("amqp://guest:guest@127.0.0.1:5672//")
    inst = objects.Instance.get_async(ctx, 42)

Service side: ``conductor serve`` (see ``conductor --help``) or, in-process,
``conductor.Conductor(transport_url, database_url).start()``.
"""

from conductor.api import ConductorAPI, connect
from conductor.service import Conductor

__all__ = ["Conductor", "ConductorAPI", "connect"]
