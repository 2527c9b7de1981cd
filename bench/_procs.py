"""Child processes of the benchmark: workers we send commands to, and servers.

Every child's stderr goes to a log file in the run's temporary directory; when a child
fails, the error names that file and shows its tail.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

#: Where the benchmarks find RabbitMQ, and a PostgreSQL to create their databases through.
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1/postgres"

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


class ChildError(RuntimeError):
    """A child process failed, answered with an error, or did not answer in time."""


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def child_env(repo: Path = REPO) -> dict[str, str]:
    """The environment of a child importing ``repo``'s packages (another checkout's too:
    ``bench/ab.py``)."""
    env = dict(os.environ)
    # Children get their configuration from arguments, never from the environment.
    env.pop("CONDUCTOR_TRANSPORT_URL", None)
    env.pop("CONDUCTOR_DATABASE_URL", None)
    env["PYTHONUNBUFFERED"] = "1"
    # The workers import the ``bench`` package (``python -m bench._worker``) and ours.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
    return env


class Child:
    """A process speaking JSON lines: commands on stdin, replies on stdout."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        logdir: Path,
        ready_timeout: float = 60.0,
        repo: Path = REPO,
    ) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=child_env(repo),
            cwd=repo,
            bufsize=1,
        )
        self.ps = psutil.Process(self.proc.pid)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._expect(lambda reply: bool(reply.get("ready")), ready_timeout)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _fail(self, what: str) -> ChildError:
        return ChildError(f"{self.name}: {what}; log {self.log_path}:\n{_tail(self.log_path)}")

    def _expect(self, accept: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._fail(f"no answer within {timeout:.0f}s")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise self._fail(f"exited with {self.proc.wait()}")
            try:
                reply = json.loads(line)
            except ValueError:
                continue  # a stray print of some library
            if isinstance(reply, dict) and accept(reply):
                return reply

    def call(self, command: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self._fail("stdin closed") from None
        reply = self._expect(lambda r: True, timeout)
        if "error" in reply:
            raise self._fail(f"{command.get('cmd')} failed: {reply['error']}")
        return reply

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            _reap(self.proc, timeout)
        self._log.close()


def _reap(proc: subprocess.Popen[Any], timeout: float) -> None:
    """Wait for a child told to stop; kill it when it has not within ``timeout``."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def connect_pg(url: str) -> Any:
    """A psycopg connection (autocommit) to the database of SQLAlchemy URL ``url``."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return psycopg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database or "postgres",
        autocommit=True,
    )


_admin_connection = connect_pg


def create_database(admin_url: str, name: str) -> str:
    """Create PostgreSQL database ``name`` through ``admin_url``, migrate it with
    ``conductor db upgrade``, and return its URL."""
    from sqlalchemy.engine import make_url

    with _admin_connection(admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    script = Path(sys.executable).with_name("conductor")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "conductor.cli"]
    try:
        subprocess.run(
            [*argv, "db", "upgrade", "--database-url", url],
            check=True,
            capture_output=True,
            env=child_env(),
            cwd=REPO,
        )
    except BaseException:
        drop_database(admin_url, name)  # nobody else knows it exists yet
        raise
    return url


def drop_database(admin_url: str, name: str) -> None:
    with _admin_connection(admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def add_service_arguments(parser: Any, what: str) -> None:
    """``--transport-url`` and ``--pg-url`` (where ``what``'s database is created and
    dropped), defaulting to ``BENCH_TRANSPORT_URL`` / ``BENCH_PG_ADMIN_URL``, then the
    local services."""
    parser.add_argument(
        "--transport-url", default=os.environ.get("BENCH_TRANSPORT_URL", DEFAULT_AMQP)
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_ADMIN_URL", DEFAULT_PG),
        help=f"a PostgreSQL URL to create and drop {what} through",
    )


def remove_run(
    pg_url: str, database: str, transport_url: str, topic: str, server: str, tmp: Path
) -> None:
    """What a profile's run leaves behind: its database, its topic's queues, its logs."""
    import shutil

    drop_database(pg_url, database)
    delete_broker_objects(transport_url, [topic, f"{topic}.{server}", f"{topic}.dead"])
    shutil.rmtree(tmp, ignore_errors=True)


def delete_broker_objects(
    url: str, queues: list[str], exchanges: tuple[str, ...] | list[str] = ()
) -> None:
    from kombu.connection import Connection

    with Connection(url) as conn:
        channel = conn.channel()
        for q in queues:
            channel.queue_delete(queue=q)
        for ex in exchanges:
            channel.exchange_delete(exchange=ex)


def worker(name: str, kind: str, config: dict[str, Any], logdir: Path, repo: Path = REPO) -> Child:
    argv = [sys.executable, "-m", "bench._worker", kind, json.dumps(config)]
    return Child(name, argv, logdir, repo=repo)


class ConductorServe:
    """``conductor serve`` as a user runs it; stdout and stderr go to a log file."""

    def __init__(
        self,
        name: str,
        args: list[str],
        logdir: Path,
        timeout: float = 60.0,
        repo: Path = REPO,
    ) -> None:
        script = Path(sys.executable).with_name("conductor")
        argv = [str(script)] if script.exists() else [sys.executable, "-m", "conductor.cli"]
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*argv, "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=child_env(repo),
            cwd=repo,
        )
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + timeout
        while "serving topic" not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None:
                raise ChildError(
                    f"{name} exited with {self.proc.returncode}:\n{_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ChildError(f"{name} not ready after {timeout:.0f}s:\n{_tail(self.log_path)}")
            time.sleep(0.05)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            _reap(self.proc, timeout)
        self._log.close()
        return self.proc.returncode


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total / 1e6


def rabbitmq_process() -> psutil.Process | None:
    """The RabbitMQ broker on this machine: the oldest ``beam.smp`` (``rabbitmqctl`` and
    friends start short-lived ones of their own), or None when there is none."""
    found = []
    for proc in psutil.process_iter(["name", "create_time"]):
        if proc.info["name"] == "beam.smp":
            found.append(proc)
    return min(found, key=lambda p: p.info["create_time"]) if found else None


class ServiceCPU:
    """CPU of the services an operation uses besides our processes: RabbitMQ (its broker
    process, shared with whatever else uses it) and PostgreSQL (the backends connected to
    one database, found in ``pg_stat_activity``; other databases' work is not counted).

    ``snapshot()`` before and after, then ``delta(before, after)``: seconds per service.
    A backend that ends between the two snapshots is not counted; one that starts
    counts from zero.
    """

    LABELS = ("RabbitMQ", "PostgreSQL")

    def __init__(self, pg_admin_url: str, database: str) -> None:
        self.broker = rabbitmq_process()
        self.database = database
        self.admin = connect_pg(pg_admin_url)
        self.backends: dict[int, psutil.Process] = {}

    def _pg_processes(self) -> list[psutil.Process]:
        rows = self.admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.database,)
        ).fetchall()
        out = []
        for (pid,) in rows:
            proc = self.backends.get(pid)
            if proc is None:
                try:
                    proc = self.backends[pid] = psutil.Process(pid)
                except psutil.Error:
                    continue
            out.append(proc)
        return out

    def snapshot(self) -> dict[str, dict[int, float]]:
        def cpu(procs: list[psutil.Process]) -> dict[int, float]:
            out = {}
            for p in procs:
                try:
                    t = p.cpu_times()
                except psutil.Error:
                    continue
                out[p.pid] = t.user + t.system
            return out

        return {
            "RabbitMQ": cpu([self.broker] if self.broker else []),
            "PostgreSQL": cpu(self._pg_processes()),
        }

    @staticmethod
    def delta(
        before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
    ) -> dict[str, float]:
        return {
            label: sum(max(0.0, t - before[label].get(pid, 0.0)) for pid, t in after[label].items())
            for label in after
        }

    def close(self) -> None:
        self.admin.close()
