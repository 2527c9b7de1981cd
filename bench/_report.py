"""Aggregation and printing: the table, the ratios, the targets, the JSON line."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from bench._common import percentile

# Issue 13's targets, each a ratio within one run: (name, backend, workload, what, op,
# threshold). ``openstack``/``raw-kombu``: ours' ops/s over that anchor's at the largest
# window run (on embedded the anchor is OVO's local get); ``p50/raw-kombu``: ours' p50 over
# raw kombu's, sequential; ``cpu/lean``: CPU per op of all four processes over the leanest
# lean row's, at the largest window.
TARGETS: list[tuple[str, str, str, str, str, float]] = [
    ("pipelined get_async vs OpenStack", "rabbit-pg", "get_async", "openstack", ">=", 40.0),
    ("pipelined get_async vs raw kombu", "rabbit-pg", "get_async", "raw-kombu", ">=", 3.0),
    ("CPU per pipelined get vs the lean row", "rabbit-pg", "get_async", "cpu/lean", "<=", 1.5),
    ("pipelined get+modify+save_async vs OpenStack", "rabbit-pg", "save", "openstack", ">=", 30.0),
    ("sequential get p50 vs raw kombu's", "rabbit-pg", "get", "p50/raw-kombu", "<=", 1.7),
    ("embedded pipelined get_async vs OVO local", "embedded", "get_async", "openstack", ">=", 4.0),
]
SOAK_LIMIT_MB = 20.0


@dataclass
class CPU:
    """What one run of a cell used: CPU seconds per process and RSS after it."""

    client: float
    server: float | None = None
    broker: float | None = None  # RabbitMQ
    database: float | None = None  # PostgreSQL backends of the bench database
    client_rss: float = 0.0
    server_rss: float | None = None


def _add(total: float | None, more: float | None) -> float | None:
    return total if more is None else (total or 0.0) + more


@dataclass
class Cell:
    """One (workload, window, backend, system) over all rounds."""

    workload: str
    window: int
    backend: str
    system: str
    rounds: list[float] = field(default_factory=list)  # ops/s per round
    latencies: list[float] = field(default_factory=list)  # ms, pooled
    loop_lags: list[float] = field(default_factory=list)  # ms, pooled (asyncio runs)
    ops: int = 0
    errors: int = 0
    first_error: str | None = None
    client_cpu: float = 0.0
    server_cpu: float | None = None
    broker_cpu: float | None = None
    database_cpu: float | None = None
    client_rss: float = 0.0
    server_rss: float | None = None

    def add(self, reply: dict[str, Any], cpu: CPU) -> None:
        ok = reply["ops"] - reply["errors"]
        if reply["elapsed"] > 0:
            self.rounds.append(ok / reply["elapsed"])
        self.latencies.extend(reply["lat_ms"])
        self.loop_lags.extend(reply.get("loop_lag_ms", ()))
        self.ops += reply["ops"]
        self.errors += reply["errors"]
        self.first_error = self.first_error or reply.get("first_error")
        self.client_cpu += cpu.client
        self.server_cpu = _add(self.server_cpu, cpu.server)
        self.broker_cpu = _add(self.broker_cpu, cpu.broker)
        self.database_cpu = _add(self.database_cpu, cpu.database)
        self.client_rss = cpu.client_rss
        self.server_rss = cpu.server_rss

    def us_per_op(self) -> dict[str, float | None]:
        """CPU microseconds per operation of each process (None: not measured), and of
        all four together (None unless all four were measured)."""
        if not self.ops:
            return dict.fromkeys(("client", "server", "broker", "database", "all"))
        out = {
            name: None if cpu is None else cpu * 1e6 / self.ops
            for name, cpu in (
                ("client", self.client_cpu),
                ("server", self.server_cpu),
                ("broker", self.broker_cpu),
                ("database", self.database_cpu),
            )
        }
        parts = list(out.values())
        out["all"] = None if any(v is None for v in parts) else sum(v or 0.0 for v in parts)
        return out

    @property
    def label(self) -> str:
        return self.workload if self.workload == "get" else f"{self.workload}[{self.window}]"

    @property
    def ops_per_s(self) -> float | None:
        return statistics.median(self.rounds) if self.rounds else None

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        per_op = 1e6 / self.ops if self.ops else None
        return {
            "workload": self.workload,
            "window": self.window,
            "backend": self.backend,
            "system": self.system,
            "ops": self.ops,
            "errors": self.errors,
            "first_error": self.first_error,
            "ops_per_s": _r(self.ops_per_s, 1),
            "ops_per_s_rounds": [_r(x, 1) for x in self.rounds],
            "p50_ms": _r(percentile(lat, 50), 3),
            "p99_ms": _r(percentile(lat, 99), 3),
            "client_cpu_s": _r(self.client_cpu, 3),
            "conductor_cpu_s": _r(self.server_cpu, 3),
            "client_cpu_us_per_op": _r(self.client_cpu * per_op, 1) if per_op else None,
            "conductor_cpu_us_per_op": _r(self.server_cpu * per_op, 1)
            if per_op and self.server_cpu is not None
            else None,
            "rabbitmq_cpu_us_per_op": _r(self.us_per_op()["broker"], 1),
            "postgresql_cpu_us_per_op": _r(self.us_per_op()["database"], 1),
            "client_rss_mb": _r(self.client_rss, 1),
            "conductor_rss_mb": _r(self.server_rss, 1),
        }


def _r(x: float | None, nd: int) -> float | None:
    return None if x is None else round(x, nd)


def _f(x: Any, fmt: str, width: int) -> str:
    return f"{'-' if x is None else format(x, fmt):>{width}}"


def print_table(cells: list[Cell], in_process_conductor: set[tuple[str, str]]) -> None:
    head = (
        f"{'workload':<15} {'backend':<9} {'system':<12} {'ops':>6} {'ops/s':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'cliCPU s':>8} {'cndCPU s':>8} "
        f"{'cli us/op':>9} {'cnd us/op':>9} {'mq us/op':>8} {'pg us/op':>8} "
        f"{'cliRSS MB':>9} {'cndRSS MB':>9} err"
    )
    print(head)
    print("-" * len(head))
    for c in cells:
        s = c.summary()
        inproc = (c.backend, c.system) in in_process_conductor
        print(
            f"{c.label:<15} {c.backend:<9} {c.system:<12} {c.ops:>6} "
            f"{_f(s['ops_per_s'], ',.0f', 9)} {_f(s['p50_ms'], '.3f', 8)} "
            f"{_f(s['p99_ms'], '.3f', 8)} "
            f"{_f(s['client_cpu_s'], '.2f', 8)} "
            f"{'(in cli)' if inproc else _f(s['conductor_cpu_s'], '.2f', 8):>8} "
            f"{_f(s['client_cpu_us_per_op'], '.0f', 9)} "
            f"{'(in cli)' if inproc else _f(s['conductor_cpu_us_per_op'], '.0f', 9):>9} "
            f"{_f(s['rabbitmq_cpu_us_per_op'], '.0f', 8)} "
            f"{_f(s['postgresql_cpu_us_per_op'], '.0f', 8)} "
            f"{_f(s['client_rss_mb'], '.1f', 9)} "
            f"{'(in cli)' if inproc else _f(s['conductor_rss_mb'], '.1f', 9):>9} "
            f"{c.errors if c.errors else ''}"
        )


def _find(cells: list[Cell], backend: str, system: str, workload: str, window: int) -> Cell | None:
    for c in cells:
        if (c.backend, c.system, c.workload, c.window) == (backend, system, workload, window):
            return c
    return None


def ratios(cells: list[Cell]) -> list[dict[str, Any]]:
    """ours / each anchor, per ours cell.

    OpenStack: the same workload and window (thread pool of that size) on rabbit-pg;
    on embedded, OVO run locally on the same SQLite file (sequential). raw kombu: the
    same window (``get`` = sequential). direct SQLAlchemy: its sequential figure for the
    same operation (``get_async`` compares with ``get``).
    """
    out = []
    for c in cells:
        if c.system != "ours" or c.ops_per_s is None:
            continue
        base = "get" if c.workload == "get_async" else c.workload
        if c.backend == "rabbit-pg":
            os_cell = _find(cells, c.backend, "openstack", c.workload, c.window)
            kombu = (
                _find(cells, c.backend, "raw-kombu", c.workload, c.window)
                if c.workload in ("get", "get_async")
                else None
            )
        else:
            os_cell = _find(cells, c.backend, "ovo-local", base, 1)
            kombu = None
        sqla = _find(cells, c.backend, "sqlalchemy", base, 1)

        def ratio(other: Cell | None, ours: Cell = c) -> float | None:
            if other is None or not other.ops_per_s or ours.ops_per_s is None:
                return None
            return round(ours.ops_per_s / other.ops_per_s, 2)

        out.append(
            {
                "workload": c.label,
                "backend": c.backend,
                "ours_ops_per_s": _r(c.ops_per_s, 1),
                "vs_openstack": ratio(os_cell),
                "openstack_system": os_cell.system if os_cell else None,
                "vs_raw_kombu": ratio(kombu),
                "vs_sqlalchemy": ratio(sqla),
            }
        )
    return out


def print_ratios(rows: list[dict[str, Any]]) -> None:
    def x(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}x"

    print(
        f"{'workload':<15} {'backend':<9} {'ours ops/s':>10} {'ours/OpenStack':>26} "
        f"{'ours/raw-kombu':>15} {'ours/direct-SQLA':>17}"
    )
    for r in rows:
        os_ratio = x(r["vs_openstack"])
        if r["openstack_system"] == "ovo-local" and r["vs_openstack"] is not None:
            os_ratio += " (OVO local, seq)"
        print(
            f"{r['workload']:<15} {r['backend']:<9} {_f(r['ours_ops_per_s'], ',.0f', 10)} "
            f"{os_ratio:>26} {x(r['vs_raw_kombu']):>15} {x(r['vs_sqlalchemy']):>17}"
        )


def targets(cells: list[Cell]) -> list[dict[str, Any]]:
    """Issue 13's targets, measured as the ratios this run gives (None: not run)."""
    by_ratio = {(r["backend"], r["workload"]): r for r in ratios(cells)}
    lean = lean_rows(cells)
    out = []
    for name, backend, workload, what, op, threshold in TARGETS:
        ours = [
            c
            for c in cells
            if (c.system, c.backend, c.workload) == ("ours", backend, workload)
            and c.ops_per_s is not None
        ]
        value: float | None = None
        where = None
        if ours:
            cell = max(ours, key=lambda c: c.window)
            where = cell.label
            row = by_ratio.get((backend, cell.label), {})
            if what == "openstack":
                value = row.get("vs_openstack")
            elif what == "raw-kombu":
                value = row.get("vs_raw_kombu")
            elif what == "cpu/lean":
                found = [
                    r["cpu_ratio"]
                    for r in lean
                    if r["workload"] == cell.label and r["cpu_ratio"] is not None
                ]
                value = max(found) if found else None
            elif what == "p50/raw-kombu":
                kombu = _find(cells, backend, "raw-kombu", workload, cell.window)
                ours_p50 = percentile(sorted(cell.latencies), 50)
                kombu_p50 = percentile(sorted(kombu.latencies), 50) if kombu else None
                if ours_p50 is not None and kombu_p50:
                    value = ours_p50 / kombu_p50
        passed = (
            None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        )
        out.append(
            {
                "target": name,
                "measured": _r(value, 2),
                "at": where,
                "threshold": f"{op} {threshold}x",
                "pass": passed,
            }
        )
    return out


def print_targets(rows: list[dict[str, Any]]) -> None:
    for t in rows:
        verdict = {True: "PASS", False: "FAIL", None: "n/a (not run)"}[t["pass"]]
        measured = "-" if t["measured"] is None else f"{t['measured']:.2f}x"
        print(
            f"  {verdict:<5} {t['target']:<58} measured {measured:>10} "
            f"(at {t['at']}) target {t['threshold']}"
        )


def lean_rows(cells: list[Cell]) -> list[dict[str, Any]]:
    """ours / each lean row, pipelined ``get_async`` on rabbit-pg: ops/s and CPU per
    operation of all four processes (client, conductor, RabbitMQ, PostgreSQL)."""
    out = []
    for c in cells:
        if c.system != "ours" or c.backend != "rabbit-pg" or c.workload != "get_async":
            continue
        ours = c.us_per_op()
        for lean in cells:
            if not lean.system.startswith("lean") or (lean.backend, lean.workload, lean.window) != (
                c.backend,
                c.workload,
                c.window,
            ):
                continue
            floor = lean.us_per_op()
            out.append(
                {
                    "workload": c.label,
                    "lean": lean.system,
                    "ours_ops_per_s": _r(c.ops_per_s, 1),
                    "lean_ops_per_s": _r(lean.ops_per_s, 1),
                    "ops_ratio": _r(c.ops_per_s / lean.ops_per_s, 2)
                    if c.ops_per_s and lean.ops_per_s
                    else None,
                    "ours_us_per_op": {k: _r(v, 1) for k, v in ours.items()},
                    "lean_us_per_op": {k: _r(v, 1) for k, v in floor.items()},
                    "cpu_ratio": _r(ours["all"] / floor["all"], 2)
                    if ours["all"] and floor["all"]
                    else None,
                }
            )
    return out


#: Issue 13: CPU per pipelined get (all four processes) at most this times the lean row's.
LEAN_CPU_TARGET = 1.5


def print_lean(rows: list[dict[str, Any]]) -> None:
    def cpu(d: dict[str, Any]) -> str:
        return (
            f"{_f(d['all'], '.0f', 4)} = {_f(d['client'], '.0f', 3)}+{_f(d['server'], '.0f', 3)}"
            f"+{_f(d['broker'], '.0f', 2)}+{_f(d['database'], '.0f', 2)}"
        )

    print("ours / lean (the floor, bench/_lean.py), pipelined get_async on RabbitMQ + PostgreSQL;")
    print("CPU us per op = client + conductor + RabbitMQ + PostgreSQL")
    print(
        f"{'workload':<15} {'lean':<12} {'ours ops/s':>10} {'lean ops/s':>10} "
        f"{'ops ours/lean':>13} "
        f"{'ours CPU us/op':>21} {'lean CPU us/op':>21} {'CPU ours/lean':>13}"
    )
    for r in rows:
        ratio = "-" if r["cpu_ratio"] is None else f"{r['cpu_ratio']:.2f}x"
        ops = "-" if r["ops_ratio"] is None else f"{r['ops_ratio']:.2f}x"
        print(
            f"{r['workload']:<15} {r['lean']:<12} {_f(r['ours_ops_per_s'], ',.0f', 10)} "
            f"{_f(r['lean_ops_per_s'], ',.0f', 10)} {ops:>13} {cpu(r['ours_us_per_op']):>21} "
            f"{cpu(r['lean_us_per_op']):>21} {ratio:>13}"
        )
    best = [r for r in rows if r["cpu_ratio"] is not None and r["workload"].endswith("[256]")]
    if best:
        worst = max(best, key=lambda r: r["cpu_ratio"])
        verdict = "PASS" if worst["cpu_ratio"] <= LEAN_CPU_TARGET else "FAIL"
        print(
            f"  {verdict} CPU per pipelined get (all four, [256]) <= {LEAN_CPU_TARGET}x the lean "
            f"rows': {worst['cpu_ratio']:.2f}x vs {worst['lean']} (issue 13)"
        )


def asyncio_rows(cells: list[Cell]) -> list[dict[str, Any]]:
    """ours awaited on an event loop / ours waited for by a thread, pipelined get_async."""
    out = []
    for c in cells:
        if c.system != "ours-asyncio":
            continue
        threads = _find(cells, c.backend, "ours", c.workload, c.window)
        if threads is None:
            continue
        a, t = c.us_per_op(), threads.us_per_op()
        out.append(
            {
                "workload": c.label,
                "backend": c.backend,
                "threads_ops_per_s": _r(threads.ops_per_s, 1),
                "asyncio_ops_per_s": _r(c.ops_per_s, 1),
                "ops_ratio": _r(c.ops_per_s / threads.ops_per_s, 2)
                if c.ops_per_s and threads.ops_per_s
                else None,
                "threads_client_us_per_op": _r(t["client"], 1),
                "asyncio_client_us_per_op": _r(a["client"], 1),
                "threads_p50_ms": _r(percentile(sorted(threads.latencies), 50), 3),
                "asyncio_p50_ms": _r(percentile(sorted(c.latencies), 50), 3),
                "loop_lag_p99_ms": _r(percentile(sorted(c.loop_lags), 99), 2),
                "loop_lag_max_ms": _r(max(c.loop_lags), 2) if c.loop_lags else None,
            }
        )
    return out


def print_asyncio(rows: list[dict[str, Any]]) -> None:
    print(
        "asyncio bridge: `await Instance.get_async(...)` from N coroutines (gathered) against "
        "N in flight waited for by a thread"
    )
    print(
        f"{'workload':<15} {'backend':<9} {'threads ops/s':>13} {'asyncio ops/s':>13} "
        f"{'asyncio/threads':>15} {'cli us/op thr':>13} {'cli us/op aio':>13} "
        f"{'p50 ms thr':>10} {'p50 ms aio':>10} {'loop lag p99/max ms':>19}"
    )
    for r in rows:
        ratio = "-" if r["ops_ratio"] is None else f"{r['ops_ratio']:.2f}x"
        print(
            f"{r['workload']:<15} {r['backend']:<9} {_f(r['threads_ops_per_s'], ',.0f', 13)} "
            f"{_f(r['asyncio_ops_per_s'], ',.0f', 13)} {ratio:>15} "
            f"{_f(r['threads_client_us_per_op'], '.0f', 13)} "
            f"{_f(r['asyncio_client_us_per_op'], '.0f', 13)} "
            f"{_f(r['threads_p50_ms'], '.3f', 10)} {_f(r['asyncio_p50_ms'], '.3f', 10)} "
            f"{_f(r['loop_lag_p99_ms'], '.1f', 9)}/{_f(r['loop_lag_max_ms'], '.1f', 9)}"
        )
