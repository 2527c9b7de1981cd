"""oslo.messaging's wire format (its rabbit driver), translated to and from ours.

An oslo.messaging request (``amqpdriver`` + ``common.serialize_msg``) is one JSON object::

    {"oslo.version": "2.0", "oslo.message": "<JSON text of the message>"}

and the message inside::

    {"method": m, "args": {...}, "namespace": ns (optional), "version": v (optional),
     "_unique_id": hex, "_context_<key>": value for each context key,
     "_msg_id": hex, "_reply_q": queue, "_timeout": call monitor seconds|null}  # calls only

A reply goes through the default exchange to ``_reply_q``, wrapped the same way::

    {"result": value, "failure": null|"<JSON text>", "ending": true, "_msg_id": ..,
     "_unique_id": hex}

``ending: false`` with neither result nor failure is a call-monitor heartbeat (sent every
``_timeout / 2`` seconds while the call runs). A failure is the JSON text of ``{"class",
"module", "message", "args", "kwargs"}`` (oslo's ``serialize_remote_exception``; we never
send its ``tb``).

Servers translate an oslo request into our envelope (:func:`request_to_native`) and mark
its reply address with :data:`REPLY_PREFIX`, so every reply to it (results, failures,
heartbeats) is encoded the oslo way (:func:`encode_reply`). Clients of ``wire=oslo``
encode requests with :func:`encode_request` and translate replies with
:func:`reply_to_native`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from transport import _wire
from transport.exceptions import MessageDeliveryFailure, MessageTooLarge

VERSION_KEY = "oslo.version"
MESSAGE_KEY = "oslo.message"
ENVELOPE_VERSION = "2.0"

#: Marks a reply address as an oslo.messaging caller's reply queue (server side only; a
#: native reply address never starts with it).
REPLY_PREFIX = "oslo:"

_CONTEXT = "_context_"
_REMOTE = "_Remote"


def _unwrap(envelope: Mapping[str, Any]) -> dict[str, Any]:
    version = envelope.get(VERSION_KEY)
    if not isinstance(version, str) or version.split(".", 1)[0] != "2":
        raise MessageDeliveryFailure(
            reason=f"unsupported oslo.messaging envelope version {str(version)[:20]!r}"
        )
    text = envelope.get(MESSAGE_KEY)
    if not isinstance(text, str):
        raise MessageDeliveryFailure(reason="field 'oslo.message' missing or not a string")
    try:
        inner = _wire.decode(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise MessageDeliveryFailure(reason="'oslo.message' is not valid text") from None
    except MessageDeliveryFailure as exc:
        raise MessageDeliveryFailure(
            reason=f"'oslo.message': {exc.kwargs.get('reason', exc)}"
        ) from None
    return inner


def _wrap(message: dict[str, Any], limit: int | None = None) -> bytes:
    inner = _wire.encode(message, limit).decode("utf-8")
    return _wire.encode({VERSION_KEY: ENVELOPE_VERSION, MESSAGE_KEY: inner}, limit)


# -- server side ------------------------------------------------------------------------


def request_to_native(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """Our request envelope for an oslo.messaging request; MessageDeliveryFailure if bad."""
    msg = _unwrap(envelope)
    method, args = msg.get("method"), msg.get("args", {})
    if not isinstance(method, str):
        raise MessageDeliveryFailure(reason="oslo field 'method' missing or not a str")
    if not isinstance(args, dict):
        raise MessageDeliveryFailure(reason="oslo field 'args' is not a dict")
    namespace, version = msg.get("namespace"), msg.get("version")
    if namespace is not None and not isinstance(namespace, str):
        raise MessageDeliveryFailure(reason="oslo field 'namespace' is not a str")
    if version is not None and not isinstance(version, str):
        raise MessageDeliveryFailure(reason="oslo field 'version' is not a str")
    msg_id, reply_q, unique_id = msg.get("_msg_id"), msg.get("_reply_q"), msg.get("_unique_id")
    reply_to = None
    if msg_id is not None:
        if not isinstance(msg_id, str) or not 0 < len(msg_id) <= _wire.MAX_ID_LENGTH:
            raise MessageDeliveryFailure(reason="oslo field '_msg_id' is not a request id")
        if not _wire.valid_reply_address(reply_q):
            raise MessageDeliveryFailure(
                reason="oslo field '_reply_q' is not a reply address "
                "(1 to 255 printable ASCII characters)"
            )
        reply_to = REPLY_PREFIX + str(reply_q)
        request_id = msg_id
    elif isinstance(unique_id, str) and 0 < len(unique_id) <= _wire.MAX_ID_LENGTH:
        request_id = unique_id  # a cast: its unique id stays the same on redelivery
    else:
        raise MessageDeliveryFailure(reason="oslo cast without a '_unique_id'")
    ctxt = {key[len(_CONTEXT) :]: value for key, value in msg.items() if key.startswith(_CONTEXT)}
    native: dict[str, Any] = {
        "id": request_id,
        "method": method,
        "args": args,
        "ctxt": ctxt,
        "ns": namespace,
        "ver": version,
        "reply_to": reply_to,
    }
    timeout = msg.get("_timeout")
    if reply_to is not None and isinstance(timeout, (int, float)) and math.isfinite(timeout):
        # oslo's servers beat every int(_timeout) / 2 seconds, and not below one second.
        interval = int(timeout) / 2
        if interval >= 1:
            native["hb"] = interval
    return native


def request_reply_info(envelope: Any) -> tuple[str | None, str | None]:
    """Best effort (request id, marked reply address) of an oslo request that failed."""
    try:
        msg = _unwrap(envelope)
    except MessageDeliveryFailure:
        return None, None
    msg_id, reply_q = msg.get("_msg_id"), msg.get("_reply_q")
    if (
        isinstance(msg_id, str)
        and 0 < len(msg_id) <= _wire.MAX_ID_LENGTH
        and _wire.valid_reply_address(reply_q)
    ):
        return msg_id, REPLY_PREFIX + str(reply_q)
    return None, None


def encode_reply(reply: dict[str, Any], limit: int | None = None) -> bytes:
    """An oslo.messaging reply for our reply envelope ``reply`` (kinds r, e, hb, i, end).

    Raises MessageTooLarge or TypeError like :func:`transport._wire.encode`."""
    kind = reply["t"]
    message: dict[str, Any] = {"result": None, "failure": None, "ending": True}
    if kind in ("r", "i"):
        message["result"] = reply.get("v")
    elif kind == "e":
        failure = dict(reply["exc"])
        failure.pop("tb", None)
        message["failure"] = _wire.encode(failure).decode("utf-8")
    elif kind == "hb":
        message["ending"] = False
    message["_msg_id"] = reply["id"]
    message["_unique_id"] = os.urandom(16).hex()
    return _wrap(message, limit)


# -- client side (wire=oslo) ------------------------------------------------------------


def encode_request(
    request_id: str,
    method: str,
    args: dict[str, Any],
    ctxt: dict[str, Any],
    namespace: str | None,
    version: str | None,
    reply_q: str | None,
    monitor_timeout: int | None,
    limit: int | None,
) -> bytes:
    """An oslo.messaging request: a call when ``reply_q`` is given, else a cast."""
    message: dict[str, Any] = {"method": method, "args": args}
    if namespace is not None:
        message["namespace"] = namespace
    if version is not None:
        message["version"] = version
    if reply_q is not None:
        message["_msg_id"] = request_id
        message["_reply_q"] = reply_q
        message["_timeout"] = monitor_timeout
        message["_unique_id"] = os.urandom(16).hex()
    else:
        message["_unique_id"] = request_id
    for key, value in ctxt.items():
        message[_CONTEXT + str(key)] = value
    return _wrap(message, limit)


def reply_to_native(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """Our reply envelope for an oslo.messaging reply; MessageDeliveryFailure if bad."""
    msg = _unwrap(envelope)
    msg_id = msg.get("_msg_id")
    if not isinstance(msg_id, str):
        raise MessageDeliveryFailure(reason="oslo reply without a '_msg_id'")
    failure = msg.get("failure")
    if failure:
        try:
            data: Any = _wire.decode(str(failure).encode("utf-8"))
        except MessageDeliveryFailure:
            data = {"class": "UnknownError", "module": "", "message": str(failure)[:1000]}
        for key in ("class", "module"):
            value = data.get(key)
            # oslo re-raises a remote failure as <class>_Remote of <module>_Remote.
            if isinstance(value, str) and value.endswith(_REMOTE):
                data[key] = value[: -len(_REMOTE)]
        data.pop("tb", None)
        return {"id": msg_id, "t": "e", "exc": data}
    result = msg.get("result")
    if result is None and msg.get("ending") is False:
        return {"id": msg_id, "t": "hb"}
    return {"id": msg_id, "t": "r", "v": result}


def reply_body(reply: dict[str, Any], limit: int | None = None) -> bytes:
    """:func:`encode_reply`; a reply over ``limit`` or not JSON-serialisable becomes the
    oslo.messaging failure (MessageTooLarge, TypeError) its caller can read instead."""
    try:
        return encode_reply(reply, limit)
    except (MessageTooLarge, TypeError) as exc:
        return encode_reply(_wire.error_reply(reply["id"], exc))
