"""Real guests on the local datacenter's LAN (bridge:br0, one DHCP server): the fabric
learns each VM's address, SSH works at that address, check-out hands it out, a
returned VM is cleaned there and serves again; a restart keeps the addresses, a
changed address is noticed; a guest that never takes an address fails and is never
handed out. Hostnames resolve at the LAN's DNS server (the rig's dnsmasq, 10.251.1.1)
to the VMs' addresses, and a VM got through vmpooler's API v3 answers SSH there."""

from __future__ import annotations

import ipaddress
import sqlite3
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.conftest import wait_for
from tests.dnsquery import NXDOMAIN, Answer, query
from tests.integration.conftest import RIG, FabricProcess, Guest, _require_rig, wait_vm

pytestmark = pytest.mark.integration

LAN = ipaddress.IPv4Network("10.251.1.0/24")
DNS_SERVER = "10.251.1.1"  # the LAN's dnsmasq, reached from here by the rig's route
DOMAIN = "vm.fabric.test"  # hostnames.domain in the rig's fabric.yaml
NAMES = RIG / "lan" / "dns.d"  # networks."bridge:br0".dns_hosts there
CONFIG = """
pools:
  - {name: lan, instance_type: 1, image: guest, size: 1, max: 1, cleanup: tmp}
workers: {interval: 1}
guest: {address_timeout: 90}
"""


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FabricProcess]:
    _require_rig()
    fp = FabricProcess(tmp_path_factory.mktemp("rig-lan"), lan=True)
    fp.set_config(CONFIG)
    fp.start()
    yield fp
    fp.destroy_everything()


def guest_at(fp: FabricProcess, ip: str) -> Guest:
    return fp.ssh({"ssh": {"host": ip, "port": 22}})


def resolve(name: str, until: Callable[[Answer], bool], timeout: float = 30) -> Answer:
    """Ask the LAN's DNS server for ``name`` (a real query, UDP port 53) until the
    answer satisfies ``until`` (dnsmasq reads a changed hosts file at once, but not
    in the same instant the fabric renames it into place)."""
    deadline = time.monotonic() + timeout
    answer = query(DNS_SERVER, name)
    while not until(answer) and time.monotonic() < deadline:
        time.sleep(0.2)
        answer = query(DNS_SERVER, name)
    assert until(answer), (name, answer)
    return answer


def test_a_vm_on_the_lan_is_active_with_its_address_and_answers_ssh_there(lan):
    vmid = lan.get("/vm/create", name="lan1", instance_type=1, image_id=1).json()["vmid"]
    assert lan.get("/vm/query", vmid=vmid).json()["status"] == "building"  # not yet seen
    vm = wait_vm(lan, vmid, "active")
    ip = vm["ip"]
    assert ipaddress.IPv4Address(ip) in LAN
    assert vm["ssh"] == {"host": ip, "port": 22, "user": "root"}
    assert (vm["network"], vm["address_source"]) == ("bridge:br0", "lease")
    # the guest itself has that address: SSH to it, from the fabric's machine
    assert f"inet {ip}/24" in guest_at(lan, ip).run(["ip", "-4", "addr", "show", "eth0"])
    hosts = lan.get("/networks", pmid=vm["pmid"]).json()["networks"]
    [entry] = [n for n in hosts if n["name"] == "bridge:br0"]
    assert {"vmid": vmid, "mac": vm["mac"], "ip": ip} in [
        {k: a[k] for k in ("vmid", "mac", "ip")} for a in entry["addresses"]
    ]
    assert lan.get("/vm/destroy", vmid=vmid).json() == {"status": 1}


def test_check_out_three_times_the_same_vm_cleaned_at_its_address(lan):
    lan.wait_pool("lan", 1)
    first = None
    for cycle in range(3):
        r = lan.post("/vm/checkout", pool="lan")
        assert r.status_code == 200, r.text
        got = r.json()
        ip = got["ip"]
        assert ipaddress.IPv4Address(ip) in LAN and got["ssh"]["port"] == 22
        first = first or got["vmid"]
        assert got["vmid"] == first  # the same VM every time: cleaned, not rebuilt
        guest = guest_at(lan, ip)
        assert guest.run(["ls", "-A", "/tmp"]).split() == []  # clean when handed out
        guest.run(["sh", "-c", f"echo {cycle} > /tmp/hello && mkdir /tmp/.dir"])
        r = lan.post("/vm/checkin", vmid=got["vmid"], reservation_id=got["reservation_id"])
        assert r.json() == {"status": 1}
        lan.wait_pool("lan", 1)
    assert guest_at(lan, ip).run(["ls", "-A", "/tmp"]).split() == []
    st = lan.get("/pool/query", pool="lan").json()
    assert (st["total"], st["failed"], st["recent_failures"]) == (1, 0, [])


def test_a_checked_out_vms_hostname_resolves_to_its_address_at_the_lans_dns(lan):
    """The DNS part on the fabric's own check-out: the name file the fabric wrote, a
    real query to the LAN's dnsmasq (FQDN and short name), SSH at that address."""
    lan.wait_pool("lan", 1)
    r = lan.post("/vm/checkout", pool="lan")
    assert r.status_code == 200, r.text
    got = r.json()
    vm = lan.get("/vm/query", vmid=got["vmid"]).json()
    hostname, fqdn, ip = vm["hostname"], vm["fqdn"], got["ip"]
    assert fqdn == f"{hostname}.{DOMAIN}" and vm["ip"] == ip
    assert (NAMES / hostname).read_text() == f"{ip} {hostname} {fqdn}\n"
    answer = resolve(fqdn, lambda a: bool(a.addresses))
    assert (answer.rcode, answer.addresses) == (0, [ip])
    assert resolve(hostname, lambda a: bool(a.addresses)).addresses == [ip]
    assert query(DNS_SERVER, f"no-such-vm.{DOMAIN}").rcode == NXDOMAIN
    guest = guest_at(lan, answer.addresses[0])  # by the address its name gave
    assert f"inet {ip}/24" in guest.run(["ip", "-4", "addr", "show", "eth0"])
    r = lan.post("/vm/checkin", vmid=got["vmid"], reservation_id=got["reservation_id"])
    assert r.json() == {"status": 1}
    lan.wait_pool("lan", 1)
    assert resolve(fqdn, lambda a: bool(a.addresses)).addresses == [ip]  # ready: still named


def test_a_restart_keeps_addresses_and_a_changed_address_is_noticed(lan):
    vmid = lan.get("/vm/create", name="mover", instance_type=1, image_id=1).json()["vmid"]
    vm = wait_vm(lan, vmid, "active")
    old = vm["ip"]
    assert resolve(vm["fqdn"], lambda a: bool(a.addresses)).addresses == [old]
    lan.stop()
    lan.start()
    assert lan.get("/vm/query", vmid=vmid).json()["ip"] == old  # kept, not looked for again
    # The LAN's DHCP server now gives this MAC another address (its reservation changed
    # behind the fabric's back), and the guest renews its lease.
    hosts_d = RIG / "lan" / "hosts.d"
    [mine] = [f for f in hosts_d.iterdir() if f.read_text().startswith(vm["mac"])]
    # the address it took is its planned one: the DHCP server gave it its reservation
    assert mine.read_text() == f"{vm['mac']},{old}\n"
    janitor_log = RIG / "lan" / "janitor.log"
    released = f"reservation {vm['mac']},{old} removed"
    seen = janitor_log.read_text().count(released)
    mine.unlink()
    # the rig's janitor releases the old lease and dnsmasq forgets it: its log says when
    wait_for(lambda: janitor_log.read_text().count(released) > seen)
    new = "10.251.1.98"
    (hosts_d / "test-mover").write_text(f"{vm['mac']},{new}\n")
    (hosts_d / "test-mover").chmod(0o644)
    try:
        guest_at(lan, old).run(["sh", "-c", "kill -USR1 $(pidof udhcpc)"])
        deadline = time.monotonic() + 90
        while lan.get("/vm/query", vmid=vmid).json()["ip"] != new:
            assert time.monotonic() < deadline, lan.log()[-3000:]
            time.sleep(1)
        assert guest_at(lan, new).run(["hostname"]).strip() == "fabric-guest"
        # its name follows: the LAN's DNS server now gives the new address
        assert resolve(vm["fqdn"], lambda a: a.addresses == [new]).addresses == [new]
        db = sqlite3.connect(lan.db.removeprefix("sqlite:///"))
        detail = db.execute(
            "SELECT detail FROM events WHERE kind = 'vm.address_changed' AND vm_id = ?", (vmid,)
        ).fetchone()
        db.close()
        assert detail is not None and old in detail[0] and new in detail[0]
    finally:
        (hosts_d / "test-mover").unlink(missing_ok=True)
        lan.get("/vm/destroy", vmid=vmid)
    # destroyed: its name is gone from the DNS server
    assert resolve(vm["fqdn"], lambda a: a.rcode == NXDOMAIN).addresses == []
    assert not (NAMES / vm["hostname"]).exists()


def test_a_vm_got_through_api_v3_answers_ssh_at_its_hostnames_address(lan):
    """The issue's real-guest test: ``POST /api/v3/vm/<pool>`` gives a hostname (its
    FQDN), the LAN's DNS server resolves it, the guest answers SSH at that address, and
    ``DELETE /api/v3/vm/<hostname>`` ends it (destroyed; its name goes). The last test
    of this module's fabric: it empties the pool (see below)."""
    lan.wait_pool("lan", 1)
    r = requests.post(f"{lan.url}/api/v3/vm/lan", timeout=120)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["ok"] is True and got["domain"] == DOMAIN, got
    fqdn = got["lan"]["hostname"]
    assert isinstance(fqdn, str) and fqdn.endswith(f".{DOMAIN}"), got  # one VM: a string
    hostname = fqdn.removesuffix(f".{DOMAIN}")
    answer = resolve(fqdn, lambda a: bool(a.addresses))
    [ip] = answer.addresses
    assert ipaddress.IPv4Address(ip) in LAN
    guest = guest_at(lan, ip)
    assert f"inet {ip}/24" in guest.run(["ip", "-4", "addr", "show", "eth0"])
    # The same reservation in the fabric's own API.
    [vm] = [
        q
        for q in (lan.get("/vm/query", vmid=v).json() for v in lan.get("/vm/list").json()["vmids"])
        if q["hostname"] == hostname
    ]
    assert (vm["status"], vm["ip"], vm["fqdn"]) == ("in-use", ip, fqdn)
    # No refill after the delete (it would boot one more guest for nothing): the same
    # fabric, restarted with the pool's size at 0; the check-out outlives the restart.
    lan.stop()
    lan.set_config(CONFIG.replace("size: 1", "size: 0"))
    lan.start()
    r = requests.delete(f"{lan.url}/api/v3/vm/{hostname}", timeout=120)
    assert (r.status_code, r.json()) == (200, {"ok": True}), r.text
    assert lan.get("/vm/query", vmid=vm["vmid"]).status_code == 404
    assert requests.get(f"{lan.url}/api/v3/vm/{fqdn}", timeout=60).status_code == 404
    assert resolve(fqdn, lambda a: a.rcode == NXDOMAIN).addresses == []


def test_a_guest_that_never_takes_an_address_fails_and_is_never_handed_out(tmp_path):
    _require_rig()
    fp = FabricProcess(tmp_path / "dark", lan=True)
    fp.set_config(
        "pools:\n  - {name: dark, instance_type: 1, image: guest-nodhcp, size: 1, max: 1}\n"
        "workers: {interval: 1}\nguest: {address_timeout: 25}\n"
    )
    fp.start()
    try:
        vmid = fp.get("/vm/create", name="silent", instance_type=1, image_id=2).json()["vmid"]
        vm = wait_vm(fp, vmid, "failed", timeout=120)
        assert vm["ip"] is None and "no address seen" in vm["error_detail"]
        deadline = time.monotonic() + 150
        while not (st := fp.get("/pool/query", pool="dark").json())["recent_failures"]:
            assert time.monotonic() < deadline, st
            r = fp.post("/vm/checkout", pool="dark")
            assert r.status_code == 503, r.text  # never handed out
            time.sleep(2)
        assert "no address seen" in st["recent_failures"][0]["reason"]
        assert fp.post("/vm/checkout", pool="dark").status_code == 503
    finally:
        fp.destroy_everything()
