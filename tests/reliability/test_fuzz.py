"""Hypothesis fuzzes the conductor's decoding and dispatch in-process (``memory://``).

Whatever arrives on its queue, the conductor answers a request that has a reply address
with a result or a typed error (never ``RemoteError``, never silence), parks what it cannot
answer in the dead-letter queue, and keeps serving.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objects.context import RequestContext
from tests.reliability import served
from tests.reliability.rawpeer import rebuild_error
from transport import exceptions as texc

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
objnames = (
    st.sampled_from(["Instance", "InstanceList", "Flavor", "ComputeNode", "Probe"]) | st.text()
)
objmethods = st.sampled_from(
    [
        "get",
        "get_by_uuid",
        "get_all",
        "create",
        "save",
        "destroy",
        "refresh",
        "echo",
        "whoami",
        "fail",
        "not_remotable",
        "__init__",
        "__class__",
        "obj_reset_changes",
        "_db_get",
        "obj_from_primitive",
    ]
) | st.text(max_size=12)
versions = st.none() | st.sampled_from(["1.0", "1.2", "1.9", "2.0", "0.1", "", "x.y"]) | st.text()


@st.composite
def primitives(draw: st.DrawFn) -> dict[str, Any]:
    """Object primitives, from plausible to broken."""
    data = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "uuid",
                    "host",
                    "state",
                    "vcpus",
                    "memory_mb",
                    "tags",
                    "metadata",
                    "flavor",
                    "name",
                    "evil",
                ]
            )
            | st.text(max_size=6),
            json_values,
            max_size=6,
        )
    )
    primitive = {
        "versioned_object.name": draw(objnames),
        "versioned_object.namespace": draw(st.sampled_from(["versionedobjects", "other"])),
        "versioned_object.version": draw(versions),
        "versioned_object.data": data,
        "versioned_object.changes": draw(st.lists(st.text(max_size=6), max_size=3)),
    }
    for key in draw(st.lists(st.sampled_from(sorted(primitive)), max_size=2)):
        primitive.pop(key, None)
    return primitive


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    method = draw(
        st.sampled_from(
            ["object_class_action_versions", "object_action", "object_backport_versions"]
        )
        | st.text(max_size=10)
    )
    args: dict[str, Any] = {
        "objname": draw(objnames),
        "objmethod": draw(objmethods),
        "object_versions": draw(st.dictionaries(objnames, versions, max_size=2) | json_values),
        "args": draw(st.lists(json_values, max_size=3) | json_values),
        "kwargs": draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)),
        "objinst": draw(primitives() | json_values),
    }
    for key in draw(st.lists(st.sampled_from(sorted(args)), max_size=3)):
        args.pop(key, None)
    ctxt = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "user_id": st.text(max_size=5) | st.none(),
                "roles": json_values,
                "is_admin": st.booleans(),
                "request_id": json_values,
            },
        )
        | json_values
    )
    return {
        "method": method,
        "args": args,
        "ctxt": ctxt,
        "ns": draw(st.none() | st.text()),
        "ver": draw(versions),
        "multi": draw(st.booleans()),
        "hb": draw(st.none() | st.floats(min_value=-1, max_value=1, allow_nan=False)),
    }


def test_fuzzed_requests_always_get_a_reply_or_a_dead_letter(sqlite_url: str, topic: str) -> None:
    tried = {"count": 0}
    with served.in_process(sqlite_url, topic) as s:
        probe = served.import_probe()

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.one_of(requests(), st.binary(max_size=64), json_values))
        def check(request: Any) -> None:
            tried["count"] += 1
            if isinstance(request, dict) and "method" in request:
                request_id = uuid.uuid4().hex
                s.peer.send_json({**request, "id": request_id, "reply_to": s.peer.reply_address})
                reply = s.peer.reply(request_id, timeout=15)
                if reply["t"] == "e":
                    error = rebuild_error(reply)
                    assert not isinstance(error, texc.RemoteError), reply["exc"]
                else:
                    assert reply["t"] in ("r", "end", "i"), reply
                return
            body = request if isinstance(request, bytes) else json.dumps(request).encode()
            if request == {"batch": []} or body.replace(b" ", b"") == b'{"batch":[]}':
                return  # an empty batch asks nothing; acknowledging it loses nothing
            s.peer.send(body)
            parked = s.peer.dead_letters()
            deadline = time.monotonic() + 5
            while not parked and time.monotonic() < deadline:
                time.sleep(0.005)
                parked = s.peer.dead_letters()
            assert [b for b, _ in parked] == [body]

        check()
        assert probe.Probe.echo(RequestContext(), "alive") == "alive"
    assert tried["count"] >= 300
    print(f"figures: fuzzed requests {tried['count']}")
