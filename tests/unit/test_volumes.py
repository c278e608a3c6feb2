"""Block storage on libvirt's test:// driver: every call and every error."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from orchestrator.config import config_from_dict
from orchestrator.errors import ConfigError
from orchestrator.fabric import host_target
from orchestrator.hypervisor.xml import (
    RbdBackend,
    ceph_secret_xml,
    disk_targets,
    disk_xml,
    next_free_target,
    rbd_pool_xml,
)
from orchestrator.registry import VolumeRow
from orchestrator.volumes import Volumes


def conn_of(rig, pmid: int):  # noqa: ANN201
    return rig.driver.connection(host_target(rig.registry.hosts.get(pmid))).call(lambda c: c)


def pool_files(rig, pmid: int) -> set[str]:
    pool = conn_of(rig, pmid).storagePoolLookupByName("fabric")
    pool.refresh(0)
    return set(pool.listVolumes())


def new_vm(client) -> dict:
    vmid = client.get("/vm/create?name=v&instance_type=1&image_id=1").get_json()["vmid"]
    return client.get(f"/vm/query?vmid={vmid}").get_json()


def new_volume(client, size: int = 3, name: str = "data") -> int:
    r = client.get(f"/volume/create?name={name}&size={size}")
    assert r.status_code == 200, r.get_json()
    return r.get_json()["volumeid"]


def test_create_query_destroy_and_capacity(client, rig):
    vid = new_volume(client, 5, "test_volume")
    q = client.get(f"/volume/query?volumeid={vid}").get_json()
    assert {k: q[k] for k in ("volumeid", "name", "size", "status")} == {
        "volumeid": vid, "name": "test_volume", "size": 5, "status": "available",
    }  # fmt: skip
    assert "vmid" not in q
    pm = client.get(f"/pm/query?pmid={q['pmid']}").get_json()
    assert pm["capacity"]["disk"] - pm["free"]["disk"] == 5
    vol = rig.registry.volumes.get(vid)
    assert vol.vol_name in pool_files(rig, q["pmid"])
    assert client.get(f"/volume/destroy?volumeid={vid}").get_json() == {"status": 1}
    assert vol.vol_name not in pool_files(rig, q["pmid"])
    gone = client.get(f"/volume/query?volumeid={vid}")
    assert gone.status_code == 404
    assert gone.get_json() == {"error": f"volumeid : {vid} does not exist"}
    pm = client.get(f"/pm/query?pmid={q['pmid']}").get_json()
    assert pm["capacity"]["disk"] == pm["free"]["disk"]


@pytest.mark.parametrize(
    ("url", "status", "words"),
    [
        ("/volume/create?name=a&size=0", 400, "positive integer"),
        ("/volume/create?name=a&size=-3", 400, "positive integer"),
        ("/volume/create?name=a&size=abc", 400, "positive integer"),
        ("/volume/create?name=a&size=1.5", 400, "positive integer"),
        ("/volume/create?name=a&size=99999999", 400, "too large"),
        ("/volume/create?name=a", 400, "size is required"),
        ("/volume/create?size=1", 400, "name is required"),
        ("/volume/create?name=%3Cx%3E&size=1", 400, "name must"),
        ("/volume/create?name=big&size=500", 503, "disk filter removed 3 of 3 hosts"),
        ("/volume/destroy?volumeid=77", 404, "volumeid : 77 does not exist"),
        ("/volume/destroy?volumeid=x", 400, "positive integer"),
        ("/volume/attach?vmid=1&volumeid=77", 404, "does not exist"),
        ("/volume/attach?volumeid=1", 400, "vmid is required"),
        ("/volume/detach?volumeid=77", 404, "volumeid : 77 does not exist"),
        ("/volume/query?volumeid=-1", 400, "positive integer"),
    ],
)
def test_bad_input(client, url, status, words):
    r = client.get(url)
    assert r.status_code == status, r.get_json()
    assert r.is_json and words in r.get_json()["error"]
    body = r.get_json()
    if url.startswith("/volume/create"):
        assert body["volumeid"] == 0
    elif not url.startswith("/volume/query"):
        assert body["status"] == 0


def test_a_failed_create_leaves_no_half_made_volume(client, rig):
    before = {p: pool_files(rig, p) for p in (1, 2, 3)}
    client.get("/volume/create?name=big&size=500")
    assert rig.registry.volumes.list() == []
    assert {p: pool_files(rig, p) for p in (1, 2, 3)} == before
    assert rig.registry.claims.consistent() == []


def test_attach_detach_and_every_refusal(client, rig):
    vm = new_vm(client)
    vid = new_volume(client, 2)
    other = new_volume(client, 1, "second")
    assert client.get(f"/volume/attach?vmid=999&volumeid={vid}").status_code == 404
    r = client.get(f"/volume/attach?vmid={vm['vmid']}&volumeid={vid}")
    assert r.get_json() == {"status": 1}
    q = client.get(f"/volume/query?volumeid={vid}").get_json()
    assert q["status"] == "attached" and q["vmid"] == vm["vmid"] and q["device"] == "/dev/vdb"
    assert q["pmid"] == vm["pmid"]  # it was moved to the VM's host if it lived elsewhere
    dom = conn_of(rig, vm["pmid"]).lookupByUUIDString(rig.registry.vms.get(vm["vmid"]).uuid)
    disks = disk_targets(dom.XMLDesc(2))  # the persistent definition
    assert "vdb" in disks and disks["vdb"].endswith(rig.registry.volumes.get(vid).vol_name)
    # double attach
    r = client.get(f"/volume/attach?vmid={vm['vmid']}&volumeid={vid}")
    assert r.status_code == 409 and "already attached" in r.get_json()["error"]
    # the next one is the next free virtio disk
    assert client.get(f"/volume/attach?vmid={vm['vmid']}&volumeid={other}").get_json() == {
        "status": 1
    }
    assert client.get(f"/volume/query?volumeid={other}").get_json()["device"] == "/dev/vdc"
    # destroy while attached
    r = client.get(f"/volume/destroy?volumeid={vid}")
    assert r.status_code == 409 and "detach it first" in r.get_json()["error"]
    assert client.get(f"/volume/detach?volumeid={vid}").get_json() == {"status": 1}
    q = client.get(f"/volume/query?volumeid={vid}").get_json()
    assert q["status"] == "available" and "vmid" not in q
    assert "vdb" not in disk_targets(dom.XMLDesc(2))
    r = client.get(f"/volume/detach?volumeid={vid}")
    assert r.status_code == 409 and "not attached" in r.get_json()["error"]
    assert client.get(f"/volume/destroy?volumeid={vid}").get_json() == {"status": 1}


def test_attach_to_a_stopped_vm_is_refused(client, rig):
    vm = new_vm(client)
    vid = new_volume(client, 1)
    dom = conn_of(rig, vm["pmid"]).lookupByUUIDString(rig.registry.vms.get(vm["vmid"]).uuid)
    dom.destroy()  # powered off behind the fabric's back
    r = client.get(f"/volume/attach?vmid={vm['vmid']}&volumeid={vid}")
    assert r.status_code == 409 and "not running" in r.get_json()["error"]
    assert client.get(f"/volume/query?volumeid={vid}").get_json()["status"] == "available"


def test_attaching_moves_a_volume_to_the_vms_host(client, rig):
    vm = new_vm(client)
    vol = rig.fabric.registry.volumes.get(new_volume(client, 2))
    target_host = 1 if vm["pmid"] != 1 else 2
    # put the volume on another host than the VM's
    vols = rig.services.volumes
    moved = vols.create("elsewhere", 2, host_id=target_host)
    assert moved.host_id != vm["pmid"]
    r = client.get(f"/volume/attach?vmid={vm['vmid']}&volumeid={moved.id}")
    assert r.get_json() == {"status": 1}
    after = rig.registry.volumes.get(moved.id)
    assert after.host_id == vm["pmid"]
    assert after.vol_name in pool_files(rig, vm["pmid"])
    assert after.vol_name not in pool_files(rig, target_host)
    assert rig.registry.claims.consistent() == []
    assert vol.id != moved.id


def test_destroying_a_vm_leaves_its_volumes_available_with_their_data(client, rig):
    vm = new_vm(client)
    vid = new_volume(client, 1)
    client.get(f"/volume/attach?vmid={vm['vmid']}&volumeid={vid}")
    assert client.get(f"/vm/destroy?vmid={vm['vmid']}").get_json() == {"status": 1}
    q = client.get(f"/volume/query?volumeid={vid}").get_json()
    assert q["status"] == "available" and "vmid" not in q
    assert rig.registry.volumes.get(vid).vol_name in pool_files(rig, q["pmid"])


def test_state_survives_a_restart_and_is_reconciled_with_the_pools(client, rig):
    vm = new_vm(client)
    kept = new_volume(client, 1, "kept")
    lost = new_volume(client, 1, "lost")
    client.get(f"/volume/attach?vmid={vm['vmid']}&volumeid={kept}")
    lost_row = rig.registry.volumes.get(lost)
    pool = conn_of(rig, lost_row.host_id).storagePoolLookupByName("fabric")
    pool.storageVolLookupByName(lost_row.vol_name).delete(0)  # behind our back
    services = rig.restart()
    report = rig.report.volumes
    assert report["missing"] == [lost]
    assert rig.registry.volumes.get(lost).status == "error"
    k = rig.registry.volumes.get(kept)
    assert (k.status, k.vm_id, k.target) == ("attached", vm["vmid"], "vdb")
    # an errored volume can still be destroyed
    services.volumes.destroy(lost)


def test_rbd_xml_keeps_the_key_out_and_names_the_secret():
    rbd = RbdBackend(
        "ceph1",
        "libvirt",
        ("10.0.0.1:6789", "10.0.0.2"),
        "fab",
        "1b2f1e36-7d3a-4c36-9d2b-6a0cfe7e0c41",
    )
    disk = disk_xml("vdb", rbd=rbd, rbd_image="volume-x-1")
    assert 'protocol="rbd"' in disk and "libvirt/volume-x-1" in disk
    assert "1b2f1e36-7d3a-4c36-9d2b-6a0cfe7e0c41" in disk and 'port="6789"' in disk
    pool = rbd_pool_xml(rbd)
    assert "<name>fabric-rbd-ceph1</name>" in pool and 'type="ceph"' in pool
    secret = ceph_secret_xml(rbd)
    assert 'private="yes"' in secret and "<value>" not in secret


def test_storage_config_errors(tmp_path, rig):
    key = tmp_path / "ceph.key"
    key.write_text("QVFE...==\n")
    good = {
        "rbd": {"ceph1": {"pool": "p", "monitors": ["m:6789"], "user": "u",
                          "secret_uuid": "1b2f1e36-7d3a-4c36-9d2b-6a0cfe7e0c41",
                          "key_file": str(key)}},
        "hosts": {"root@10.0.0.5": "rbd:ceph1", "root@10.0.0.6": "dir"},
    }  # fmt: skip
    storage = storage_config(good)
    assert storage.backends["ceph1"].monitors == ("m:6789",)
    assert storage.hosts["root@10.0.0.5"] == "rbd:ceph1"
    assert storage.keys == {"ceph1": b"QVFE...=="}  # read from key_file at load
    assert "QVFE" not in repr(storage)
    vols = Volumes(rig.registry, rig.driver, rig.services.scheduler, rig.services.hosts, storage)
    assert vols.rbd["ceph1"].libvirt_pool == "fabric-rbd-ceph1"
    assert vols.backend_of("root@10.0.0.5") == "rbd:ceph1" and vols.backend_of("x") == "dir"
    with pytest.raises(
        ConfigError, match=r"^fabric.yaml: storage\.hosts\.h: 'rbd:nope' names no storage\.rbd "
    ):
        storage_config({"hosts": {"h": "rbd:nope"}})
    with pytest.raises(ConfigError, match=r"storage\.hosts\.h: must be dir or rbd:NAME, got 'lvm'"):
        storage_config({"hosts": {"h": "lvm"}})
    with pytest.raises(ConfigError) as e:
        storage_config({"rbd": {"x": {"pool": "p"}}})
    for key in ("monitors", "user", "secret_uuid", "key_file"):
        assert f"fabric.yaml: storage.rbd.x.{key}: missing" in str(e.value)
    with pytest.raises(ConfigError, match=r"storage\.rbd\.ceph1\.key_file: /nope does not exist"):
        storage_config({"rbd": {"ceph1": {**good["rbd"]["ceph1"], "key_file": "/nope"}}})
    with pytest.raises(ConfigError, match=r"storage\.rbd\.ceph1\.monitors: must be a non-empty"):
        storage_config({"rbd": {"ceph1": {**good["rbd"]["ceph1"], "monitors": []}}})
    with pytest.raises(ConfigError, match=r"storage\.rbd\.ceph1\.secret_uuid: must be a UUID"):
        storage_config({"rbd": {"ceph1": {**good["rbd"]["ceph1"], "secret_uuid": "x"}}})
    with pytest.raises(ConfigError, match=r"storage\.lvm: unknown setting \(valid: rbd, hosts\)"):
        storage_config({"lvm": {}})
    (tmp_path / "empty.key").write_text("\n")
    with pytest.raises(ConfigError, match=r"storage\.rbd\.ceph1\.key_file: .*empty\.key is empty"):
        storage_config(
            {"rbd": {"ceph1": {**good["rbd"]["ceph1"], "key_file": str(tmp_path / "empty.key")}}}
        )


def storage_config(storage):  # noqa: ANN001, ANN201
    return config_from_dict({"storage": storage}, "fabric.yaml").storage


def test_next_free_target():
    assert next_free_target({"vda"}) == "vdb"
    assert next_free_target({"vda", "vdb", "vdd"}) == "vdc"
    assert next_free_target({f"vd{c}" for c in "abcdefghijklmnopqrstuvwxyz"}) is None


def test_a_domain_without_a_free_disk_name_is_a_409_from_the_driver(client, rig):
    # disks the registry does not know of (attached by hand): the driver's own check
    from orchestrator.errors import Conflict

    vm = new_vm(client)
    host = rig.registry.hosts.get(vm["pmid"])
    uuid = rig.registry.vms.get(vm["vmid"]).uuid
    for i in range(25):
        rig.driver.attach_volume(host_target(host), uuid, path=f"/fabric-pool/by-hand-{i}")
    with pytest.raises(Conflict, match=r"^the VM has no free disk name left: vdb\.\.vdz"):
        rig.driver.attach_volume(host_target(host), uuid, path="/fabric-pool/one-more")


def test_a_dead_servers_half_done_volume_work_is_finished_from_what_libvirt_shows(client, rig):
    from orchestrator.registry import Registry
    from tests.unit.test_cluster import stop_beating

    dead = Registry(rig.db_url)
    dead.cluster.register("elsewhere", 1)
    live = Registry(rig.db_url)
    live.cluster.register("elsewhere", 2)
    vm = new_vm(client)
    # attached in libvirt, but the server died before the registry said so
    done = new_volume(client, 1, "done")
    client.get(f"/volume/attach?vmid={vm['vmid']}&volumeid={done}")
    with dead.db.tx() as s:  # (attached -> attaching is no transition the fabric makes)
        s.execute(
            update(VolumeRow)
            .where(VolumeRow.id == done)
            .values(status="attaching", target=None, owner=dead.cluster.server_id)
        )
    # the server died before libvirt attached anything
    never = new_volume(client, 1, "never")
    dead.volumes.transition(never, "attaching", expect=["available"], vm_id=vm["vmid"])
    # the server died half-way through a create: the claim must come back
    half = dead.volumes.claim(1, name="half", size=2)
    used = rig.registry.hosts.get(1).disk_used
    # a live server's attach is in flight: not ours to touch
    busy = new_volume(client, 1, "busy")
    live.volumes.transition(busy, "attaching", expect=["available"], vm_id=vm["vmid"])
    stop_beating(dead)
    report = rig.services.volumes.reconcile()
    assert sorted(report["finished"]) == sorted([done, never, half.id])
    d = rig.registry.volumes.get(done)
    assert (d.status, d.vm_id, d.target, d.owner) == ("attached", vm["vmid"], "vdb", None)
    n = rig.registry.volumes.get(never)
    assert (n.status, n.vm_id, n.owner) == ("available", None, None)
    assert rig.registry.volumes.list(host_id=1) == [
        v for v in rig.registry.volumes.list(host_id=1) if v.id != half.id
    ]
    assert rig.registry.hosts.get(1).disk_used == used - 2
    b = rig.registry.volumes.get(busy)
    assert (b.status, b.owner) == ("attaching", live.cluster.server_id)


def test_the_25th_volume_is_the_last_and_the_26th_a_409(client, rig):
    # vda is the root disk; vdb..vdz are 25 names
    vm = new_vm(client)
    devices = []
    for i in range(25):
        vid = new_volume(client, 1, f"d{i}")
        r = client.get(f"/volume/attach?vmid={vm['vmid']}&volumeid={vid}")
        assert r.get_json() == {"status": 1}, (i, r.get_json())
        devices.append(client.get(f"/volume/query?volumeid={vid}").get_json()["device"])
    assert devices[0] == "/dev/vdb" and devices[-1] == "/dev/vdz"
    extra = new_volume(client, 1, "one-too-many")
    r = client.get(f"/volume/attach?vmid={vm['vmid']}&volumeid={extra}")
    assert r.status_code == 409, r.get_json()
    assert r.get_json()["error"] == (
        f"vmid {vm['vmid']} has no free disk name left: vdb..vdz (25 volumes) are all in use"
    )
    assert client.get(f"/volume/query?volumeid={extra}").get_json()["status"] == "available"


def test_every_host_failing_a_volume_create_is_a_502(client, rig, monkeypatch):
    from orchestrator.errors import HypervisorError

    def refuse(host, name, size, rbd):  # noqa: ANN001, ANN202, ARG001
        raise HypervisorError(f"host {host.label}: cannot open directory '/p'")

    monkeypatch.setattr(rig.driver, "create_volume", refuse)
    r = client.get("/volume/create?name=v&size=1")
    assert r.status_code == 502, r.get_json()
    assert r.get_json()["error"].startswith("could not create the volume: ")
