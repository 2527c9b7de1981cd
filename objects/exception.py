"""Exceptions raised by versioned objects.

Every exception takes an optional message as its first positional argument plus
keyword fields, kept on ``exc.kwargs`` so they survive the trip over RPC::

    raise NotFound("no Instance with id 42", objname="Instance", id=42)

Tree::

    ObjectsError
    ├── IncompatibleObjectVersion   the registry has no compatible version
    ├── UnsupportedObjectError      unknown object name or namespace
    ├── ObjectActionError           a remotable action cannot run (bad state, not remotable, ...)
    │   ├── OrphanedObjectError     a lazy load was asked of an object with no context
    │   ├── ReadOnlyFieldError      a read-only field that is set was assigned again
    │   └── AttributeNotLoadable    an unset field of a class that cannot lazy-load
    │                               (also NotImplementedError and AttributeError)
    ├── NotFound                    no row / object for the key
    ├── ConcurrentUpdate            a save based on a stale copy
    ├── ObjectValueError            a primitive or value is malformed (also a ValueError)
    │   └── InvalidTargetVersion    a primitive was asked for above the object's VERSION
    ├── DuplicateEntry              a create collides with a unique key
    ├── RequestIdReused             a request id already ran with other content
    ├── DatabaseError               the database failed the request (outage, deadlock); retry later
    ├── DatabaseNotAvailable        a database call was made outside the conductor
    └── WouldBlockEventLoop         a blocking wait inside a running asyncio event loop
                                    (also a RuntimeError)

The transport layer re-raises these on the caller as their own types (it names this
module by string, ``"objects.exception"``), so callers can ``except NotFound``.
"""

from __future__ import annotations

from typing import Any


class ObjectsError(Exception):
    """Root of every exception this package raises."""

    msg_fmt = "An unknown object error occurred"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.msg_fmt % kwargs
            except (KeyError, TypeError, ValueError):
                message = self.msg_fmt
        self.message = message
        super().__init__(message)

    def __reduce__(self) -> Any:  # keeps copy/deepcopy working with keyword fields
        return (_rebuild, (type(self), self.message, self.kwargs))


def _rebuild(cls: type[ObjectsError], message: str, kwargs: dict[str, Any]) -> ObjectsError:
    return cls(message, **kwargs)


class IncompatibleObjectVersion(ObjectsError):
    """Raised when no registered version of an object can read the requested one.

    Fields: ``objname``, ``objver`` (requested), ``supported`` (highest we have).
    """

    msg_fmt = (
        "Version %(objver)s of %(objname)s is not supported, supported version is %(supported)s"
    )


class UnsupportedObjectError(ObjectsError):
    """Raised for an unknown object name or a foreign namespace. Field: ``objtype``."""

    msg_fmt = "Unsupported object type %(objtype)s"


class ObjectActionError(ObjectsError):
    """Raised when an action cannot run on an object. Fields: ``action``, ``reason``."""

    msg_fmt = "Object action %(action)s failed because: %(reason)s"


class OrphanedObjectError(ObjectActionError):
    """Raised when an object without a context is asked to lazy-load or call remotely."""

    msg_fmt = "Cannot call %(method)s on orphaned %(objtype)s object"


class ReadOnlyFieldError(ObjectActionError):
    """Raised when a read-only field that is already set is assigned. Field: ``field``."""

    msg_fmt = "Cannot modify read-only field %(field)s"


class AttributeNotLoadable(ObjectActionError, NotImplementedError, AttributeError):
    """Raised when an unset field is read on a class whose ``obj_load_attr`` cannot load it.

    Also a ``NotImplementedError`` (oslo's type for this) and an ``AttributeError`` (so
    ``hasattr`` and ``getattr(obj, name, default)`` work). Fields: ``objtype``, ``attr``.
    Set the field, or override ``obj_load_attr`` to load it.
    """

    msg_fmt = "%(objtype)s.%(attr)s is not set and %(objtype)s cannot lazy-load it"


class NotFound(ObjectsError):
    """Raised when the object asked for does not exist. Fields: ``objname``, plus the key."""

    msg_fmt = "%(objname)s not found"


class ConcurrentUpdate(ObjectsError):
    """Raised when a save is based on a stale copy; nothing was written.

    Fields: ``objname``, ``id``, ``expected`` (revision the caller had), ``actual``.
    Refresh the object and apply the change again.
    """

    msg_fmt = "%(objname)s %(id)s was changed by someone else; refresh and retry"


class ObjectValueError(ObjectsError, ValueError):
    """Raised when a value or a wire primitive is malformed. Field: ``reason``."""

    msg_fmt = "Invalid object value: %(reason)s"


class InvalidTargetVersion(ObjectValueError):
    """Raised when a primitive is asked for at a version above the object's own.

    Fields: ``objname``, ``version`` (asked), ``supported`` (the object's VERSION).
    """

    msg_fmt = "%(objname)s cannot be serialized at %(version)s; its version is %(supported)s"


class DuplicateEntry(ObjectsError):
    """Raised when a create or save collides with a unique key. Fields: ``objname``, ``columns``."""

    msg_fmt = "%(objname)s already exists with the same %(columns)s"


class RequestIdReused(ObjectsError):
    """Raised when a request arrives with the id of an earlier request whose content differed.

    The conductor answers a request it already ran from the stored result; a request
    whose content differs from the stored one's is another request that reused the id (a
    broken or hostile sender). It is refused: it did not run, and the earlier request's
    stored result is left as it was. Field: ``request_id``. Send each request with a
    fresh id.
    """

    msg_fmt = (
        "Request id %(request_id)s was already used by another request with other "
        "content; this request did not run: send it with a fresh request id"
    )


class DatabaseError(ObjectsError):
    """Raised when the database failed the request (connection lost, deadlock, timeout).

    Nothing was committed; the request may be retried once the database is back.
    """

    msg_fmt = "The database failed the request: %(reason)s; nothing was written, retry later"


class DatabaseNotAvailable(ObjectsError):
    """Raised when an object method touches the database outside the conductor.

    Compute processes never open a database session: hook them to a conductor with
    ``conductor.connect(transport_url)`` so remotable methods run there.
    """

    msg_fmt = (
        "No database in this process: remotable methods run on the conductor; "
        "call conductor.connect(transport_url) at start-up"
    )


class WouldBlockEventLoop(ObjectsError, RuntimeError):
    """Raised when code running in an asyncio event loop would block it waiting for the
    conductor: reading a field of a pending object, or ``wait()`` on one still in flight.

    ``await`` the object (or the future) instead. Field: ``objname``.
    """

    msg_fmt = (
        "%(objname)s is still waiting for the conductor; blocking here would stall the "
        "event loop: await it first (obj = await obj, or await the _async call)"
    )
