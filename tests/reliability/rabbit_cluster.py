"""A throw-away 3-node RabbitMQ cluster on this machine, for the cluster tests.

Each node is a ``rabbitmq-server`` process of the test's own: its own node name
(``c<id>n1@localhost``...), AMQP and Erlang distribution ports picked free at start, its own
database, log and config files under a temporary directory, and an Erlang cookie of its own
(``HOME`` points into that directory). No plugins. The nodes are joined with ``rabbitmqctl
-n``. The shared broker (node ``rabbit@...``, ports 5672/25672) is never named, so nothing
here can reach it; ``stop()`` stops exactly the nodes this object started.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
_RESERVED = {5672, 25672, 35672, 4369, 15672, 15692}


def available() -> str | None:
    """Why no cluster can be started here (None when it can)."""
    for path in (SERVER, CTL):
        if not Path(path).exists():
            return f"{path} is missing (install rabbitmq-server)"
    return None


def _free_port(low: int, high: int, taken: set[int]) -> int:
    for _ in range(200):
        port = random.randint(low, high)
        if port in taken or port in _RESERVED:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise AssertionError("no free port for a cluster node")


class Node:
    def __init__(self, cluster: RabbitCluster, index: int, port: int, dist_port: int) -> None:
        self.index = index
        self.name = f"{cluster.prefix}n{index}@localhost"
        self.port = port
        self.dist_port = dist_port
        self.base = cluster.base / f"n{index}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._cluster = cluster

    def url(self, user: str = "guest", password: str = "guest") -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{self.port}//"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self._cluster.home),
            RABBITMQ_CONF_ENV_FILE=str(self._cluster.base / "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_PLUGINS_EXPAND_DIR=str(self.base / "plugins-expand"),
            RABBITMQ_PID_FILE=str(self.base / "pid"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def write_config(self) -> None:
        for sub in ("log", "mnesia"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users = none\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )
        (self.base / "enabled_plugins").write_text("[].\n")

    def start(self) -> None:
        self.write_config()
        out = open(self.base / "server.out", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [SERVER],
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()

    def ctl(self, *args: str, timeout: float = 90.0, check: bool = True) -> str:
        out = subprocess.run(
            [CTL, "-q", "-n", self.name, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and out.returncode != 0:
            raise AssertionError(
                f"rabbitmqctl -n {self.name} {' '.join(args)} failed ({out.returncode}): "
                f"{out.stdout}{out.stderr}"
            )
        return out.stdout

    def join(self, first: Node, attempts: int = 3) -> None:
        """Join ``first``'s cluster. The joins run one node at a time (RabbitMQ asks for it:
        two nodes merging their schemas into one cluster at once can fail), and a
        ``start_app`` that fails anyway (seen once in CI: ``mnesia_app`` would not start
        after the join) is retried from a reset node, with the node's log on the last
        failure."""
        for attempt in range(1, attempts + 1):
            self.ctl("stop_app")
            if attempt > 1:
                self.ctl("reset", check=False)
            self.ctl("join_cluster", first.name)
            try:
                self.ctl("start_app")
                return
            except AssertionError as exc:
                if attempt == attempts:
                    raise AssertionError(f"{exc}\n{self.log_tail()}") from None
                time.sleep(1.0)

    def wait_started(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name} did not start in {timeout}s:\n{self.log_tail()}")
            done = subprocess.run(
                [CTL, "-q", "-n", self.name, "await_startup", "--timeout", str(int(max(5, left)))],
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=left + 30,
            )
            if done.returncode == 0:
                return
            time.sleep(0.5)  # not registered with epmd yet

    def stop(self, timeout: float = 60.0) -> None:
        """Stop this node the way an operator does (``rabbitmqctl stop``); kill if stuck."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.ctl("stop", timeout=timeout, check=False)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in [self.base / "server.out", *sorted((self.base / "log").glob("*.log"))]:
            if path.exists():
                text += (
                    f"--- {path.name}\n"
                    + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                    + "\n"
                )
        return text


class RabbitCluster:
    """Three joined nodes; ``start()`` then ``stop()`` (or use it as a context manager)."""

    def __init__(self, size: int = 3) -> None:
        self.prefix = f"c{uuid.uuid4().hex[:8]}"
        self.base = Path(tempfile.mkdtemp(prefix="rabbit-cluster-"))
        self.home = self.base / "home"
        self.home.mkdir()
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex.upper())
        cookie.chmod(0o400)
        (self.base / "rabbitmq-env.conf").write_text("")
        taken: set[int] = set()
        self.nodes = [
            Node(self, i, _free_port(20000, 29999, taken), _free_port(30000, 45000, taken))
            for i in range(1, size + 1)
        ]
        self.timings: dict[str, float] = {}

    def start(self) -> None:
        started = time.monotonic()
        try:
            for node in self.nodes:
                node.start()
            with cf.ThreadPoolExecutor(len(self.nodes)) as pool:
                list(pool.map(lambda n: n.wait_started(), self.nodes))
            self.timings["nodes_up"] = time.monotonic() - started
            first = self.nodes[0]

            for node in self.nodes[1:]:
                node.join(first)
            running = self.running_nodes()
            if sorted(running) != sorted(n.name for n in self.nodes):
                raise AssertionError(f"cluster formed with {running} only")
            self.timings["cluster_up"] = time.monotonic() - started
        except BaseException:
            self.stop()
            raise

    def ensure_running(self, timeout: float = 120.0) -> None:
        """Start again any node a test stopped; it rejoins the cluster from its own data."""
        down = [n for n in self.nodes if n.proc is None or n.proc.poll() is not None]
        for node in down:
            node.start()
        for node in down:
            node.wait_started(timeout)
        if down:
            deadline = time.monotonic() + timeout
            while sorted(self.running_nodes()) != sorted(n.name for n in self.nodes):
                if time.monotonic() > deadline:
                    raise AssertionError(f"only {self.running_nodes()} rejoined")
                time.sleep(0.5)

    def running_nodes(self, via: Node | None = None) -> list[str]:
        node = via or next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)
        status = json.loads(node.ctl("cluster_status", "--formatter", "json"))
        return list(status.get("running_nodes", []))

    def url(self, order: list[int]) -> str:
        """A failover URL over the nodes in ``order`` (1-based indexes)."""
        return ";".join(self.nodes[i - 1].url() for i in order)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def queues(self, via: Node) -> dict[str, dict[str, Any]]:
        """``{name: {"type", "leader", "members", "messages", "messages_ready",
        "messages_unacknowledged", "consumers"}}`` as ``via`` sees them."""
        out = via.ctl(
            "list_queues",
            "--formatter",
            "json",
            "name",
            "type",
            "leader",
            "members",
            "messages",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
        )
        return {q["name"]: q for q in json.loads(out or "[]")}

    def stop(self) -> None:
        with cf.ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda n: n.stop(), self.nodes))
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> RabbitCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
