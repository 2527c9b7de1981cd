"""Aggregation and printing: the table, the ratios, the targets, the JSON line."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from _common import percentile

# The targets of issue 4: (name, backend, workload, how, threshold, unit).
TARGETS = [
    ("pipelined get_async over RabbitMQ+PostgreSQL", "rabbit-pg", "get_async", "max_ops", 10_000, ">="),
    ("pipelined get+modify+save_async over RabbitMQ+PostgreSQL", "rabbit-pg", "save", "max_ops", 3_000, ">="),
    ("sequential get p50 ms over RabbitMQ+PostgreSQL", "rabbit-pg", "get", "p50", 1.3, "<="),
    ("embedded pipelined get_async", "embedded", "get_async", "max_ops", 10_000, ">="),
]
SOAK_LIMIT_MB = 20.0


@dataclass
class Cell:
    """One (workload, window, backend, system) over all rounds."""

    workload: str
    window: int
    backend: str
    system: str
    rounds: list[float] = field(default_factory=list)  # ops/s per round
    latencies: list[float] = field(default_factory=list)  # ms, pooled
    ops: int = 0
    errors: int = 0
    first_error: str | None = None
    client_cpu: float = 0.0
    server_cpu: float | None = None
    client_rss: float = 0.0
    server_rss: float | None = None

    def add(self, reply: dict[str, Any], client_cpu: float, server_cpu: float | None,
            client_rss: float, server_rss: float | None) -> None:
        ok = reply["ops"] - reply["errors"]
        if reply["elapsed"] > 0:
            self.rounds.append(ok / reply["elapsed"])
        self.latencies.extend(reply["lat_ms"])
        self.ops += reply["ops"]
        self.errors += reply["errors"]
        self.first_error = self.first_error or reply.get("first_error")
        self.client_cpu += client_cpu
        if server_cpu is not None:
            self.server_cpu = (self.server_cpu or 0.0) + server_cpu
        self.client_rss = client_rss
        self.server_rss = server_rss

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
            "workload": self.workload, "window": self.window, "backend": self.backend,
            "system": self.system, "ops": self.ops, "errors": self.errors,
            "first_error": self.first_error,
            "ops_per_s": _r(self.ops_per_s, 1), "ops_per_s_rounds": [_r(x, 1) for x in self.rounds],
            "p50_ms": _r(percentile(lat, 50), 3), "p99_ms": _r(percentile(lat, 99), 3),
            "client_cpu_s": _r(self.client_cpu, 3),
            "conductor_cpu_s": _r(self.server_cpu, 3),
            "client_cpu_us_per_op": _r(self.client_cpu * per_op, 1) if per_op else None,
            "conductor_cpu_us_per_op": _r(self.server_cpu * per_op, 1)
            if per_op and self.server_cpu is not None else None,
            "client_rss_mb": _r(self.client_rss, 1), "conductor_rss_mb": _r(self.server_rss, 1),
        }


def _r(x: float | None, nd: int) -> float | None:
    return None if x is None else round(x, nd)


def _f(x: Any, fmt: str, width: int) -> str:
    return f"{'-' if x is None else format(x, fmt):>{width}}"


def print_table(cells: list[Cell], in_process_conductor: set[tuple[str, str]]) -> None:
    head = (f"{'workload':<15} {'backend':<9} {'system':<11} {'ops':>6} {'ops/s':>9} "
            f"{'p50 ms':>8} {'p99 ms':>8} {'cliCPU s':>8} {'cndCPU s':>8} "
            f"{'cli us/op':>9} {'cnd us/op':>9} {'cliRSS MB':>9} {'cndRSS MB':>9} err")
    print(head)
    print("-" * len(head))
    for c in cells:
        s = c.summary()
        inproc = (c.backend, c.system) in in_process_conductor
        print(f"{c.label:<15} {c.backend:<9} {c.system:<11} {c.ops:>6} "
              f"{_f(s['ops_per_s'], ',.0f', 9)} {_f(s['p50_ms'], '.3f', 8)} {_f(s['p99_ms'], '.3f', 8)} "
              f"{_f(s['client_cpu_s'], '.2f', 8)} "
              f"{'(in cli)' if inproc else _f(s['conductor_cpu_s'], '.2f', 8):>8} "
              f"{_f(s['client_cpu_us_per_op'], '.0f', 9)} "
              f"{'(in cli)' if inproc else _f(s['conductor_cpu_us_per_op'], '.0f', 9):>9} "
              f"{_f(s['client_rss_mb'], '.1f', 9)} "
              f"{'(in cli)' if inproc else _f(s['conductor_rss_mb'], '.1f', 9):>9} "
              f"{c.errors if c.errors else ''}")


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
            kombu = _find(cells, c.backend, "raw-kombu", c.workload, c.window) \
                if c.workload in ("get", "get_async") else None
        else:
            os_cell = _find(cells, c.backend, "ovo-local", base, 1)
            kombu = None
        sqla = _find(cells, c.backend, "sqlalchemy", base, 1)

        def ratio(other: Cell | None, ours: Cell = c) -> float | None:
            if other is None or not other.ops_per_s or ours.ops_per_s is None:
                return None
            return round(ours.ops_per_s / other.ops_per_s, 2)

        out.append({"workload": c.label, "backend": c.backend, "ours_ops_per_s": _r(c.ops_per_s, 1),
                    "vs_openstack": ratio(os_cell), "openstack_system": os_cell.system if os_cell else None,
                    "vs_raw_kombu": ratio(kombu), "vs_sqlalchemy": ratio(sqla)})
    return out


def print_ratios(rows: list[dict[str, Any]]) -> None:
    def x(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}x"

    print(f"{'workload':<15} {'backend':<9} {'ours ops/s':>10} {'ours/OpenStack':>26} "
          f"{'ours/raw-kombu':>15} {'ours/direct-SQLA':>17}")
    for r in rows:
        os_ratio = x(r["vs_openstack"])
        if r["openstack_system"] == "ovo-local" and r["vs_openstack"] is not None:
            os_ratio += " (OVO local, seq)"
        print(f"{r['workload']:<15} {r['backend']:<9} {_f(r['ours_ops_per_s'], ',.0f', 10)} "
              f"{os_ratio:>26} {x(r['vs_raw_kombu']):>15} {x(r['vs_sqlalchemy']):>17}")


def targets(cells: list[Cell]) -> list[dict[str, Any]]:
    out = []
    for name, backend, workload, how, threshold, op in TARGETS:
        found = [c for c in cells if c.system == "ours" and c.backend == backend
                 and c.workload == workload and c.ops_per_s is not None]
        value: float | None = None
        where = None
        if found and how == "max_ops":
            best = max(found, key=lambda c: c.ops_per_s or 0.0)
            value, where = best.ops_per_s, best.label
        elif found and how == "p50":
            value = percentile(sorted(found[0].latencies), 50)
            where = found[0].label
        passed = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        out.append({"target": name, "measured": _r(value, 3), "at": where,
                    "threshold": f"{op} {threshold}", "pass": passed})
    return out


def print_targets(rows: list[dict[str, Any]]) -> None:
    for t in rows:
        verdict = {True: "PASS", False: "FAIL", None: "n/a (not run)"}[t["pass"]]
        measured = "-" if t["measured"] is None else f"{t['measured']:,}"
        print(f"  {verdict:<5} {t['target']:<58} measured {measured:>10} "
              f"(at {t['at']}) target {t['threshold']}")
