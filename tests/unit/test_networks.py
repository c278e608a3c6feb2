"""A VM's address, MAC and network in /vm/query and the check-outs; GET /networks;
the networks of /status. On test:// hosts: one bridged onto a LAN, one forwarding
ports, one with user networking."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import requests

from orchestrator.api import create_app, presenters
from orchestrator.model import VmState
from orchestrator.reservations import Checkout
from tests.conftest import make_rig
from tests.lan import BRIDGE, FORWARD_HOST, LAN, LAN_HOST, USER_HOST, make_lan_pool_rig

VM_KEYS = [
    "vmid", "name", "hostname", "fqdn", "tags", "instance_type", "pmid", "status", "image_id",
    "ip", "domain",
]  # fmt: skip
NEW_KEYS = ["mac", "network", "address_source", "created_by"]
LIBVIRT_DEFAULT = {
    "name": "default",
    "bridge": "virbr0",
    "active": True,
    "subnet": "192.168.122.0/24",
}
LAN_PMID, FORWARD_PMID, USER_PMID = 1, 2, 3


def rig_with(tmp_path, networks: dict | None = None):
    return make_rig(
        tmp_path, [LAN_HOST, FORWARD_HOST, USER_HOST], config={"networks": networks or LAN}
    )


@pytest.fixture
def lan(tmp_path):
    r = rig_with(tmp_path)
    yield r
    r.stop()


@pytest.fixture
def api(lan):
    app = create_app(lan.services)
    app.testing = True
    return app.test_client()


def create_on(rig, api, pmid: int, name: str = "vm") -> int:
    """Create a VM through the API on host ``pmid`` (the others disabled meanwhile)."""
    others = [h.id for h in rig.registry.hosts.list() if h.id != pmid]
    for h in others:
        rig.registry.hosts.set_enabled(h, False)
    try:
        r = api.get(f"/vm/create?name={name}&instance_type=1&image_id=1")
        assert r.status_code == 200, r.get_json()
    finally:
        for h in others:
            rig.registry.hosts.set_enabled(h, True)
    vmid = r.get_json()["vmid"]
    assert rig.registry.vms.get(vmid).host_id == pmid
    return vmid


def query(api, vmid: int) -> dict:
    r = api.get(f"/vm/query?vmid={vmid}")
    assert r.status_code == 200
    return r.get_json()


# -- /vm/query -------------------------------------------------------------------


def test_a_lan_vm_shows_its_mac_network_then_its_address_and_ssh_on_port_22(lan, api):
    vmid = create_on(lan, api, LAN_PMID)
    vm = lan.registry.vms.get(vmid)
    q = query(api, vmid)
    # building until its address is seen; nothing to SSH to yet
    assert list(q) == VM_KEYS + NEW_KEYS
    assert q["status"] == "building" and q["ip"] is None
    assert (q["mac"], q["network"], q["address_source"]) == (vm.mac, BRIDGE, None)

    lan.registry.vms.record_address(vmid, "10.251.1.23", "lease")
    q = query(api, vmid)
    assert list(q) == [*VM_KEYS, "ssh", *NEW_KEYS]
    assert q["ip"] == "10.251.1.23" and q["address_source"] == "lease"
    assert q["ssh"] == {"host": "10.251.1.23", "port": 22, "user": "root"}
    assert q["mac"] == vm.mac and q["network"] == BRIDGE


def test_a_forwarded_vm_is_reached_on_its_port_and_a_user_vm_not_at_all(lan, api):
    fwd = create_on(lan, api, FORWARD_PMID, "fwd")
    q = query(api, fwd)
    port = lan.registry.vms.get(fwd).ssh_port
    assert port and port != 22
    assert q["ip"] == "127.0.0.5" and q["ssh"] == {
        "host": "127.0.0.5",
        "port": port,
        "user": "root",
    }
    assert (q["network"], q["address_source"]) == ("forward", "forward")

    user = create_on(lan, api, USER_PMID, "user")
    q = query(api, user)
    assert q["status"] == "active" and q["network"] == "user" and q["ip"] is None
    assert "ssh" not in q
    # an address the guest agent reports does not make a user-networked guest reachable
    lan.registry.vms.record_address(user, "10.0.2.15", "agent")
    q = query(api, user)
    assert q["ip"] == "10.0.2.15" and q["address_source"] == "agent" and "ssh" not in q


# -- check-out shapes ----------------------------------------------------------------


def test_checkout_shapes_give_mac_network_and_the_port_to_ssh_to(lan, api):
    lan_vm = create_on(lan, api, LAN_PMID, "a")
    lan.registry.vms.record_address(lan_vm, "10.251.1.23", "lease")
    fwd = create_on(lan, api, FORWARD_PMID, "b")
    user = create_on(lan, api, USER_PMID, "c")
    token = "R" * 43

    def shapes(vmid: int) -> tuple[dict, dict]:
        c = Checkout(lan.registry.vms.get(vmid), token, "lan")
        return presenters.checkout(c, "root"), presenters.seed_checkout(c, "root")

    vm = lan.registry.vms.get(lan_vm)
    out, seed = shapes(lan_vm)
    assert out == {
        "vmid": lan_vm,
        "ip": "10.251.1.23",
        "ssh": {"host": "10.251.1.23", "port": 22, "user": "root"},
        "reservation_id": token,
        "expires_at": None,
        "pool": "lan",
        "mac": vm.mac,
        "network": BRIDGE,
        "ssh_keys": [],
    }
    assert seed == {
        "IP": "10.251.1.23",
        "LoginID": "root",
        "LoginPassword": "",
        "ReservationID": token,
        "Port": 22,
        "VMID": lan_vm,
    }
    out, seed = shapes(fwd)
    port = lan.registry.vms.get(fwd).ssh_port
    assert out["ssh"]["port"] == port and out["network"] == "forward" and seed["Port"] == port
    out, seed = shapes(user)
    assert "ssh" not in out and out["network"] == "user" and seed["Port"] is None
    assert list(seed) == ["IP", "LoginID", "LoginPassword", "ReservationID", "Port", "VMID"]


def test_checking_out_a_lan_vm_over_http(tmp_path):
    pr = make_lan_pool_rig(tmp_path, size=2)
    try:
        r = requests.post(f"{pr.served.url}/vm/checkout", json={"pool": "lan"})
        assert r.status_code == 200, r.text
        body = r.json()
        vm = pr.rig.registry.vms.get(body["vmid"])
        planned = pr.rig.registry.addresses.of(vm.id)
        assert planned and planned.startswith("10.251.1.")
        assert body["ip"] == planned == vm.ip
        assert body["ssh"] == {"host": planned, "port": 22, "user": "root"}
        assert (body["mac"], body["network"]) == (vm.mac, BRIDGE)

        seed = requests.get(f"{pr.served.url}/vms/api/v1.0/checkout")
        assert seed.status_code == 200, seed.text
        got = seed.json()
        assert got["Port"] == 22 and got["IP"].startswith("10.251.1.") and got["IP"] != planned
    finally:
        pr.stop()


# -- GET /networks ---------------------------------------------------------------------


def test_networks_lists_each_hosts_mode_and_libvirt_networks_with_the_addresses(lan, api):
    lan.registry.hosts.record_discovery(LAN_PMID, up=True, reason=None, networks=[LIBVIRT_DEFAULT])
    vmid = create_on(lan, api, LAN_PMID)
    lan.registry.vms.record_address(vmid, "10.251.1.23", "lease")
    fwd = create_on(lan, api, FORWARD_PMID, "fwd")
    vm, fwd_vm = lan.registry.vms.get(vmid), lan.registry.vms.get(fwd)
    labels = {h.id: h.label for h in lan.registry.hosts.list()}

    r = api.get("/networks")
    assert r.status_code == 200
    nets = r.get_json()["networks"]
    assert [(n["pmid"], n["name"]) for n in nets] == [
        (LAN_PMID, BRIDGE),
        (LAN_PMID, "network:default"),
        (FORWARD_PMID, "forward"),
        (USER_PMID, "user"),
    ]
    assert nets[0] == {
        "pmid": LAN_PMID,
        "host": labels[LAN_PMID],
        "name": BRIDGE,
        "kind": "bridge",
        "bridge": "br0",
        "network": None,
        "subnet": "10.251.1.0/24",
        "gateway": "10.251.1.1",
        "plan": "10.251.1.20-10.251.1.29",
        "vms_use_it": True,
        "addresses": [
            {
                "vmid": vmid,
                "mac": vm.mac,
                "ip": "10.251.1.23",  # what the lease says, not what the plan gave
                "source": "lease",
                "planned": "10.251.1.20",
            }
        ],
    }
    assert nets[1] == {
        "pmid": LAN_PMID,
        "host": labels[LAN_PMID],
        "name": "network:default",
        "kind": "network",
        "bridge": "virbr0",
        "network": "default",
        "subnet": "192.168.122.0/24",  # libvirt's: the configuration says nothing of it
        "gateway": None,
        "plan": None,
        "vms_use_it": False,
        "addresses": [],
    }
    assert nets[2]["kind"] == "forward" and nets[2]["vms_use_it"] is True
    assert nets[2]["bridge"] is None and nets[2]["subnet"] is None
    assert nets[2]["addresses"] == [
        {"vmid": fwd, "mac": fwd_vm.mac, "ip": "127.0.0.5", "source": "forward", "planned": None}
    ]
    assert nets[3]["kind"] == "user" and nets[3]["addresses"] == []


def test_networks_pmid_keeps_one_host_and_an_unknown_one_is_404(lan, api):
    nets = api.get("/networks?pmid=2").get_json()["networks"]
    assert [(n["pmid"], n["name"], n["kind"]) for n in nets] == [(2, "forward", "forward")]
    r = api.get("/networks?pmid=99")
    assert r.status_code == 404 and r.get_json() == {"error": "pmid 99 does not exist"}
    r = api.get("/networks?pmid=x")
    assert r.status_code == 400 and "positive integer" in r.get_json()["error"]


def test_the_configured_subnet_wins_and_vms_on_a_former_network_are_listed(tmp_path):
    rig = rig_with(tmp_path, {**LAN, "network:default": {"subnet": "192.168.200.0/24"}})
    try:
        app = create_app(rig.services)
        api = app.test_client()
        vmid = create_on(rig, api, LAN_PMID)
        # the host now gives its VMs libvirt's default network; the VM stays on br0
        rig.registry.hosts.record_discovery(
            LAN_PMID,
            up=True,
            reason=None,
            network="network:default",
            networks=[LIBVIRT_DEFAULT],
        )
        nets = api.get(f"/networks?pmid={LAN_PMID}").get_json()["networks"]
        assert [(n["name"], n["vms_use_it"]) for n in nets] == [
            ("network:default", True),
            (BRIDGE, False),
        ]
        assert nets[0]["subnet"] == "192.168.200.0/24" and nets[0]["bridge"] == "virbr0"
        assert [a["vmid"] for a in nets[1]["addresses"]] == [vmid]
        assert nets[1]["addresses"][0]["ip"] is None
        assert nets[1]["addresses"][0]["planned"] == "10.251.1.20"
    finally:
        rig.stop()


# -- /status -----------------------------------------------------------------------------


def test_status_counts_per_network_the_vms_with_an_address_and_those_waiting(lan, api):
    labels = {h.id: h.label for h in lan.registry.hosts.list()}

    def networks() -> dict:
        return api.get("/status").get_json()["networks"]

    assert networks() == {
        BRIDGE: {
            "kind": "bridge",
            "hosts": [labels[LAN_PMID]],
            "vms": 0,
            "waiting": 0,
            "plan": {"size": 10, "free": 10},
        },
        "forward": {
            "kind": "forward",
            "hosts": [labels[FORWARD_PMID]],
            "vms": 0,
            "waiting": 0,
            "plan": None,
        },
        "user": {
            "kind": "user",
            "hosts": [labels[USER_PMID]],
            "vms": 0,
            "waiting": 0,
            "plan": None,
        },
    }
    first = create_on(lan, api, LAN_PMID, "a")
    create_on(lan, api, LAN_PMID, "b")
    create_on(lan, api, FORWARD_PMID, "c")
    create_on(lan, api, USER_PMID, "d")
    got = networks()
    assert got[BRIDGE] == {
        "kind": "bridge",
        "hosts": [labels[LAN_PMID]],
        "vms": 0,
        "waiting": 2,
        "plan": {"size": 10, "free": 8},
    }
    assert (got["forward"]["vms"], got["forward"]["waiting"]) == (1, 0)
    assert (got["user"]["vms"], got["user"]["waiting"]) == (0, 0)
    # what the address watcher does once it sees the first one's address
    lan.registry.vms.record_address(first, "10.251.1.20", "agent")
    lan.registry.vms.transition(first, VmState.ACTIVE, expect=[VmState.BUILDING])
    assert (networks()[BRIDGE]["vms"], networks()[BRIDGE]["waiting"]) == (1, 1)
    assert api.get(f"/vm/destroy?vmid={first}").get_json() == {"status": 1}
    assert networks()[BRIDGE]["plan"] == {"size": 10, "free": 9}


def test_vm_row_shows_the_address_with_its_source_and_the_ssh_command(lan, api):
    vmid = create_on(lan, api, LAN_PMID)
    lan.registry.vms.record_address(vmid, "10.251.1.23", "lease")
    row = presenters.vm_row(
        lan.registry.vms.get(vmid),
        "root",
        host_names={},
        type_names={},
        image_names={},
        now=datetime.now(UTC),
    )
    assert row["address"] == "10.251.1.23 (lease)"
    assert row["ssh_command"] == "ssh root@10.251.1.23"
    fwd = lan.registry.vms.get(create_on(lan, api, FORWARD_PMID, "fwd"))
    assert presenters.ssh_command(presenters.ssh(fwd, "root")) == (
        f"ssh -p {fwd.ssh_port} root@127.0.0.5"
    )
