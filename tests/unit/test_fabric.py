"""The fabric's use cases on libvirt's test:// driver: real libvirt calls, a real SQLite file."""

from __future__ import annotations

import libvirt
import pytest

from orchestrator.errors import Conflict, ImageUnavailable, NotFound, NoValidHost
from orchestrator.fabric import host_target
from orchestrator.hypervisor.xml import METADATA_NS, metadata_element
from orchestrator.model import VmState
from tests.conftest import make_rig


def lv(rig, pmid: int) -> libvirt.virConnect:
    """The libvirt connection the fabric uses for host ``pmid`` (the host's real state)."""
    host = rig.registry.hosts.get(pmid)
    return rig.driver.connection(host_target(host)).call(lambda c: c)


def domain_names(rig, pmid: int) -> set[str]:
    return {d.name() for d in lv(rig, pmid).listAllDomains(0)}


def volume_names(rig, pmid: int) -> set[str]:
    pool = lv(rig, pmid).storagePoolLookupByName("fabric")
    pool.refresh(0)
    return set(pool.listVolumes())


def test_discovery_reads_real_capacity_and_applies_ratios(rig):
    hosts = rig.registry.hosts.list()
    assert [h.status for h in hosts] == ["up", "up", "up"]
    assert [(h.phys_cpu, h.phys_ram) for h in hosts] == [(2, 2048), (4, 4096), (8, 8192)]
    # default ratios: cpu 4.0, ram 1.0, disk 1.0; the test pool is 100 GB
    assert [(h.cpu_total, h.ram_total, h.disk_total) for h in hosts] == [
        (8, 2048, 100),
        (16, 4096, 100),
        (32, 8192, 100),
    ]


def test_file_overrides_win_over_libvirt(tmp_path):
    r = make_rig(tmp_path, [{"cpus": 8, "ram": 8192, "extra": {"cpu": 2, "ram": 1000, "disk": 7}}])
    h = r.registry.hosts.list()[0]
    assert (h.phys_cpu, h.phys_ram, h.phys_disk) == (2, 1000, 7)
    assert (h.cpu_total, h.ram_total, h.disk_total) == (8, 1000, 7)


def test_create_makes_a_running_domain_with_metadata_and_overlay_disk(rig):
    vm = rig.fabric.create_vm("web-1", 2, 1)
    assert vm.state == VmState.ACTIVE
    conn = lv(rig, vm.host_id)
    dom = conn.lookupByName(vm.domain_name)
    assert dom.isActive()
    assert dom.UUIDString() == vm.uuid
    meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
    assert f">{vm.id}<" in meta
    xml = dom.XMLDesc(0)
    assert vm.mac in xml
    assert "<memory unit='KiB'>1048576</memory>" in xml
    # The VM's files are named after its domain, which carries the installation id.
    assert vm.domain_name == f"fabric-{rig.registry.installation_id}-vm-{vm.id}"
    assert f"/fabric-pool/{vm.domain_name}.qcow2'" in xml
    assert f"/fabric-pool/{vm.domain_name}.console.log'" in xml
    vols = volume_names(rig, vm.host_id)
    assert f"{vm.domain_name}.qcow2" in vols
    assert any(v.startswith("image-1-") for v in vols)  # the staged base image


def test_destroy_removes_domain_definition_and_disk(rig):
    vm = rig.fabric.create_vm("gone", 1, 1)
    assert f"{vm.domain_name}.qcow2" in volume_names(rig, vm.host_id)
    rig.fabric.destroy_vm(vm.id)
    assert vm.domain_name not in domain_names(rig, vm.host_id)
    assert not [v for v in volume_names(rig, vm.host_id) if f"-vm-{vm.id}." in v]
    with pytest.raises(NotFound):
        rig.registry.vms.get(vm.id)
    h = rig.registry.hosts.get(vm.host_id)
    assert (h.cpu_used, h.ram_used, h.disk_used) == (0, 0, 0)


def test_destroy_of_a_domain_the_host_lost_still_succeeds(rig):
    vm = rig.fabric.create_vm("lost", 1, 1)
    dom = lv(rig, vm.host_id).lookupByName(vm.domain_name)
    dom.destroy()
    dom.undefine()
    rig.fabric.destroy_vm(vm.id)
    with pytest.raises(NotFound):
        rig.registry.vms.get(vm.id)


def test_image_is_staged_once_per_host(rig):
    a = rig.fabric.create_vm("a", 1, 1)
    b = rig.fabric.create_vm("b", 1, 1)
    assert a.host_id == b.host_id  # spread puts both on the biggest host
    vols = volume_names(rig, a.host_id)
    assert len([v for v in vols if v.startswith("image-1-")]) == 1
    assert rig.registry.staging.get(a.host_id, 1) is not None


def test_ids_are_never_reused(rig):
    first = rig.fabric.create_vm("a", 1, 1)
    rig.fabric.destroy_vm(first.id)
    second = rig.fabric.create_vm("b", 1, 1)
    assert second.id > first.id


def test_missing_image_leaves_nothing_behind(rig, tmp_path):
    (tmp_path / "images" / "alpine.qcow2").unlink()
    with pytest.raises(ImageUnavailable, match="alpine.qcow2 does not exist"):
        rig.fabric.create_vm("x", 1, 2)
    assert rig.registry.vms.list() == []
    assert rig.registry.claims.consistent() == []
    for h in rig.registry.hosts.list():
        assert (h.cpu_used, h.ram_used, h.disk_used) == (0, 0, 0)
        assert not any(n.startswith("fabric-") for n in domain_names(rig, h.id))
        assert not any("-vm-" in v for v in volume_names(rig, h.id))
    assert rig.registry.events.list(kind="vm.create_failed")


def test_failed_define_rolls_back_disk_and_claim_then_tries_another_host(rig):
    # A foreign domain squats the name the next VM will get on the biggest host:
    # defineXML fails there after the disk was made.
    next_id = 1
    name = f"fabric-{rig.registry.installation_id}-vm-{next_id}"
    squatter = (
        f"<domain type='test'><name>{name}</name><memory>1024</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    lv(rig, 3).defineXML(squatter)
    vm = rig.fabric.create_vm("retry", 1, 1)
    assert vm.host_id != 3
    assert vm.id == next_id + 1  # the failed attempt's id is not reused
    assert f"{name}.qcow2" not in volume_names(rig, 3)
    assert name in domain_names(rig, 3)  # the squatter is not ours: untouched
    h3 = rig.registry.hosts.get(3)
    assert (h3.cpu_used, h3.ram_used) == (0, 0)
    assert rig.registry.claims.consistent() == []


def test_no_valid_host_explains_itself(rig):
    # type 3 is 4 cpu / 2048 MB: the hosts' RAM (2048 + 4096 + 8192) fits exactly 7
    made = 0
    with pytest.raises(NoValidHost) as exc:
        for _ in range(20):
            rig.fabric.create_vm("huge", 3, 1)
            made += 1
    assert made == 7
    assert "no host can fit instance_type 3" in exc.value.message
    assert "ram filter removed 3 of 3 hosts (needs 2048 MB, most free 0 MB)" in exc.value.message
    for h in rig.registry.hosts.list():
        assert h.ram_used == h.ram_total


def test_unreachable_host_is_down_with_reason_and_others_serve(tmp_path):
    r = make_rig(tmp_path, [{"cpus": 4, "ram": 4096}])
    with r.registry.db.tx() as s:
        from orchestrator.registry import HostRow

        s.add(
            HostRow(
                key="test:///nonexistent/node.xml",
                label="ghost",
                uri="test:///nonexistent/node.xml",
                address=None,
            )
        )
    ghost = [h for h in r.registry.hosts.list() if h.label == "ghost"][0]
    assert r.services.discovery.discover_host(ghost) is False
    ghost = r.registry.hosts.get(ghost.id)
    assert ghost.status == "down" and "nonexistent" in ghost.reason
    vm = r.fabric.create_vm("ok", 1, 1)
    assert vm.host_id != ghost.id


def test_restart_keeps_everything_and_vms_stay_destroyable(rig):
    a = rig.fabric.create_vm("a", 1, 1)
    b = rig.fabric.create_vm("b", 2, 2)
    before = {h.id: (h.cpu_used, h.ram_used, h.disk_used) for h in rig.registry.hosts.list()}
    ids_before = (
        [h.id for h in rig.registry.hosts.list()],
        [i.id for i in rig.registry.inventory.images()],
    )
    fabric = rig.restart().fabric
    report = rig.report.vms
    assert report.vanished == [] and report.unknown_domains == []
    assert [h.id for h in rig.registry.hosts.list()], [
        i.id for i in rig.registry.inventory.images()
    ] == ids_before
    after = {h.id: (h.cpu_used, h.ram_used, h.disk_used) for h in rig.registry.hosts.list()}
    assert after == before
    assert rig.registry.vms.get(a.id).state == VmState.ACTIVE
    fabric.destroy_vm(b.id)
    assert b.domain_name not in domain_names(rig, b.host_id)


def test_reconcile_marks_vanished_and_reports_unknown_domains(rig):
    a = rig.fabric.create_vm("a", 1, 1)
    conn = lv(rig, a.host_id)
    dom = conn.lookupByName(a.domain_name)
    dom.destroy()
    dom.undefine()
    # a domain carrying our metadata that the registry never heard of
    import xml.etree.ElementTree as ET

    meta = ET.tostring(metadata_element(4242, "stray"), encoding="unicode")
    stray = (
        "<domain type='test'><name>stray</name><memory>1024</memory>"
        f"<metadata>{meta}</metadata><os><type>hvm</type></os></domain>"
    )
    conn.defineXML(stray)
    # another fabric's domain (another registry) on the same host is not ours to report
    other = ET.tostring(metadata_element(4243, "theirs", "0ther0ne"), encoding="unicode")
    conn.defineXML(
        "<domain type='test'><name>theirs</name><memory>1024</memory>"
        f"<metadata>{other}</metadata><os><type>hvm</type></os></domain>"
    )
    report = rig.services.reconciler.reconcile()
    assert report.vanished == [a.id]
    assert rig.registry.vms.get(a.id).state == VmState.VANISHED
    assert [d["vmid"] for d in report.unknown_domains] == [4242]
    assert report.unknown_domains[0]["domain"] == "stray"
    # a vanished VM can still be destroyed; its claim comes back
    rig.fabric.destroy_vm(a.id)
    assert rig.registry.hosts.get(a.host_id).cpu_used == 0


def test_reconcile_resumes_half_done_work(rig):
    done = rig.fabric.create_vm("done", 1, 1)
    # killed mid-create before the domain existed: a building VM with a claim
    half = rig.registry.vms.claim(3, name="half", tid=1, image_id=1, cpu=1, ram=512, disk=1)
    # killed mid-destroy: the row says deleting
    rig.registry.vms.transition(done.id, VmState.DELETING, expect=[VmState.ACTIVE])
    # reconciling while this server still works on them changes nothing
    assert rig.services.reconciler.reconcile().removed == []
    rig.registry.cluster.server_id = "restarted"  # a new process: the old one's work is orphaned
    report = rig.services.reconciler.reconcile()
    assert sorted(report.removed) == sorted([half.id, done.id])
    assert rig.registry.vms.list() == []
    assert done.domain_name not in domain_names(rig, done.host_id)
    assert all(h.cpu_used == 0 for h in rig.registry.hosts.list())


def test_destroy_refuses_a_vm_that_is_still_building(rig):
    half = rig.registry.vms.claim(1, name="half", tid=1, image_id=1, cpu=1, ram=512, disk=1)
    with pytest.raises(Conflict, match="building"):
        rig.fabric.destroy_vm(half.id)


@pytest.mark.parametrize(
    ("policy", "expected_host"),
    [("first-fit", 1), ("spread", 3), ("pack", 1), ("balanced", 3)],
)
def test_policy_is_chosen_by_configuration_only(tmp_path, policy, expected_host):
    r = make_rig(
        tmp_path,
        [{"cpus": 2, "ram": 2048}, {"cpus": 4, "ram": 4096}, {"cpus": 8, "ram": 8192}],
        config={"scheduler": {"policy": policy}},
    )
    vm = r.fabric.create_vm("p", 1, 1)
    assert vm.host_id == expected_host


def test_pack_fills_a_host_before_the_next(tmp_path):
    r = make_rig(
        tmp_path,
        [{"cpus": 4, "ram": 2048}, {"cpus": 4, "ram": 2048}],
        config={"scheduler": {"policy": "pack"}},
    )
    placed = [r.fabric.create_vm(f"v{i}", 1, 1).host_id for i in range(6)]
    assert placed == [1, 1, 1, 1, 2, 2]


def test_spread_alternates_between_equal_hosts(tmp_path):
    r = make_rig(
        tmp_path,
        [{"cpus": 4, "ram": 2048}, {"cpus": 4, "ram": 2048}],
        config={"scheduler": {"policy": "spread"}},
    )
    placed = [r.fabric.create_vm(f"v{i}", 1, 1).host_id for i in range(4)]
    assert placed == [1, 2, 1, 2]


def test_arch_filter_keeps_images_on_matching_hosts(tmp_path):
    img = tmp_path / "arm.qcow2"
    img.write_bytes(b"x")
    r = make_rig(
        tmp_path,
        [{"extra": {"arch": "x86_64"}}, {"extra": {"arch": "aarch64"}}],
        images=[f"{img} arch=aarch64"],
    )
    assert r.fabric.create_vm("arm", 1, 1).host_id == 2


def test_reconcile_starts_a_vm_that_was_stopped_behind_our_back(rig):
    vm = rig.fabric.create_vm("stopped", 1, 1)
    dom = lv(rig, vm.host_id).lookupByUUIDString(vm.uuid)
    dom.destroy()  # powered off, still defined
    report = rig.services.reconciler.reconcile()
    assert report.restarted == [vm.id]
    assert lv(rig, vm.host_id).lookupByUUIDString(vm.uuid).isActive()
    assert rig.registry.vms.get(vm.id).state == VmState.ACTIVE
