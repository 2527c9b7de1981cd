"""The conductor's dispatch alone: CPU per request of a batch, no broker, no JSON.

Drives ``RPCDispatcher.dispatch_batch`` (the conductor's endpoints and serializer) with
the requests one message of our client carries (``get`` by id, or ``save`` of a copy
read before), against a fresh PostgreSQL (or SQLite) database, and prints thread CPU
per request. Steadier than the end-to-end profile (``bench/profile_get.py``) on a busy
machine: the same work, without the broker, the client or the JSON codec.

    python bench/conductor_dispatch.py --only get,save --batch 256
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

if not __package__:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import conductor  # noqa: E402, F401
import objects  # noqa: E402
import transport  # noqa: E402
from bench import _common, _procs  # noqa: E402
from conductor import db  # noqa: E402
from conductor.manager import ConductorManager, ConductorManagerV3  # noqa: E402
from conductor.service import ConductorSerializer  # noqa: E402
from objects.context import RequestContext  # noqa: E402


def _requests(
    workload: str, ids: list[int], copies: dict[int, Any], ctx: dict[str, Any]
) -> list[Any]:
    manifest = objects.Instance._obj_manifest()
    out = []
    for i in ids:
        rid = uuid.uuid4().hex
        if workload == "create":
            values = _common.instance_values(i)
            inst = objects.Instance(uuid=str(uuid.uuid4()), flavor=copies[0], **values)
            args = {
                "objinst": inst.obj_to_primitive(),
                "objmethod": "create",
                "args": [],
                "kwargs": {},
                "object_versions": dict(manifest),
            }
            out.append((rid, ctx, "object_action", args, None, "1.0"))
        elif workload == "get":
            args = {
                "objname": "Instance",
                "objmethod": "get",
                "object_versions": dict(manifest),
                "args": [i],
                "kwargs": {},
            }
            out.append((rid, ctx, "object_class_action_versions", args, None, "1.0"))
        else:
            inst = copies[i]
            inst.state = "active" if inst.state != "active" else "stopped"
            inst.task_state = f"t{uuid.uuid4().hex[:4]}"
            primitive = inst.obj_to_primitive()
            if workload == "save-changes":
                # Only the id and the changed fields (with the revision): a primitive the
                # conductor reads today, for the design of a smaller save request.
                data = primitive["versioned_object.data"]
                keep = {"id", *primitive.get("versioned_object.changes", ())}
                primitive["versioned_object.data"] = {k: v for k, v in data.items() if k in keep}
            args = {
                "objinst": primitive,
                "objmethod": "save",
                "args": [],
                "kwargs": {},
                "object_versions": dict(manifest),
            }
            out.append((rid, ctx, "object_action", args, None, "1.0"))
    return out


def main(argv: list[str] | None = None, on_measure: Any = None) -> int:
    """Run the benchmark; ``on_measure(workload)`` is called as measuring starts (after
    the warm-up rounds), for callers that count something of their own."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--only", default="get,save", help="get, save, save-changes, create (comma-separated)"
    )
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--seed", type=int, default=2048)
    p.add_argument("--pg-url", default=os.environ.get("BENCH_PG_ADMIN_URL", _procs.DEFAULT_PG))
    p.add_argument("--sqlite", action="store_true", help="a SQLite file instead of PostgreSQL")
    p.add_argument(
        "--gc",
        choices=("freeze", "on", "off"),
        default="freeze",
        help="freeze: what exists after setup is out of the collector's view, as conductor "
        "serve does (default); on: as is; off: no collections",
    )
    p.add_argument("--lone", action="store_true", help="one request at a time (dispatch)")
    p.add_argument("--profile", help="write a cProfile of the measured dispatches to this file")
    args = p.parse_args(argv)
    objects.register_all()
    name = f"dispatch_{uuid.uuid4().hex[:8]}"
    if args.sqlite:
        url = f"sqlite:////tmp/{name}.sqlite"
    else:
        url = _procs.create_database(args.pg_url, name)
    try:
        db.upgrade(url)
        engine = db.create_engine(url)
        manager = ConductorManager(engine, serialize_transactions=engine.dialect.name == "sqlite")
        dispatcher = transport.RPCDispatcher(
            [manager, ConductorManagerV3(manager)], serializer=ConductorSerializer()
        )
        ctx = RequestContext(user_id="bench", project_id="bench")
        # Seeded through the manager itself (one transaction per create).
        flavor = {
            "flavorid": "b1",
            "name": "m1.bench",
            "vcpus": 2,
            "memory_mb": 4096,
            "root_gb": 20,
        }
        ids = _seed(manager, ctx, args.seed, flavor)
        wire_ctx = ctx.to_dict()
        profiler = cProfile.Profile(time.thread_time) if args.profile else None
        how = "one at a time" if args.lone else "batch"
        print(f"{engine.dialect.name}: {how} {args.batch}, {args.rounds} rounds")
        for workload in args.only.split(","):
            copies: dict[int, Any] = {}
            if workload.startswith("save"):
                copies = _read_all(manager, ctx, ids)
            elif workload == "create":
                prim = manager.object_class_action_versions(
                    ctx, "Flavor", "get_by_flavorid", {}, [flavor["flavorid"]], {}
                )
                copies = {0: objects.Flavor.obj_from_primitive(prim, ctx)}
            if args.gc == "freeze":
                gc.collect()
                gc.freeze()
            elif args.gc == "off":
                gc.disable()
            cursor = 0
            total_cpu = 0.0
            total_wall = 0.0
            ops = 0
            per_round: list[float] = []
            for rnd in range(args.rounds + 2):
                chunk = ids[cursor : cursor + args.batch]
                cursor = (cursor + args.batch) % (len(ids) - args.batch)
                reqs = _requests(workload, chunk, copies, wire_ctx)
                if rnd == 2 and on_measure is not None:
                    on_measure(workload)
                if profiler is not None and rnd >= 2:
                    profiler.enable()
                c0, w0 = time.thread_time(), time.perf_counter()
                if args.lone:
                    results = []
                    for rid, c, method, kw, ns, version in reqs:
                        try:
                            _, value = dispatcher.dispatch(rid, c, method, kw, ns, version, False)
                            results.append((True, value))
                        except Exception as exc:  # noqa: BLE001
                            results.append((False, exc))
                else:
                    results = dispatcher.dispatch_batch(reqs, redelivered=False)
                c1, w1 = time.thread_time(), time.perf_counter()
                if profiler is not None:
                    profiler.disable()
                bad = [v for ok, v in results if not ok]
                if bad:
                    raise RuntimeError(f"{len(bad)} failed: {bad[0]!r}")
                if workload.startswith("save"):
                    for i, (_ok, value) in zip(chunk, results, strict=True):
                        copies[i]._obj_apply_updates(value[0])
                if rnd >= 2:  # warm-up rounds
                    total_cpu += c1 - c0
                    total_wall += w1 - w0
                    ops += len(reqs)
                    per_round.append((c1 - c0) / len(reqs))
            per_round.sort()
            print(
                f"  {workload:6s} {total_cpu / ops * 1e6:7.1f} us CPU/op "
                f"(median round {per_round[len(per_round) // 2] * 1e6:.1f}, "
                f"best {per_round[0] * 1e6:.1f})  "
                f"{total_wall / ops * 1e6:7.1f} us wall/op  ({ops} ops)"
            )
        engine.dispose()
        if profiler is not None:
            profiler.dump_stats(args.profile)
    finally:
        if args.sqlite:
            Path(f"/tmp/{name}.sqlite").unlink(missing_ok=True)
        else:
            _procs.drop_database(args.pg_url, name)
    return 0


def _seed(
    manager: ConductorManager, ctx: RequestContext, count: int, flavor: dict[str, Any]
) -> list[int]:
    fl = objects.Flavor(ctx, **flavor)
    manager.object_action(ctx, fl, "create", [], {})
    fl.obj_reset_changes()
    ids = []
    for n in range(count):
        values = _common.instance_values(n)
        inst = objects.Instance(ctx, uuid=str(uuid.uuid4()), flavor=fl, **values)
        updates, _ = manager.object_action(ctx, inst, "create", [], {})
        ids.append(updates["id"])
    return ids


def _read_all(manager: ConductorManager, ctx: RequestContext, ids: list[int]) -> dict[int, Any]:
    out = {}
    for i in ids:
        prim = manager.object_class_action_versions(
            ctx, "Instance", "get", objects.Instance._obj_manifest(), [i], {}
        )
        out[i] = objects.Instance.obj_from_primitive(prim, ctx)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
