"""Worker for our stack: ``objects`` over ``conductor.connect``, public API only.

Embedded mode starts a ``conductor.Conductor`` in this process on a private
``memory://`` broker and a SQLite file, exactly like ``conductor demo``; remote mode only
connects to a ``conductor serve`` the orchestrator started (RabbitMQ + PostgreSQL).
"""

from __future__ import annotations

import asyncio
import gc
import random
import uuid
from typing import Any

import conductor
import objects
from bench import _common
from objects.context import RequestContext


class OursWorker:
    """Runs the workloads against our conductor."""

    def __init__(self, config: dict[str, Any]) -> None:
        objects.register_all()
        self.service: conductor.Conductor | None = None
        transport_url = config["transport_url"]
        if config.get("embedded"):
            self.service = conductor.Conductor(
                transport_url,
                config["database_url"],
                topic=config["topic"],
                **({"workers": config["workers"]} if config.get("workers") else {}),
            )
            self.service.start()
        self.client = conductor.connect(transport_url, topic=config["topic"], timeout=120.0)
        self.ctx = RequestContext(user_id="bench", project_id="bench")
        self.ids: list[int] = list(config.get("ids") or [])
        self.rng = random.Random(4)
        self.order: list[int] = []
        self.cursor = 0
        self.flavor: Any = None
        self.created = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- helpers ---------------------------------------------------------------------

    def _id(self, i: int) -> int:
        # Cycle through the ids in a shuffled order: operations in flight together never
        # share a row (the pool is much larger than any window), so saves do not collide.
        if len(self.order) != len(self.ids):
            self.order = list(self.ids)
            self.rng.shuffle(self.order)
        self.cursor = (self.cursor + 1) % len(self.order)
        return self.order[self.cursor]

    def _new_instance(self) -> Any:
        self.created += 1
        values = _common.instance_values(self.created)
        return objects.Instance(self.ctx, uuid=str(uuid.uuid4()), flavor=self._flavor(), **values)

    def _flavor(self) -> Any:
        if self.flavor is None:
            found = objects.Flavor(
                self.ctx,
                flavorid=f"bench-{uuid.uuid4().hex[:8]}",
                name="m1.bench",
                vcpus=2,
                memory_mb=4096,
                root_gb=20,
            )
            found.create()
            self.flavor = found
        return self.flavor

    # -- commands --------------------------------------------------------------------

    def seed(self, count: int) -> dict[str, Any]:
        """Create ``count`` instances (pipelined) and remember their ids."""
        made = [self._new_instance() for _ in range(count)]
        window = 256
        for lo in range(0, count, window):
            chunk = made[lo : lo + window]
            objects.wait_all([inst.create_async() for inst in chunk])
        self.ids.extend(inst.id for inst in made)
        sample = objects.Instance.get(self.ctx, self.ids[0])
        return {"ids": self.ids, "sample_primitive": sample.obj_to_primitive()}

    def run_asyncio(
        self, workload: str, window: int, ops: int, seconds: float | None
    ) -> dict[str, Any]:
        """Pipelined awaits on an event loop of this thread: ``window`` coroutines
        each doing ``await Instance.get_async(ctx, id)`` one after the other."""
        if workload != "get_async":
            raise ValueError(f"no asyncio variant of {workload!r}")
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        ctx = self.ctx
        Instance = objects.Instance
        return self.loop.run_until_complete(
            _common.run_window_asyncio(
                lambda i: Instance.get_async(ctx, self._id(i)), window, ops, seconds
            )
        )

    def run(self, workload: str, window: int, ops: int, seconds: float | None) -> dict[str, Any]:
        ctx = self.ctx
        Instance = objects.Instance
        if workload == "get":
            return _common.run_sequential(lambda i: Instance.get(ctx, self._id(i)), ops, seconds)
        if workload == "get_async":
            return _common.run_window(
                lambda i: Instance.get_async(ctx, self._id(i)),
                lambda inst: inst.wait(),
                window,
                ops,
                seconds,
            )
        if workload == "save":

            def modify_and_save(inst: Any) -> Any:
                inst.state = _common.STATES[self.rng.randrange(3)]
                inst.task_state = f"t{self.rng.randrange(1000)}"
                return inst.save_async()

            return _common.run_two_stage(
                lambda i: Instance.get_async(ctx, self._id(i)),
                lambda inst: inst.wait(),
                modify_and_save,
                lambda fut: fut.done(),
                lambda fut: fut.wait(),
                window,
                ops,
                seconds,
            )
        if workload == "create":

            def start(i: int) -> Any:
                return self._new_instance().create_async()

            return _common.run_window(start, lambda fut: fut.wait(), window, ops, seconds)
        raise ValueError(f"unknown workload {workload!r}")

    def handle(self, command: dict[str, Any]) -> Any:
        cmd = command["cmd"]
        if cmd == "seed":
            return self.seed(int(command["count"]))
        if cmd == "run" and command.get("mode") == "asyncio":
            return self.run_asyncio(
                command["workload"],
                int(command.get("window", 1)),
                int(command["ops"]),
                command.get("seconds"),
            )
        if cmd == "run":
            return self.run(
                command["workload"],
                int(command.get("window", 1)),
                int(command["ops"]),
                command.get("seconds"),
            )
        if cmd == "gc":
            return {"collected": gc.collect()}
        if cmd == "close":
            self.close()
            return {"closed": True}
        raise ValueError(f"unknown command {cmd!r}")

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()
            self.loop = None
        self.client.close()
        if self.service is not None:
            self.service.stop()
            self.service = None


def main(config: dict[str, Any]) -> None:
    worker = OursWorker(config)
    try:
        _common.serve_commands(worker.handle)
    finally:
        worker.close()
