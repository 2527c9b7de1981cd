"""Where the CPU of one operation goes on the embedded default (memory:// + SQLite).

The benchmark's own client (``_ours.OursWorker``) and its in-process conductor run in this
one process, with the stage accounting of ``bench/profile_get.py`` on both sides
(``bench/_stages.py``), and prints per operation: the CPU of each stage, of each thread
(caller, transport-sender, conductor workers, transport-callbacks), the whole process,
and the thread wake-ups (voluntary context switches) per operation.

    python bench/profile_embedded.py                       # get, get_async[256]
    python bench/profile_embedded.py --only get_async --window 256 --functions 20

``--functions N`` also runs one extra round under yappi (CPU clock, all threads; ``pip
install yappi``) and prints its top N functions by own and by inclusive time.

``--rounds N`` measures instead, with nothing wrapped: N rounds of ``--ops`` operations,
the process CPU per operation of each (``time.process_time``) and their median. That is
the figure to compare before and after a change, alternating two trees (a ``git worktree``
of the base run with ``PYTHONPATH`` set to it); one round moves by 10-40% on a noisy VM,
the median of eight or more much less::

    python bench/profile_embedded.py --only get_async --rounds 10
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

if not __package__:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import _stages  # noqa: E402

#: Stages of the embedded path besides the two sides' own (nested: totals are inclusive).
MEMORY_STAGES = [
    (
        "memory broker publish (incl. inline delivery)",
        "transport.drivers.memory:MemoryBroker",
        "publish",
    ),
    ("memory broker settle (ack)", "transport.drivers.memory:MemoryBroker", "settle"),
    ("SQL execute (SQLAlchemy Connection.execute)", "sqlalchemy.engine:Connection", "execute"),
    ("commit (SQLAlchemy Connection.commit)", "sqlalchemy.engine:Connection", "commit"),
    ("server: check an envelope", "transport.server", "_validate"),
    ("server: call-monitor watch (per batch)", "transport.server:RPCServer", "_watch_batch"),
    ("server: call-monitor unwatch (per batch)", "transport.server:RPCServer", "_unwatch_batch"),
    ("unit of work: run a batch", "conductor.unit_of_work:UnitOfWork", "_run_batch"),
    ("client: register the call", "transport._replies:ReplyWaiter", "register"),
    ("client: match a reply, run then, resolve", "transport._replies:ReplyWaiter", "_on_one_reply"),
]


#: Functions both sides call, under the label they get in one process.
SHARED_LABELS = {
    ("transport._wire", "decode"): "JSON decode (request and reply messages)",
    (
        "transport._wire",
        "encode",
    ): "JSON encode (requests; replies: in 'JSON encode of the replies')",
}


def _one_per_function(stages: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Each function wrapped once. NOTE: in one process the client's and the conductor's
    stages share functions; wrapped twice, every call counted under both labels (the
    request's 'JSON encode' showed 2.00/op: the requests' and the replies' encodes)."""
    seen: dict[tuple[str, str], str] = {}
    for label, owner, attr in stages:
        seen.setdefault((owner, attr), SHARED_LABELS.get((owner, attr), label))
    return [(label, owner, attr) for (owner, attr), label in seen.items()]


def _switches() -> dict[str, int]:
    """Voluntary context switches (a thread sleeping: a wait, a lock, the GIL) per thread
    name (digits dropped, so a pool's threads add up)."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, int] = {}
    for tid in os.listdir("/proc/self/task"):
        name = names.get(int(tid), "other").rstrip("0123456789-")
        try:
            with open(f"/proc/self/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        out[name] = out.get(name, 0) + int(line.split()[1])
        except OSError:
            continue
    return out


def _functions(run: Any, args: argparse.Namespace) -> None:
    """One more round under yappi (CPU clock, every thread): the top functions by own
    and by inclusive time. yappi inflates small functions; read it for the shape, and the
    stage figures above for the amounts."""
    import yappi  # type: ignore[import-untyped]  # a profiling tool, not a dependency

    yappi.set_clock_type("cpu")
    yappi.start()
    run()
    yappi.stop()
    stats = yappi.get_func_stats()
    for order in ("tsub", "ttot"):
        print(f"  yappi, by {'own' if order == 'tsub' else 'inclusive'} time:")
        for fs in list(stats.sort(order))[: args.functions]:
            print(
                f"    {fs.tsub * 1e3:8.1f} ms own {fs.ttot * 1e3:8.1f} ms tot {fs.ncall:8d}  "
                f"{fs.module.rsplit('/', 1)[-1]}:{fs.lineno} {fs.name}"
            )
    yappi.clear_stats()


def _rounds(run: Any, rounds: int, label: str) -> None:
    """``rounds`` runs of ``run()``: the process CPU per operation of each, and the median."""
    ops = 0
    cpu: list[float] = []
    for _ in range(rounds):
        t0 = time.process_time()
        res = run()
        used = time.process_time() - t0
        if res["errors"]:
            raise SystemExit(f"{res['errors']} errors, the first: {res['first_error']}")
        cpu.append(used / res["ops"] * 1e6)
        ops = res["ops"]
    ordered = sorted(cpu)
    print(
        f"{label}, {ops} ops a round, process CPU us/op: {' '.join(f'{c:.1f}' for c in cpu)}"
        f"; median {ordered[len(ordered) // 2]:.1f}, best {ordered[0]:.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="get,get_async")
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=2000)
    p.add_argument(
        "--asyncio", action="store_true", help="get_async awaited by coroutines on an event loop"
    )
    p.add_argument("--workers", type=int, default=0, help="conductor workers (0: default)")
    p.add_argument(
        "--functions", type=int, default=0, help="top N functions of a yappi run (needs yappi)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="measure only: N rounds' process CPU per op and their median (no stages)",
    )
    p.add_argument("--ops", type=int, default=5000, help="operations per round (--rounds)")
    args = p.parse_args(argv)

    stages = (
        None
        if args.rounds
        else _stages.Stages(
            _one_per_function(_stages.CONDUCTOR_STAGES + _stages.CLIENT_STAGES + MEMORY_STAGES)
        )
    )
    from bench._ours import OursWorker

    tmp = Path(tempfile.mkdtemp(prefix="conductor-embedded-profile-"))
    worker = OursWorker(
        {
            "embedded": True,
            "transport_url": f"memory://profile-{uuid.uuid4().hex[:8]}",
            "database_url": f"sqlite:///{tmp / 'profile.sqlite'}",
            "topic": "profile",
            **({"workers": args.workers} if args.workers else {}),
        }
    )
    try:
        worker.seed(args.seed)
        for workload in args.only.split(","):
            window = 1 if workload == "get" else args.window
            run = worker.run_asyncio if args.asyncio and workload != "get" else worker.run
            run(workload, window, 10**9, 1.0)  # warm-up
            if stages is None:
                label = workload if workload == "get" else f"{workload}[{window}]"
                _rounds(
                    functools.partial(run, workload, window, args.ops, None), args.rounds, label
                )
                continue
            stages.reset()
            sw0 = _switches()
            t0 = os.times()
            res = run(workload, window, 10**9, args.seconds)
            t1 = os.times()
            sw1 = _switches()
            rep = stages.report()
            ops = res["ops"]
            label = workload if workload == "get" else f"{workload}[{window}]"
            lat = sorted(res["lat_ms"])
            p50 = lat[len(lat) // 2] if lat else float("nan")
            print(
                f"\n{label}: {ops} ops in {res['elapsed']:.1f}s = {ops / res['elapsed']:,.0f} "
                f"ops/s, p50 {p50:.3f} ms, {res['errors']} errors"
            )
            for name, seconds, calls in rep["stages"]:
                if calls:
                    print(f"    {name:52s} {seconds / ops * 1e6:8.1f} us/op ({calls / ops:.2f}/op)")
            for name, seconds in sorted(rep["threads"].items(), key=lambda kv: -kv[1]):
                if seconds > 0:
                    print(f"    thread {name:45s} {seconds / ops * 1e6:8.1f} us/op")
            cpu = (t1.user + t1.system - t0.user - t0.system) / ops * 1e6
            print(f"    {'process CPU':52s} {cpu:8.1f} us/op")
            total = sum(sw1.values()) - sum(sw0.values())
            print(f"    {'voluntary context switches':52s} {total / ops:8.2f} /op")
            for name, count in sorted(sw1.items(), key=lambda kv: kv[1] - sw0.get(kv[0], 0)):
                if count - sw0.get(name, 0):
                    print(f"      of thread {name:40s} {(count - sw0.get(name, 0)) / ops:8.2f} /op")
            if args.functions:
                _functions(functools.partial(run, workload, window, 10**9, 2.0), args)
            time.sleep(0.1)
    finally:
        worker.close()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
