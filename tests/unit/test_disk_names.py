"""A VM's files in a host's pool carry the installation: two fabrics (two registries)
whose VMs share a host's pool never delete each other's disks, and a VM made before
the names carried the installation (``vm-<id>.qcow2``) is still cleaned up.

The shared host is real: a libvirt daemon's ``test:///default`` (tests/daemons.py),
which every client sees alike, so both fabrics' drivers reach one storage pool."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from orchestrator.config import config_from_dict
from orchestrator.fabric import host_target
from orchestrator.hypervisor.base import vm_file_names
from orchestrator.hypervisor.driver import LibvirtDriver
from orchestrator.inventory import load_inventory
from orchestrator.registry import Registry
from orchestrator.services import Services, build_services
from tests.conftest import DEFAULT_TYPES, fresh_db_url, make_rig
from tests.daemons import TestDaemons


def pool_volumes(conn: libvirt.virConnect) -> set[str]:
    pool = conn.storagePoolLookupByName("fabric")
    pool.refresh(0)
    return set(pool.listVolumes())


def conn_of(services: Services, pmid: int = 1) -> libvirt.virConnect:
    host = services.registry.hosts.get(pmid)
    return services.driver.connection(host_target(host)).call(lambda c: c)


def test_names_carry_the_installation():
    assert vm_file_names("ab12cd34", 7) == (
        "fabric-ab12cd34-vm-7.qcow2",
        "fabric-ab12cd34-vm-7.console.log",
    )
    assert vm_file_names(None, 7) == ("vm-7.qcow2", "vm-7.console.log")  # no registry


def test_a_create_and_destroy_leave_an_unnamed_legacy_disk_alone(tmp_path):
    """``vm-1.qcow2`` in the pool that no domain of this installation names (another
    installation's disk from before the rename) survives this installation's create
    and destroy of its own VM 1."""
    rig = make_rig(tmp_path, [{"cpus": 4, "ram": 4096}])
    try:
        conn = conn_of(rig.services)
        pool = conn.storagePoolLookupByName("fabric")
        pool.createXML("<volume><name>vm-1.qcow2</name><capacity>1024</capacity></volume>", 0)
        pool.createXML("<volume><name>vm-1.console.log</name><capacity>0</capacity></volume>", 0)
        vm = rig.fabric.create_vm("mine", 1, 1)
        assert vm.id == 1
        own = vm_file_names(rig.registry.installation_id, 1)
        assert {"vm-1.qcow2", "vm-1.console.log", own[0]} <= pool_volumes(conn)
        rig.fabric.destroy_vm(vm.id)
        vols = pool_volumes(conn)
        assert own[0] not in vols
        assert {"vm-1.qcow2", "vm-1.console.log"} <= vols
    finally:
        rig.stop()


def test_a_vm_made_before_the_rename_is_cleaned_up_by_what_its_domain_names(tmp_path):
    """The upgrade path: a domain whose disk and console are ``vm-<id>.*`` (what the
    fabric made before) loses them on destroy, because its definition names them."""
    rig = make_rig(tmp_path, [{"cpus": 4, "ram": 4096}])
    try:
        vm = rig.fabric.create_vm("old", 1, 1)
        conn = conn_of(rig.services)
        pool = conn.storagePoolLookupByName("fabric")
        own_disk, own_console = vm_file_names(rig.registry.installation_id, vm.id)
        # Make it look as the old fabric made it: its files under the old names.
        pool.storageVolLookupByName(own_disk).delete(0)
        legacy_disk, legacy_console = vm_file_names(None, vm.id)
        pool.createXML(f"<volume><name>{legacy_disk}</name><capacity>1024</capacity></volume>", 0)
        pool.createXML(f"<volume><name>{legacy_console}</name><capacity>0</capacity></volume>", 0)
        dom = conn.lookupByUUIDString(vm.uuid)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert own_disk in xml and own_console in xml
        conn.defineXML(xml.replace(own_disk, legacy_disk).replace(own_console, legacy_console))
        assert legacy_disk in conn.lookupByUUIDString(vm.uuid).XMLDesc(0)

        rig.fabric.destroy_vm(vm.id)
        vols = pool_volumes(conn)
        assert legacy_disk not in vols and legacy_console not in vols
        assert not [v for v in vols if v.startswith(("vm-", "fabric-"))]
    finally:
        rig.stop()


# -- two installations, one host ---------------------------------------------------


@pytest.fixture
def shared_host() -> Iterator[str]:
    """One libvirt daemon: a host both fabrics reach (its URI)."""
    with TestDaemons(1, os.environ.get("FABRIC_TEST_HOSTS_DIR", "/tmp")) as hosts:  # noqa: S108
        yield hosts.uris[0]


def fabric_on(tmp_path: Path, name: str, uri: str) -> Services:
    """A fabric with its own registry (so its own installation id) on host ``uri``."""
    d = tmp_path / name
    d.mkdir()
    pm = d / "physical_machines"
    pm.write_text(f"uri={uri} cpu=8 ram=8192 disk=50 network=user\n")
    image = d / "base.qcow2"
    image.write_bytes(b"QFI\xfb" + b"\0" * 60)
    images = d / "images"
    images.write_text(f"{image} name=base\n")
    types = d / "vm_types.json"
    types.write_text(json.dumps(DEFAULT_TYPES))
    cfg = config_from_dict({"state_dir": str(d / "state")})
    registry = Registry(fresh_db_url(d))
    services = build_services(
        cfg,
        registry,
        load_inventory(pm, images, types),
        driver=LibvirtDriver(connect_timeout=5, call_timeout=20),
        pm_file=pm,
    )
    services.start_up()
    return services


def test_two_installations_on_one_host_pool_keep_their_own_disks(tmp_path, shared_host):
    a = fabric_on(tmp_path, "a", shared_host)
    b = fabric_on(tmp_path, "b", shared_host)
    try:
        assert a.registry.installation_id != b.registry.installation_id
        va = a.fabric.create_vm("from-a", 1, 1)
        vb = b.fabric.create_vm("from-b", 1, 1)
        assert va.id == vb.id == 1  # each registry counts from 1: the same VM id
        conn = conn_of(a)
        disk_a = vm_file_names(a.registry.installation_id, 1)[0]
        disk_b = vm_file_names(b.registry.installation_id, 1)[0]
        # B's create did not replace A's disk: both are there, each domain on its own.
        assert {disk_a, disk_b} <= pool_volumes(conn)
        xml_a = conn.lookupByUUIDString(va.uuid).XMLDesc(0)
        xml_b = conn.lookupByUUIDString(vb.uuid).XMLDesc(0)
        assert disk_a in xml_a and disk_b not in xml_a
        assert disk_b in xml_b and disk_a not in xml_b

        b.fabric.destroy_vm(vb.id)
        vols = pool_volumes(conn)
        assert disk_b not in vols
        assert disk_a in vols  # A's VM keeps its disk
        assert conn.lookupByUUIDString(va.uuid).isActive()

        a.fabric.destroy_vm(va.id)
        assert not [v for v in pool_volumes(conn) if "-vm-" in v]
    finally:
        for s in (a, b):
            s.stopping.set()
            s.driver.close()
            s.registry.close()
