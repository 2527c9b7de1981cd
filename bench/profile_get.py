"""Where the CPU of one pipelined operation goes, on RabbitMQ + PostgreSQL.

Runs the benchmark's own client against a conductor in another process, both with
stage accounting (``bench/_stages.py``), and prints per operation: the CPU of each
stage on each side, of each thread, and of the four processes (client, conductor,
RabbitMQ, the PostgreSQL backends of the profile's database), and the most ops/s this
machine's cores could carry at that CPU per operation. It shows where the CPU goes; the
targets are ratios against anchors run side by side, which ``bench/bench.py`` reports.

    python bench/profile_get.py                 # get, then get_async and save with 256 in flight
    python bench/profile_get.py --only get_async --window 1024
    python bench/profile_get.py --timeline      # where a call's time goes, not its CPU

The accounting itself costs about a microsecond per wrapped call (a few per operation).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psutil

if not __package__:
    # Run as a script (``python bench/profile_get.py``): import the ``bench`` package from the
    # repository root, not this file's folder (where ``bench`` would be bench/bench.py).
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import _procs  # noqa: E402


def _print_side(title: str, report: dict[str, Any], ops: int) -> None:
    print(f"  {title}")
    for label, seconds, calls in report["stages"]:
        if calls:
            print(f"    {label:48s} {seconds / ops * 1e6:8.1f} us/op   ({calls} calls)")
    for name, seconds in sorted(report["threads"].items(), key=lambda kv: -kv[1]):
        if seconds > 0:
            print(f"    thread {name:41s} {seconds / ops * 1e6:8.1f} us/op")


def profile(
    client: _procs.Child,
    conductor: _procs.Child,
    services: _procs.ServiceCPU,
    workload: str,
    window: int,
    seconds: float,
) -> None:
    for side in (client, conductor):
        side.call({"cmd": "reset"})
    procs_before = {"client": client.ps.cpu_times(), "conductor": conductor.ps.cpu_times()}
    services_before = services.snapshot()
    machine_before = psutil.cpu_times()
    result = client.call(
        {"cmd": "run", "workload": workload, "window": window, "ops": 10**9, "seconds": seconds}
    )
    machine_after = psutil.cpu_times()
    services_after = services.snapshot()
    reports = {
        "client": client.call({"cmd": "stages"}),
        "conductor": conductor.call({"cmd": "stages"}),
    }
    ops, elapsed = result["ops"], result["elapsed"]
    latencies = sorted(result["lat_ms"])
    p50 = latencies[len(latencies) // 2] if latencies else float("nan")
    label = workload if workload == "get" else f"{workload}[{window}]"
    print(
        f"\n{label}: {ops} ops in {elapsed:.1f}s = {ops / elapsed:,.0f} ops/s, "
        f"p50 {p50:.2f} ms, {result['errors']} errors"
    )
    _print_side("client process", reports["client"], ops)
    _print_side("conductor process", reports["conductor"], ops)
    per_op: dict[str, float] = {}
    for name, child in (("client", client), ("conductor", conductor)):
        after = child.ps.cpu_times()
        before = procs_before[name]
        per_op[name] = (after.user + after.system - before.user - before.system) / ops * 1e6
    for label, used in services.delta(services_before, services_after).items():
        per_op[label] = used / ops * 1e6
    busy = sum(machine_after) - sum(machine_before)
    idle = (machine_after.idle - machine_before.idle) + (
        machine_after.iowait - machine_before.iowait
    )
    cores = psutil.cpu_count() or 1
    print("  whole processes, CPU per op")
    for name, us in per_op.items():
        print(f"    {name:48s} {us:8.1f} us/op")
    total = sum(per_op.values())
    print(f"    {'all four':48s} {total:8.1f} us/op")
    print(f"  machine busy {100 * (busy - idle) / busy:.0f}% of {cores} cores")
    if workload == "get":
        print("  one call at a time: the CPU above is spent on the critical path of each call")
    else:
        ceiling = cores * 1e6 / total
        print(f"  at this CPU per op the {cores} cores could carry at most {ceiling:,.0f} ops/s")


#: A call's way, one call at a time: (segment, from (side, mark, end), to (side, mark,
#: end)); end 0 is when the function was entered, 1 when it was left. ``call`` (the
#: caller has its object) is matched to the calls by order, the others by request id.
_SEQUENTIAL = [
    ("client: the call built (caller's thread)", ("c", "start", 0), ("c", "submit", 0)),
    ("client: the request published (caller's thread)", ("c", "submit", 0), ("c", "submit", 1)),
    ("RabbitMQ -> the conductor's I/O thread", ("c", "submit", 1), ("s", "arrive", 0)),
    ("conductor: answered on its I/O thread", ("s", "arrive", 0), ("s", "arrive", 1)),
    ("RabbitMQ -> the client's I/O thread", ("s", "arrive", 1), ("c", "reply", 0)),
    ("client: the reply taken in (I/O thread)", ("c", "reply", 0), ("c", "reply", 1)),
    ("client: the caller woken, returns", ("c", "reply", 1), ("c", "call", 1)),
    ("the whole call", ("c", "start", 0), ("c", "call", 1)),
]
#: Many calls in flight: the conductor answers batches on its workers.
_PIPELINED = [
    ("client: the call started (caller's thread)", ("c", "start", 0), ("c", "start", 1)),
    ("client: waits for the sender (gathering a batch)", ("c", "start", 1), ("c", "publish", 0)),
    ("client: the batch published (sender thread)", ("c", "publish", 0), ("c", "publish", 1)),
    ("RabbitMQ -> the conductor's I/O thread", ("c", "publish", 1), ("s", "arrive", 0)),
    ("conductor: waits for a worker", ("s", "arrive", 1), ("s", "handle", 0)),
    ("conductor: its batch run, replies sent (worker)", ("s", "handle", 0), ("s", "handle", 1)),
    ("RabbitMQ -> the client's I/O thread", ("s", "handle", 1), ("c", "reply", 0)),
    ("client: its reply message taken in (I/O thread)", ("c", "reply", 0), ("c", "reply", 1)),
    ("start to reply taken in", ("c", "start", 0), ("c", "reply", 1)),
]


def _timeline(
    client: _procs.Child, conductor: _procs.Child, workload: str, window: int, seconds: float
) -> None:
    """Run ``workload`` with both sides noting their marks; print each segment's median."""
    for side in (client, conductor):
        side.call({"cmd": "marks_on"})
    result = client.call(
        {"cmd": "run", "workload": workload, "window": window, "ops": 10**9, "seconds": seconds}
    )
    notes = {"c": client.call({"cmd": "marks"}), "s": conductor.call({"cmd": "marks"})}
    sequential = workload == "get"
    starts = notes["c"]["by_id"].get("start", {})
    ends = notes["c"]["ordered"].get("call", [])
    ids = sorted(starts, key=lambda i: starts[i][0])
    done = {i: ends[k] for k, i in enumerate(ids) if k < len(ends)} if sequential else {}

    def at(request_id: str, side: str, mark: str, end: int) -> float | None:
        if mark == "call":
            found = done.get(request_id)
        else:
            found = notes[side]["by_id"].get(mark, {}).get(request_id)
        return None if found is None else found[end]

    label = workload if sequential else f"{workload}[{window}]"
    ops, elapsed = result["ops"], result["elapsed"]
    print(
        f"\n{label}: {ops} ops in {elapsed:.1f}s = {ops / elapsed:,.0f} ops/s; "
        "the median of each segment of a call's way (ms):"
    )
    for name, start, end in _SEQUENTIAL if sequential else _PIPELINED:
        spans = []
        for request_id in ids[len(ids) // 10 :]:  # past the first tenth: warm
            a, b = at(request_id, *start), at(request_id, *end)
            if a is not None and b is not None:
                spans.append(b - a)
        if spans:
            spans.sort()
            median = spans[len(spans) // 2] * 1e3
            print(f"    {name:52s} {median:8.3f} ms   ({len(spans)} calls)")
        else:
            print(f"    {name:52s}        - (not on this way)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--only",
        default="get,get_async,save",
        help="comma-separated workloads out of get (sequential), get_async, save, create",
    )
    p.add_argument("--window", type=int, default=256, help="operations in flight")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per workload")
    p.add_argument("--seed", type=int, default=2000, help="instances created up front")
    _procs.add_service_arguments(p, "the profile database")
    p.add_argument(
        "--timeline",
        action="store_true",
        help="where a call's time goes along the wire (timestamps) instead of its CPU",
    )
    args = p.parse_args(argv)
    tag = uuid.uuid4().hex[:8]
    name, topic, server = f"profile_{tag}", f"profile-{tag}", f"profile-{tag}"
    tmp = Path(tempfile.mkdtemp(prefix="conductor-profile-"))
    db_url = _procs.create_database(args.pg_url, name)
    children: list[_procs.Child] = []
    services: _procs.ServiceCPU | None = None
    try:
        conductor = _procs.worker(
            "conductor",
            "profiled-conductor",
            {
                "transport_url": args.transport_url,
                "database_url": db_url,
                "topic": topic,
                "server": server,
                "timeline": args.timeline,
            },
            tmp,
        )
        children.append(conductor)
        client = _procs.worker(
            "client",
            "profiled-client",
            {"transport_url": args.transport_url, "topic": topic, "timeline": args.timeline},
            tmp,
        )
        children.append(client)
        client.call({"cmd": "seed", "count": args.seed})
        services = _procs.ServiceCPU(args.pg_url, name)
        print(
            f"profile of {args.only} with {args.window} in flight, {args.seconds:.0f}s each; "
            f"pid {os.getpid()}, {psutil.cpu_count()} cores; database {name}"
        )
        for workload in args.only.split(","):
            client.call(
                {
                    "cmd": "run",
                    "workload": workload,
                    "window": args.window,
                    "ops": 10**9,
                    "seconds": 1.0,
                }
            )  # warm-up
            if args.timeline:
                _timeline(client, conductor, workload, args.window, args.seconds)
            else:
                profile(client, conductor, services, workload, args.window, args.seconds)
    finally:
        if services is not None:
            services.close()
        for child in reversed(children):
            child.stop()
        _procs.remove_run(args.pg_url, name, args.transport_url, topic, server, tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
