"""What the lanes' tests (``test_get_lane``, ``test_save_lane``) share: a conductor manager
on the test's database, a dispatcher for it, a raw get request, and the comparison of the
lane's answers with the ordinary path's (the same requests through a serializer the lanes
do not answer for).

Their fixtures ``engine`` and ``manager`` are in this folder's conftest.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import transport
from conductor import db
from conductor.manager import ConductorManager, ConductorManagerV3
from conductor.service import ConductorSerializer
from objects import base
from objects.context import RequestContext
from objects.storage import StoredRecord
from transport.dispatcher import RPCDispatcher


class OrdinarySerializer(ConductorSerializer):
    """The conductor's serializer, but the lanes do not answer for it."""

    def answers_stock_gets(self) -> bool:
        return False


def new_manager(engine: db.Engine, **kwargs: Any) -> ConductorManager:
    return ConductorManager(
        engine, serialize_transactions=engine.dialect.name == "sqlite", **kwargs
    )


def dispatcher(manager: ConductorManager, serializer: Any = None) -> RPCDispatcher:
    return RPCDispatcher(
        [manager, ConductorManagerV3(manager)], serializer or ConductorSerializer()
    )


def same(fast: list[tuple[bool, Any]], slow: list[tuple[bool, Any]]) -> None:
    """The lane's outcomes are the ordinary path's: results key for key and in order,
    errors of the same type, text and keyword arguments."""
    assert [ok for ok, _ in fast] == [ok for ok, _ in slow]
    for (ok, answer), (_, ordinary) in zip(fast, slow, strict=True):
        if ok:
            assert answer == ordinary
            assert json.dumps(answer) == json.dumps(ordinary)  # key for key, in order
        else:
            assert type(answer) is type(ordinary)
            assert str(answer) == str(ordinary)
            assert getattr(answer, "kwargs", None) == getattr(ordinary, "kwargs", None)


def inline_wire_form(answer: Any, cls: type[Any], ctx: RequestContext) -> Any:
    """The wire form of a lone inline get's answer, which comes in two forms
    (``transport.InProcessResult``), after checking that its local form (the row's record)
    loads into a pending object, and builds a plain get's result, exactly as the wire
    form (the row's primitive) does."""
    assert isinstance(answer, transport.InProcessResult)
    primitive = answer.wire()
    assert primitive is not None
    stored = answer.local(None)
    assert type(stored) is StoredRecord and stored.cls is cls
    via_record, via_primitive = cls._obj_new_pending(ctx), cls._obj_new_pending(ctx)
    via_record._obj_absorb_loaded(stored)
    via_primitive._obj_absorb_loaded(dict(primitive))
    assert loaded_state(via_record) == loaded_state(via_primitive)
    assert via_record._context is ctx
    # ...and a plain get's result built from it is the one rebuilt from the primitive
    built = cls._from_record(ctx, stored.record)
    rebuilt = base.VersionedObjectSerializer().deserialize_entity(ctx, dict(primitive))
    assert loaded_state(built) == loaded_state(rebuilt) == loaded_state(via_record)
    return primitive


def loaded_state(obj: Any) -> Any:
    """What tells two loaded objects apart: their primitives (with changes and revision),
    what changed, the attributes they hold and their nested objects' contexts."""
    d = obj.__dict__
    nested = {k: v._context for k, v in d.items() if hasattr(v, "obj_to_primitive")}
    return (
        obj.obj_to_primitive(),
        obj.obj_what_changed(),
        obj.obj_revision,
        sorted(k for k in d if k != "_obj_pending"),
        sorted(d["_obj_snapshots"]),
        {k: id(c) for k, c in nested.items()},
    )


def get_request(
    ctx: RequestContext | dict[str, Any],
    id_: Any,
    *,
    objname: str = "Instance",
    objmethod: str = "get",
    versions: dict[str, str] | None = None,
    kwargs: dict[str, Any] | None = None,
    version: str = "1.0",
) -> tuple[Any, ...]:
    """A raw request (as ``RPCDispatcher.dispatch_batch`` takes it) of ``objname.objmethod(id_)``
    at the newest class's manifest unless ``versions`` says otherwise."""
    cls = base.VersionedObjectRegistry.newest(objname)
    return (
        uuid.uuid4().hex,
        ctx.to_dict() if isinstance(ctx, RequestContext) else ctx,
        "object_class_action_versions",
        {
            "objname": objname,
            "objmethod": objmethod,
            "object_versions": dict(cls._obj_manifest()) if versions is None else versions,
            "args": [id_],
            "kwargs": kwargs or {},
        },
        None,
        version,
    )
