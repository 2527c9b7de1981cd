"""CPU cost of the objects layer per operation: no broker, no database, one thread.

Each line is the objects code on one side of one call, with what a transport or a
database would add kept out (or measured on its own and shown in the ``stub`` column):

* ``client get_async``: ``Instance.get_async`` + ``wait`` through an indirection stub that
  does what ``conductor.api`` + the RPC client do: serialize context and kwargs, JSON-encode
  the request; later (a "pump", like the transport's I/O thread, 256 calls in flight)
  JSON-decode a canned reply and ``deserialize_entity`` it into the stub's future.
* ``client save_async``: modify ``host`` + ``save_async`` + ``wait`` the same way, the reply
  being the ``(updates, None)`` a conductor sends.
* ``server get``: what the conductor does per ``object_class_action_versions``: context and
  kwargs from the wire, ``handle_class_action('get')`` on a storage record,
  ``serialize_entity`` of the result.
* ``server save``: ``object_action``: the object from its wire primitive,
  ``handle_object_action('save')``, ``serialize_entity`` of the reply.
* ``to_primitive`` / ``from_primitive``: an Instance with flavor, tags and metadata.

The ``stub`` column is the JSON work, the future and the storage call the stub does
itself, measured alone; ``objects`` = ``total`` - ``stub``. Every figure is the best of
``--rounds`` rounds (microseconds of CPU time per operation).

To compare against another revision in one run (interleaved, so a noisy machine hits
both alike)::

    .venv/bin/python bench/objects_bench.py --baseline-rev HEAD~3

extracts that revision's ``objects/`` into a temporary directory and runs the bench
alternately on it and on the work tree, printing both and the ratio.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WINDOW = 256  # calls in flight per pump, as in the pipelined end-to-end benchmark


def _record() -> dict[str, Any]:
    """An Instance row as SQLStorage returns it (typed values, JSON columns as dicts/lists)."""
    now = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    return {
        "id": 42,
        "uuid": "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
        "host": "node-7",
        "state": "active",
        "vcpus": 4,
        "memory_mb": 8192,
        "flavor": {
            "id": 3,
            "flavorid": "m1.large",
            "name": "m1.large",
            "vcpus": 4,
            "memory_mb": 8192,
            "root_gb": 80,
        },
        "task_state": None,
        "created_at": now,
        "updated_at": now,
        "tags": ["web", "prod", "eu-west"],
        "metadata": {"owner": "team-a", "tier": "frontend", "cost": "cc-12"},
        "revision": 5,
    }


def _fresh(row: dict[str, Any]) -> dict[str, Any]:
    # What a database driver hands back: a new dict, new lists and dicts in JSON columns.
    return {k: (copy.copy(v) if isinstance(v, (list, dict)) else v) for k, v in row.items()}


def _make_storage() -> Any:
    from objects.fixture import MemoryStorage

    class LeanStorage(MemoryStorage):
        """MemoryStorage minus its deep copies (those are the fixture's, not objects' cost)."""

        def get(self, objname: str, id: int) -> dict[str, Any]:
            return _fresh(self._row(objname, id))

        def update(self, objname: str, id: int, values: Any, expected_revision: Any = None) -> Any:
            row = self._row(objname, id)
            self._check_revision(objname, id, row, expected_revision)
            row.update(values)
            row["revision"] += 1
            row["updated_at"] = self._now()
            return _fresh(row)

    storage = LeanStorage()
    storage._tables["Instance"] = {42: _record()}
    return storage


class WireStub:
    """An IndirectionAPI doing a transport client's share: serialize, JSON, a future."""

    #: Its ``_async`` methods return their own futures (``objects`` chains onto them).
    resolves_given_futures = False

    def __init__(
        self, get_reply: bytes, save_reply: bytes, objects_serializer: bool = True
    ) -> None:
        from objects.serializer import VersionedObjectSerializer

        self.serializer = VersionedObjectSerializer() if objects_serializer else None
        self.get_reply = get_reply
        self.save_reply = save_reply
        self.queue: list[tuple[concurrent.futures.Future[Any], Any, bytes]] = []

    def _send(self, context: Any, kwargs: dict[str, Any], reply: bytes) -> Any:
        ser = self.serializer
        if ser is not None:
            ctxt = ser.serialize_context(context)
            args = {k: ser.serialize_entity(context, v) for k, v in kwargs.items()}
        else:
            ctxt, args = context, kwargs
        json.dumps({"id": "0" * 32, "method": "m", "args": args, "ctxt": ctxt}).encode()
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.queue.append((future, context, reply))
        return future

    def pump(self) -> None:
        """Resolve every queued call, as the transport's I/O thread would."""
        ser = self.serializer
        for future, context, reply in self.queue:
            value = json.loads(reply)
            future.set_result(ser.deserialize_entity(context, value) if ser is not None else value)
        self.queue.clear()

    # The IndirectionAPI methods (duck-typed, so the bench runs on any revision).
    def object_class_action_versions_async(
        self,
        context: Any,
        objname: str,
        objmethod: str,
        object_versions: Any,
        args: Any,
        kwargs: Any,
    ) -> Any:
        return self._send(
            context,
            {
                "objname": objname,
                "objmethod": objmethod,
                "object_versions": dict(object_versions),
                "args": list(args),
                "kwargs": dict(kwargs),
            },
            self.get_reply,
        )

    def object_action_async(
        self,
        context: Any,
        objinst: Any,
        objmethod: str,
        args: Any,
        kwargs: Any,
        object_versions: Any = None,
    ) -> Any:
        return self._send(
            context,
            {
                "objinst": objinst,
                "objmethod": objmethod,
                "args": list(args),
                "kwargs": dict(kwargs),
                "object_versions": dict(object_versions) if object_versions else None,
            },
            self.save_reply,
        )

    def object_class_action_versions(self, *a: Any) -> Any:
        raise NotImplementedError

    def object_action(self, *a: Any, **k: Any) -> Any:
        raise NotImplementedError

    def object_backport_versions(self, *a: Any) -> Any:
        raise NotImplementedError


def _best(rounds: int, n: int, run: Callable[[int], None]) -> float:
    """Best per-operation CPU time in µs over ``rounds`` runs of ``run(n)``.

    CPU time of this thread, not wall time: on a shared machine the wall clock also
    counts the time other processes had the CPU.
    """
    run(max(1, n // 10))  # warm up caches
    best = float("inf")
    for _ in range(rounds):
        started = time.thread_time()
        run(n)
        best = min(best, (time.thread_time() - started) / n * 1e6)
    return best


def measure(rounds: int, n: int) -> dict[str, dict[str, float]]:
    import objects
    from objects import base
    from objects.context import RequestContext
    from objects.indirection import handle_class_action, handle_object_action
    from objects.serializer import VersionedObjectSerializer

    objects.register_all()
    Instance = objects.Instance
    ser = VersionedObjectSerializer()
    storage = _make_storage()
    ctx = RequestContext(user_id="u1", project_id="p1")
    ctx_dict = ctx.to_dict()
    manifest = base.obj_tree_get_versions("Instance")

    # -- canned wire data, made by the code under test -------------------------------
    server_ctx = RequestContext.from_dict(ctx_dict)
    server_ctx.db = storage
    with base.local_execution():
        get_prim = handle_class_action(server_ctx, "Instance", "get", manifest, [42], {})
    loaded = Instance.obj_from_primitive(json.loads(json.dumps(get_prim)), ctx)
    loaded.host = "node-8"
    save_prim = json.loads(json.dumps(ser.serialize_entity(ctx, loaded)))
    updates = {
        "host": "node-8",
        "updated_at": "2026-01-02T03:04:06.000001+00:00",
        "obj_what_changed": [],
        "obj_revision": 6,
    }
    get_reply = json.dumps(get_prim).encode()
    save_reply = json.dumps([updates, None]).encode()
    get_request = json.dumps(
        {
            "objname": "Instance",
            "objmethod": "get",
            "object_versions": manifest,
            "args": [42],
            "kwargs": {},
        }
    )
    save_request_prim = json.dumps(save_prim)
    instance = Instance.obj_from_primitive(json.loads(get_reply), ctx)

    out: dict[str, dict[str, float]] = {}

    def line(name: str, total: float, stub: float) -> None:
        out[name] = {"total": total, "stub": stub, "objects": total - stub}

    # -- client get_async --------------------------------------------------------------
    stub = WireStub(get_reply, save_reply)
    base.set_indirection_api(stub)  # type: ignore[arg-type]  # duck-typed on purpose

    def client_get(k: int) -> None:
        for _ in range(k // WINDOW + 1):
            pending = [Instance.get_async(ctx, 42) for _ in range(WINDOW)]
            stub.pump()
            for obj in pending:
                obj.wait()

    per_window = (n // WINDOW + 1) * WINDOW / n
    total = _best(rounds, n, client_get) / per_window
    bare = WireStub(get_reply, save_reply, objects_serializer=False)
    plain_kwargs = {
        "objname": "Instance",
        "objmethod": "get",
        "object_versions": dict(manifest),
        "args": [42],
        "kwargs": {},
    }

    def bare_get(k: int) -> None:
        for _ in range(k // WINDOW + 1):
            futures = [bare._send(ctx_dict, plain_kwargs, get_reply) for _ in range(WINDOW)]
            bare.pump()
            for f in futures:
                f.result()

    line("client get_async", total, _best(rounds, n, bare_get) / per_window)

    # -- client save_async ---------------------------------------------------------------
    objs = [Instance.obj_from_primitive(json.loads(get_reply), ctx) for _ in range(WINDOW)]
    hosts = ("node-a", "node-b")

    def client_save(k: int) -> None:
        for i in range(k // WINDOW + 1):
            host = hosts[i % 2]
            for obj in objs:
                obj.host = host
                obj.save_async()
            stub.pump()
            for obj in objs:
                obj.wait()

    total = _best(rounds, n, client_save) / per_window
    save_args = dict(plain_kwargs, objinst=save_prim)

    def bare_save(k: int) -> None:
        for _ in range(k // WINDOW + 1):
            futures = [bare._send(ctx_dict, save_args, save_reply) for _ in range(WINDOW)]
            bare.pump()
            for f in futures:
                f.result()

    line("client save_async", total, _best(rounds, n, bare_save) / per_window)
    base.set_indirection_api(None)

    # -- server get ---------------------------------------------------------------------
    def server_get(k: int) -> None:
        for _ in range(k):
            request = json.loads(get_request)
            context = ser.deserialize_context(ctx_dict)
            kw = {key: ser.deserialize_entity(context, v) for key, v in request.items()}
            context.db = storage
            with base.local_execution():
                result = handle_class_action(
                    context,
                    kw["objname"],
                    kw["objmethod"],
                    kw["object_versions"],
                    kw["args"],
                    kw["kwargs"],
                )
            ser.serialize_entity(context, result)

    def server_get_stub(k: int) -> None:
        for _ in range(k):
            json.loads(get_request)
            storage.get("Instance", 42)

    line("server get", _best(rounds, n, server_get), _best(rounds, n, server_get_stub))

    # -- server save ----------------------------------------------------------------------
    row = storage._tables["Instance"][42]

    def server_save(k: int) -> None:
        for i in range(k):
            prim = json.loads(save_request_prim)
            prim["versioned_object.revision"] = row["revision"]
            prim["versioned_object.data"]["host"] = hosts[i % 2]
            context = ser.deserialize_context(ctx_dict)
            objinst = ser.deserialize_entity(context, prim)
            context.db = storage
            with base.local_execution():
                reply = list(handle_object_action(context, objinst, "save", [], {}, manifest))
            ser.serialize_entity(context, reply)

    def server_save_stub(k: int) -> None:
        for i in range(k):
            json.loads(save_request_prim)
            storage.update("Instance", 42, {"host": hosts[i % 2]}, row["revision"])

    line("server save", _best(rounds, n, server_save), _best(rounds, n, server_save_stub))

    # -- primitives -------------------------------------------------------------------------
    def to_prim(k: int) -> None:
        for _ in range(k):
            instance.obj_to_primitive()

    def from_prim(k: int) -> None:
        for _ in range(k):
            Instance.obj_from_primitive(get_prim, ctx)

    line("obj_to_primitive", _best(rounds, n, to_prim), 0.0)
    line("obj_from_primitive", _best(rounds, n, from_prim), 0.0)
    return out


def _print_table(results: dict[str, dict[str, dict[str, float]]]) -> None:
    labels = list(results)
    names = list(next(iter(results.values())))
    head = f"{'µs per operation':<20}" + "".join(
        f"{lab + ' total':>18}{lab + ' objects':>18}" for lab in labels
    )
    if len(labels) == 2:
        head += f"{'objects ratio':>15}"
    print(head)
    for name in names:
        row = f"{name:<20}"
        for lab in labels:
            r = results[lab][name]
            row += f"{r['total']:>18.1f}{r['objects']:>18.1f}"
        if len(labels) == 2:
            a, b = (results[lab][name]["objects"] for lab in labels)
            row += f"{(a / b if b else float('nan')):>14.2f}x"
        print(row)
    stub = {name: round(next(iter(results.values()))[name]["stub"], 1) for name in names}
    print(f"stub cost (µs, subtracted above): {stub}")


def _run_child(pythonpath: str, rounds: int, n: int) -> dict[str, dict[str, float]]:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    proc = subprocess.run(
        [sys.executable, __file__, "--json-only", "--rounds", str(rounds), "-n", str(n)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _compare(rev: str, rounds: int, n: int, repeats: int) -> None:
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="objects-bench-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(root), "archive", rev, "objects"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        runs: dict[str, list[dict[str, dict[str, float]]]] = {"before": [], "after": []}
        for _ in range(repeats):  # interleaved: noise hits both alike
            runs["before"].append(_run_child(tmp, rounds, n))
            runs["after"].append(_run_child(str(root), rounds, n))
    best = {
        label: {
            name: {key: min(r[name][key] for r in rs) for key in ("total", "stub")}
            for name in rs[0]
        }
        for label, rs in runs.items()
    }
    for rs in best.values():
        for r in rs.values():
            r["objects"] = r["total"] - r["stub"]
    print(f"before = {rev}, after = work tree; best of {repeats} interleaved runs")
    _print_table(best)
    print(json.dumps({"before_rev": rev, **best}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("-n", type=int, default=4096, help="operations per round")
    parser.add_argument("--baseline-rev", help="also run this git revision's objects/, interleaved")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved runs with --baseline-rev"
    )
    parser.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.baseline_rev:
        _compare(opts.baseline_rev, opts.rounds, opts.n, opts.repeats)
        return
    results = measure(opts.rounds, opts.n)
    if not opts.json_only:
        _print_table({"now": results})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
