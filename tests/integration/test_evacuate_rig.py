"""Hosts added at run time, a dead host evacuated and its stale domain fenced on its
return, on the rig: real session daemons over real SSH, real TCG guests.

The fabric starts knowing one host (the rig's pm3). A reload with a broken line
changes nothing; a reload adding pm2 makes the scheduler place there. Then pm3's
sshd and SSH sessions are stopped for good (``bin/local-datacenter stop-host``: its
libvirt and its guest keep running, as a host cut off from the fabric does); after
``evacuate.after`` seconds the fabric rebuilds its VM on pm2 from its image (the
guest boots there) and marks its local volume lost. pm3 comes back
(``start-host``): the old domain, still running there, is destroyed and undefined
before pm3 is used again, and it is never started.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from tests.integration.conftest import (
    BOOT_MARKER,
    HOSTS,
    RIG,
    ROOT,
    FabricProcess,
    _require_rig,
    host_domains,
    host_shell,
)

pytestmark = pytest.mark.integration

DEAD, SPARE = 3, 2  # the rig's pm3 dies; pm2 is added at run time


def rig_line(rig_index: int) -> str:
    """The rig's forward-network line for one host, with only the keys this fabric
    reads (the rig may carry keys of other work, e.g. a migration address)."""
    lines = [
        ln for ln in (RIG / "physical_machines-forward").read_text().splitlines() if ln.strip()
    ]
    line = re.sub(r"\s+migrate_address=\S+", "", lines[rig_index - 1])
    for key, value in (("cpu", 2), ("ram", 384), ("disk", 6)):
        line = re.sub(rf"\b{key}=\d+", f"{key}={value}", line)
    return line


def datacenter(action: str, host: str) -> None:
    subprocess.run(
        [str(ROOT / "bin" / "local-datacenter"), action, host, "--state-dir", str(RIG)],
        check=True,
        capture_output=True,
        timeout=120,
    )


def qemu_running(rig_index: int, domain: str) -> bool:
    """Whether a QEMU process of that domain runs as the host's user (no SSH needed)."""
    user, _ = HOSTS[rig_index]
    out = subprocess.run(
        ["ps", "-u", user, "-o", "args="], capture_output=True, text=True, timeout=30
    ).stdout
    return any("qemu-system" in ln and f"guest={domain}," in ln for ln in out.splitlines())


def console(rig_index: int, domain: str) -> str:
    """The console log of the VM whose domain is ``domain`` (its files are named so)."""
    user, _ = HOSTS[rig_index]
    res = host_shell(rig_index).run(["cat", f"/home/{user}/fabric-pool/{domain}.console.log"])
    return res.stdout


def wait_booted(rig_index: int, domain: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = console(rig_index, domain)
        if BOOT_MARKER in text:
            return
        time.sleep(1)
    raise AssertionError(f"{domain} did not boot on pm{rig_index}; console:\n{text[-2000:]}")


def wait(predicate, what: str, fabric: FabricProcess, timeout: float = 240):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"{what}: {last}\n{fabric.log()[-4000:]}")


def test_reload_adds_a_host_then_a_dead_host_is_evacuated_and_fenced(tmp_path):
    _require_rig()
    fp = FabricProcess(tmp_path / "fabric", "evacuate: {after: 8}\ndiscovery: {interval: 2}\n")
    fp.pm.write_text(rig_line(DEAD) + "\n")
    fp.start()
    stopped = False
    made: list[int] = []
    domains: list[str] = []
    try:
        assert fp.get("/pm/list").json() == {"pmids": [1]}  # pm3 is pmid 1 here
        a = fp.create("evac-a")
        made.append(a["vmid"])
        domains.append(a["domain"])
        assert a["pmid"] == 1
        r = fp.get("/volume/create", name="evac_data", size=1)
        assert r.status_code == 200, r.text
        vid = r.json()["volumeid"]
        assert fp.get("/volume/attach", vmid=a["vmid"], volumeid=vid).json() == {"status": 1}
        wait_booted(DEAD, a["domain"])

        # a reload with a broken line changes nothing and says where
        fp.pm.write_text(rig_line(DEAD) + "\n" + rig_line(SPARE) + "\nroot@ port=22\n")
        r = fp.post("/pm/reload")
        assert r.status_code == 400 and r.json()["error"].startswith(f"{fp.pm}:3: "), r.text
        assert fp.get("/pm/list").json() == {"pmids": [1]}

        # pm2 added at run time; the scheduler places there (spread: it is empty)
        fp.pm.write_text(rig_line(DEAD) + "\n" + rig_line(SPARE) + "\n")
        r = fp.post("/pm/reload")
        assert r.status_code == 200, r.text
        assert r.json()["added"] == [2] and r.json()["discovered"] == [{"pmid": 2, "up": True}]
        b = fp.create("evac-b")
        made.append(b["vmid"])
        domains.append(b["domain"])
        assert b["pmid"] == 2
        wait_booted(SPARE, b["domain"])

        # pm3 dies for the fabric: no SSH any more (its guest keeps running there)
        datacenter("stop-host", f"pm{DEAD}")
        stopped = True
        moved = wait(
            lambda: (q := fp.get("/vm/query", vmid=a["vmid"]).json())["pmid"] == 2 and q,
            "vm a was not rebuilt on pm2",
            fp,
        )
        assert moved["status"] == "active" and moved["rebuilt_from"] == 1 and moved["rebuilt_at"]
        assert (moved["name"], moved["domain"]) == (a["name"], a["domain"])
        wait_booted(SPARE, a["domain"])  # booted from its image on pm2
        assert host_domains(SPARE).get(a["domain"]) == "running"
        vol = fp.get("/volume/query", volumeid=vid).json()
        assert vol["status"] == "lost", vol
        assert fp.get("/pm/query", pmid=1).json()["status"] == "down"

        # pm3 comes back: the stale domain (still running there) is removed, not started
        assert qemu_running(DEAD, a["domain"])  # its QEMU still runs there (seen by ps)
        datacenter("start-host", f"pm{DEAD}")
        stopped = False
        wait(
            lambda: fp.get("/pm/query", pmid=1).json()["status"] == "up",
            "pm3 did not come back up",
            fp,
        )
        assert a["domain"] not in host_domains(DEAD)
        assert not qemu_running(DEAD, a["domain"])
        assert "fenced a stale domain" in fp.log()
        # and it stays so: later passes never start it again
        time.sleep(6)
        assert a["domain"] not in host_domains(DEAD)
        assert host_domains(SPARE).get(a["domain"]) == "running"
        assert fp.get("/vm/query", vmid=a["vmid"]).json()["pmid"] == 2
        assert fp.get("/volume/destroy", volumeid=vid).json() == {"status": 1}
    finally:
        if stopped:
            datacenter("start-host", f"pm{DEAD}")
        try:
            for vmid in made:
                fp.get("/vm/destroy", vmid=vmid, force=1)
        finally:
            fp.stop()
    leftover = {d for p in (DEAD, SPARE) for d in host_domains(p) if d in domains}
    assert not leftover, leftover


POOL = """
pools:
  - name: evac
    instance_type: 1
    image: guest
    size: 1
    max: 2
    cleanup: tmp
workers: {interval: 1}
evacuate: {after: 8}
discovery: {interval: 2}
"""


def test_a_checked_out_vm_on_a_dead_host_is_rebuilt_keeping_its_reservation(tmp_path):
    _require_rig()
    fp = FabricProcess(tmp_path / "fabric", POOL)
    rig_of = {1: DEAD, 2: SPARE}  # pmid here -> the rig's host
    fp.pm.write_text(rig_line(DEAD) + "\n" + rig_line(SPARE).replace("ram=384", "ram=1024") + "\n")
    fp.start()
    stopped: int | None = None
    domains: list[str] = []
    try:
        fp.wait_pool("evac", 1)
        r = fp.post("/vm/checkout", pool="evac")
        assert r.status_code == 200, r.text
        c = r.json()
        held = fp.get("/vm/query", vmid=c["vmid"]).json()
        domains.append(held["domain"])
        dead = held["pmid"]
        fp.ssh(held).run(["true"])  # the guest answers at its address

        datacenter("stop-host", f"pm{rig_of[dead]}")
        stopped = rig_of[dead]
        moved = wait(
            lambda: (
                (q := fp.get("/vm/query", vmid=c["vmid"]).json())["pmid"] not in (dead, 0)
                and q.get("rebuilt_at")
                and q.get("ssh")  # the rebuild is done (rebuilt_at is set when it starts)
                and q
            ),
            "the checked-out VM was not rebuilt elsewhere",
            fp,
        )
        assert moved["status"] == "in-use" and moved["rebuilt_from"] == dead
        assert moved["domain"] == held["domain"] and moved["ssh"] != held["ssh"]
        wait_booted(rig_of[moved["pmid"]], held["domain"])
        fp.ssh(moved).run(["true"])  # the rebuilt guest answers at its new address

        datacenter("start-host", f"pm{rig_of[dead]}")
        stopped = None
        wait(
            lambda: fp.get("/pm/query", pmid=dead).json()["status"] == "up",
            "the dead host did not come back up",
            fp,
        )
        assert held["domain"] not in host_domains(rig_of[dead])
        assert not qemu_running(rig_of[dead], held["domain"])
        # the holder's reservation id still checks it in
        r = fp.post("/vm/checkin", vmid=c["vmid"], reservation_id=c["reservation_id"])
        assert r.status_code == 200, r.text
    finally:
        if stopped is not None:
            datacenter("start-host", f"pm{stopped}")
        # without pools nothing refills, so every VM can be destroyed
        fp.stop()
        fp.set_config("evacuate: {after: 8}\n")
        fp.start()
        try:
            for vmid in fp.get("/vm/list").json()["vmids"]:
                domains.append(fp.get("/vm/query", vmid=vmid).json()["domain"])
                fp.get("/vm/destroy", vmid=vmid, force=1)
        finally:
            fp.stop()
    leftover = {d for p in (DEAD, SPARE) for d in host_domains(p) if d in domains}
    assert not leftover, leftover
