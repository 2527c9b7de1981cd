"""Start real ``conductor serve`` processes for multi-process tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def unique_topic(prefix: str = "test-conductor") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def conductor_command() -> list[str]:
    """The real console script next to this interpreter (what a user types)."""
    script = Path(sys.executable).with_name("conductor")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "conductor.cli"]


class ServeProcess:
    """A ``conductor serve`` child whose output is collected in the background."""

    def __init__(self, args: Sequence[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [*conductor_command(), "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=REPO,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if "serving topic" in line:
                self.ready.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.wait(0.1):
                return
            if self.proc.poll() is not None:
                self._close()
                raise AssertionError(
                    f"conductor serve exited with {self.proc.returncode}:\n{self.output}"
                )
        raise AssertionError(f"conductor serve not ready after {timeout}s:\n{self.output}")

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._close()
        return code

    def _close(self) -> None:
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The child must get its configuration from flags, as a user would give it.
    env.pop("CONDUCTOR_TRANSPORT_URL", None)
    env.pop("CONDUCTOR_DATABASE_URL", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def serve(
    transport_url: str,
    database_url: str,
    topic: str,
    *extra: str,
    server: str | None = None,
) -> Iterator[ServeProcess]:
    args = ["--transport-url", transport_url, "--database-url", database_url, "--topic", topic]
    if server:
        args += ["--server", server]
    proc = ServeProcess([*args, *extra], child_env())
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.terminate()
