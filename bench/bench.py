"""Benchmark: our conductor against its anchors, in one run, interleaved.

    python bench/bench.py                       # full run (~8-12 min on 2 cores)
    python bench/bench.py --quick               # smoke run (~2 min)
    python -m bench --quick                     # the same
    python bench/bench.py --only get,get_async --backends rabbit-pg --ops 20000
    python bench/bench.py --memory-soak 1000000 # RSS growth over 1M ops (~5-10 min per backend)

Workloads on the built-in Instance (12 fields incl. a nested Flavor, tags, metadata):
``get`` (sequential), ``get_async[N]`` (N outstanding, N = 1, 16, 64, 256),
``save[256]`` (pipelined get + modify two fields + ``save_async``) and
``create[256]`` (bulk ``create_async``).

Backends and systems:

* ``embedded``: memory:// + a SQLite file, the conductor in the client process exactly
  like ``conductor demo`` (system ``ours``); anchors on the same SQLite file:
  ``ovo-local`` (oslo.versionedobjects remotable methods run locally, no conductor: OVO's
  direct database path) and ``sqlalchemy`` (ORM session get/update/insert, sequential).
* ``rabbit-pg``: RabbitMQ + a fresh PostgreSQL database, ``conductor serve`` as a separate
  process (``ours``); anchors: ``openstack`` (oslo.messaging rabbit RPC + oslo.versionedobjects
  against a nova-style conductor endpoint, a separate process; pipelined with a thread pool
  of N), ``raw-kombu`` (a bare kombu request/reply loop with our get payload sizes, also
  with 200 in flight), ``sqlalchemy`` (direct, on the same PostgreSQL table) and the
  floor, ``lean`` / ``lean-orjson`` (``bench/_lean.py``: the least work for the same get
  on the same components, batched, with the standard json module or orjson).
* on both backends, ``ours-asyncio``: the same client process as ``ours``, its
  ``get_async[N]`` awaited from N coroutines on an event loop instead of waited for by
  a thread (the cost of the asyncio bridge).

On rabbit-pg the CPU of RabbitMQ (the broker process, shared with anything else using it)
and of PostgreSQL (the backends connected to the bench database) is read per cell too, so
the report can give ours / lean for CPU per operation of all four processes.

Every client runs in its own worker process; each round visits every system once per
workload, in a rotated order, so machine noise hits all of them alike. ops/s is the
median over rounds; p50/p99 pool the latencies of all rounds; CPU is summed over rounds
(also given per op); RSS is read after the last round. The output ends with one JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if not __package__:
    # Run as a script (``python bench/bench.py``): import the ``bench`` package from the
    # repository root, not this file's folder (where ``bench`` would be bench/bench.py).
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import _procs, _report  # noqa: E402

WINDOWS = (1, 16, 64, 256)
PIPELINE_WINDOW = 256  # save and create
KOMBU_EXTRA_WINDOW = 200  # the raw-kombu anchor
WORKLOADS = ("get", "get_async", "save", "create")
BACKENDS = ("embedded", "rabbit-pg")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class System:
    """One client worker (plus the server processes it talks to) and what it runs."""

    backend: str
    name: str
    child: _procs.Child
    cells: list[tuple[str, int]]
    servers: list[Any] = field(default_factory=list)  # things with .ps
    mode: str | None = None  # "asyncio": the same client, awaiting on an event loop


#: Systems in the order the table shows them.
SYSTEMS = (
    "ours",
    "ours-asyncio",
    "lean",
    "lean-orjson",
    "openstack",
    "ovo-local",
    "raw-kombu",
    "sqlalchemy",
)


def _get_async_cells() -> list[tuple[str, int]]:
    return [("get_async", n) for n in WINDOWS]


def _full_cells() -> list[tuple[str, int]]:
    return [
        ("get", 1),
        *[("get_async", n) for n in WINDOWS],
        ("save", PIPELINE_WINDOW),
        ("create", PIPELINE_WINDOW),
    ]


class Bench:
    """Sets everything up, runs the rounds, cleans up (queues, database, processes)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="conductor-bench-"))
        self.tag = uuid.uuid4().hex[:8]
        self.systems: list[System] = []
        self.stoppables: list[Any] = []
        self.queues: list[str] = []
        self.exchanges: list[str] = []
        self.pg_db: str | None = None
        self.samples: dict[str, Any] = {}
        self.services: _procs.ServiceCPU | None = None

    # -- setup -----------------------------------------------------------------------

    def _worker(self, name: str, kind: str, config: dict[str, Any]) -> _procs.Child:
        child = _procs.worker(name, kind, config, self.tmp)
        self.stoppables.append(child)
        return child

    def setup_embedded(self, with_anchors: bool) -> None:
        db_url = f"sqlite:///{self.tmp / 'bench.sqlite'}"
        cfg = {
            "embedded": True,
            "transport_url": f"memory://bench-{self.tag}",
            "database_url": db_url,
            "topic": "bench",
            "workers": self.args.conductor_workers,
        }
        ours = self._worker("ours-embedded", "ours", cfg)
        _log(f"embedded: seeding {self.args.seed} instances into {db_url}")
        seeded = ours.call({"cmd": "seed", "count": self.args.seed})
        ids = seeded["ids"]
        self.samples["embedded"] = seeded["sample_primitive"]
        self.systems.append(System("embedded", "ours", ours, _full_cells()))
        self.systems.append(
            System("embedded", "ours-asyncio", ours, _get_async_cells(), mode="asyncio")
        )
        if not with_anchors:
            return
        seq = [("get", 1), ("save", 1), ("create", 1)]
        local = self._worker(
            "ovo-local", "ovo-local", {"local": True, "database_url": db_url, "ids": ids}
        )
        self.systems.append(System("embedded", "ovo-local", local, seq))
        sqla = self._worker("sqla-embedded", "sqla", {"database_url": db_url, "ids": ids})
        self.systems.append(System("embedded", "sqlalchemy", sqla, seq))

    def _create_pg(self) -> str:
        self.pg_db = f"bench_{self.tag}"
        return _procs.create_database(self.args.pg_url, self.pg_db)

    def _drop_pg(self) -> None:
        if not self.pg_db:
            return
        _procs.drop_database(self.args.pg_url, self.pg_db)
        self.pg_db = None

    def setup_rabbit_pg(self, with_anchors: bool) -> None:
        amqp = self.args.transport_url
        db_url = self._create_pg()
        _log(f"rabbit-pg: database {self.pg_db}, broker {amqp}")
        topic = f"bench-{self.tag}"
        servers = []
        for k in range(self.args.conductors):
            server = f"bench-{self.tag}-{k}"
            self.queues += [f"{topic}.{server}"]
            serve = _procs.ConductorServe(
                f"conductor-serve-{k}",
                [
                    "--transport-url",
                    amqp,
                    "--database-url",
                    db_url,
                    "--topic",
                    topic,
                    "--server",
                    server,
                    "--log-level",
                    "WARNING",
                    *(
                        ["--workers", str(self.args.conductor_workers)]
                        if self.args.conductor_workers
                        else []
                    ),
                    *(["--metrics-port", "0"] if self.args.conductor_metrics else []),
                ],
                self.tmp,
            )
            self.stoppables.append(serve)
            servers.append(serve)
        self.queues += [topic, f"{topic}.dead"]
        ours = self._worker(
            "ours-rabbit-pg", "ours", {"embedded": False, "transport_url": amqp, "topic": topic}
        )
        _log(f"rabbit-pg: seeding {self.args.seed} instances")
        seeded = ours.call({"cmd": "seed", "count": self.args.seed})
        ids = seeded["ids"]
        sample = self.samples["rabbit-pg"] = seeded["sample_primitive"]
        self.systems.append(System("rabbit-pg", "ours", ours, _full_cells(), servers))
        self.systems.append(
            System("rabbit-pg", "ours-asyncio", ours, _get_async_cells(), servers, mode="asyncio")
        )
        assert self.pg_db is not None
        self.services = _procs.ServiceCPU(self.args.pg_url, self.pg_db)
        if not with_anchors:
            return

        # the floor: the least work for the same get on the same components (bench/_lean.py)
        for codec in self.args.lean_codecs:
            name = "lean" if codec == "json" else f"lean-{codec}"
            lq = f"bench-{name}-{self.tag}"
            self.queues.append(lq)
            lserver = _procs.worker(
                f"{name}-server",
                "lean-server",
                {"url": amqp, "queue": lq, "codec": codec, "database_url": db_url},
                self.tmp,
            )
            self.stoppables.append(lserver)
            lclient = self._worker(
                name, "lean", {"url": amqp, "queue": lq, "codec": codec, "ids": ids}
            )
            self.systems.append(
                System("rabbit-pg", name, lclient, [("get", 1), *_get_async_cells()], [lserver])
            )
            _same_instance(lclient.call({"cmd": "sample", "id": ids[0]}), sample, name)

        # raw kombu, with the sizes of our get request and reply
        request_body, reply_body = _get_payloads(sample, topic)
        self.samples["payload_bytes"] = {"request": len(request_body), "reply": len(reply_body)}
        kq = f"bench-raw-{self.tag}"
        self.queues.append(kq)
        kserver = _procs.worker(
            "kombu-server",
            "kombu-server",
            {"url": amqp, "queue": kq, "reply_body": reply_body},
            self.tmp,
        )
        self.stoppables.append(kserver)
        kclient = self._worker(
            "raw-kombu", "kombu", {"url": amqp, "queue": kq, "request_body": request_body}
        )
        kcells = [("get", 1), *[("get_async", n) for n in (*WINDOWS, KOMBU_EXTRA_WINDOW)]]
        self.systems.append(System("rabbit-pg", "raw-kombu", kclient, kcells, [kserver]))

        # the OpenStack path: oslo.messaging + oslo.versionedobjects, nova-style conductor
        os_topic, os_exchange = f"bench-os-{self.tag}", f"bench-os-{self.tag}"
        os_server_name = f"bench-os-{self.tag}"
        self.queues += [os_topic, f"{os_topic}.{os_server_name}"]
        self.exchanges.append(os_exchange)
        oserver = _procs.worker(
            "openstack-conductor",
            "openstack-server",
            {
                "url": amqp.replace("amqp://", "rabbit://", 1),
                "database_url": db_url,
                "topic": os_topic,
                "server": os_server_name,
                "exchange": os_exchange,
            },
            self.tmp,
        )
        self.stoppables.append(oserver)
        oclient = self._worker(
            "openstack",
            "openstack",
            {
                "url": amqp.replace("amqp://", "rabbit://", 1),
                "topic": os_topic,
                "exchange": os_exchange,
                "ids": ids,
            },
        )
        self.systems.append(System("rabbit-pg", "openstack", oclient, _full_cells(), [oserver]))

        sqla = self._worker("sqla-pg", "sqla", {"database_url": db_url, "ids": ids})
        self.systems.append(
            System("rabbit-pg", "sqlalchemy", sqla, [("get", 1), ("save", 1), ("create", 1)])
        )

    # -- running ---------------------------------------------------------------------

    def _run_cell(
        self, system: System, workload: str, window: int, ops: int, seconds: float | None
    ) -> tuple[dict[str, Any], _report.CPU]:
        client_ps = [system.child.ps]
        server_ps = [s.ps for s in system.servers]
        services = self.services if system.backend == "rabbit-pg" else None
        v0 = services.snapshot() if services else None
        c0, s0 = _procs.cpu_seconds(client_ps), _procs.cpu_seconds(server_ps)
        reply = system.child.call(
            {
                "cmd": "run",
                "workload": workload,
                "window": window,
                "ops": ops,
                "seconds": seconds,
                "mode": system.mode,
            }
        )
        c1, s1 = _procs.cpu_seconds(client_ps), _procs.cpu_seconds(server_ps)
        used = services.delta(v0, services.snapshot()) if services and v0 else {}
        return reply, _report.CPU(
            client=c1 - c0,
            server=(s1 - s0) if server_ps else None,
            broker=used.get("RabbitMQ"),
            database=used.get("PostgreSQL"),
            client_rss=_procs.rss_mb(client_ps),
            server_rss=_procs.rss_mb(server_ps) if server_ps else None,
        )

    def bench(self) -> None:
        args = self.args
        only = set(args.only) if args.only else None
        for system in self.systems:
            system.cells = [c for c in system.cells if only is None or c[0] in only]
        order: list[tuple[str, int]] = []
        for system in self.systems:
            for c in system.cells:
                if c not in order:
                    order.append(c)
        order.sort(key=lambda c: (WORKLOADS.index(c[0]), c[1]))
        cells: dict[tuple[str, int, str, str], _report.Cell] = {}
        _log("warming up every system")
        for system in self.systems:
            for workload, window in system.cells:
                self._run_cell(system, workload, window, min(200, args.ops), 0.5)
        started = time.perf_counter()
        for rnd in range(args.rounds):
            for workload, window in order:
                runners = [s for s in self.systems if (workload, window) in s.cells]
                shift = rnd % len(runners) if runners else 0
                for system in runners[shift:] + runners[:shift]:
                    reply, cpu = self._run_cell(system, workload, window, args.ops, args.seconds)
                    key = (workload, window, system.backend, system.name)
                    cell = cells.setdefault(
                        key, _report.Cell(workload, window, system.backend, system.name)
                    )
                    cell.add(reply, cpu)
                    ok = reply["ops"] - reply["errors"]
                    _log(
                        f"round {rnd + 1}/{args.rounds} {cell.label:<15} {system.backend:<9} "
                        f"{system.name:<12} {ok / reply['elapsed']:>9,.0f} ops/s"
                        + (
                            f"  {reply['errors']} errors: {reply['first_error']}"
                            if reply["errors"]
                            else ""
                        )
                    )
        measured = time.perf_counter() - started
        ordered = sorted(
            cells.values(),
            key=lambda c: (
                WORKLOADS.index(c.workload),
                c.window,
                BACKENDS.index(c.backend),
                SYSTEMS.index(c.system),
            ),
        )
        self.report(ordered, measured)

    def report(self, cells: list[_report.Cell], measured: float) -> None:
        print()
        print(f"conductor-objects benchmark, {_machine()['date']} on {_machine()['summary']}")
        print(
            f"{self.args.rounds} round(s), up to {self.args.ops} ops or {self.args.seconds}s "
            f"per cell and round; measured {measured:.0f}s; payload "
            f"{self.samples.get('payload_bytes', '-')}"
        )
        print()
        _report.print_table(
            cells, in_process_conductor={("embedded", "ours"), ("embedded", "ours-asyncio")}
        )
        print(
            "(embedded ours: the conductor runs inside the client process, so its CPU and "
            "RSS are in the client columns; ovo-local and sqlalchemy have no conductor;"
        )
        print(
            " mq: the RabbitMQ broker process, shared with whatever else uses it: the "
            "sqlalchemy rows, which do not use it, show that background; pg: the backends "
            "of the bench database)"
        )
        print()
        ratios = _report.ratios(cells)
        _report.print_ratios(ratios)
        print()
        lean = _report.lean_rows(cells)
        if lean:
            _report.print_lean(lean)
            print()
        bridge = _report.asyncio_rows(cells)
        if bridge:
            _report.print_asyncio(bridge)
            print()
        print("targets (issue 13, ratios within this run):")
        targets = _report.targets(cells)
        _report.print_targets(targets)
        print()
        print(
            json.dumps(
                {
                    "bench": "conductor-objects",
                    "machine": _machine(),
                    "config": _config(self.args),
                    "measured_s": round(measured, 1),
                    "payload_bytes": self.samples.get("payload_bytes"),
                    "cells": [c.summary() for c in cells],
                    "ratios": ratios,
                    "ours_vs_lean": lean,
                    "asyncio_vs_threads": bridge,
                    "targets": targets,
                }
            )
        )

    # -- memory soak -----------------------------------------------------------------

    def soak(self, total: int) -> None:
        results = []
        for system in self.systems:
            if system.name == "ours":
                results.append(self._soak_one(system, total))
        print()
        print(
            f"memory soak: {total:,} operations per backend (alternating chunks of pipelined "
            f"get_async[64] and save[64]); limit +{_report.SOAK_LIMIT_MB:.0f} MB"
        )
        for r in results:
            cnd = (
                "(in client)"
                if r["conductor_rss_start_mb"] is None
                else f"{r['conductor_rss_start_mb']:.1f} -> {r['conductor_rss_end_mb']:.1f} MB "
                f"({r['conductor_growth_mb']:+.1f})"
            )
            verdict = "PASS" if r["pass"] else "FAIL"
            print(
                f"  {verdict} {r['backend']:<9} {r['ops']:,} ops in {r['seconds']:.0f}s "
                f"({r['ops'] / r['seconds']:,.0f} ops/s), {r['errors']} errors; client "
                f"{r['client_rss_start_mb']:.1f} -> {r['client_rss_end_mb']:.1f} MB "
                f"({r['client_growth_mb']:+.1f}); conductor {cnd}"
            )
        print()
        print(
            json.dumps(
                {
                    "bench": "conductor-objects-memory-soak",
                    "machine": _machine(),
                    "config": _config(self.args),
                    "soak": results,
                }
            )
        )

    def _soak_one(self, system: System, total: int) -> dict[str, Any]:
        chunk = min(50_000, max(1_000, total // 20))
        server_ps = [s.ps for s in system.servers]

        def sample() -> tuple[float, float | None]:
            system.child.call({"cmd": "gc"})
            return (
                _procs.rss_mb([system.child.ps]),
                _procs.rss_mb(server_ps) if server_ps else None,
            )

        _log(f"soak {system.backend}: warm-up")
        for workload in ("get_async", "save"):
            system.child.call(
                {
                    "cmd": "run",
                    "workload": workload,
                    "window": 64,
                    "ops": min(chunk, 20_000),
                    "seconds": None,
                },
                timeout=3600,
            )
        c0, s0 = sample()
        done = errors = 0
        started = time.perf_counter()
        k = 0
        while done < total:
            workload = ("get_async", "save")[k % 2]
            k += 1
            n = min(chunk, total - done)
            reply = system.child.call(
                {"cmd": "run", "workload": workload, "window": 64, "ops": n, "seconds": None},
                timeout=3600,
            )
            done += reply["ops"]
            errors += reply["errors"]
            c, s = (
                _procs.rss_mb([system.child.ps]),
                (_procs.rss_mb(server_ps) if server_ps else None),
            )
            _log(
                f"soak {system.backend}: {done:>9,}/{total:,} ops, client RSS {c:.1f} MB"
                + (f", conductor RSS {s:.1f} MB" if s is not None else "")
            )
        elapsed = time.perf_counter() - started
        c1, s1 = sample()
        cgrow = c1 - c0
        sgrow = None if s0 is None or s1 is None else s1 - s0
        return {
            "backend": system.backend,
            "ops": done,
            "errors": errors,
            "seconds": elapsed,
            "client_rss_start_mb": c0,
            "client_rss_end_mb": c1,
            "client_growth_mb": cgrow,
            "conductor_rss_start_mb": s0,
            "conductor_rss_end_mb": s1,
            "conductor_growth_mb": sgrow,
            "pass": cgrow < _report.SOAK_LIMIT_MB
            and (sgrow is None or sgrow < _report.SOAK_LIMIT_MB),
        }

    # -- cleanup ---------------------------------------------------------------------

    def close(self) -> None:
        if self.services is not None:
            self.services.close()
        for thing in reversed(self.stoppables):
            try:
                if isinstance(thing, _procs.Child) and thing.name.startswith("ours"):
                    try:
                        thing.call({"cmd": "close"}, timeout=30)
                    except _procs.ChildError:
                        pass
                thing.stop()
            except Exception as exc:  # noqa: BLE001 - clean up the rest anyway
                _log(f"cleanup: stopping {getattr(thing, 'name', thing)}: {exc}")
        if self.queues or self.exchanges:
            try:
                _procs.delete_broker_objects(self.args.transport_url, self.queues, self.exchanges)
            except Exception as exc:  # noqa: BLE001
                _log(f"cleanup: broker: {exc}")
        try:
            self._drop_pg()
        except Exception as exc:  # noqa: BLE001
            _log(f"cleanup: dropping database {self.pg_db}: {exc}")
        if not self.args.keep_logs:
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            _log(f"logs kept in {self.tmp}")


def _same_instance(lean: dict[str, Any], ours: dict[str, Any], name: str) -> None:
    """The lean row must send what ours sends for the same row: same field values, the
    flavor the same nested object. Raises ChildError otherwise."""
    if lean.get("failure") is not None:
        raise _procs.ChildError(f"{name}: the sample get failed: {lean['failure']}")
    got, want = dict(lean["result"]["versioned_object.data"]), dict(ours["versioned_object.data"])
    got_flavor, want_flavor = got.pop("flavor"), want.pop("flavor")
    if got != want or got_flavor["versioned_object.data"] != want_flavor["versioned_object.data"]:
        raise _procs.ChildError(
            f"{name}: its Instance differs from ours: {lean['result']} against {ours}"
        )


def _get_payloads(sample: dict[str, Any], topic: str) -> tuple[str, str]:
    """JSON bodies the size of our ``Instance.get`` request and reply (the envelope
    fields approximate the transport's; the reply carries a real Instance primitive)."""
    request = {
        "method": "object_class_action_versions",
        "namespace": None,
        "version": "1.0",
        "msg_id": uuid.uuid4().hex,
        "reply_q": f"reply_{uuid.uuid4().hex}",
        "request_id": str(uuid.uuid4()),
        "timeout": 120.0,
        "context": {
            "user_id": "bench",
            "project_id": "bench",
            "request_id": f"req-{uuid.uuid4()}",
            "roles": [],
            "is_admin": False,
        },
        "args": {
            "objname": "Instance",
            "objmethod": "get",
            "object_versions": {"Instance": "1.2", "Flavor": "1.0"},
            "args": [1234],
            "kwargs": {},
        },
    }
    reply = {"msg_id": uuid.uuid4().hex, "result": sample, "failure": None, "ending": True}
    return json.dumps(request), json.dumps(reply)


def _machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "cores": cores,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "summary": f"{cores} cores {model}, Python {platform.python_version()}",
    }


def _config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "quick": args.quick,
        "ops": args.ops,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "only": args.only,
        "backends": args.backends,
        "seed": args.seed,
        "conductors": args.conductors,
        "conductor_workers": args.conductor_workers,
        "lean_codecs": args.lean_codecs,
        "windows": list(WINDOWS),
        "pipeline_window": PIPELINE_WINDOW,
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 1 round, up to 5000 ops or 0.5 s per cell"
    )
    p.add_argument("--ops", type=int, help="ops per cell and round (default 5000)")
    p.add_argument(
        "--seconds",
        type=float,
        help="time cap per cell and round (default 2.0; quick 0.5; 0 = none)",
    )
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 1)")
    p.add_argument(
        "--only",
        type=lambda s: [w.strip() for w in s.split(",") if w.strip()],
        help=f"comma-separated workloads out of {','.join(WORKLOADS)}",
    )
    p.add_argument(
        "--backends",
        type=lambda s: [b.strip() for b in s.split(",") if b.strip()],
        default=list(BACKENDS),
        help="comma-separated: embedded,rabbit-pg",
    )
    p.add_argument(
        "--no-anchors",
        action="store_true",
        help="only our stack (no OpenStack, raw kombu or SQLAlchemy runs)",
    )
    p.add_argument(
        "--memory-soak",
        type=int,
        nargs="?",
        const=1_000_000,
        metavar="N",
        help="instead: N ops (default 1,000,000) per backend, report RSS growth",
    )
    p.add_argument("--seed", type=int, help="instances created up front (default 2000)")
    p.add_argument(
        "--conductors",
        type=int,
        default=1,
        help="conductor serve processes on the topic (rabbit-pg)",
    )
    p.add_argument(
        "--conductor-metrics",
        action="store_true",
        help="start each conductor with --metrics-port 0 (what metrics cost)",
    )
    p.add_argument(
        "--conductor-workers",
        type=int,
        default=None,
        help="--workers of each conductor (default: the conductor's default)",
    )
    _procs.add_service_arguments(p, "the bench database")
    p.add_argument(
        "--lean-codecs",
        type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
        default=None,
        help="JSON codecs of the lean rows: json,orjson (default: both, "
        "orjson only when installed)",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the child processes' logs")
    args = p.parse_args(argv)
    args.ops = args.ops or 5000
    args.seconds = args.seconds if args.seconds is not None else (0.5 if args.quick else 2.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.seed = args.seed or (600 if args.quick else 2000)
    if args.lean_codecs is None:
        args.lean_codecs = ["json", *(["orjson"] if importlib.util.find_spec("orjson") else [])]
    for c in args.lean_codecs:
        if c not in ("json", "orjson"):
            p.error(f"unknown codec {c!r}; choose from json, orjson")
    for b in args.backends:
        if b not in BACKENDS:
            p.error(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    for w in args.only or ():
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    if args.seed <= PIPELINE_WINDOW:
        p.error(f"--seed must exceed {PIPELINE_WINDOW} so operations in flight never share a row")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    bench = Bench(args)
    anchors = not args.no_anchors and not args.memory_soak
    try:
        if "embedded" in args.backends:
            bench.setup_embedded(anchors)
        if "rabbit-pg" in args.backends:
            bench.setup_rabbit_pg(anchors)
        if args.memory_soak:
            bench.soak(args.memory_soak)
        else:
            bench.bench()
    except _procs.ChildError as exc:
        _log(f"bench failed: {exc}")
        return 1
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
