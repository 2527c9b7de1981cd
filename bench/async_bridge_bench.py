"""The conductor's database side on PostgreSQL: worker threads against SQLAlchemy's asyncio bridge.

Issue #4 asks whether the conductor should drive its database through SQLAlchemy's asyncio
bridge (``AsyncSession.run_sync`` on the async psycopg 3 driver, the sync code running in a
greenlet) instead of a pool of worker threads on the sync driver. Only the database part of
one request is measured, no broker and no RPC; both ways run the very same
``conductor.db.SQLStorage`` code:

* ``thread``: what the conductor does today. A sync engine from
  ``conductor.db.create_engine`` and a ``ThreadPoolExecutor`` of N workers; one operation
  is ``with session_scope(session_factory(engine)) as s: SQLStorage(s).<op>``.
* ``async``: ``create_async_engine("postgresql+psycopg://...")`` and one event loop with
  N tasks; one operation is ``async with AsyncSession(engine) as s: async with s.begin():
  await s.run_sync(lambda sync: SQLStorage(sync).<op>)``. The session's sync class is
  ``ConductorSession``, as the conductor's, so both pay for its write-tracking listeners.

Workloads, each operation one transaction:

* ``get``: ``SQLStorage.get("Instance", id)`` (one SELECT), ids in a shuffled order.
* ``update``: ``SQLStorage.update("Instance", id, {"state": ..., "task_state": ...},
  expected_revision=rev)`` (one ``UPDATE ... WHERE id AND revision RETURNING``). The
  revision comes from the record the previous update of that row returned (kept in a
  dict, outside the timing), as a conductor gets it from the client's object. Rows are
  taken in turn, so operations in flight together never touch the same row.

N (``--concurrency``) is the number of worker threads, or of tasks, each looping over
the shared operations until ``--ops`` are done: N operations in flight, without the
per-request dispatch cost of either model. Both engines get ``pool_size=N`` and no
overflow, so every worker has a connection of its own; each cell builds its engine,
warms it up (``--warmup`` operations: the connections are opened and the statements
compiled) and disposes of it after the timing.

Cells are interleaved: every round runs each (workload, N) both ways, one right after the
other, the first of the two alternating between rounds, so a noisy machine hits both
alike. Per cell: ops/s is the median over ``--rounds`` rounds (the range is shown too),
p50/p99 latency pool every round's operations, and CPU is this process's
``time.process_time`` (all threads) summed over the rounds, per operation: the client
side only, PostgreSQL's own CPU is not in it. ``async/thread`` ratios follow; the output
ends with one JSON line holding every cell.

Setup and clean-up are the script's own: it creates a database ``bridge_bench_<hex>``
through the admin URL, migrates it to head with ``conductor db upgrade``, seeds
``--rows`` Instance rows (and one Flavor) through ``SQLStorage.create``, and drops the
database at the end, also when the run fails::

    .venv-bench/bin/python bench/async_bridge_bench.py
    .venv-bench/bin/python bench/async_bridge_bench.py --ops 1000 --rounds 2
    .venv-bench/bin/python bench/async_bridge_bench.py --pg-url postgresql+psycopg://me@db/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import itertools
import json
import platform
import random
import secrets
import signal
import statistics
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import _common  # noqa: E402
import _procs  # noqa: E402
import psycopg  # noqa: E402
import sqlalchemy  # noqa: E402
from sqlalchemy.engine import URL, make_url  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from conductor import db  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MODES = ("thread", "async")
WORKLOADS = ("get", "update")
UPDATE_VALUES = (
    {"state": "active", "task_state": None},
    {"state": "stopped", "task_state": "powering-off"},
    {"state": "active", "task_state": "powering-on"},
)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the database: create, migrate, seed, drop ---------------------------------------------


def seed(url: URL, rows: int) -> dict[int, int]:
    """One Flavor and ``rows`` Instances through SQLStorage.create; returns id -> revision."""
    engine = db.create_engine(url, pool_size=1, max_overflow=0)
    revisions: dict[int, int] = {}
    try:
        with db.session_scope(db.session_factory(engine)) as session:
            storage = db.SQLStorage(session)
            flavor = storage.create(
                "Flavor",
                {"flavorid": "bench-m1", "name": "m1.bench", "vcpus": 2, "memory_mb": 4096,
                 "root_gb": 20},
            )
            # An Instance keeps its flavor as the dict of the Flavor object's fields.
            nested = {k: flavor[k] for k in ("id", "flavorid", "name", "vcpus", "memory_mb",
                                             "root_gb")}
            for i in range(rows):
                record = storage.create(
                    "Instance",
                    {"uuid": str(uuid.uuid4()), "flavor": nested, **_common.instance_values(i)},
                )
                revisions[record["id"]] = record["revision"]
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()
    return revisions


# -- one operation, both ways -----------------------------------------------------------------


class Workload:
    """Which row each operation touches, and what it does to it."""

    def __init__(self, name: str, revisions: dict[int, int], seed_: int) -> None:
        self.name = name
        self.revisions = revisions  # shared by every cell: the rows' current revisions
        self.ids = sorted(revisions)
        if name == "get":
            random.Random(seed_).shuffle(self.ids)
        self.cursor = 0  # update: rows taken in turn, carried on from cell to cell

    def plan(self, ops: int) -> list[int]:
        out = [self.ids[(self.cursor + i) % len(self.ids)] for i in range(ops)]
        if self.name == "update":
            self.cursor = (self.cursor + ops) % len(self.ids)
        return out

    def body(self, id: int, i: int) -> Callable[[Session], Any]:
        """The SQLStorage work of operation ``i`` on row ``id``, given the request's session."""
        if self.name == "get":
            return lambda session: db.SQLStorage(session).get("Instance", id)
        values = UPDATE_VALUES[i % len(UPDATE_VALUES)]
        expected = self.revisions[id]
        revisions = self.revisions

        def update(session: Session) -> Any:
            storage = db.SQLStorage(session)
            record = storage.update("Instance", id, values, expected_revision=expected)
            revisions[id] = record["revision"]
            return record

        return update


class Tally:
    """Latencies and errors of one cell (shared by its workers; list.append is atomic)."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error: str | None = None

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"


def run_thread(url: URL, workload: Workload, n: int, ops: int, warmup: int) -> dict[str, Any]:
    engine = db.create_engine(url, pool_size=n, max_overflow=0)
    factory = db.session_factory(engine)
    perf = time.perf_counter
    stop = threading.Event()  # set when the main thread gives up (an interrupt)

    def loop(plan: list[int], counter: Any, tally: Tally) -> None:
        while not stop.is_set():
            i = next(counter)  # itertools.count: one C call, atomic under the GIL
            if i >= len(plan):
                return
            body = workload.body(plan[i], i)
            t0 = perf()
            try:
                with db.session_scope(factory) as session:
                    body(session)
            except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                tally.error(exc)
                continue
            tally.latencies.append(perf() - t0)

    def batch(count: int) -> tuple[Tally, float, float]:
        plan, counter, tally = workload.plan(count), itertools.count(), Tally()
        c0, w0 = time.process_time(), perf()
        futures = [pool.submit(loop, plan, counter, tally) for _ in range(n)]
        try:
            for future in futures:
                future.result()
        except BaseException:
            stop.set()
            raise
        return tally, perf() - w0, time.process_time() - c0

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
            batch(warmup)
            tally, wall, cpu = batch(ops)
    finally:
        engine.dispose()
    return _cell_result(tally, ops, wall, cpu)


def run_async(url: URL, workload: Workload, n: int, ops: int, warmup: int) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        engine: AsyncEngine = create_async_engine(
            url.set(drivername="postgresql+psycopg"),
            pool_size=n,
            max_overflow=0,
            pool_recycle=1800,
            json_serializer=functools.partial(json.dumps, allow_nan=False, separators=(",", ":")),
        )
        perf = time.perf_counter

        async def loop(plan: list[int], counter: Any, tally: Tally) -> None:
            while True:
                i = next(counter)
                if i >= len(plan):
                    return
                body = workload.body(plan[i], i)
                t0 = perf()
                try:
                    async with AsyncSession(
                        engine, sync_session_class=db.ConductorSession, expire_on_commit=False
                    ) as session, session.begin():
                        await session.run_sync(body)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    tally.error(exc)
                    continue
                tally.latencies.append(perf() - t0)

        async def batch(count: int) -> tuple[Tally, float, float]:
            plan, counter, tally = workload.plan(count), itertools.count(), Tally()
            c0, w0 = time.process_time(), perf()
            await asyncio.gather(*(loop(plan, counter, tally) for _ in range(n)))
            return tally, perf() - w0, time.process_time() - c0

        try:
            await batch(warmup)
            tally, wall, cpu = await batch(ops)
        finally:
            await engine.dispose()
        return _cell_result(tally, ops, wall, cpu)

    return asyncio.run(main())


RUNNERS = {"thread": run_thread, "async": run_async}


def _cell_result(tally: Tally, ops: int, wall: float, cpu: float) -> dict[str, Any]:
    return {
        "ops": ops,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "wall": wall,
        "cpu": cpu,
        "latencies": tally.latencies,
    }


# -- rounds and report ------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["ops"] / r["wall"] for r in runs]
    latencies = sorted(x for r in runs for x in r["latencies"])
    ops = sum(r["ops"] for r in runs)
    p50 = _common.percentile(latencies, 50)
    p99 = _common.percentile(latencies, 99)
    return {
        "ops_s": round(statistics.median(rates), 1),
        "ops_s_rounds": [round(x, 1) for x in rates],
        "p50_ms": None if p50 is None else round(p50 * 1000, 3),
        "p99_ms": None if p99 is None else round(p99 * 1000, 3),
        "cpu_us_per_op": round(sum(r["cpu"] for r in runs) / ops * 1e6, 1),
        "ops": ops,
        "errors": sum(r["errors"] for r in runs),
        "first_error": next((r["first_error"] for r in runs if r["first_error"]), None),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else round(a / b, 3)


def report(cells: list[dict[str, Any]], args: argparse.Namespace) -> None:
    by_key = {(c["mode"], c["workload"], c["n"]): c for c in cells}
    header = (f"{'workload':<8} {'N':>3} {'mode':<6} {'ops/s':>8} {'(min-max)':>15} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'CPU us/op':>10} {'errors':>6}")
    print()
    print(f"PostgreSQL, {args.ops} ops per cell x {args.rounds} rounds "
          f"(ops/s: median over rounds; p50/p99: all rounds pooled; CPU: this process)")
    print(header)
    print("-" * len(header))
    ratios: list[dict[str, Any]] = []
    for workload in args.workloads:
        for n in args.concurrency:
            for mode in MODES:
                c = by_key[(mode, workload, n)]
                spread = f"{min(c['ops_s_rounds']):.0f}-{max(c['ops_s_rounds']):.0f}"
                print(f"{workload:<8} {n:>3} {mode:<6} {c['ops_s']:>8.0f} {spread:>15} "
                      f"{c['p50_ms']:>8.2f} {c['p99_ms']:>8.2f} {c['cpu_us_per_op']:>10.0f} "
                      f"{c['errors']:>6}")
            t, a = by_key[("thread", workload, n)], by_key[("async", workload, n)]
            ratios.append({
                "workload": workload,
                "n": n,
                "ops_s": _ratio(a["ops_s"], t["ops_s"]),
                "p50": _ratio(a["p50_ms"], t["p50_ms"]),
                "p99": _ratio(a["p99_ms"], t["p99_ms"]),
                "cpu_per_op": _ratio(a["cpu_us_per_op"], t["cpu_us_per_op"]),
            })
    print()
    print("async/thread  (ops/s > 1: async faster; latency and CPU < 1: async cheaper)")
    print(f"{'workload':<8} {'N':>3} {'ops/s':>7} {'p50':>7} {'p99':>7} {'CPU/op':>7}")
    for r in ratios:
        print(f"{r['workload']:<8} {r['n']:>3} {r['ops_s']:>7.2f} {r['p50']:>7.2f} "
              f"{r['p99']:>7.2f} {r['cpu_per_op']:>7.2f}")
    for c in cells:
        if c["first_error"]:
            print(f"first error in {c['mode']} {c['workload']} N={c['n']}: {c['first_error']}")
    print(json.dumps({
        "bench": "async_bridge",
        "python": platform.python_version(),
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
        "ops": args.ops,
        "rounds": args.rounds,
        "rows": args.rows,
        "warmup": args.warmup,
        "cells": cells,
        "ratios": ratios,
    }, separators=(",", ":")))


def run(args: argparse.Namespace, url: URL) -> list[dict[str, Any]]:
    _log(f"seeding {args.rows} Instance rows")
    revisions = seed(url, args.rows)
    workloads = {name: Workload(name, revisions, 7) for name in args.workloads}
    runs: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for rnd in range(args.rounds):
        order = MODES if rnd % 2 == 0 else MODES[::-1]
        for name in args.workloads:
            for n in args.concurrency:
                for mode in order:
                    result = RUNNERS[mode](url, workloads[name], n, args.ops, args.warmup)
                    runs.setdefault((mode, name, n), []).append(result)
                    _log(f"round {rnd + 1}/{args.rounds} {name:<6} N={n:<3} {mode:<6} "
                         f"{result['ops'] / result['wall']:8.0f} ops/s  "
                         f"{result['cpu'] / result['ops'] * 1e6:6.0f} us CPU/op  "
                         f"errors {result['errors']}")
    return [
        {"mode": mode, "workload": name, "n": n, **summarize(results)}
        for (mode, name, n), results in runs.items()
    ]


def _terminate(signum: int, frame: Any) -> None:
    # SIGTERM ends the run like Ctrl-C, through the finally that drops the database.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pg-url", default=DEFAULT_PG,
                   help="admin URL: the benchmark database is created and dropped through it "
                        f"(default {DEFAULT_PG})")
    p.add_argument("--ops", type=int, default=3000, help="timed operations per cell and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=200, help="untimed operations before each cell")
    p.add_argument("--rows", type=int, default=2000, help="Instance rows seeded")
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated values of N")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="get,update or one of them")
    args = p.parse_args(argv)
    args.concurrency = [int(x) for x in args.concurrency.split(",") if x.strip()]
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown or not args.workloads:
        p.error(f"unknown workload(s) {sorted(unknown)}; choose from {', '.join(WORKLOADS)}")
    if args.ops < 1 or args.rounds < 1 or args.rows < max(args.concurrency) * 2:
        p.error("need --ops >= 1, --rounds >= 1 and --rows >= 2 x the largest N")

    signal.signal(signal.SIGTERM, _terminate)
    name = f"bridge_bench_{secrets.token_hex(4)}"
    _log(f"database {name} on {make_url(args.pg_url).render_as_string(hide_password=True)}")
    url = make_url(_procs.create_database(args.pg_url, name))
    try:
        cells = run(args, url)
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        try:
            _procs.drop_database(args.pg_url, name)
            _log(f"dropped {name}")
        except Exception as exc:  # noqa: BLE001 - say so; the database has to go by hand
            _log(f"could not drop database {name}: {exc}")
    report(cells, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
