"""VMs' addresses on test:// hosts: the address plan (never twice, within its range,
freed on destroy, across processes), reservations (a dnsmasq hosts directory, a
libvirt network's DHCP hosts), the sources and their precedence, the watcher
(found -> active; never -> failed), discovery's default network and a changed
address."""

from __future__ import annotations

import ipaddress
import multiprocessing as mp
from pathlib import Path

import pytest

from orchestrator.addresses import Addresses, Lookup
from orchestrator.errors import FabricError, NoValidHost
from orchestrator.model import AddressSource, VmState
from orchestrator.registry import Registry
from tests.conftest import DEFAULT_NETWORK_XML, fresh_db_url, make_pool_rig, make_rig, wait_for

LAN = "bridge:br0"


def lan_config(tmp_path: Path, plan: str | None = "10.251.1.20-10.251.1.23", **more) -> dict:
    (tmp_path / "hosts.d").mkdir(exist_ok=True)
    net = {
        "subnet": "10.251.1.0/24",
        "gateway": "10.251.1.1",
        "dhcp_leases": str(tmp_path / "dnsmasq.leases"),
        "dhcp_hosts": str(tmp_path / "hosts.d"),
        **({"plan": plan} if plan else {}),
    }
    return {"networks": {LAN: net}, **more}


def lan_rig(tmp_path: Path, n: int = 2, **config):  # noqa: ANN201
    hosts = [{"cpus": 8, "ram": 8192, "extra": {"network": LAN}} for _ in range(n)]
    return make_rig(tmp_path, hosts, config=lan_config(tmp_path, **config))


def lease(tmp_path: Path, mac: str, ip: str) -> None:
    """The DHCP server hands ``ip`` to ``mac`` (a dnsmasq lease line; the last wins)."""
    with (tmp_path / "dnsmasq.leases").open("a") as f:
        f.write(f"1893456000 {mac} {ip} guest 01:{mac}\n")


@pytest.fixture
def rig(tmp_path):  # noqa: ANN201
    r = lan_rig(tmp_path)
    yield r
    r.stop()


# -- the plan --------------------------------------------------------------------


def test_the_plan_gives_each_vm_its_own_address_and_reserves_it(rig, tmp_path):
    vms = [rig.fabric.create_vm(f"v{i}", 1, 1) for i in range(4)]
    given = [rig.registry.addresses.of(vm.id) for vm in vms]
    assert given == ["10.251.1.20", "10.251.1.21", "10.251.1.22", "10.251.1.23"]
    assert all(vm.state == VmState.BUILDING and vm.ip is None for vm in vms)  # not seen yet
    files = sorted((tmp_path / "hosts.d").iterdir())
    assert [f.read_text() for f in files] == [
        f"{vm.mac},{ip}\n" for vm, ip in sorted(zip(vms, given, strict=True), key=lambda p: p[0].id)
    ]
    with pytest.raises(NoValidHost, match=r"plan 10.251.1.20-10.251.1.23 has no free address"):
        rig.fabric.create_vm("v5", 1, 1)
    # the refused create left nothing behind: no VM, no claim, no reservation
    assert len(rig.registry.vms.list()) == 4 and rig.registry.claims.consistent() == []
    assert len(list((tmp_path / "hosts.d").iterdir())) == 4
    rig.fabric.destroy_vm(vms[1].id)
    assert not (tmp_path / "hosts.d" / files[1].name).exists()
    again = rig.fabric.create_vm("v6", 1, 1)
    assert rig.registry.addresses.of(again.id) == "10.251.1.21"  # freed, given again


def test_the_plan_skips_addresses_the_lans_dhcp_server_ties_to_another_mac(rig, tmp_path):
    """Another installation sharing the LAN (a demo left running, a second fabric) or an
    operator's own reservation holds some of the plan: the VM gets an address the DHCP
    server will really give it, not a duplicate it ignores."""
    hosts = tmp_path / "hosts.d"
    (hosts / "fabric-0ther-vm-9").write_text("52:54:00:aa:bb:01,10.251.1.20\n")
    (hosts / "operator").write_text("# printers\nprinter,10.251.1.23  # no MAC: still taken\n")
    (hosts / ".fabric-0ther-vm-3.tmp").write_text("52:54:00:aa:bb:02,10.251.1.22\n")  # unread
    (hosts / "old~").write_text("52:54:00:aa:bb:02,10.251.1.22\n")  # a backup: unread
    lease(tmp_path, "52:54:00:AA:BB:03", "10.251.1.21")  # leased to another MAC, not expired
    with (tmp_path / "dnsmasq.leases").open("a") as f:
        f.write("1000000000 52:54:00:aa:bb:04 10.251.1.22 gone *\n")  # expired in 2001
    vm = rig.fabric.create_vm("v", 1, 1)
    assert rig.registry.addresses.of(vm.id) == "10.251.1.22"
    assert (hosts / f"fabric-{rig.registry.installation_id}-vm-{vm.id}").read_text() == (
        f"{vm.mac},10.251.1.22\n"
    )
    with pytest.raises(NoValidHost, match="has no free address"):
        rig.fabric.create_vm("w", 1, 1)
    # what the server ties to the VM's own MAC is no obstacle to it
    addresses = rig.fabric.addresses
    taken = addresses.taken_on_the_lan(addresses.networks[LAN], vm.mac)
    assert taken == {"10.251.1.20", "10.251.1.21", "10.251.1.23"}
    assert "10.251.1.22" not in taken  # its own reservation
    assert addresses.taken_on_the_lan(addresses.networks[LAN], "52:54:00:aa:bb:03") == {
        "10.251.1.20",
        "10.251.1.22",
        "10.251.1.23",
    }


def _allocate(args: tuple[str, int, int]) -> list[str]:
    url, first_vm, n = args
    reg = Registry(url)
    plan = [str(ipaddress.IPv4Address("10.0.0.10") + i) for i in range(40)]
    got = []
    for vm_id in range(first_vm, first_vm + n):
        ip = reg.addresses.allocate(LAN, vm_id, plan)
        if ip is not None:
            got.append(ip)
    reg.close()
    return got


def test_parallel_processes_never_get_the_same_address(tmp_path):
    url = fresh_db_url(tmp_path)
    Registry(url).create_schema()
    with mp.get_context("spawn").Pool(4) as pool:
        results = pool.map(_allocate, [(url, 1000 * k, 15) for k in range(1, 5)])
    given = [ip for r in results for ip in r]
    assert len(given) == 40 == len(set(given))  # 60 asked, 40 in the plan: each once
    assert all(ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("10.0.0.0/26") for ip in given)
    in_use = Registry(url).addresses.in_use(LAN)[LAN]
    assert sorted(in_use) == sorted(given)


def test_a_plan_on_a_libvirt_network_is_a_dhcp_reservation_there(tmp_path):
    hosts = [{"cpus": 8, "ram": 8192, "node": DEFAULT_NETWORK_XML}]
    default = {"subnet": "192.168.122.0/24", "plan": "192.168.122.50-192.168.122.59"}
    config = {"networks": {"network:default": default}}
    rig = make_rig(tmp_path, hosts, config=config)
    try:
        assert rig.registry.hosts.get(1).network == "network:default"  # nothing declared
        vm = rig.fabric.create_vm("v", 1, 1)
        xml = _network_xml(rig)
        assert f"<host mac='{vm.mac}' ip='192.168.122.50'/>" in xml
        rig.fabric.destroy_vm(vm.id)
        assert vm.mac not in _network_xml(rig)
    finally:
        rig.stop()


def _network_xml(rig) -> str:  # noqa: ANN001
    host = rig.registry.hosts.get(1)
    return rig.driver.connection(_target(host)).call(
        lambda conn: conn.networkLookupByName("default").XMLDesc(0)
    )


def _target(host):  # noqa: ANN001, ANN202
    from orchestrator.hosts import host_target

    return host_target(host)


# -- the watcher: seen -> active, never -> failed ------------------------------------


def test_a_vm_is_active_once_its_lease_is_seen_and_says_so(rig, tmp_path):
    vm = rig.fabric.create_vm("web", 1, 1)
    assert rig.services.watcher.watching() == {vm.id}
    rig.services.watcher.run_once()
    assert rig.registry.vms.get(vm.id).state == VmState.BUILDING  # no lease yet
    lease(tmp_path, vm.mac, "10.251.1.20")
    rig.services.watcher.run_once()
    got = rig.registry.vms.get(vm.id)
    assert (got.state, got.ip, got.ip_source) == (VmState.ACTIVE, "10.251.1.20", "lease")
    assert got.owner is None and rig.services.watcher.watching() == set()
    ev = rig.registry.events.list(kind="vm.address")[0]
    assert ev.vm_id == vm.id and ev.detail == {"ip": "10.251.1.20", "source": "lease"}


def test_a_vm_whose_address_never_appears_fails_with_the_reason(tmp_path):
    rig = lan_rig(tmp_path, plan=None, guest={"address_timeout": 0.2})
    try:
        vm = rig.fabric.create_vm("silent", 1, 1)
        rig.services.watcher.run_once()
        assert rig.registry.vms.get(vm.id).state == VmState.BUILDING
        wait_for(lambda: (rig.services.watcher.run_once(), rig.registry.vms.get(vm.id))[1].state
                 == VmState.FAILED, timeout=60)  # fmt: skip
        failed = rig.registry.vms.get(vm.id)
        assert f"no address seen for MAC {vm.mac} on {LAN} within 0.2 s" in failed.error
        assert failed.ip is None
        assert rig.registry.events.list(kind="vm.failed")[0].vm_id == vm.id
        rig.fabric.destroy_vm(vm.id)  # a failed VM can be destroyed
    finally:
        rig.stop()


def test_a_stopping_server_does_not_wait_for_a_guest_s_address(tmp_path):
    """A pool builder waiting for its VM's address lets go when the server stops (the
    VM stays building: the next start watches it on), so SIGTERM never waits for a
    guest that is still booting."""
    import threading

    rig = lan_rig(tmp_path, plan=None, guest={"address_timeout": 3600})
    try:
        vm = rig.fabric.create_vm("booting", 1, 1)
        outcome: list[str] = []

        def builder() -> None:
            try:
                rig.services.watcher.wait_for(vm.id, poll=0.05)
                outcome.append("returned")
            except FabricError as e:
                outcome.append(e.message)

        t = threading.Thread(target=builder)
        t.start()
        rig.services.watcher.stop()
        t.join(timeout=60)  # gives up on a hang only: it waits an hour otherwise
        assert not t.is_alive()
        assert outcome == [f"vmid {vm.id}: the server is stopping; watched on at start"]
        assert rig.registry.vms.get(vm.id).state == VmState.BUILDING
    finally:
        rig.stop()


def test_a_pool_vm_is_ready_only_once_it_has_an_address(tmp_path):
    pool = {"name": "lan", "instance_type": 1, "image": "debian-12", "size": 1,
            "ready_check": "none", "cleanup": "reset"}  # fmt: skip
    hosts = [{"cpus": 8, "ram": 8192, "extra": {"network": LAN}}]
    pr = make_pool_rig(tmp_path, hosts, [pool], config=lan_config(tmp_path))
    try:
        pr.rig.services.watcher.start()
        wait_for(lambda: pr.pools.status()["lan"]["building"] == 1)
        (vm,) = pr.rig.registry.vms.list()
        r = pr.served.url
        import requests

        assert requests.post(f"{r}/vm/checkout", json={"pool": "lan"}).status_code == 503
        lease(tmp_path, vm.mac, "10.251.1.20")
        wait_for(lambda: pr.pools.status()["lan"]["ready"] == 1)
        got = requests.post(f"{r}/vm/checkout", json={"pool": "lan"}).json()
        assert got["ip"] == "10.251.1.20" and got["vmid"] == vm.id
    finally:
        pr.stop()


# -- sources and their precedence ------------------------------------------------


class Seen(Addresses):
    """What each source says, set by the test (the precedence is what is tested)."""

    agent: dict[str, str] = {}
    leases: dict[str, str] = {}
    arp: dict[str, str] = {}
    neigh: dict[str, str] = {}

    def lease_file(self, network: str) -> dict[str, str]:
        return self.leases

    def neighbours(self, host) -> dict[str, str]:  # noqa: ANN001
        return self.neigh


class SeenDriver:
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def interface_addresses(self, host, uuid: str, source: str) -> dict[str, str]:  # noqa: ANN001
        return self.seen.agent if source == "agent" else self.seen.arp


def test_the_most_trusted_source_wins(rig):
    vm = rig.fabric.create_vm("v", 1, 1)
    host = rig.registry.hosts.get(vm.host_id)
    a = rig.services.addresses
    seen = Seen(a.registry, a.driver, a.networks, a.ssh, a.default_user)
    seen.driver = SeenDriver(seen)  # type: ignore[assignment]
    m = vm.mac
    cases = [
        ({}, {}, {}, {}, None),
        ({}, {}, {}, {m: "10.0.0.4"}, ("10.0.0.4", AddressSource.ARP)),
        ({}, {}, {m: "10.0.0.3"}, {m: "10.0.0.4"}, ("10.0.0.3", AddressSource.ARP)),
        ({}, {m: "10.0.0.2"}, {m: "10.0.0.3"}, {}, ("10.0.0.2", AddressSource.LEASE)),
        ({m: "10.0.0.1"}, {m: "10.0.0.2"}, {m: "10.0.0.3"}, {}, ("10.0.0.1", AddressSource.AGENT)),
        # another VM's MAC is nobody's business here
        ({"52:54:00:ff:ff:ff": "10.0.0.9"}, {}, {}, {}, None),
    ]
    for agent, leases, arp, neigh, want in cases:
        seen.agent, seen.leases, seen.arp, seen.neigh = agent, leases, arp, neigh
        found = Lookup(seen).find(vm, host)
        assert (None if found is None else (found.ip, found.source)) == want


def test_the_lease_file_is_read_in_dnsmasqs_format(rig, tmp_path):
    (tmp_path / "dnsmasq.leases").write_text(
        "1893456000 52:54:00:AA:BB:01 10.251.1.101 guest *\n"
        "garbage\n"
        "1893456001 52:54:00:aa:bb:02 10.251.1.102 * 01:52:54:00:aa:bb:02\n"
        "1893456002 52:54:00:aa:bb:01 10.251.1.105 guest *\n"
    )
    assert rig.services.addresses.lease_file(LAN) == {
        "52:54:00:aa:bb:01": "10.251.1.105",  # the newest line of a MAC, any case
        "52:54:00:aa:bb:02": "10.251.1.102",
    }
    assert rig.services.addresses.lease_file("bridge:other") == {}


# -- hosts' default network, a changed address, a restart -----------------------------


def test_a_host_without_network_gets_libvirts_default_network_where_it_has_one(tmp_path):
    hosts = [
        {"node": DEFAULT_NETWORK_XML},  # a system daemon with its default network
        {},  # no libvirt network at all (as a session daemon)
        {"node": DEFAULT_NETWORK_XML, "extra": {"network": "bridge:br0"}},  # declared wins
    ]
    rig = make_rig(tmp_path, hosts)
    try:
        got = [(h.network_setting, h.network) for h in rig.registry.hosts.list()]
        assert got == [(None, "network:default"), (None, "user"), ("bridge:br0", "bridge:br0")]
        assert rig.registry.hosts.get(1).networks == [
            {"name": "default", "bridge": "virbr0", "active": True, "subnet": "192.168.122.0/24"}
        ]
    finally:
        rig.stop()


def test_a_changed_address_is_noticed_and_recorded(rig, tmp_path):
    vm = rig.fabric.create_vm("web", 1, 1)
    lease(tmp_path, vm.mac, "10.251.1.20")
    rig.services.watcher.run_once()
    assert rig.services.addresses.refresh() == []  # nothing changed
    lease(tmp_path, vm.mac, "10.251.1.150")  # renewed elsewhere
    assert rig.services.addresses.refresh() == [vm.id]
    assert rig.registry.vms.get(vm.id).ip == "10.251.1.150"
    ev = rig.registry.events.list(kind="vm.address_changed")[0]
    assert ev.detail == {"from": "10.251.1.20", "to": "10.251.1.150", "source": "lease"}


def test_a_restart_keeps_addresses_and_watches_what_was_still_waiting(rig, tmp_path):
    seen = rig.fabric.create_vm("seen", 1, 1)
    waiting = rig.fabric.create_vm("waiting", 1, 1)
    lease(tmp_path, seen.mac, "10.251.1.20")
    rig.services.watcher.run_once()
    rig.registry.vms.let_go(waiting.id)  # as if its server had died with it
    services = rig.restart(lan_config(tmp_path) | {"state_dir": str(tmp_path / "state")})
    assert rig.registry.vms.get(seen.id).ip == "10.251.1.20"
    assert rig.registry.addresses.of(waiting.id) == "10.251.1.21"
    assert waiting.id in rig.report.vms.resumed and services.watcher.watching() == {waiting.id}
    lease(tmp_path, waiting.mac, "10.251.1.21")
    services.watcher.run_once()
    assert rig.registry.vms.get(waiting.id).state == VmState.ACTIVE


def test_vms_of_other_networks_are_not_looked_for(tmp_path):
    rig = make_rig(tmp_path, [{"target": "root@127.0.0.9", "extra": {"network": "forward"}}, {}])
    try:
        a = rig.fabric.create_vm("a", 1, 1)
        b = rig.fabric.create_vm("b", 1, 1)
        by_host = {vm.host_id: rig.registry.vms.get(vm.id) for vm in (a, b)}
        fwd, user = by_host[1], by_host[2]
        assert (fwd.state, fwd.ip, fwd.ip_source, fwd.network) == (
            "active",
            "127.0.0.9",
            "forward",
            "forward",
        )
        assert (user.state, user.ip, user.network) == ("active", None, "user")
        assert rig.services.watcher.watching() == set()
    finally:
        rig.stop()


# -- names: the DNS server's hosts directory -----------------------------------------


def test_hostnames_are_written_to_the_dns_hosts_directory_and_removed(tmp_path):
    """networks.KEY.dns_hosts: one file per VM with an address, named after its
    hostname, ``IP hostname fqdn`` (mode 0644, written whole), rewritten when its
    address changes, removed when it is destroyed."""
    dns = tmp_path / "dns.d"
    dns.mkdir()
    config = lan_config(tmp_path, hostnames={"domain": "vm.fabric.test"})
    config["networks"][LAN]["dns_hosts"] = str(dns)
    hosts = [{"cpus": 8, "ram": 8192, "extra": {"network": LAN}}]
    rig = make_rig(tmp_path, hosts, config=config)
    try:
        web = rig.fabric.create_vm("web", 1, 1)
        quiet = rig.fabric.create_vm("quiet", 1, 1)
        assert web.hostname and web.hostname.startswith("web-")
        assert list(dns.iterdir()) == []  # no address seen yet: no name
        lease(tmp_path, web.mac, "10.251.1.20")
        rig.services.watcher.run_once()
        f = dns / web.hostname
        assert sorted(p.name for p in dns.iterdir()) == [web.hostname]  # not quiet's
        assert f.read_text() == f"10.251.1.20 {web.hostname} {web.hostname}.vm.fabric.test\n"
        assert f.stat().st_mode & 0o777 == 0o644  # dnsmasq reads it as another user

        lease(tmp_path, web.mac, "10.251.1.150")  # renewed elsewhere
        assert rig.services.addresses.refresh() == [web.id]
        assert f.read_text() == f"10.251.1.150 {web.hostname} {web.hostname}.vm.fabric.test\n"

        lease(tmp_path, quiet.mac, "10.251.1.21")
        rig.services.watcher.run_once()
        assert (dns / quiet.hostname).read_text().startswith("10.251.1.21 ")
        rig.fabric.destroy_vm(web.id)
        assert sorted(p.name for p in dns.iterdir()) == [quiet.hostname]  # no dot-files
    finally:
        rig.stop()


def test_without_a_domain_the_file_names_the_short_hostname_only(tmp_path):
    dns = tmp_path / "dns.d"
    dns.mkdir()
    config = lan_config(tmp_path)
    config["networks"][LAN]["dns_hosts"] = str(dns)
    rig = make_rig(tmp_path, [{"cpus": 8, "ram": 8192, "extra": {"network": LAN}}], config=config)
    try:
        vm = rig.fabric.create_vm("db", 1, 1)
        lease(tmp_path, vm.mac, "10.251.1.20")
        rig.services.watcher.run_once()
        assert (dns / vm.hostname).read_text() == f"10.251.1.20 {vm.hostname}\n"
    finally:
        rig.stop()


def test_dns_hosts_is_a_path_or_a_remote_location():
    from orchestrator.config import config_from_dict
    from orchestrator.errors import ConfigError

    net = {"subnet": "10.251.1.0/24"}
    ok = config_from_dict({"networks": {LAN: {**net, "dns_hosts": "dns@10.0.0.5:/srv/dns.d"}}})
    assert ok.networks[LAN].dns_hosts == "dns@10.0.0.5:/srv/dns.d"
    with pytest.raises(ConfigError, match=r"dns_hosts: must be an absolute path"):
        config_from_dict({"networks": {LAN: {**net, "dns_hosts": "dns.d"}}})


@pytest.fixture
def dns_server(tmp_path):  # noqa: ANN201
    """A real dnsmasq on loopback answering ``t.test`` from ``tmp_path/dns.d`` (the
    local datacenter's options, on a free port, as this user): (port, directory)."""
    import getpass
    import shutil
    import socket
    import subprocess

    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    hosts = tmp_path / "dns.d"
    hosts.mkdir()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            binary,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            f"--port={port}",
            "--no-resolv",
            "--no-hosts",
            "--local=/t.test/",
            "--domain=t.test",
            f"--hostsdir={hosts}",
            f"--user={getpass.getuser()}",
            "--pid-file=",
            f"--log-facility={tmp_path / 'dnsmasq.log'}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        from tests.dnsquery import query

        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return query("127.0.0.1", "probe.t.test", port=port, timeout=0.5).rcode == 3
            except OSError:
                return False

        wait_for(up, timeout=30)
        yield port, hosts
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_vms_hostname_resolves_at_a_real_dns_server_until_it_is_destroyed(tmp_path, dns_server):
    """End to end without the rig: the fabric writes the names, dnsmasq (--hostsdir)
    answers them, and forgets them when the VM goes."""
    from tests.dnsquery import NOERROR, NXDOMAIN, query

    port, hosts = dns_server
    config = lan_config(tmp_path, hostnames={"domain": "t.test"})
    config["networks"][LAN]["dns_hosts"] = str(hosts)
    rig = make_rig(tmp_path, [{"cpus": 8, "ram": 8192, "extra": {"network": LAN}}], config=config)
    try:
        vm = rig.fabric.create_vm("web", 1, 1)
        fqdn = f"{vm.hostname}.t.test"
        assert query("127.0.0.1", fqdn, port=port).rcode == NXDOMAIN  # no address yet
        lease(tmp_path, vm.mac, "10.251.1.20")
        rig.services.watcher.run_once()
        got = wait_for(lambda: query("127.0.0.1", fqdn, port=port).addresses)
        assert got == ["10.251.1.20"]
        short = query("127.0.0.1", vm.hostname, port=port)
        assert (short.rcode, short.addresses) == (NOERROR, ["10.251.1.20"])
        rig.fabric.destroy_vm(vm.id)
        wait_for(lambda: query("127.0.0.1", fqdn, port=port).rcode == NXDOMAIN)
    finally:
        rig.stop()


def test_a_pool_vm_replaced_by_an_evacuation_loses_its_name(tmp_path):
    """A ready pool VM on a host that died is replaced (forgotten, its pool refills
    elsewhere): its name goes from the DNS hosts directory with it."""
    from tests.unit.test_evacuate import DeadHost

    pool = {"name": "lan", "instance_type": 1, "image": "debian-12", "size": 1, "max": 1,
            "ready_check": "none", "cleanup": "reset"}  # fmt: skip
    dns = tmp_path / "dns.d"
    dns.mkdir()
    config = lan_config(tmp_path, scheduler={"policy": "first-fit"})
    config["networks"][LAN]["dns_hosts"] = str(dns)
    hosts = [{"cpus": 8, "ram": 8192, "extra": {"network": LAN}} for _ in range(2)]
    pr = make_pool_rig(tmp_path, hosts, [pool], config=config)
    try:
        pr.rig.services.watcher.start()
        wait_for(lambda: pr.pools.status()["lan"]["building"] == 1)
        (vm,) = pr.rig.registry.vms.list()
        assert vm.host_id == 1
        lease(tmp_path, vm.mac, "10.251.1.20")
        wait_for(lambda: pr.pools.status()["lan"]["ready"] == 1)
        assert (dns / vm.hostname).read_text().startswith("10.251.1.20 ")
        pr.worker.stop()  # no refill meanwhile: only the replacement is looked at
        DeadHost(pr.rig, 1)
        report = pr.rig.services.evacuator.evacuate(1)
        assert report["replaced"] == [vm.id]
        assert not (dns / vm.hostname).exists()
    finally:
        pr.stop()
