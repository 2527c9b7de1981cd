"""Where one operation's CPU goes: stage accounting for ``bench/profile_get.py``.

A stage is a function of our stack (or of a library it calls) wrapped so that every
call adds the thread CPU time it used (``time.thread_time``) to the stage's total.
Unlike cProfile or yappi, this attributes nothing across greenlet switches or GIL
waits wrongly, and costs about a microsecond per wrapped call. Stages nest: a total is
inclusive of the stages inside it. Threads are read from ``/proc/self/task``, so time
spent outside any stage (py-amqp's frame parsing, a thread's wake-ups) still shows in
its thread's line.

Only functions that never switch greenlets are stages: a batch's write bodies
(``save``) park in greenlets, and a thread clock read around a parked body would count
the other bodies' time too.

Two worker kinds (``bench/_worker.py``): ``profiled-conductor`` runs
``conductor.Conductor`` as ``conductor serve`` would, ``profiled-client`` is the
benchmark's own client (``_ours.OursWorker``). Both answer ``reset`` (zero everything)
and ``stages`` (totals since the reset).
"""

from __future__ import annotations

import collections
import gc
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from bench import _common

#: (label, owner, attribute) per side. Labels are what the report prints.
CONDUCTOR_STAGES = [
    ("handle a message (worker thread)", "transport.server:RPCServer", "_handle"),
    ("JSON decode of the request message", "transport._wire", "decode"),
    (
        "dispatch (objects, SQL, exactly-once)",
        "transport.dispatcher:RPCDispatcher",
        "dispatch_batch",
    ),
    ("rebuild contexts and arguments", "transport.dispatcher:RPCDispatcher", "_arguments"),
    ("read the rows (one query per batch)", "conductor.db.storage:SQLStorage", "get_many"),
    ("write the rows (one statement per batch)", "conductor.db.storage:SQLStorage", "update_many"),
    ("run the method (object from the row, body)", "objects.indirection", "handle_class_action"),
    ("object -> primitive", "objects.indirection", "to_wire"),
    ("JSON encode of the replies (per caller)", "transport.server", "_reply_bodies"),
    ("publish the replies (kombu, py-amqp)", "transport.drivers.amqp:AMQPDriver", "send_reply"),
]

CLIENT_STAGES = [
    ("start a call (main thread)", "transport.client:RPCClient", "_start"),
    ("serialize context and arguments", "transport.client:RPCClient", "_envelope"),
    ("JSON encode of the request", "transport._wire", "encode"),
    ("publish the batch (sender thread)", "transport._sender:Sender", "_publish"),
    ("handle a reply message (I/O thread)", "transport._replies:ReplyWaiter", "_on_reply"),
    ("JSON decode of the reply message", "transport._wire", "decode"),
    ("primitive -> object", "objects.serializer:VersionedObjectSerializer", "deserialize_entity"),
    (
        "primitive -> pending object (in place)",
        "objects.versioned:VersionedObject",
        "_obj_load_primitive",
    ),
]


class Stages:
    """Accumulators around the named functions, plus per-thread CPU since ``reset``."""

    def __init__(self, stages: list[tuple[str, str, str]]) -> None:
        self.order = [label for label, _, _ in stages]
        self.cpu: collections.defaultdict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter[str] = collections.Counter()
        for label, owner, attr in stages:
            self._wrap(_resolve(owner), attr, label)
        self._threads_at_reset: dict[str, float] = {}

    def _wrap(self, owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr)
        cpu, calls, clock = self.cpu, self.calls, time.thread_time

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return original(*args, **kwargs)
            finally:
                cpu[label] += clock() - t0
                calls[label] += 1

        setattr(owner, attr, timed)

    def reset(self) -> dict[str, Any]:
        self.cpu.clear()
        self.calls.clear()
        self._threads_at_reset = _thread_cpu()
        return {"reset": True}

    def report(self) -> dict[str, Any]:
        now = _thread_cpu()
        threads: collections.defaultdict[str, float] = collections.defaultdict(float)
        for name, seconds in now.items():
            threads[name] += seconds - self._threads_at_reset.get(name, 0.0)
        return {
            "stages": [[label, self.cpu[label], self.calls[label]] for label in self.order],
            "threads": dict(threads),
        }


def _resolve(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    module = __import__(module_name, fromlist=["_"])
    return getattr(module, attr) if attr else module


def _thread_cpu() -> dict[str, float]:
    """CPU seconds per thread name (digits dropped, so a pool's threads add up)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: collections.defaultdict[str, float] = collections.defaultdict(float)
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        name = names.get(int(tid), "other").rstrip("0123456789-")
        out[name] += (int(fields[11]) + int(fields[12])) / tick
    return dict(out)


def _serve(stages: Stages, handle: Callable[[dict[str, Any]], Any], marks: Any = None) -> None:
    def command(cmd: dict[str, Any]) -> Any:
        if cmd["cmd"] == "reset":
            return stages.reset()
        if cmd["cmd"] == "stages":
            return stages.report()
        if cmd["cmd"] == "marks_on" and marks is not None:
            return marks.start()
        if cmd["cmd"] == "marks" and marks is not None:
            return marks.report()
        return handle(cmd)

    _common.serve_commands(command)


def _unknown(cmd: dict[str, Any]) -> Any:
    raise ValueError(f"unknown command {cmd.get('cmd')!r}")


def _marks(config: dict[str, Any], side: str) -> Any:
    """With ``timeline`` in the config: the side's timestamps (``bench/_timeline.py``)
    instead of its stages (a stage's clock reads would be on the timeline too)."""
    if not config.get("timeline"):
        return None
    from bench import _timeline

    return _timeline.Marks(
        _timeline.CONDUCTOR_MARKS if side == "conductor" else _timeline.CLIENT_MARKS
    )


def serve_conductor(config: dict[str, Any]) -> None:
    marks = _marks(config, "conductor")
    stages = Stages([] if marks else CONDUCTOR_STAGES)
    import conductor
    import objects

    objects.register_all()
    service = conductor.Conductor(
        config["transport_url"],
        config["database_url"],
        topic=config["topic"],
        server=config["server"],
    )
    service.start()
    gc.freeze()  # as conductor serve does
    from conductor import cli

    cli._raise_young_threshold()  # and this too
    try:
        _serve(stages, _unknown, marks)
    finally:
        service.stop()


def serve_client(config: dict[str, Any]) -> None:
    marks = _marks(config, "client")
    stages = Stages([] if marks else CLIENT_STAGES)
    from bench._ours import OursWorker

    worker = OursWorker(config)
    try:
        _serve(stages, worker.handle, marks)
    finally:
        worker.close()
