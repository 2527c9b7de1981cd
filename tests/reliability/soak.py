"""Long soaks of the reliability suite (tests/reliability), beyond what CI runs.

CI runs each fault once and the load for 20 s. This script runs the same tests longer and
repeatedly, against the real RabbitMQ and PostgreSQL, and prints the figures each test
reports (faults survived, writes lost, duplicates, memory):

    python tests/reliability/soak.py                  # 5 min load, 35 s slow call, 3 fault rounds
    python tests/reliability/soak.py --load-minutes 30 --rounds 10
    python tests/reliability/soak.py --broker-restart # also `rabbitmqctl stop_app/start_app`

``--broker-restart`` stops the whole broker for a few seconds: every other user of it
notices, so it is opt-in. The broker is started again whatever happens.

Needs CONDUCTOR_TEST_TRANSPORT_URL and CONDUCTOR_TEST_DATABASE_URL (defaults: the
project's local RabbitMQ and PostgreSQL).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1/test"

FAULT_TESTS = [
    "tests/reliability/test_conductor_crash.py",
    "tests/reliability/test_broker_faults.py",
    "tests/reliability/test_database_outage.py",
    "tests/reliability/test_client_death.py",
    "tests/reliability/test_slow_handlers.py::"
    "test_caller_of_a_killed_conductor_gets_call_monitor_timeout_within_seconds",
]


def run_pytest(targets: list[str], env: dict[str, str], timeout: float) -> bool:
    """Run pytest on ``targets``; echo the figures lines; True when it passed."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        "-o",
        f"timeout={int(timeout)}",
        *targets,
    ]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if "figures:" in line or " passed" in line or " failed" in line:
            print("   ", line.strip()[line.find("figures:") :] if "figures:" in line else line)
    if out.returncode != 0:
        print(out.stdout[-4000:], out.stderr[-2000:], sep="\n")
    return out.returncode == 0


def broker_restart(broker_url: str, database_url: str, down_seconds: float) -> bool:
    """A full broker restart under load; the broker is started again in any case."""
    sys.path.insert(0, str(REPO))
    import conductor
    import objects
    from objects import base
    from objects.context import RequestContext
    from tests.conductor.processes import serve
    from tests.reliability import faults
    from transport import exceptions as texc

    objects.register_all()
    vhost = faults.Vhost.create(broker_url)
    name, db_url = "", database_url
    if database_url.startswith("postgresql"):
        os.environ.setdefault("CONDUCTOR_TEST_DATABASE_URL", database_url)
        template = faults.PostgresDatabases.create_template()
        name, db_url = faults.PostgresDatabases.clone(template)
        faults.PostgresDatabases.drop(template)
    topic = f"soak-{uuid.uuid4().hex[:8]}"
    ctx = RequestContext(user_id="soak")
    ok = typed = other = 0
    recovered = alive = False
    try:
        with serve(vhost.url, db_url, topic, server="s1") as proc:
            client = conductor.connect(vhost.url, topic=topic, timeout=30)
            futures = []
            try:
                for _ in range(20):
                    futures += [
                        objects.Instance(
                            ctx,
                            uuid=str(uuid.uuid4()),
                            host=topic,
                            state="building",
                            vcpus=1,
                            memory_mb=64,
                        ).create_async()
                        for _ in range(20)
                    ]
                    time.sleep(0.05)
                try:
                    faults.rabbitmqctl("stop_app")
                    time.sleep(down_seconds)
                finally:
                    faults.rabbitmqctl("start_app")
                    faults.rabbitmqctl("await_startup", timeout=120)
                for f in futures:
                    try:
                        f.result(timeout=60)
                        ok += 1
                    except (texc.MessagingException, TimeoutError):
                        typed += 1
                    except Exception:  # noqa: BLE001 - counted as a failure of the guarantee
                        other += 1
                recovered = False
                deadline = time.monotonic() + 60
                while not recovered and time.monotonic() < deadline:
                    try:
                        objects.Instance(
                            ctx,
                            uuid=str(uuid.uuid4()),
                            host=topic,
                            state="building",
                            vcpus=1,
                            memory_mb=64,
                        ).create()
                        recovered = True
                    except texc.MessagingException:
                        time.sleep(1)
                alive = proc.proc.poll() is None
            finally:
                client.close()
                base.set_indirection_api(None)
    finally:
        vhost.delete()
        if name:
            faults.PostgresDatabases.drop(name)
    print(
        f"    figures: broker down {down_seconds}s; calls ok {ok}, typed failures {typed}, "
        f"untyped {other}; recovered {recovered}; conductor alive {alive}"
    )
    return other == 0 and recovered and alive


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load-minutes", type=float, default=5.0)
    parser.add_argument(
        "--slow-seconds",
        type=float,
        default=35.0,
        help="length of the slow call (default 35: past two AMQP heartbeats)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="times each fault test runs")
    parser.add_argument(
        "--broker-restart",
        action="store_true",
        help="also stop and start the whole broker (disturbs its other users)",
    )
    args = parser.parse_args()

    env = dict(os.environ)
    env.setdefault("CONDUCTOR_TEST_TRANSPORT_URL", DEFAULT_BROKER)
    env.setdefault("CONDUCTOR_TEST_DATABASE_URL", DEFAULT_DATABASE)
    env["CONDUCTOR_RELIABILITY_LOAD_SECONDS"] = str(args.load_minutes * 60)
    env["CONDUCTOR_RELIABILITY_SLOW_SECONDS"] = str(args.slow_seconds)
    results: dict[str, bool] = {}

    print(f"load: {args.load_minutes} min, 3 clients x 100 in flight, two conductors")
    results["load"] = run_pytest(
        ["tests/reliability/test_load.py"], env, args.load_minutes * 60 + 300
    )
    print(f"slow handler: {args.slow_seconds}s call")
    results["slow"] = run_pytest(
        [
            "tests/reliability/test_slow_handlers.py::"
            "test_a_method_longer_than_the_missed_heartbeat_threshold_completes"
        ],
        env,
        args.slow_seconds + 300,
    )
    for n in range(args.rounds):
        print(f"faults, round {n + 1}/{args.rounds}")
        results[f"faults-{n + 1}"] = run_pytest(FAULT_TESTS, env, 600)
    if args.broker_restart:
        print("full broker restart (rabbitmqctl stop_app / start_app)")
        results["broker-restart"] = broker_restart(
            env["CONDUCTOR_TEST_TRANSPORT_URL"], env["CONDUCTOR_TEST_DATABASE_URL"], 5.0
        )
    failed = [k for k, ok in results.items() if not ok]
    print(
        f"soak: {len(results) - len(failed)}/{len(results)} passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
