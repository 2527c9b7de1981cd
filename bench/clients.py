"""Pipelined gets from one client process and from several, against one ``conductor serve``.

``bench/bench.py`` measures one client keeping ``window`` gets in flight. This asks
what the same conductor, broker and database carry when the window is shared by more
client processes (each keeps its share in flight, all started together): how much of
one client's figure is its own window's round trip rather than the rest of the system.

    python bench/clients.py                      # 1 x 256, 2 x 128, 2 x 256, alternated
    python bench/clients.py --layouts 1x256,4x64 --rounds 3

Prints the ops/s of every round (all clients' gets over the time from the first start
to the last finish) and each layout's median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if not __package__:
    # Run as a script: import the ``bench`` package from the repository root.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import _procs  # noqa: E402


def _layouts(text: str) -> list[tuple[int, int]]:
    """``"1x256,2x128"`` -> [(1, 256), (2, 128)]: clients x window each."""
    found = []
    for part in text.split(","):
        clients, _, window = part.partition("x")
        found.append((int(clients), int(window)))
    return found


def _round(clients: list[_procs.Child], window: int, ops: int) -> float:
    """Every client runs ``ops`` gets with ``window`` in flight, at once; ops/s of all."""
    with ThreadPoolExecutor(len(clients)) as pool:
        results = list(
            pool.map(
                lambda c: c.call(
                    {"cmd": "run", "workload": "get_async", "window": window, "ops": ops}
                ),
                clients,
            )
        )
    errors = sum(r["errors"] for r in results)
    if errors:
        raise _procs.ChildError(f"{errors} gets failed: {results[0]['first_error']}")
    return float(sum(r["ops"] for r in results) / max(r["elapsed"] for r in results))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layouts", default="1x256,2x128,2x256", help="clients x window, ...")
    p.add_argument("--ops", type=int, default=40_000, help="gets per round, over all clients")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=2000, help="instances created up front")
    _procs.add_service_arguments(p, "the run's database")
    args = p.parse_args(argv)
    layouts = _layouts(args.layouts)
    tag = uuid.uuid4().hex[:8]
    name, topic = f"clients_{tag}", f"clients-{tag}"
    tmp = Path(tempfile.mkdtemp(prefix="conductor-clients-"))
    db_url = _procs.create_database(args.pg_url, name)
    serve: _procs.ConductorServe | None = None
    children: list[_procs.Child] = []
    try:
        serve = _procs.ConductorServe(
            "conductor-serve",
            [
                "--transport-url",
                args.transport_url,
                "--database-url",
                db_url,
                "--topic",
                topic,
                "--server",
                topic,
                "--log-level",
                "WARNING",
            ],
            tmp,
        )
        config: dict[str, Any] = {"transport_url": args.transport_url, "topic": topic}
        first = _procs.worker("client-0", "ours", config, tmp)
        children.append(first)
        ids = first.call({"cmd": "seed", "count": args.seed})["ids"]
        most = max(clients for clients, _ in layouts)
        for k in range(1, most):
            children.append(_procs.worker(f"client-{k}", "ours", {**config, "ids": ids}, tmp))
        for child in children:  # warm every client up
            child.call({"cmd": "run", "workload": "get_async", "window": 64, "ops": 3000})
        print(f"pipelined get_async against one conductor serve ({args.ops} gets a round)")
        figures: dict[tuple[int, int], list[float]] = {layout: [] for layout in layouts}
        for r in range(args.rounds):
            for clients, window in layouts:
                ops_s = _round(children[:clients], window, args.ops // clients)
                figures[(clients, window)].append(ops_s)
                print(f"  round {r + 1}: {clients} x {window:4d} in flight  {ops_s:9,.0f} ops/s")
        print("medians:")
        for (clients, window), values in figures.items():
            print(f"  {clients} x {window:4d} in flight  {statistics.median(values):9,.0f} ops/s")
    finally:
        for child in reversed(children):
            child.stop()
        if serve is not None:
            serve.stop()
        _procs.remove_run(args.pg_url, name, args.transport_url, topic, topic, tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
