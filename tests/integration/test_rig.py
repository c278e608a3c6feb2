"""Real guests on real hosts: create, boot, SSH, destroy, SIGKILL, host failure, rollback.

Each test leaves the hosts as it found them. Guests are few: CI has two cores.
"""

from __future__ import annotations

import signal
import subprocess

import pytest

from orchestrator.addresses import Addresses
from orchestrator.config import NetworkSettings
from orchestrator.remote import SshSettings
from tests.conftest import wait_for
from tests.integration.conftest import (
    HOST_KEY,
    HOSTS,
    RIG,
    ROOT,
    hold_port_on_host,
    host_domains,
    host_pool_files,
    host_shell,
    on_host,
    release_port,
)

pytestmark = pytest.mark.integration
# seconds: only to give up on an answer or a state that will never come (a hang)
GIVE_UP = 120


def test_vms_boot_on_three_hosts_where_spread_puts_them(fabric):
    vms = [fabric.create(f"spread-{i}") for i in range(3)]
    # three equal hosts: spread gives each host one VM, in pmid order on ties
    assert [vm["pmid"] for vm in vms] == [1, 2, 3]
    for vm in vms:
        assert vm["status"] == "active"
        assert vm["ssh"]["host"] == HOSTS[vm["pmid"]][1]  # forwarded on its host's address
        pm = fabric.get("/pm/query", pmid=vm["pmid"]).json()
        assert pm["vms"] == 1 and pm["free"]["ram"] == 384 - 128
    for vm in vms:
        console = fabric.wait_booted(vm)
        assert "Linux version" in console  # the kernel's own boot log on ttyS0
        guest = fabric.ssh(vm)
        assert guest.run(["cat", "/proc/sys/kernel/ostype"]).strip() == "Linux"
        # the guest has the memory its type asked for (128 MB, less what the kernel keeps)
        mem_kb = int(guest.run(["sed", "-n", "s/MemTotal: *\\([0-9]*\\).*/\\1/p", "/proc/meminfo"]))
        assert 64_000 < mem_kb <= 131_072
    for vm in vms:
        assert fabric.get("/vm/destroy", vmid=vm["vmid"]).json() == {"status": 1}
        domains = host_domains(vm["pmid"])
        assert vm["domain"] not in domains  # neither running nor defined
        files = host_pool_files(vm["pmid"])
        assert f"{vm['domain']}.qcow2" not in files  # the VM's files are named as its domain
        assert f"{vm['domain']}.console.log" not in files
        assert fabric.get("/vm/query", vmid=vm["vmid"]).status_code == 404
    assert all(fabric.get("/pm/query", pmid=p).json()["vms"] == 0 for p in (1, 2, 3))


def test_sigkill_and_restart_keeps_running_vms_known_and_destroyable(fabric):
    vms = [fabric.create(f"survivor-{i}") for i in range(2)]
    fabric.wait_booted(vms[0])
    assert fabric.stop(signal.SIGKILL) == -signal.SIGKILL
    fabric.start()
    for vm in vms:
        again = fabric.get("/vm/query", vmid=vm["vmid"]).json()
        assert again["status"] == "active", again
        assert again["pmid"] == vm["pmid"] and again["ssh"] == vm["ssh"]
        assert host_domains(vm["pmid"])[vm["domain"]] == "running"
    # still reachable and still destroyable after the restart
    fabric.ssh(vms[0]).run(["true"])
    for vm in vms:
        assert fabric.get("/vm/destroy", vmid=vm["vmid"]).json() == {"status": 1}
        assert vm["domain"] not in host_domains(vm["pmid"])


def _datacenter(*args: str) -> None:
    subprocess.run(
        [str(ROOT / "bin" / "local-datacenter"), *args, "--state-dir", str(RIG)],
        check=True,
        timeout=120,
        capture_output=True,
    )


def test_a_host_whose_ssh_stops_is_avoided_reported_and_comes_back(fabric):
    """pm3's sshd stops (its connections are refused): creates go to pm1 and pm2 and
    answer (the request's timeout only ends a hang), pm3 is reported down with a
    reason, and up again once its sshd is back. Nothing here times the fabric: each
    wait below only gives up on something that would never come."""
    _datacenter("stop-host", "pm3")
    try:
        made = []
        for i in range(3):
            r = fabric.get(
                "/vm/create", timeout=GIVE_UP, name=f"avoid-{i}", instance_type=1, image_id=1
            )
            assert r.status_code == 200, r.text
            made.append(fabric.get("/vm/query", vmid=r.json()["vmid"]).json())
        assert all(vm["pmid"] in (1, 2) for vm in made)
        # the host's state is the registry's: every query answers, dead host or not
        pm3 = wait_for(lambda: down(fabric.get("/pm/query", pmid=3)), GIVE_UP, 1)
        assert pm3["status"] == "down" and pm3["reason"], pm3
        listed = fabric.get("/pm/list").json()["pmids"]
        assert listed == [1, 2, 3]
        assert all(fabric.get("/pm/query", pmid=p).json()["status"] == "up" for p in (1, 2))
    finally:
        _datacenter("start-host", "pm3")
    wait_for(lambda: fabric.get("/pm/query", pmid=3).json()["status"] == "up", GIVE_UP, 1)
    for vm in made:
        assert fabric.get("/vm/destroy", vmid=vm["vmid"]).json() == {"status": 1}


def down(r) -> dict | None:  # noqa: ANN001
    """A /pm/query answer once it says the host is down, else None."""
    assert r.status_code == 200, r.text
    return r.json() if r.json()["status"] == "down" else None


def test_a_create_that_fails_leaves_nothing_on_hosts_or_registry(fabric):
    before_vms = fabric.get("/vm/list").json()["vmids"]
    before = {p: (set(host_domains(p)), host_pool_files(p)) for p in (1, 2, 3)}
    # image 2 is listed in the images file but missing on the image host
    r = fabric.get("/vm/create", name="broken", instance_type=1, image_id=fabric.missing_image_id)
    assert r.status_code == 502
    assert r.json()["vmid"] == 0 and "missing.qcow2 does not exist" in r.json()["error"]
    assert fabric.get("/vm/list").json()["vmids"] == before_vms
    for p in (1, 2, 3):
        assert (set(host_domains(p)), host_pool_files(p)) == before[p]
        assert fabric.get("/pm/query", pmid=p).json()["vms"] == 0


def test_a_create_that_fails_on_the_host_rolls_back_there_and_heals(fabric):
    # Stage the image on pm1 with a first VM, then break the staged copy by hand.
    first = fabric.create("stage-1")
    assert first["pmid"] == 1
    staged = [f for f in host_pool_files(1) if f.startswith("image-1-")]
    assert len(staged) == 1
    assert fabric.get("/vm/destroy", vmid=first["vmid"]).json() == {"status": 1}
    on_host(1, ["truncate", "-s", "0", f"/home/pm1/fabric-pool/{staged[0]}"])
    on_host(1, ["truncate", "-s", "65536", f"/home/pm1/fabric-pool/{staged[0]}"])
    # The next create goes to pm1 (spread, ties by pmid) and fails there: the overlay
    # has no valid base. pm1 is left clean, and the VM lands on another host.
    vm = fabric.create("heal-1")
    assert vm["pmid"] in (2, 3)
    ours = vm["domain"].rsplit("-vm-", 1)[0] + "-vm-"  # this installation's files
    assert not any(f.startswith(ours) for f in host_pool_files(1))
    assert not any(d.startswith("fabric-") for d in host_domains(1))
    fabric.wait_booted(vm)
    assert fabric.get("/vm/destroy", vmid=vm["vmid"]).json() == {"status": 1}
    # pm1 serves again: the failed copy was forgotten, so the image is copied anew.
    again = fabric.create("heal-2")
    assert again["pmid"] == 1
    fabric.wait_booted(again)
    assert fabric.get("/vm/destroy", vmid=again["vmid"]).json() == {"status": 1}


def test_a_staged_image_deleted_behind_our_back_is_copied_again(fabric):
    first = fabric.create("restage-1")
    assert first["pmid"] == 1
    staged = [f for f in host_pool_files(1) if f.startswith("image-1-")]
    assert fabric.get("/vm/destroy", vmid=first["vmid"]).json() == {"status": 1}
    on_host(1, ["rm", "-f", f"/home/pm1/fabric-pool/{staged[0]}"])
    vm = fabric.create("restage-2")
    assert vm["pmid"] == 1
    assert staged[0] in host_pool_files(1)
    fabric.wait_booted(vm)
    assert fabric.get("/vm/destroy", vmid=vm["vmid"]).json() == {"status": 1}


def test_a_forwarded_port_held_by_something_else_is_skipped(fabric):
    """Another program (say a second fabric) listens on the first forwarded port of
    every host: QEMU cannot bind it, and the fabric retries on the next port of the
    same host instead of giving up on the host."""
    squatters = []
    try:
        for pmid in (1, 2, 3):
            squatters.append(hold_port_on_host(pmid, 23000))
        vm = fabric.create("port-taken")
        assert vm["status"] == "active"
        assert vm["pmid"] == 1 and vm["ssh"]["port"] == 23001
        guest = fabric.ssh(vm)
        assert guest.run(["cat", "/proc/sys/kernel/ostype"]).strip() == "Linux"
        assert fabric.get("/pm/query", pmid=1).json()["vms"] == 1  # the failed try is gone
        assert fabric.get("/vm/destroy", vmid=vm["vmid"]).json() == {"status": 1}
    finally:
        for s in squatters:
            release_port(s)


def test_a_remote_dhcp_servers_reservations_and_leases_are_read_over_ssh(fabric):
    """``dhcp_hosts`` and ``dhcp_leases`` as ``user@host:port:/path``: the plan reads
    another MAC's reservations and leases there, over real SSH and SFTP."""
    user, addr = HOSTS[1]
    home = on_host(1, ["pwd"]).strip()
    where = f"{home}/reservations-test"
    on_host(1, ["rm", "-rf", where])
    on_host(1, ["mkdir", "-p", f"{where}/hosts.d/subdir"])
    shell = host_shell(1)
    try:
        shell.write_file(f"{where}/hosts.d/other", b"52:54:00:aa:bb:01,10.251.1.30\n")
        shell.write_file(f"{where}/hosts.d/mine", b"52:54:00:aa:bb:09,10.251.1.31\n")
        shell.write_file(f"{where}/hosts.d/old~", b"52:54:00:aa:bb:02,10.251.1.32\n")
        shell.write_file(f"{where}/leases", b"0 52:54:00:aa:bb:03 10.251.1.33 x *\n")
        assert shell.read_dir(f"{where}/hosts.d") == {
            "other": b"52:54:00:aa:bb:01,10.251.1.30\n",
            "mine": b"52:54:00:aa:bb:09,10.251.1.31\n",
            "old~": b"52:54:00:aa:bb:02,10.251.1.32\n",
        }  # files only: not the subdirectory
        assert shell.read_dir(f"{where}/no-such-dir") == {}
        lan = NetworkSettings.model_validate(
            {
                "subnet": "10.251.1.0/24",
                "dhcp_hosts": f"{user}@{addr}:2222:{where}/hosts.d",
                "dhcp_leases": f"{user}@{addr}:2222:{where}/leases",
            }
        )
        ssh = SshSettings(key=str(RIG / HOST_KEY), known_hosts=str(RIG / "known_hosts"))
        addresses = Addresses(None, None, {}, ssh, user)  # type: ignore[arg-type]
        assert addresses.taken_on_the_lan(lan, "52:54:00:aa:bb:09") == {
            "10.251.1.30",
            "10.251.1.33",
        }
    finally:
        on_host(1, ["rm", "-rf", where])
