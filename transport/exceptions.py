"""Exceptions raised by the transport.

Every exception takes an optional message as its first positional argument plus keyword
fields, kept on ``exc.kwargs`` so they survive the trip back from a server (the caller
rebuilds them with ``cls(*args, **kwargs)``)::

    raise MessageTooLarge(size=5_000_000, limit=4_194_304)

Tree::

    MessagingException                 root of everything the transport raises
    ├── MessagingTimeout               the call's deadline passed (also a TimeoutError)
    │   └── CallMonitorTimeout         the server running the call stopped sending heartbeats
    ├── RemoteError                    the server raised a type the caller may not rebuild
    ├── UnsupportedVersion             no endpoint serves that namespace/version (or over the cap)
    ├── NoSuchMethod                   the endpoint has no public method of that name
    ├── InvalidTarget                  the target cannot be used that way (no topic, call to fanout)
    ├── MessageUndeliverable           nobody consumes the target's topic
    ├── MessageTooLarge                an envelope is over the size limit
    ├── MessageDeliveryFailure         a message was malformed, undecodable or could not be sent
    │   └── BrokerRefused              the broker refused a queue or exchange (rights, type, lock)
    ├── QueueMismatch                  a queue exists with other arguments (quorum vs classic, TTLs)
    └── TransportError                 the broker connection failed
        └── ConnectionLost             the connection dropped while the operation was pending
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BrokerRefused",
    "CallMonitorTimeout",
    "ConnectionLost",
    "InvalidTarget",
    "MessageDeliveryFailure",
    "MessageTooLarge",
    "MessageUndeliverable",
    "MessagingException",
    "MessagingTimeout",
    "NoSuchMethod",
    "QueueMismatch",
    "RemoteError",
    "TransportError",
    "UnsupportedVersion",
]


class MessagingException(Exception):
    """Root of every exception the transport raises."""

    msg_fmt = "A messaging error occurred"

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


def _rebuild(cls: type[MessagingException], message: str, kwargs: dict[str, Any]) -> Any:
    return cls(message, **kwargs)


class MessagingTimeout(MessagingException, TimeoutError):
    """Raised when a call's overall deadline passes without a reply.

    Fields: ``method``, ``timeout`` (seconds). Heartbeats never extend the deadline. The
    request may still run later if a server picks it up before its expiration.
    """

    msg_fmt = "Timed out after %(timeout)ss waiting for a reply to %(method)s"


class CallMonitorTimeout(MessagingTimeout):
    """Raised when the server running a call stopped sending heartbeats.

    The server died, lost its connection or froze (its request was delivered to it and
    it never answered); the caller learns it in seconds instead of after the full
    timeout. The request may still run: on the next server once the broker gives it
    back, or on a frozen server that resumes. Fields: ``method``, ``silence`` (seconds
    without a heartbeat).
    """

    msg_fmt = "The server running %(method)s stopped answering for %(silence)ss"


class RemoteError(MessagingException):
    """Raised when the server failed with an exception the caller may not rebuild.

    Add the exception's module to ``allowed_remote_exmods`` to get the real type instead.

    Attributes:
        exc_type: the remote exception's class name (``module.Class`` when not builtin).
        value: the remote exception's message.
    """

    def __init__(
        self, exc_type: str | None = None, value: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(f"Remote error: {exc_type} {value}", **kwargs)
        self.exc_type = exc_type
        self.value = value
        self.args = (exc_type, value)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> Any:
        return (type(self), (self.exc_type, self.value))


class UnsupportedVersion(MessagingException):
    """Raised when no endpoint serves the namespace and version, or a call exceeds the cap.

    Fields: ``version``, ``namespace`` (and ``version_cap`` when raised on the caller).
    """

    msg_fmt = "No endpoint serves namespace %(namespace)s at version %(version)s"


class NoSuchMethod(MessagingException):
    """Raised when the matching endpoint has no public method of that name. Field: ``method``."""

    msg_fmt = "Endpoint does not support RPC method %(method)s"


class InvalidTarget(MessagingException, ValueError):
    """Raised when a target cannot be used that way: no topic, or a call to a fanout target."""

    msg_fmt = "Invalid target %(target)s: %(reason)s"


class MessageUndeliverable(MessagingException):
    """Raised on the sender when nobody consumes the target's topic (no queue is bound).

    Start a server for the topic first. Field: ``target``.
    """

    msg_fmt = "Nobody consumes %(target)s; start a server for it first"


class MessageTooLarge(MessagingException):
    """Raised when an envelope is over the transport's size limit. Fields: ``size``, ``limit``."""

    msg_fmt = "Message of %(size)s bytes is over the %(limit)s byte limit"


class MessageDeliveryFailure(MessagingException):
    """Raised when a message was malformed or undecodable, or the broker refused it.

    Field: ``reason``.
    """

    msg_fmt = "Message could not be delivered: %(reason)s"


class BrokerRefused(MessageDeliveryFailure):
    """Raised when the broker refuses to declare or use a queue or exchange for good: the
    user lacks permissions, a name uses a reserved prefix (``amq.``), an exchange exists
    with another type, a queue is held exclusively by another connection.

    Retrying does not help; the message says what to change. Fields: ``what`` (the
    operation), ``reason`` (the broker's words), ``code`` (the AMQP reply code).
    """

    msg_fmt = "The broker refused to %(what)s: %(reason)s"


class QueueMismatch(MessagingException):
    """Raised when a queue already exists on the broker with other arguments than the ones
    this transport declares it with (quorum vs classic, message TTL, expiry).

    Every server and declarer of a topic must use the same queue options; or delete the
    queue. Fields: ``queue``, ``argument`` (such as ``x-queue-type``), ``detail``.
    """

    msg_fmt = "Queue %(queue)s exists with another %(argument)s: %(detail)s"


class TransportError(MessagingException):
    """Raised when the broker connection failed and retries were exhausted.

    Check the broker URL and that the broker is up. Field: ``reason``.
    """

    msg_fmt = "Transport failure: %(reason)s"


class ConnectionLost(TransportError):
    """Raised for an operation that was pending when the broker connection dropped.

    The request may or may not have run on the server; the transport reconnects on its own.
    """

    msg_fmt = "Connection to the broker was lost: %(reason)s"
