"""Request ids: a request sent twice runs once, whatever the broker's redelivered flag says,
and an id reused for another request is refused instead of answered with someone else's
result.

A client that resends after a lost publisher confirm publishes the same envelope again:
the broker delivers it as a fresh message (``redelivered`` false). These tests publish
raw envelopes twice through the broker (``memory://`` always, a real ``conductor serve`` on
RabbitMQ when configured) and look at the replies and the rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import objects
from objects import exception
from objects.context import RequestContext
from tests.reliability import served
from tests.reliability.rawpeer import envelope, rebuild_error

VERSIONS = {"Instance": "1.2", "Flavor": "1.0"}


@pytest.fixture(params=["memory", pytest.param("rabbit", marks=pytest.mark.rabbit)])
def conductor_under_test(
    request: pytest.FixtureRequest, database_url: str, topic: str
) -> Iterator[served.Served]:
    if request.param == "memory":
        with served.in_process(database_url, topic) as s:
            yield s
    else:
        broker_url = request.getfixturevalue("broker_url")
        with served.as_process(broker_url, database_url, topic) as s:
            yield s


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext(user_id="u-ids", project_id="p-ids")


def new_instance(ctx: RequestContext, host: str) -> Any:
    return objects.Instance(
        ctx,
        uuid=str(uuid.uuid4()),
        host=host,
        state="building",
        vcpus=1,
        memory_mb=64,
        tags=[],
        metadata={},
    )


def action(
    s: served.Served, ctx: RequestContext, inst: Any, method: str, request_id: str | None = None
) -> dict[str, Any]:
    env = envelope(
        "object_action",
        {
            "objinst": inst.obj_to_primitive(),
            "objmethod": method,
            "args": [],
            "kwargs": {},
            "object_versions": VERSIONS,
        },
        ctxt=ctx.to_dict(),
        reply_to=s.peer.reply_address,
    )
    if request_id is not None:
        env["id"] = request_id
    return env


def send(s: served.Served, env: dict[str, Any]) -> dict[str, Any]:
    s.peer.send_json(env)
    return s.peer.reply(env["id"])


def send_batch(s: served.Served, envs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    s.peer.send(json.dumps({"batch": envs}).encode())
    return [s.peer.reply(env["id"]) for env in envs]


def hosts(ctx: RequestContext, host: str) -> list[Any]:
    return list(objects.InstanceList.get_by_host(ctx, host))


# -- item 4: a resend without the redelivered flag runs once ---------------------------------


def test_a_create_published_twice_runs_once_and_both_get_its_result(
    conductor_under_test: served.Served, ctx: RequestContext
) -> None:
    s = conductor_under_test
    host = f"twice-{uuid.uuid4().hex[:6]}"
    env = action(s, ctx, new_instance(ctx, host), "create")

    first, second = send(s, env), send(s, env)

    assert first["t"] == "r", rebuild_error(first)
    assert second == first
    assert len(hosts(ctx, host)) == 1


def test_a_save_and_a_destroy_published_twice_run_once(
    conductor_under_test: served.Served, ctx: RequestContext
) -> None:
    s = conductor_under_test
    inst = new_instance(ctx, f"save-{uuid.uuid4().hex[:6]}")
    inst.create()
    inst.task_state = "resending"
    save = action(s, ctx, inst, "save")

    first, second = send(s, save), send(s, save)

    assert first["t"] == "r", rebuild_error(first)
    assert second == first  # not ConcurrentUpdate: the resend is the same request
    fresh = objects.Instance.get(ctx, inst.id)
    assert fresh.task_state == "resending" and fresh.obj_revision == inst.obj_revision + 1

    destroy = action(s, ctx, fresh, "destroy")
    first, second = send(s, destroy), send(s, destroy)
    assert first["t"] == "r", rebuild_error(first)
    assert second == first  # not NotFound
    with pytest.raises(exception.NotFound):
        objects.Instance.get(ctx, inst.id)


def test_a_batch_published_twice_runs_each_request_once(
    conductor_under_test: served.Served, ctx: RequestContext
) -> None:
    s = conductor_under_test
    host = f"batch-{uuid.uuid4().hex[:6]}"
    made = [new_instance(ctx, host) for _ in range(3)]
    for inst in made:
        inst.create()
        inst.task_state = "batched"
    saves = [action(s, ctx, inst, "save") for inst in made]
    creates = [action(s, ctx, new_instance(ctx, host), "create") for _ in range(2)]

    first = send_batch(s, saves)
    second = send_batch(s, saves)
    assert [r["t"] for r in first] == ["r"] * 3, [rebuild_error(r) for r in first if r["t"] != "r"]
    assert second == first  # not ConcurrentUpdate
    first = send_batch(s, creates)
    second = send_batch(s, creates)
    assert [r["t"] for r in first] == ["r"] * 2
    assert second == first  # not DuplicateEntry
    assert len(hosts(ctx, host)) == 5


# -- item 3: an id reused for another request is refused, the original stays ------------------


def reused_error(reply: dict[str, Any]) -> Exception:
    assert reply["t"] == "e", reply
    error = rebuild_error(reply)
    assert type(error).__name__ == "RequestIdReused", error
    assert isinstance(error, exception.ObjectsError)
    return error


def test_an_id_reused_for_another_create_is_refused_and_the_original_stays(
    conductor_under_test: served.Served, ctx: RequestContext
) -> None:
    s = conductor_under_test
    host = f"reuse-{uuid.uuid4().hex[:6]}"
    original = action(s, ctx, new_instance(ctx, host), "create")
    first = send(s, original)
    assert first["t"] == "r", rebuild_error(first)

    # Another create, same id: its own write would succeed, so only the stored id stops it
    other = action(s, ctx, new_instance(ctx, host + "-other"), "create", original["id"])
    error = reused_error(send(s, other))

    assert original["id"] in str(error)
    assert hosts(ctx, host + "-other") == []  # its write never happened
    assert len(hosts(ctx, host)) == 1
    assert send(s, original) == first  # and the original's result is intact


def test_an_id_reused_for_a_failing_request_is_refused_not_answered(
    conductor_under_test: served.Served, ctx: RequestContext
) -> None:
    s = conductor_under_test
    inst = new_instance(ctx, f"reuse-{uuid.uuid4().hex[:6]}")
    inst.create()
    inst.task_state = "first"
    original = action(s, ctx, inst, "save")
    first = send(s, original)
    assert first["t"] == "r", rebuild_error(first)

    # A save of the same (now stale) copy with another change, same id: it fails on the
    # revision; it must not be answered with the first save's result
    inst.task_state = "second"
    reused_error(send(s, action(s, ctx, inst, "save", original["id"])))
    # In a batch too
    batch = send_batch(
        s,
        [
            action(s, ctx, inst, "save", original["id"]),
            action(s, ctx, new_instance(ctx, "x"), "create"),
        ],
    )
    reused_error(batch[0])

    assert objects.Instance.get(ctx, inst.id).task_state == "first"
    assert send(s, original) == first


def test_a_redelivered_request_is_compared_with_the_stored_one_single_and_batched(
    database_url: str, ctx: RequestContext
) -> None:
    # Given a conductor whose endpoint is driven through a dispatcher like its server's
    import conductor
    from conductor.service import ConductorSerializer
    from transport.dispatcher import RPCDispatcher

    served.import_probe()
    url = f"memory://ids-{uuid.uuid4().hex[:8]}"
    service = conductor.Conductor(url, database_url, workers=2)
    service.start()
    api = conductor.connect(url, timeout=20)
    try:
        dispatcher = RPCDispatcher(service._rpc_server_endpoints(), ConductorSerializer())
        host = f"redeliver-{uuid.uuid4().hex[:6]}"

        def create(request_id: str, inst: Any) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
            return (
                request_id,
                ctx.to_dict(),
                "object_action",
                {
                    "objinst": inst.obj_to_primitive(),
                    "objmethod": "create",
                    "args": [],
                    "kwargs": {},
                    "object_versions": VERSIONS,
                },
            )

        rid = f"req-{uuid.uuid4().hex}"
        original = create(rid, new_instance(ctx, host))
        _, first = dispatcher.dispatch(*original, redelivered=False)

        # When the same id is redelivered with the same content: the stored result
        assert dispatcher.dispatch(*original, redelivered=True) == (False, first)
        # With other content: refused, single or in a batch
        other = create(rid, new_instance(ctx, host))
        with pytest.raises(exception.RequestIdReused):
            dispatcher.dispatch(*other, redelivered=True)
        # ... and from another project, even with the same content
        foreign = (rid, {**ctx.to_dict(), "project_id": "p-other"}, *original[2:])
        with pytest.raises(exception.RequestIdReused):
            dispatcher.dispatch(*foreign, redelivered=True)
        outcomes = dispatcher.dispatch_batch(
            [
                (*other, None, "1.0"),
                (*create(uuid.uuid4().hex, new_instance(ctx, host)), None, "1.0"),
            ],
            redelivered=True,
        )
        assert isinstance(outcomes[0][1], exception.RequestIdReused)
        assert outcomes[1][0] is True

        assert len(hosts(ctx, host)) == 2
    finally:
        api.close()
        service.stop()
        objects.base.set_indirection_api(None)
