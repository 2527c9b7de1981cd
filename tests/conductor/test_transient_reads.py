"""Reads go to the broker as transient messages, everything else as persistent ones.

A persistent request costs RabbitMQ a write to its message store; a read gains nothing by
it (a broker restart takes the caller's reply queue, and the call fails with
``ConnectionLost`` either way). Only a load by id whose body is ours
(``objects.persistent.fetches_by_id``) is vouched for: any other call keeps its request
on disk.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import objects
import transport
from conductor.api import ConductorAPI
from objects import exception
from objects.context import RequestContext
from objects.fixture import isolated_registry
from objects.instance import Instance
from transport.drivers import amqp


def test_a_get_by_id_goes_transient_and_the_other_calls_persistent(
    stack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed: list[bool] = []  # what the client told the transport, per request
    send_request = transport.Transport.send_request

    def told(self: Any, *args: Any, **kwargs: Any) -> None:
        handed.append(kwargs.get("transient", False))
        send_request(self, *args, **kwargs)

    monkeypatch.setattr(transport.Transport, "send_request", told)
    published: list[bool] = []  # what RabbitMQ was given, per request (not the replies)
    publish = amqp._Publisher.publish

    def persistent(self: Any, exchange: str, key: str, body: bytes, **kwargs: Any) -> bool:
        if exchange:
            published.append(kwargs.get("persistent", False))
        return publish(self, exchange, key, body, **kwargs)

    monkeypatch.setattr(amqp._Publisher, "publish", persistent)
    ctx = RequestContext(user_id="u", project_id="p")

    inst = Instance(ctx, uuid=str(uuid.uuid4()), vcpus=1, memory_mb=1)
    inst.create()
    assert Instance.get(ctx, inst.id).uuid == inst.uuid  # loads by id
    with pytest.raises(exception.NotFound):
        Instance.get(ctx, 10**9)
    assert Instance.get_by_uuid(ctx, inst.uuid).id == inst.id  # a read, but its own body
    inst.host = "node-1"
    inst.save()

    if stack == "embedded":
        # The conductor in this process answers loads by id on the caller's thread: no
        # request is made for them at all.
        assert handed == [False, False, False]  # create, get_by_uuid, save
        assert published == []
    else:
        assert handed == [False, True, True, False, False]
        assert published == [True, False, False, True, True]


def test_only_a_load_by_id_of_the_callers_own_class_is_vouched_for() -> None:
    objects.register_all()
    api = ConductorAPI(transport.get_transport(f"memory://reads-{uuid.uuid4().hex[:8]}"))
    try:
        version = Instance.VERSION
        assert api._only_reads("Instance", "get", {"Instance": version})
        assert not api._only_reads("Instance", "get_by_uuid", {"Instance": version})
        assert not api._only_reads("Instance", "get_all", {"Instance": version})
        assert not api._only_reads("Instance", "get", {"Instance": "1.0"})  # an older caller
        assert not api._only_reads("Nothing", "get", {"Nothing": "1.0"})
        assert not api._only_reads(["Instance"], "get", {})  # never raises
        assert not api._only_reads("Instance", "get", {"Instance": ["1.0"]})  # type: ignore[dict-item]

        with isolated_registry() as registry:

            @registry.register
            class Instance2(Instance):  # the same name and version: replaces it
                @classmethod
                def obj_name(cls) -> str:
                    return "Instance"

                @objects.base.remotable_classmethod
                def get(cls, context: Any, id: int) -> Any:  # a body of its own
                    return cls._from_record(context, cls._db_get_record(context, id))

            # (the registry's state changed: what was found for it is found again)
            assert registry.find_newest("Instance") is Instance2
            assert not api._only_reads("Instance", "get", {"Instance": version})
        assert api._only_reads("Instance", "get", {"Instance": version})
    finally:
        api.close()
