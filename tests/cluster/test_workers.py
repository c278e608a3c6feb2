"""``./script ... --workers 3``: one server, three processes on one listening socket,
on SQLite and on PostgreSQL, over libvirt hosts every process shares.

What must hold: requests are spread over the workers; concurrent check-outs and
check-ins never hand one VM to two clients, and the counts add up (every pair in
the registry's events, every pool VM back and ready, none lost nor added);
SIGTERM stops every worker cleanly (exit 0, each left the cluster); a worker that
dies takes the server down with a non-zero exit, not silently; SIGHUP reloads the
physical machines file once (in one worker), not once per worker.

The load is bounded by count, never by time.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from orchestrator.registry.tables import EventRow, ServerRow, VmRow
from tests.conftest import wait_for

WORKERS = 3
POOL = "load"
POOL_SIZE = 6
CLIENTS = 12  # twice the pool: clients find it empty (503) and retry
PAIRS_PER_CLIENT = 12  # 144 check-out/check-in pairs in all
MAX_EMPTY_IN_A_ROW = 5_000  # a bound on work: the pool never refills (the test fails)
GIVE_UP = 600.0  # seconds: only to end a run that will never finish (a hang)

CONFIG = f"""
workers: {{interval: 0.2, build_workers: 4, cleanup_workers: 8, retry_after: 1}}
libvirt: {{connect_timeout: 5, call_timeout: 20}}
pools:
  - name: {POOL}
    instance_type: 1
    image: base
    size: {POOL_SIZE}
    max: {POOL_SIZE}
    cleanup: reset
    ready_check: none
cluster:
  heartbeat: 0.5
  dead_after: 3
"""


def _children(pid: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.add(int(entry.name))
    return out


def _pool_vms(engine: Engine) -> Counter:
    with Session(engine) as s:
        rows = s.execute(
            select(VmRow.state, func.count()).where(VmRow.pool == POOL).group_by(VmRow.state)
        ).all()
    return Counter({state: n for state, n in rows})


def _events(engine: Engine, kind: str) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(EventRow).where(EventRow.kind == kind))


class Load:
    def __init__(self, url: str) -> None:
        self.url = url
        self.lock = threading.Lock()
        self.holding: dict[int, int] = {}  # vmid -> client, right now
        self.double: list[str] = []
        self.unexpected: list[str] = []
        self.pairs = 0
        self.empty = 0

    def client(self, cid: int) -> None:
        done = empty_in_a_row = 0
        while done < PAIRS_PER_CLIENT and empty_in_a_row < MAX_EMPTY_IN_A_ROW:
            # a new connection per request: the kernel hands each to any worker
            r = requests.post(self.url + "/vm/checkout", json={"pool": POOL}, timeout=60)
            if r.status_code == 503:
                empty_in_a_row += 1
                with self.lock:
                    self.empty += 1
                threading.Event().wait(0.02)
                continue
            if r.status_code != 200:
                with self.lock:
                    self.unexpected.append(f"checkout {r.status_code} {r.text[:200]}")
                return
            empty_in_a_row = 0
            body = r.json()
            vmid = body["vmid"]
            with self.lock:
                if vmid in self.holding:
                    self.double.append(f"vm {vmid}: client {cid} got it while {self.holding[vmid]}")
                self.holding[vmid] = cid
            threading.Event().wait(0.01)  # held a moment, as a user would
            with self.lock:  # given up before the check-in is sent
                self.holding.pop(vmid, None)
            r = requests.post(
                self.url + "/vm/checkin",
                json={"vmid": vmid, "reservation_id": body["reservation_id"]},
                timeout=60,
            )
            if r.status_code != 200:
                with self.lock:
                    self.unexpected.append(f"checkin {vmid}: {r.status_code} {r.text[:200]}")
                return
            done += 1
            with self.lock:
                self.pairs += 1


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(url + "/metrics", timeout=30).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _requests(scrape: dict, endpoint: str, status: str) -> float:
    labels = (("endpoint", endpoint), ("method", "POST"), ("status", status))
    return scrape.get(("fabric_http_requests_total", labels), 0.0)


def _ready(url: str) -> int:
    return requests.get(url + "/pool/query", params={"pool": POOL}, timeout=10).json()["ready"]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_three_workers_share_the_load_and_keep_every_guarantee(make_cluster, db):
    cluster = make_cluster(2, CONFIG, (16, 16384, 200), db=db)
    server = cluster.start("w", threads=16, workers=WORKERS)
    engine = create_engine(cluster.db_url)
    try:
        workers = _children(server.proc.pid)
        assert len(workers) == WORKERS, workers
        # every worker is a member of the cluster, under its own pid
        with Session(engine) as s:
            pids = {pid for (pid,) in s.execute(select(ServerRow.pid)).all()}
        assert pids == workers

        # requests are spread: every worker answers some (a new connection each)
        seen: set[str] = set()
        for _ in range(500):
            seen.add(requests.get(server.url + "/cluster", timeout=10).json()["server"])
            if len(seen) == WORKERS:
                break
        assert len(seen) == WORKERS, seen

        wait_for(lambda: _ready(server.url) == POOL_SIZE, timeout=GIVE_UP, interval=0.2)
        # SIGHUP to the server: one worker reads the pm file again (not each of them)
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _events(engine, "pm.reload") >= 1, timeout=GIVE_UP)
        checkouts0, checkins0 = _events(engine, "vm.checkout"), _events(engine, "vm.checkin")

        load = Load(server.url)
        threads = [threading.Thread(target=load.client, args=(c,)) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(GIVE_UP)
        assert not any(t.is_alive() for t in threads), "a client hung"
        assert load.unexpected == []
        assert load.double == []
        assert load.pairs == CLIENTS * PAIRS_PER_CLIENT, (load.pairs, load.empty)
        # the counts add up: every pair is in the registry, once
        assert _events(engine, "vm.checkout") - checkouts0 == load.pairs
        assert _events(engine, "vm.checkin") - checkins0 == load.pairs
        # every VM comes back (cleaned by whichever worker) and none is lost or added
        wait_for(lambda: _pool_vms(engine) == Counter({"ready": POOL_SIZE}), timeout=GIVE_UP)
        assert _events(engine, "pm.reload") == 1  # the load took long enough for others

        # /metrics is the server's, summed over the workers, whichever one answers
        with Session(engine) as s:
            cleaned = s.scalar(
                select(func.count())
                .select_from(EventRow)
                .where(EventRow.kind == "vm.cleaned", EventRow.duration.is_not(None))
            )
        assert cleaned >= load.pairs
        for _ in range(2 * WORKERS):
            scrape = _scrape(server.url)
            assert _requests(scrape, "/vm/checkout", "200") == load.pairs
            assert _requests(scrape, "/vm/checkin", "200") == load.pairs
            assert _requests(scrape, "/vm/checkout", "503") == load.empty
            assert scrape[("fabric_vm_cleanup_seconds_count", ())] == cleaned

        # SIGTERM: every worker stops and leaves the cluster; the server exits 0
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=GIVE_UP) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
        with Session(engine) as s:
            assert s.scalar(select(func.count()).select_from(ServerRow)) == 0
    finally:
        engine.dispose()


def test_a_worker_that_dies_stops_the_server_non_zero(make_cluster):
    cluster = make_cluster(1, CONFIG, (16, 16384, 200), db="sqlite")
    server = cluster.start("w", threads=4, workers=WORKERS)
    workers = sorted(_children(server.proc.pid))
    assert len(workers) == WORKERS
    os.kill(workers[1], signal.SIGKILL)
    assert server.proc.wait(timeout=GIVE_UP) != 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    log = server.log.read_text()
    assert f"(pid {workers[1]}) was killed by signal 9: stopping the server" in log
