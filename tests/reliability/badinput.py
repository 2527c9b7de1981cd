"""The catalogue of bad requests a conductor must survive, each with what it must get back.

A case builds its raw body for a given reply address; ``expect`` is the exception type the
caller must get (rebuilt by the real client-side code), or None when the message carries no
reply address and must go to the dead-letter queue instead.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from typing import Any

import objects
from objects import exception
from tests.reliability.rawpeer import JSON, envelope
from transport import exceptions as texc

OVERSIZE = 5 * 1024 * 1024  # over the 4 MiB default limit

#: A protocol-0 pickle that, if anyone ever unpickled it, would create ``{marker}``.
PICKLE_BOMB = "cos\nsystem\n(S'touch {marker}'\ntR."


@dataclasses.dataclass
class Case:
    """One bad request: ``build(reply_to, request_id)`` returns the raw body."""

    name: str
    build: Callable[[str | None, str], bytes]
    expect: type[BaseException] | None
    content_type: str = JSON
    with_reply: bool = True


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _instance_primitive() -> dict[str, Any]:
    objects.register_all()
    inst = objects.Instance(
        None, uuid=str(uuid.uuid4()), host="bad-input", state="building", vcpus=1, memory_mb=64
    )
    primitive: dict[str, Any] = inst.obj_to_primitive()
    return primitive


def _class_action(
    objname: str, objmethod: str, args: Any = (), kwargs: Any = None, versions: Any = None
) -> dict[str, Any]:
    return {
        "objname": objname,
        "objmethod": objmethod,
        "object_versions": versions if versions is not None else {},
        "args": list(args) if isinstance(args, tuple) else args,
        "kwargs": kwargs if kwargs is not None else {},
    }


def _object_action(primitive: Any, objmethod: str = "save") -> dict[str, Any]:
    return {"objinst": primitive, "objmethod": objmethod, "args": [], "kwargs": {}}


def _rpc(method: str, args: dict[str, Any], **extra: Any) -> Callable[[str | None, str], bytes]:
    def build(reply_to: str | None, request_id: str) -> bytes:
        env = envelope(method, args, **extra)
        env["id"], env["reply_to"] = request_id, reply_to
        return _json(env)

    return build


def _tampered(change: Callable[[dict[str, Any]], None], objmethod: str = "save") -> Any:
    def build(reply_to: str | None, request_id: str) -> bytes:
        primitive = _instance_primitive()
        change(primitive)
        env = envelope("object_action", _object_action(primitive, objmethod))
        env["id"], env["reply_to"] = request_id, reply_to
        return _json(env)

    return build


def _raw(body: bytes) -> Callable[[str | None, str], bytes]:
    return lambda reply_to, request_id: body


def _shape(value: dict[str, Any]) -> Callable[[str | None, str], bytes]:
    return lambda reply_to, request_id: _json({**value, "id": request_id, "reply_to": reply_to})


def _oversized(reply_to: str | None, request_id: str) -> bytes:
    env = envelope("object_class_action_versions", _class_action("Probe", "echo", ["x" * OVERSIZE]))
    env["id"], env["reply_to"] = request_id, reply_to
    return _json(env)


def _deep(reply_to: str | None, request_id: str) -> bytes:
    """JSON nested far past the decoder's recursion limit (a RecursionError once stalled
    the conductor on it); its reply address is unreadable, so it is parked."""
    head = json.dumps(
        {
            "id": request_id,
            "reply_to": "reply_unreadable",
            "ctxt": {},
            "method": "object_class_action_versions",
        }
    )
    return head[:-1].encode() + b',"args":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def _long_reply_to(reply_to: str | None, request_id: str) -> bytes:
    """A reply address no broker takes (kombu failed with struct.error replying to it)."""
    env = envelope("object_class_action_versions", _class_action("Probe", "echo", ["x"]))
    env["id"], env["reply_to"], env["hb"] = request_id, "r" * 300, 0.5
    return _json(env)


def _data(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(primitive: dict[str, Any]) -> None:
        primitive["versioned_object.data"][key] = value

    return change


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(primitive: dict[str, Any]) -> None:
        primitive[key] = value

    return change


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    def change(primitive: dict[str, Any]) -> None:
        del primitive[key]

    return change


def _oslo(
    method: Any = "object_class_action_versions",
    args: Any = None,
    oslo_version: str = "2.0",
    text: str | None = None,
    **extra: Any,
) -> Callable[[str | None, str], bytes]:
    """An oslo.messaging envelope (``transport._oslo``): a call when there is a reply
    address, else a cast; ``text`` replaces the JSON text of the message inside."""

    def build(reply_to: str | None, request_id: str) -> bytes:
        message: dict[str, Any] = {"method": method, "args": args or {}, "_context_user": "u"}
        if reply_to:
            message.update(_msg_id=request_id, _reply_q=reply_to, _timeout=None)
        message["_unique_id"] = uuid.uuid4().hex
        message.update(extra)
        inner = text if text is not None else json.dumps(message)
        return _json({"oslo.version": oslo_version, "oslo.message": inner})

    return build


OSLO_CASES: list[Case] = [
    Case("oslo: envelope version 9", _oslo(oslo_version="9.0"), None, with_reply=False),
    Case("oslo: message is not JSON", _oslo(text="{not json"), None, with_reply=False),
    Case("oslo: message is not an object", _oslo(text="[1, 2]"), None, with_reply=False),
    Case(
        "oslo: message nested past the recursion limit",
        _oslo(text="[" * 100_000 + "]" * 100_000),
        None,
        with_reply=False,
    ),
    Case("oslo: method is not a string", _oslo(method=42), None, with_reply=False),
    Case(
        "oslo: reply queue that is not an address",
        _oslo(_msg_id="m" * 10, _reply_q="no such queue"),
        None,
        with_reply=False,
    ),
    Case("oslo: args is not a mapping", _oslo(args=[1]), texc.MessageDeliveryFailure),
    Case("oslo: namespace is not a string", _oslo(namespace=7), texc.MessageDeliveryFailure),
    Case("oslo: unknown rpc method", _oslo("drop_all_tables"), texc.NoSuchMethod),
    Case(
        "oslo: rpc version the conductor cannot handle",
        _oslo(args=_class_action("Probe", "echo", ["v"]), version="2.0"),
        texc.UnsupportedVersion,
    ),
    Case(
        "oslo: unknown object name",
        _oslo(args=_class_action("NoSuchThing", "get", [1])),
        exception.UnsupportedObjectError,
    ),
]


CASES: list[Case] = [
    # Undecodable or shapeless: nobody to answer, so they are parked.
    Case("malformed bytes", _raw(b"\xff\xfe\x00{not json"), None, with_reply=False),
    Case("json that is not an object", _raw(b"[1, 2, 3]"), None, with_reply=False),
    Case(
        "wrong shape without a reply address",
        _raw(_json({"hello": "world"})),
        None,
        with_reply=False,
    ),
    Case("oversized without a reply address", _oversized, None, with_reply=False),
    Case("batch that is not a list", _raw(_json({"batch": "nope"})), None, with_reply=False),
    Case("json nested past the recursion limit", _deep, None, with_reply=False),
    Case("reply address over 255 bytes", _long_reply_to, None, with_reply=False),
    # Wrong shape but answerable.
    Case(
        "method is not a string",
        _shape({"method": 42, "args": {}, "ctxt": {}}),
        texc.MessageDeliveryFailure,
    ),
    Case(
        "args is not a mapping",
        _shape({"method": "object_action", "args": [], "ctxt": {}}),
        texc.MessageDeliveryFailure,
    ),
    Case(
        "context is not a mapping",
        _shape({"method": "object_action", "args": {}, "ctxt": "admin"}),
        texc.MessageDeliveryFailure,
    ),
    Case("oversized with a reply address", _oversized, texc.MessageTooLarge),
    # Dispatch: only the endpoint's public methods, only @remotable object methods.
    Case("unknown rpc method", _rpc("drop_all_tables", {}), texc.NoSuchMethod),
    Case("private rpc method", _rpc("_run", {"what": "x"}), texc.NoSuchMethod),
    Case("batch hook as rpc method", _rpc("serve_batch", {"calls": []}), texc.NoSuchMethod),
    Case("old batch hook as rpc method", _rpc("_dispatch_batch", {"calls": []}), texc.NoSuchMethod),
    Case(
        "rpc version the conductor cannot handle",
        _rpc("object_class_action_versions", _class_action("Probe", "echo", ["v"]), version="2.0"),
        texc.UnsupportedVersion,
    ),
    Case(
        "rpc arguments the method does not take",
        _rpc("object_class_action_versions", {**_class_action("Probe", "echo"), "evil": 1}),
        TypeError,
    ),
    Case(
        "unknown object name",
        _rpc("object_class_action_versions", _class_action("NoSuchThing", "get", [1])),
        exception.UnsupportedObjectError,
    ),
    Case(
        "unknown object method",
        _rpc("object_class_action_versions", _class_action("Instance", "drop_table")),
        exception.ObjectActionError,
    ),
    Case(
        "__init__ as a class action",
        _rpc("object_class_action_versions", _class_action("Instance", "__init__")),
        exception.ObjectActionError,
    ),
    Case(
        "non-remotable classmethod",
        _rpc("object_class_action_versions", _class_action("Probe", "not_remotable")),
        exception.ObjectActionError,
    ),
    Case(
        "obj_reset_changes as an object action",
        _tampered(lambda p: None, "obj_reset_changes"),
        exception.ObjectActionError,
    ),
    Case(
        "obj_load_attr as an object action",
        _tampered(lambda p: None, "obj_load_attr"),
        exception.ObjectActionError,
    ),
    Case(
        "object version of a newer major",
        _rpc(
            "object_class_action_versions",
            _class_action("Instance", "get", [1], versions={"Instance": "2.0"}),
        ),
        exception.IncompatibleObjectVersion,
    ),
    Case(
        "object instance of a newer major",
        _tampered(_set("versioned_object.version", "2.0")),
        exception.IncompatibleObjectVersion,
    ),
    Case(
        "object version that is not a version",
        _tampered(_set("versioned_object.version", "one point oh")),
        exception.ObjectsError,
    ),
    Case(
        "primitive without data", _tampered(_drop("versioned_object.data")), exception.ObjectsError
    ),
    Case(
        "primitive without a name",
        _tampered(_drop("versioned_object.name")),
        exception.ObjectsError,
    ),
    Case(
        "primitive with an extra key",
        _tampered(_set("versioned_object.evil", "x")),
        exception.ObjectsError,
    ),
    Case(
        "primitive with an unknown field",
        _tampered(_data("is_admin", True)),
        exception.ObjectsError,
    ),
    Case("field failing coercion", _tampered(_data("vcpus", "many")), ValueError),
    Case("enum value out of range", _tampered(_data("state", "pwned")), ValueError),
    Case(
        "args is not a list",
        _rpc("object_class_action_versions", _class_action("Probe", "echo", args="abc")),
        exception.ObjectValueError,
    ),
]
CASES += OSLO_CASES


def pickle_case(marker: str) -> Case:
    """A pickle bomb with a pickle content type (RabbitMQ only: memory:// has no content type)."""
    return Case(
        "pickle content type",
        _raw(PICKLE_BOMB.format(marker=marker).encode()),
        None,
        content_type="application/x-python-serialize",
    )
