"""RPC and notifications over a message broker, with futures.

The transport moves JSON envelopes between clients and servers and knows nothing about
objects or databases. See DESIGN.md for the semantics.
"""

from __future__ import annotations

from transport import exceptions
from transport._transport import Transport, declare_topic, get_transport
from transport._wire import FreshJSON, InProcessResult, PlainJSON
from transport.client import RPCClient
from transport.config import DEFAULT_CONFIG, TransportConfig
from transport.dispatcher import (
    BatchCall,
    BatchEndpoint,
    InlineEndpoint,
    RawEndpoint,
    RawRequest,
    RPCDispatcher,
    answer_now,
    current_request_id,
    current_request_redelivered,
)
from transport.futures import RPCFuture
from transport.notify import NotificationListener, Notifier
from transport.serializer import NoOpSerializer, Serializer
from transport.server import RPCServer, ServerState
from transport.target import Target

__all__ = [
    # transports
    "DEFAULT_CONFIG",
    "Transport",
    "TransportConfig",
    "declare_topic",
    "get_transport",
    # rpc
    "BatchCall",
    "BatchEndpoint",
    "InlineEndpoint",
    "RPCClient",
    "RPCDispatcher",
    "RPCFuture",
    "RPCServer",
    "RawEndpoint",
    "RawRequest",
    "ServerState",
    "Target",
    "answer_now",
    "current_request_id",
    "current_request_redelivered",
    # notifications
    "NotificationListener",
    "Notifier",
    # serialization
    "NoOpSerializer",
    "FreshJSON",
    "InProcessResult",
    "PlainJSON",
    "Serializer",
    # errors
    "exceptions",
]
