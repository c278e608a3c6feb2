"""Reading the physical machines file again while serving: the admin API
(``POST /pm/reload``) and SIGHUP to the real launcher, on test:// hosts."""

from __future__ import annotations

import signal

import pytest
import requests

from orchestrator.access import Principal, Role
from orchestrator.errors import Forbidden, NoValidHost
from orchestrator.hosts import host_target
from orchestrator.model import HostStatus
from tests.conftest import Rig, make_rig, wait_for, write_node
from tests.unit.test_served import Server

SMALL = [{"cpus": 2, "ram": 1024}, {"cpus": 2, "ram": 1024}]
GIVE_UP = 120  # seconds: only ends a wait for what will never come


@pytest.fixture
def rig(tmp_path):
    r = make_rig(tmp_path, SMALL, config={"scheduler": {"policy": "first-fit"}})
    yield r
    r.stop()


def add_host(rig: Rig, name: str, cpus: int, ram: int, extra: str = "") -> str:
    node = write_node(rig.dir / f"{name}.xml", cpus, ram)
    line = f"uri=test://{node} {extra}".rstrip()
    rig.pm_file.write_text(rig.pm_file.read_text() + line + "\n")
    return f"test://{node}"


def test_reload_adds_a_host_and_placement_uses_it(rig, client):
    # the large type (4 CPUs, 2 GB) fits on no host yet
    r = client.post("/vm/create", json={"name": "big", "instance_type": 3, "image_id": 1})
    assert r.status_code == 503
    uri = add_host(rig, "node3", 8, 8192)
    r = client.post("/pm/reload")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["added"] == [3] and body["removed"] == [] and body["changed"] == []
    assert body["discovered"] == [{"pmid": 3, "up": True}]
    host = rig.registry.hosts.get(3)
    assert host.uri == uri and host.status == HostStatus.UP and host.cpu_total > 0
    assert client.get("/pm/list").get_json() == {"pmids": [1, 2, 3]}
    r = client.post("/vm/create", json={"name": "big", "instance_type": 3, "image_id": 1})
    assert r.status_code == 200, r.get_json()
    assert rig.registry.vms.get(r.get_json()["vmid"]).host_id == 3
    [ev] = rig.registry.events.list(kind="pm.reload")
    assert ev.detail["added"] == [3]


def test_a_broken_line_changes_nothing_and_names_file_and_line(rig, client):
    before = rig.pm_file.read_text()
    add_host(rig, "node3", 8, 8192)
    rig.pm_file.write_text(rig.pm_file.read_text() + "root@ port=22\n")
    r = client.post("/pm/reload")
    assert r.status_code == 400
    assert r.get_json()["error"].startswith(f"{rig.pm_file}:4: ")
    assert client.get("/pm/list").get_json() == {"pmids": [1, 2]}  # not even node3
    assert len(rig.registry.hosts.list(include_retired=True)) == 2
    rig.pm_file.write_text(before)


def test_removing_a_host_with_vms_or_volumes_is_refused_and_an_empty_one_goes(rig, client):
    vm = rig.fabric.create_vm("a", 1, 1)
    assert vm.host_id == 1
    lines = rig.pm_file.read_text().splitlines()
    rig.pm_file.write_text(lines[1] + "\n")  # host 1 leaves the file
    r = client.post("/pm/reload")
    assert r.status_code == 409
    err = r.get_json()["error"]
    assert "pmid 1" in err and f"vms {vm.id}" in err and "nothing was changed" in err
    assert client.get("/pm/list").get_json() == {"pmids": [1, 2]}
    rig.fabric.destroy_vm(vm.id)
    vol = rig.services.volumes.create("v", 1, host_id=1)
    r = client.post("/pm/reload")
    assert r.status_code == 409 and f"volumes {vol.id}" in r.get_json()["error"]
    rig.services.volumes.destroy(vol.id)
    r = client.post("/pm/reload")
    assert r.status_code == 200 and r.get_json()["removed"] == [1]
    assert client.get("/pm/list").get_json() == {"pmids": [2]}
    # no VM is placed on the host that left
    for i in range(2):
        r = client.post("/vm/create", json={"name": f"n{i}", "instance_type": 1, "image_id": 1})
        if r.status_code == 200:
            assert rig.registry.vms.get(r.get_json()["vmid"]).host_id == 2
    # it comes back under its old pmid when its line does
    rig.pm_file.write_text("\n".join(lines) + "\n")
    assert client.post("/pm/reload").get_json()["added"] == [1]


def test_a_changed_line_updates_the_host(rig, client):
    lines = rig.pm_file.read_text().splitlines()
    lines[0] += " cpu=16"
    rig.pm_file.write_text("\n".join(lines) + "\n")
    body = client.post("/pm/reload").get_json()
    assert body["changed"] == [1] and body["added"] == [] and body["unchanged"] == 1
    host = rig.registry.hosts.get(1)
    assert host.cpu_override == 16 and host.phys_cpu == 16
    # now the large type fits on host 1 (16 CPUs x 4)
    r = client.post("/vm/create", json={"name": "big", "instance_type": 3, "image_id": 1})
    assert r.status_code == 503  # RAM: still 1 GB
    lines[0] += " ram=8192"
    rig.pm_file.write_text("\n".join(lines) + "\n")
    assert client.post("/pm/reload").get_json()["changed"] == [1]
    r = client.post("/vm/create", json={"name": "big", "instance_type": 3, "image_id": 1})
    assert r.status_code == 200 and rig.registry.vms.get(r.get_json()["vmid"]).host_id == 1


def test_reload_is_for_admins(rig):
    with pytest.raises(Forbidden):
        rig.services.reloader.reload(by=Principal("alice", Role.USER))


def test_sighup_reloads_and_a_bad_file_is_logged_with_its_line(tmp_path):
    srv = Server(tmp_path, [(2, 1024)])
    srv.start()
    try:
        node = write_node(tmp_path / "node9.xml", 8, 8192)
        srv.pm.write_text(srv.pm.read_text() + "root@ port=22\n")
        srv.proc.send_signal(signal.SIGHUP)
        log = tmp_path / "server.log"
        # the waits only give up on a reload that never comes (a busy machine is slow)
        wait_for(lambda: "not reloaded" in log.read_text(), timeout=GIVE_UP, interval=0.1)
        assert f"{srv.pm}:2: " in log.read_text()
        assert requests.get(f"{srv.url}/pm/list", timeout=GIVE_UP).json() == {"pmids": [1]}
        lines = srv.pm.read_text().splitlines()
        srv.pm.write_text(f"{lines[0]}\nuri=test://{node}\n")
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: requests.get(f"{srv.url}/pm/list", timeout=GIVE_UP).json()["pmids"] == [1, 2],
            timeout=GIVE_UP,
            interval=0.1,
        )
        q = requests.get(f"{srv.url}/pm/query", params={"pmid": 2}, timeout=GIVE_UP).json()
        assert q["pmid"] == 2
    finally:
        assert srv.stop() == 0
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_client_reload_hosts(rig, capsys):
    from orchestrator import client
    from tests.conftest import serve

    served = serve(rig.services)
    try:
        add_host(rig, "node3", 8, 8192)
        assert client.main(["--url", served.url, "reload-hosts"]) == 0
        out = capsys.readouterr().out
        assert "added pmids 3" in out and "removed none" in out
        rig.pm_file.write_text(rig.pm_file.read_text() + "bad line here\n")
        assert client.main(["--url", served.url, "reload-hosts"]) == 1
        assert f"{rig.pm_file}:4:" in capsys.readouterr().err
    finally:
        served.stop()


def test_a_second_server_on_the_registry_places_on_a_host_another_reloaded(rig):
    """Server B shares A's registry and reads its hosts from it: once A reloads a
    file with a new host, B's scheduler sees it at its next host-cache refresh, with no
    reload of its own (B's start-up file is older: the host is not in it)."""
    from orchestrator.config import config_from_dict
    from orchestrator.hypervisor.driver import LibvirtDriver
    from orchestrator.registry import Registry
    from orchestrator.services import build_services

    cfg = config_from_dict({"state_dir": str(rig.dir / "b"), "cluster": {"host_cache": 0}})
    b_registry = Registry(rig.db_url)
    b = build_services(cfg, b_registry, rig.inventory(), driver=LibvirtDriver())
    try:
        with pytest.raises(NoValidHost):
            b.fabric.create_vm("big", 3, 1)
        add_host(rig, "node3", 8, 8192)
        assert rig.services.reloader.reload()["added"] == [3]
        vm = b.fabric.create_vm("big", 3, 1)  # B places on the host A added
        assert vm.host_id == 3
        assert [d.vm_id for d in b.driver.domains(host_target(b.registry.hosts.get(3)))] == [vm.id]
    finally:
        b.stopping.set()
        b.driver.close()
        b_registry.close()


def test_a_new_uri_is_another_host(rig, client):
    lines = rig.pm_file.read_text().splitlines()
    node = write_node(rig.dir / "moved.xml", 2, 1024)
    rig.pm_file.write_text(f"uri=test://{node}\n{lines[1]}\n")
    body = client.post("/pm/reload").get_json()
    assert body["removed"] == [1] and body["added"] == [3] and body["changed"] == []
