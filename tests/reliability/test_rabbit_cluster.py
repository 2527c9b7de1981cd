"""A real 3-node RabbitMQ cluster with quorum queues loses its queue leader mid-load.

The test starts three ``rabbitmq-server`` nodes of its own (other names, other ports, its own
cookie: never the shared broker; see ``rabbit_cluster.py``), two ``conductor serve
--quorum-queues`` processes on PostgreSQL connected to the node that leads the topic's
quorum queue, and two compute processes writing through the objects API (creates and saves,
125 pending each) over failover URLs that reach the other nodes first (and tolerate the
silence of a failover: ``MONITOR_MISSES``). Each row write takes 50 ms in the database (a
trigger's ``pg_sleep``) and each conductor runs 2 at once, so the
writes really are in flight, queued in the quorum queue or prefetched by a conductor, when,
40 writes in, the test stops the leader node with ``rabbitmqctl stop`` (or kills it with
SIGKILL). Then:

- every write's future ends within its timeout, and with success; in the third scenario
  (``kill-with-a-client``) the first client is connected to the node that dies: the calls it
  had in flight fail at once with ``ConnectionLost`` (its reply queue lived there; the
  requests still run, once), and its later writes succeed;
- nothing is lost: every acknowledged create and save is in the database;
- nothing is duplicated: a trigger records every row written, and no create or save was
  committed twice (a redelivered request is answered from its stored result);
- both conductors still serve (they failed over to the surviving nodes), and the queue has a
  new leader.

The figures (writes, lost, duplicated, max future latency, failover time, cluster start
time) are printed (``pytest -s``) and attached to a failure.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy

from tests.brokers import no_service
from tests.conductor.processes import REPO, child_env, serve
from tests.reliability import faults
from tests.reliability import rabbit_cluster as rc

pytestmark = [pytest.mark.rabbit, pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(420)]

WRITES = 250  # per client
CLIENTS = 2
IN_FLIGHT = 125  # writes each client keeps pending
TIMEOUT = 30.0  # each write's timeout
#: What a caller connected to the lost node may get for calls pending at the loss.
CALLER_NODE_LOST = ("ConnectionLost", "CallMonitorTimeout")
#: Heartbeats the clients may miss (``?call_monitor_misses``, 1 s apart): the conductors'
#: heartbeats stop while they fail over, 1.4-6.3 s measured here when the leader's node is
#: killed, which the default 4 misses do not always cover (their calls then end in
#: CallMonitorTimeout, outcome unknown, by design: see the README's Clusters).
MONITOR_MISSES = 12
STOP_AFTER = 40  # writes finished (both clients) before the leader is stopped
WORKERS = 2  # per conductor; with WRITE_DELAY, ~80 writes/s at most: ~7 s of load
WRITE_DELAY = 0.05  # seconds each row write takes in the database (pg_sleep in the trigger)

AUDIT_SQL = [
    "CREATE TABLE write_audit (id bigserial PRIMARY KEY, op text NOT NULL, uuid text NOT NULL, "
    "task_state text)",
    "CREATE FUNCTION write_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO write_audit (op, uuid, task_state) VALUES (TG_OP, NEW.uuid, NEW.task_state); "
    f"PERFORM pg_sleep({WRITE_DELAY}); RETURN NEW; END $$",
    "CREATE TRIGGER write_audit AFTER INSERT OR UPDATE ON instances FOR EACH ROW "
    "EXECUTE FUNCTION write_audit_row()",
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[rc.RabbitCluster]:
    missing = rc.available()
    if missing:
        no_service(f"a local RabbitMQ installation ({missing})")
    c = rc.RabbitCluster()
    c.start()
    try:
        yield c
    finally:
        c.stop()


def first_drop(output: str) -> float | None:
    """When a conductor's log first says its broker connection was lost (epoch seconds)."""
    for line in output.splitlines():
        if "broker connection lost" in line:
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def install_audit(database_url: str) -> None:
    engine = sqlalchemy.create_engine(database_url, poolclass=sqlalchemy.NullPool)
    try:
        with engine.begin() as connection:
            for sql in AUDIT_SQL:
                connection.exec_driver_sql(sql)
    finally:
        engine.dispose()


class Client:
    """A ``cluster_client`` process; counts finished writes as it reports them."""

    def __init__(self, url: str, topic: str, marker: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.cluster_client",
                url,
                topic,
                str(WRITES),
                str(IN_FLIGHT),
                str(TIMEOUT),
                marker,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
            cwd=REPO,
        )
        self.progress = 0
        self.result: dict[str, Any] | None = None
        self.stderr = ""
        self._out = threading.Thread(target=self._read, daemon=True)
        self._out.start()
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._err.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("progress "):
                self.progress = int(line.split()[1])
            elif line.startswith("{"):
                self.result = json.loads(line)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def finish(self, timeout: float) -> dict[str, Any]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # its threads' stacks, for the report
            time.sleep(2)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._out.join(10)
        self._err.join(10)
        assert self.result is not None, (
            f"client exited {self.proc.returncode} after {self.progress} writes, no result:\n"
            f"{self.stderr[-3000:]}"
        )
        return self.result


@pytest.mark.parametrize("how", ["stop", "kill", "kill-with-a-client"])
def test_quorum_leader_lost_mid_load_nothing_lost_or_doubled(
    cluster: rc.RabbitCluster, postgres_url: str, how: str
) -> None:
    cluster.ensure_running()
    topic = f"cluster-{uuid.uuid4().hex[:10]}"
    install_audit(postgres_url)
    figures: dict[str, Any] = {
        "how": how,
        "cluster_start_s": round(cluster.timings["cluster_up"], 1),
        "nodes_up_s": round(cluster.timings["nodes_up"], 1),
    }
    # Given two conductors on node 1 (which will lead the topic's quorum queues)
    options = ("--quorum-queues", "--workers", str(WORKERS))
    with (
        serve(cluster.url([1, 2, 3]), postgres_url, topic, *options, server="c1") as c1,
        serve(cluster.url([1, 3, 2]), postgres_url, topic, *options, server="c2") as c2,
    ):
        queues = cluster.queues(cluster.nodes[1])
        assert queues[topic]["type"] == "quorum", queues
        leader = cluster.node(queues[topic]["leader"])
        others = [n.index for n in cluster.nodes if n is not leader]
        # and two compute processes on the other nodes, writing through the objects API
        orders = [[*others, leader.index], [*others[::-1], leader.index]]
        if how == "kill-with-a-client":  # the first client is on the node that dies
            orders[0] = [leader.index, *others]
        clients = [
            Client(
                f"{cluster.url(order)}?call_monitor_misses={MONITOR_MISSES}",
                topic,
                f"m{i}-{uuid.uuid4().hex[:6]}",
            )
            for i, order in enumerate(orders)
        ]
        # When the queue's leader node stops (or crashes) while writes are in flight
        deadline = time.monotonic() + 120
        while sum(c.progress for c in clients) < STOP_AFTER:
            assert time.monotonic() < deadline, "the load did not progress"
            assert all(c.proc.poll() is None for c in clients), [c.stderr for c in clients]
            time.sleep(0.05)
        stop_at = time.time()
        figures["done_before_stop"] = sum(c.progress for c in clients)
        leader.stop() if how == "stop" else leader.kill()
        figures["node_stop_s"] = round(time.time() - stop_at, 1)
        results = [c.finish(TIMEOUT * 3 + 60) for c in clients]
        survivor = next(n for n in cluster.nodes if n is not leader)
        # (redeliveries of requests already answered may still be draining: replays)
        drain_until = time.monotonic() + 30
        while (after := cluster.queues(survivor)[topic])[
            "messages"
        ] and time.monotonic() < drain_until:
            time.sleep(1)
        # Then both conductors still serve, failed over to the surviving nodes
        assert c1.proc.poll() is None and c2.proc.poll() is None
    for c in (c1, c2):
        assert c.proc.returncode == 0, c.output[-3000:]
        assert "reconnected to the broker" in c.output, c.output[-3000:]

    drops = [t for t in (first_drop(c1.output), first_drop(c2.output)) if t is not None]
    assert drops, "no conductor lost its broker connection"
    dropped_at = min(drops)
    records = [r for result in results for r in result["records"]]
    unfinished = sum(result["unfinished"] for result in results)
    failed = [r for r in records if r[5] != "ok"]
    lost_replies = [r for r in results[0]["records"] if r[5].startswith(CALLER_NODE_LOST)]
    latencies = [r[4] - r[3] for r in records]
    ends = sorted(r[4] for r in records)
    gaps = [b - a for a, b in zip(ends, ends[1:], strict=False) if b > stop_at]
    audit = faults.query(postgres_url, "SELECT op, uuid, task_state FROM write_audit")
    inserts = Counter(row[1] for row in audit if row[0] == "INSERT")
    updates = Counter((row[1], row[2]) for row in audit if row[0] == "UPDATE")
    ok_creates = [r for r in records if r[0] == "create" and r[5] == "ok"]
    ok_saves = [r for r in records if r[0] == "save" and r[5] == "ok"]
    lost = [r for r in ok_creates if inserts[r[1]] == 0]
    lost += [r for r in ok_saves if updates[(r[1], r[2])] == 0]
    duplicated = sum(n - 1 for n in inserts.values() if n > 1)
    duplicated += sum(n - 1 for n in updates.values() if n > 1)
    # the last acknowledged save of each instance is what the database holds
    last_save: dict[str, tuple[float, str]] = {}
    for r in ok_saves:
        if r[1] not in last_save or r[3] > last_save[r[1]][0]:
            last_save[r[1]] = (r[3], r[2])
    rows = dict(faults.query(postgres_url, "SELECT uuid, task_state FROM instances"))
    # (a save that failed with its outcome unknown may have run after the last good one)
    unknown = {r[1] for r in failed if r[0] == "save"}
    stale = [u for u, (_, value) in last_save.items() if rows.get(u) != value and u not in unknown]
    figures.update(
        writes=len(records),
        ok=len(records) - len(failed),
        failed=len(failed),
        unfinished=unfinished,
        lost=len(lost),
        duplicated=duplicated,
        stale_rows=len(stale),
        max_latency_s=round(max(latencies), 2),
        max_latency_after_stop_s=round(max(r[4] - r[3] for r in records if r[4] > stop_at), 2),
        failover_gap_s=round(max(gaps), 2) if gaps else None,
        in_flight_at_stop=sum(1 for r in records if r[3] <= stop_at < r[4]),
        in_flight_at_drop=sum(1 for r in records if r[3] <= dropped_at < r[4]),
        dropped_after_s=round(dropped_at - stop_at, 2),
        leader_before=leader.name,
        leader_after=after.get("leader"),
        replays=c1.output.count("from its stored result")
        + c2.output.count("from its stored result"),
        reconnects=c1.output.count("reconnected to the broker")
        + c2.output.count("reconnected to the broker"),
    )
    print(f"\ncluster figures: {json.dumps(figures)}")
    detail = f"{figures}; failures: {Counter(r[5][:80] for r in failed).most_common(5)}"
    assert len(records) == CLIENTS * WRITES and unfinished == 0, detail
    assert max(latencies) <= TIMEOUT + 2, detail
    assert not lost and duplicated == 0 and not stale, detail
    if how == "kill-with-a-client":
        # A caller whose own node died loses the replies of its pending calls (its reply
        # queue lived there): those end at once with a typed error; the writes ran once.
        figures["caller_node_lost"] = len(lost_replies)
        failed = [r for r in failed if r not in lost_replies]
    assert not failed, detail
    assert figures["in_flight_at_drop"] > 50, f"too few writes in flight at the failure: {detail}"
    assert after["leader"] != leader.name and after["messages"] == 0, after
