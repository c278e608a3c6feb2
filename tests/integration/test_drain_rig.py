"""Day-two operations on real guests (the local datacenter's LAN, bridge:br0): a host
running two VMs, one of them checked out, is drained by live migration; both guests
keep running (their uptime goes on, their tmpfs keeps what was written), answer SSH
at the same address on other hosts, the holder checks in; nothing is placed on the
host until it leaves maintenance. Then the fabric is SIGKILLed in the middle of a
move: after the restart the VM runs on exactly one host and the registry says which.

Needs the rig (and orchestrator.hypervisor.migration.live_migrate)."""

from __future__ import annotations

import contextlib
import re
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.integration.conftest import (
    HOSTS,
    RIG,
    ROOT,
    FabricProcess,
    Guest,
    _require_rig,
    host_domains,
    wait_vm,
)

pytestmark = pytest.mark.integration

# first-fit: every VM goes to the lowest pmid that fits, so "not on pm1" is the
# scheduler obeying maintenance, not chance.
CONFIG = """
pools:
  - {name: lan, instance_type: 1, image: guest, size: 1, max: 1, cleanup: tmp}
workers: {interval: 1}
guest: {address_timeout: 90}
scheduler: {policy: first-fit}
"""


def with_migrate_addresses(pm_text: str) -> str:
    """The pm file with each host's ``migrate_address=`` (its address on the rig's
    migration LAN, where QEMU on another host sends a live migration's stream), for a
    rig whose files were written before local-datacenter wrote that key."""
    status = subprocess.run(
        [str(ROOT / "bin" / "local-datacenter"), "status", "--state-dir", str(RIG)],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    found = dict(re.findall(r"netns fabric-(pm\d+):.*?migr0 (10\.251\.252\.\d+)/24", status))
    lines = []
    for line in pm_text.splitlines():
        user = line.split("@", 1)[0]
        if line.strip() and "migrate_address=" not in line and user in found:
            line = f"{line} migrate_address={found[user]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FabricProcess]:
    _require_rig()
    fp = FabricProcess(tmp_path_factory.mktemp("rig-drain"), lan=True)
    fp.pm.write_text(with_migrate_addresses(fp.pm.read_text()))
    assert fp.pm.read_text().count("migrate_address=") == len(HOSTS), fp.pm.read_text()
    fp.set_config(CONFIG)
    fp.start()
    yield fp
    fp.stop()
    fp.set_config("")
    fp.start()
    for pmid in HOSTS:
        requests.delete(f"{fp.url}/pm/{pmid}/maintenance", timeout=60)
    mine = set()
    for vmid in fp.get("/vm/list").json()["vmids"]:
        mine.add(fp.get("/vm/query", vmid=vmid).json()["domain"].rsplit("-vm-", 1)[0])
        fp.get("/vm/destroy", vmid=vmid, force=1)
    fp.stop()
    # Nothing of this fabric's is left on the rig's hosts.
    left = [d for p in HOSTS for d in host_domains(p) if d.rsplit("-vm-", 1)[0] in mine]
    assert left == [], left


def guest_at(fp: FabricProcess, ip: str) -> Guest:
    return fp.ssh({"ssh": {"host": ip, "port": 22}})


def uptime(guest: Guest) -> float:
    return float(guest.run(["cat", "/proc/uptime"]).split()[0])


def running_on(domain: str) -> list[int]:
    """The hosts whose session daemon has the domain (running or not)."""
    return [p for p in HOSTS if domain in host_domains(p)]


def test_drain_a_host_with_two_vms_one_checked_out(lan):
    lan.wait_pool("lan", 1)
    r = lan.post("/vm/checkout", pool="lan")
    assert r.status_code == 200, r.text
    held = r.json()
    plain_id = lan.get("/vm/create", name="plain", instance_type=1, image_id=1).json()["vmid"]
    plain = wait_vm(lan, plain_id, "active")
    vms = {held["vmid"]: held["ip"], plain_id: plain["ip"]}
    source = lan.get("/vm/query", vmid=held["vmid"]).json()["pmid"]
    assert plain["pmid"] == source == 1  # first-fit: both on pm1
    before = {}
    for vmid, ip in vms.items():
        g = guest_at(lan, ip)
        g.run(["sh", "-c", f"echo still-{vmid} > /tmp/live-marker"])
        before[vmid] = uptime(g)

    r = requests.post(f"{lan.url}/pm/1/drain", json={}, timeout=60)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 600
    drain: dict = {}
    while time.monotonic() < deadline:
        drain = lan.get("/pm/1/drain").json()
        if drain["state"] not in ("running", "cancelling"):
            break
        time.sleep(1)
    assert drain["state"] == "done" and drain["failed"] == [], (drain, lan.log()[-4000:])
    assert (drain["moved"], drain["total"]) == (2, 2)

    for vmid, ip in vms.items():
        vm = lan.get("/vm/query", vmid=vmid).json()
        assert vm["pmid"] != 1 and vm["ip"] == ip
        g = guest_at(lan, ip)  # SSH at the same address, on another host
        assert g.run(["cat", "/tmp/live-marker"]).strip() == f"still-{vmid}"
        assert uptime(g) > before[vmid]  # not rebooted: a live move
        assert running_on(vm["domain"]) == [vm["pmid"]]
    pm1 = lan.get("/pm/query", pmid=1).json()
    assert pm1["vms"] == 0 and pm1["maintenance"] == "drained"
    assert not [d for d in host_domains(1) if d.startswith("fabric-")]

    # The holder checks in as before.
    r = lan.post("/vm/checkin", vmid=held["vmid"], reservation_id=held["reservation_id"])
    assert r.json() == {"status": 1}
    # Nothing is placed on pm1 while it is in maintenance (first-fit would choose it).
    other = lan.get("/vm/create", name="after", instance_type=1, image_id=1).json()["vmid"]
    assert lan.get("/vm/query", vmid=other).json()["pmid"] != 1
    r = requests.delete(f"{lan.url}/pm/1/maintenance", timeout=60)
    assert r.status_code == 200 and r.json()["maintenance"] is None
    back = lan.get("/vm/create", name="back", instance_type=1, image_id=1).json()["vmid"]
    assert lan.get("/vm/query", vmid=back).json()["pmid"] == 1
    for vmid in (plain_id, other, back):
        lan.get("/vm/destroy", vmid=vmid)


def test_sigkill_during_a_migration_leaves_the_vm_on_exactly_one_host(lan):
    vmid = lan.get("/vm/create", name="killed", instance_type=1, image_id=1).json()["vmid"]
    vm = wait_vm(lan, vmid, "active")
    g = guest_at(lan, vm["ip"])
    before = uptime(g)
    db_path = lan.db.removeprefix("sqlite:///")

    def move() -> None:
        with contextlib.suppress(requests.RequestException):
            requests.post(f"{lan.url}/vm/{vmid}/migrate", json={}, timeout=600)

    mover = threading.Thread(target=move, daemon=True)
    mover.start()
    # Kill the fabric as soon as the move is recorded (the domain is moving now).
    for _ in range(600):
        db = sqlite3.connect(db_path)
        row = db.execute(
            "SELECT phase FROM migrations WHERE vm_id = ? ORDER BY id DESC", (vmid,)
        ).fetchone()
        db.close()
        if row is not None:
            break
        time.sleep(0.05)
    assert row is not None, lan.log()[-3000:]
    lan.stop(signal.SIGKILL)
    mover.join(30)
    time.sleep(2)  # whatever libvirt was doing goes on or ends without the fabric
    lan.start()
    # Reconciliation settles the move once the killed server counts as dead (its
    # heartbeat stops): at start-up, or in the sweep that runs every heartbeat.
    phases: list[str] = []
    for _ in range(240):
        db = sqlite3.connect(db_path)
        phases = [p for (p,) in db.execute("SELECT phase FROM migrations WHERE vm_id = ?", (vmid,))]
        db.close()
        if "migrating" not in phases:
            break
        time.sleep(0.5)
    assert phases and "migrating" not in phases, (phases, lan.log()[-3000:])
    hosts = running_on(vm["domain"])
    assert len(hosts) == 1, hosts
    now = lan.get("/vm/query", vmid=vmid).json()
    assert now["pmid"] == hosts[0] and now["status"] == "active", now
    assert uptime(guest_at(lan, now["ip"])) > before  # the guest went on running
    # Every host's claims agree with its VMs: used on each host is its VMs' sum.
    types = {t["tid"]: t for t in lan.get("/vm/types").json()["types"]}
    for pmid in HOSTS:
        q = lan.get("/pm/query", pmid=pmid).json()
        mine = [
            lan.get("/vm/query", vmid=v).json()
            for v in lan.get("/pm/listvms", pmid=pmid).json()["vmids"]
        ]
        want = sum(types[v["instance_type"]]["ram"] for v in mine)
        assert q["capacity"]["ram"] - q["free"]["ram"] == want, (pmid, q, mine)
    lan.get("/vm/destroy", vmid=vmid)
