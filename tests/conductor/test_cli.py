"""The ``conductor`` command as a user runs it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.conductor.processes import REPO, ServeProcess, child_env, conductor_command


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*conductor_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        cwd=REPO,
    )


def test_serve_without_urls_says_which_flag_or_variable_to_set() -> None:
    out = run_cli("serve")
    assert out.returncode != 0
    assert "--transport-url" in out.stderr and "CONDUCTOR_TRANSPORT_URL" in out.stderr


def test_serve_refuses_a_database_not_at_head_and_names_the_fix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    out = run_cli("serve", "--transport-url", "memory://", "--database-url", url)
    assert out.returncode != 0
    assert "conductor db upgrade" in out.stdout + out.stderr


def test_db_upgrade_migrates_then_is_a_no_op(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    first = run_cli("db", "upgrade", "--database-url", url)
    assert first.returncode == 0, first.stderr
    assert "upgraded" in first.stdout
    second = run_cli("db", "upgrade", "--database-url", url)
    assert second.returncode == 0, second.stderr
    assert "already at head" in second.stdout


def test_serve_exits_zero_soon_after_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert run_cli("db", "upgrade", "--database-url", url).returncode == 0
    proc = ServeProcess(["--transport-url", "memory://", "--database-url", url], child_env())
    proc.wait_ready()
    started = time.monotonic()
    code = proc.terminate(timeout=15)
    assert code == 0, proc.output
    assert time.monotonic() - started < 10


def test_serve_objects_flag_reports_a_module_that_does_not_import(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert run_cli("db", "upgrade", "--database-url", url).returncode == 0
    out = run_cli(
        "serve",
        "--transport-url",
        "memory://",
        "--database-url",
        url,
        "--objects",
        "no_such_module_xyz",
    )
    assert out.returncode != 0
    assert "no_such_module_xyz" in out.stderr


def test_demo_runs_on_the_embedded_default_and_ends_with_a_summary() -> None:
    started = time.monotonic()
    out = run_cli("demo", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("demo: ") and "0 errors" in last and "OK" in last
    assert time.monotonic() - started < 60


def test_serving_raises_the_young_gc_threshold_unless_collection_is_off_or_rarer() -> None:
    import gc

    from conductor import cli as cli_module

    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        cli_module._raise_young_threshold()
        assert gc.get_threshold() == (cli_module.GC_YOUNG_THRESHOLD, 10, 10)
        gc.set_threshold(50_000, 5, 7)
        cli_module._raise_young_threshold()
        assert gc.get_threshold() == (50_000, 5, 7)
        gc.set_threshold(0, 10, 10)
        cli_module._raise_young_threshold()
        assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*saved)
