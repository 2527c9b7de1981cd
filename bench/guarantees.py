"""What our guarantees cost per get, against the lean row's plain work: one thread, no I/O.

Issue 13 asks for the CPU of a pipelined get (client + conductor + RabbitMQ + PostgreSQL)
within 1.5x of the lean row's (``bench/_lean.py``): the same components and envelope,
and nothing else. This script measures, step by step, what ours does per get on top of
the lean's plain equivalent, each alone on one thread (the best of ``--rounds`` rounds,
CPU microseconds per get):

* client: the caller's context as a dict (kept by the context while it stays the same,
  ``RequestContext.wire_dict``; the lean sends one prebuilt dict), a unique request id
  (the lean counts), the request's JSON (a get's arguments are vouched plain, so the
  sender encodes it in one go with its batch: ``transport._wire.Deferred``), the reply's
  JSON decode with its depth and long-integer scans (in a message of 105 replies, as the
  pipeline sends them), the reply read into a versioned Instance with its Flavor (the lean
  sets plain attributes; oslo.versionedobjects' own ``obj_from_primitive`` of the same
  Instance is shown for scale, and counted nowhere);
* conductor: the request's decode with its scans, the envelope's checks and the stock
  get's checks (the lean compares four values), the row read into a primitive, the
  reply's JSON (the lane vouches its primitives are plain JSON: no read-back check).

What it leaves out costs ours more still: futures, pending objects and call registration,
three threads sharing the client's GIL, durable messages, metrics. In the pipeline every
step costs 2-3x its figure here (``bench/profile_get.py``).

    python bench/guarantees.py                        # the table
    python bench/guarantees.py --lean-us 26,35        # and the 1.5x budget for those rows
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

if not __package__:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import orjson  # noqa: E402

from bench import _lean, objects_bench  # noqa: E402

PER_MESSAGE = 105  # requests and replies per message in the pipeline (profile_get.py)


def _best(fn: Callable[[], Any], number: int, rounds: int) -> float:
    """Microseconds of one call, the best of ``rounds``."""
    return min(timeit.repeat(fn, number=number, repeat=rounds)) / number * 1e6


def measure(rounds: int) -> list[tuple[str, str, float, float]]:
    """``(side, step, ours us, lean us)`` per get."""
    import sqlalchemy

    import objects
    import transport
    from conductor import db, lane
    from objects import base
    from objects.context import RequestContext
    from objects.instance import Instance
    from objects.persistent import record_to_primitive
    from transport import _wire, client, server
    from transport.serializer import context_to_dict

    objects.register_all()
    ctx = RequestContext(user_id="bench", project_id="bench")
    record = objects_bench._record()
    primitive = record_to_primitive(Instance, objects_bench._fresh(record))
    assert primitive is not None
    manifest = Instance._obj_manifest()
    args = {
        "objname": "Instance",
        "objmethod": "get",
        "object_versions": manifest,
        "args": [42],
        "kwargs": {},
    }
    request_id = client._request_id()
    envelope = {
        "id": request_id,
        "method": "object_class_action_versions",
        "args": args,
        "ctxt": context_to_dict(ctx),
        "ns": None,
        "ver": "1.0",
        "reply_to": "reply_" + "0" * 32,
        "multi": False,
        "hb": 1.0,
    }
    lean_request = {
        "msg_id": 1,
        "context": envelope["ctxt"],
        "method": "object_class_action_versions",
        "args": args,
    }
    limit = 1 << 20
    deferred = [_wire.Deferred(envelope)] * PER_MESSAGE
    lean_batch = [lean_request] * PER_MESSAGE
    requests = _wire.pack_batch([_wire.encode(envelope, limit)] * PER_MESSAGE)
    lean_requests = orjson.dumps({"requests": [lean_request] * PER_MESSAGE})
    reply = _wire.result_reply(request_id, primitive)
    replies = _wire.pack_batch([_wire.encode(reply, limit)] * PER_MESSAGE)
    lean_reply = {"msg_id": 1, "result": primitive, "failure": None}
    lean_replies = orjson.dumps({"replies": [lean_reply] * PER_MESSAGE})
    row = tuple({**record, "flavor": record["flavor"]}[column] for column in _lean.COLUMNS)
    serializer = base.VersionedObjectSerializer()
    counter = itertools.count()

    engine = db.create_engine("sqlite://")
    db.Base.metadata.create_all(engine)
    stock = lane.StockGets(engine)
    classes = stock._found.current()
    decoded = _wire.decode(_wire.encode(envelope, limit))

    def lean_checks() -> bool:
        call = lean_request["args"]
        return bool(
            lean_request["method"] == "object_class_action_versions"
            and call["objname"] == "Instance"  # type: ignore[index]
            and call["objmethod"] == "get"  # type: ignore[index]
            and call["object_versions"] == manifest  # type: ignore[index]
        )

    def our_checks() -> Any:
        server._validate(decoded)
        return stock._stock_get(decoded["ctxt"], decoded["method"], decoded["args"], classes)

    n, per = 20_000, 200
    steps: list[tuple[str, str, Callable[[], Any], Callable[[], Any], int, int]] = [
        ("client", "context as a dict", lambda: client._plain_context(ctx), lambda: None, n, 1),
        ("client", "request id", client._request_id, lambda: next(counter), n, 1),
        (
            "client",
            "request JSON (with its batch, no check)",
            lambda: _wire.encode_group(deferred, limit),
            lambda: orjson.dumps({"requests": lean_batch}),
            per,
            PER_MESSAGE,
        ),
        (
            "client",
            "reply decode (depth, long-integer scans)",
            lambda: _wire.decode(replies),
            lambda: orjson.loads(lean_replies),
            per,
            PER_MESSAGE,
        ),
        (
            "client",
            "reply -> versioned Instance (lean: attributes)",
            lambda: serializer.deserialize_entity(ctx, orjson.loads(orjson.dumps(primitive))),
            lambda: _lean._build(orjson.loads(orjson.dumps(primitive))),
            n,
            1,
        ),
        (
            "conductor",
            "request decode (depth, long-integer scans)",
            lambda: _wire.decode(requests),
            lambda: orjson.loads(lean_requests),
            per,
            PER_MESSAGE,
        ),
        ("conductor", "envelope and stock-get checks", our_checks, lean_checks, n, 1),
        (
            "conductor",
            "row -> primitive",
            lambda: record_to_primitive(Instance, objects_bench._fresh(record)),
            lambda: _lean._primitive(row),
            n,
            1,
        ),
        (
            "conductor",
            "reply JSON (the lane's: PlainJSON, no check)",
            lambda: _wire.reply_body(
                _wire.result_reply(request_id, transport.PlainJSON(primitive)), limit
            ),
            lambda: orjson.dumps(lean_reply),
            n,
            1,
        ),
    ]
    out = []
    for side, step, ours, lean_fn, number, divide in steps:
        out.append(
            (
                side,
                step,
                _best(ours, number, rounds) / divide,
                _best(lean_fn, number, rounds) / divide,
            )
        )
    engine.dispose()
    del sqlalchemy
    return out


def ovo_build(rounds: int) -> float | None:
    """oslo.versionedobjects' ``obj_from_primitive`` of the same Instance (the bench's
    OpenStack classes), or None without the bench extra."""
    try:
        from bench import _openstack
    except ImportError:
        return None
    import objects
    from objects.instance import Instance
    from objects.persistent import record_to_primitive

    objects.register_all()
    primitive = record_to_primitive(Instance, objects_bench._fresh(objects_bench._record()))
    assert primitive is not None
    data = primitive["versioned_object.data"]
    data.pop("obj_revision", None)
    primitive["versioned_object.version"] = "1.0"
    body = orjson.dumps(primitive)
    build = _openstack.Instance.obj_from_primitive
    return _best(lambda: build(orjson.loads(body)), 5_000, rounds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--lean-us",
        default="",
        help="comma-separated CPU us per get of lean rows (bench.py): print the 1.5x budget",
    )
    args = p.parse_args(argv)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    rows = measure(args.rounds)
    print(f"{'side':10s} {'step':48s} {'ours':>7s} {'lean':>7s} {'extra':>7s}  (us per get)")
    extra = 0.0
    for side, step, ours, lean_us in rows:
        extra += ours - lean_us
        print(f"{side:10s} {step:48s} {ours:7.2f} {lean_us:7.2f} {ours - lean_us:7.2f}")
    print(f"{'':10s} {'what ours does on top, these steps alone':48s} {'':7s} {'':7s} {extra:7.2f}")
    ovo = ovo_build(args.rounds)
    if ovo is not None:
        print(
            f"for scale: oslo.versionedobjects' obj_from_primitive of the same Instance {ovo:.2f}"
        )
    for lean_us in [float(x) for x in args.lean_us.split(",") if x]:
        budget = lean_us * 0.5
        verdict = "over" if extra > budget else "within"
        print(
            f"lean row at {lean_us:g} us per get: 1.5x leaves {budget:.1f} us for everything "
            f"ours adds; these steps alone take {extra:.1f} ({verdict})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
