"""Pipelined gets of two or more checkouts of this project, alternated round by round.

On a noisy machine one system's figure moves by a third from one minute to the next, so
a change is judged by rounds run back to back. Each tree (a folder holding this
project: a ``git worktree``, a copy) gets its own ``conductor serve`` on its own topic
and its own client, both importing that tree's code; every round runs each tree's
client once, in alternating order, and the report gives each tree's ops/s and its ratio
to the first tree's within each round.

    git worktree add /tmp/base HEAD~1
    python bench/ab.py /tmp/base .                       # HEAD~1 against the working tree
    python bench/ab.py /tmp/base . --window 64 --rounds 10

The run's database and topics are removed afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

if not __package__:
    # Run as a script: import the ``bench`` package from the repository root.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import _procs  # noqa: E402


def _tree(text: str) -> Path:
    path = Path(text).resolve()
    if not (path / "conductor" / "cli.py").is_file():
        raise argparse.ArgumentTypeError(f"{text}: no checkout of this project there")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trees", nargs="+", type=_tree, help="checkouts; the first is the base")
    p.add_argument("--window", type=int, default=256, help="gets in flight (default 256)")
    p.add_argument("--ops", type=int, default=30_000, help="gets per round and tree")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--seed", type=int, default=2000, help="instances created up front")
    _procs.add_service_arguments(p, "the run's database")
    args = p.parse_args(argv)
    tag = uuid.uuid4().hex[:8]
    name = f"ab_{tag}"
    topics = [f"ab-{tag}-{k}" for k in range(len(args.trees))]
    tmp = Path(tempfile.mkdtemp(prefix="conductor-ab-"))
    db_url = _procs.create_database(args.pg_url, name)
    sides: list[tuple[_procs.ConductorServe, _procs.Child]] = []
    try:
        ids: list[int] | None = None
        for k, (tree, topic) in enumerate(zip(args.trees, topics, strict=True)):
            # Both children import this tree's packages.
            serve = _procs.ConductorServe(
                f"serve-{k}",
                ["--transport-url", args.transport_url, "--database-url", db_url]
                + ["--topic", topic, "--server", topic, "--log-level", "WARNING"],
                tmp,
                repo=tree,
            )
            config: dict[str, Any] = {"transport_url": args.transport_url, "topic": topic}
            if ids is not None:
                config["ids"] = ids
            client = _procs.worker(f"client-{k}", "ours", config, tmp, repo=tree)
            sides.append((serve, client))
            if ids is None:
                ids = client.call({"cmd": "seed", "count": args.seed})["ids"]
            client.call({"cmd": "run", "workload": "get_async", "window": args.window, "ops": 5000})
        print(f"get_async[{args.window}], {args.ops} gets a round and tree")
        figures: list[list[float]] = [[] for _ in args.trees]
        for r in range(args.rounds):
            order = list(range(len(sides)))
            if r % 2:
                order.reverse()
            for k in order:
                result = sides[k][1].call(
                    {"cmd": "run", "workload": "get_async", "window": args.window, "ops": args.ops}
                )
                if result["errors"]:
                    failed = f"{result['errors']} gets failed: {result['first_error']}"
                    raise _procs.ChildError(failed)
                figures[k].append(result["ops"] / result["elapsed"])
            print(
                f"  round {r + 1}: "
                + "  ".join(f"{values[-1]:9,.0f}" for values in figures)
                + " ops/s",
                flush=True,
            )
        print("median ops/s, and the median of each round's ratio to the first tree's:")
        for tree, values in zip(args.trees, figures, strict=True):
            ratios = [a / b for a, b in zip(values, figures[0], strict=True)]
            print(
                f"  {statistics.median(values):9,.0f}  {statistics.median(ratios):5.3f}x"
                f"  (rounds {min(ratios):.2f}-{max(ratios):.2f})  {tree}"
            )
    finally:
        for serve, client in reversed(sides):
            client.stop()
            serve.stop()
        _procs.remove_run(args.pg_url, name, args.transport_url, topics[0], topics[0], tmp)
        for topic in topics[1:]:
            _procs.delete_broker_objects(
                args.transport_url, [topic, f"{topic}.{topic}", f"{topic}.dead"]
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
