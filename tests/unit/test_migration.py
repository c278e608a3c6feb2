"""live_migrate's checks and destination XML, on libvirt's test driver (which has no
migration of its own: the live move itself is tests/integration/test_migration_rig.py)."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from orchestrator.errors import HypervisorError
from orchestrator.hypervisor.migration import _dest_xml, _disk_moves, live_migrate
from orchestrator.hypervisor.xml import safe_fromstring

UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"  # test:///default's running domain "test"

DOMAIN = f"""<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>fabric-vm-7</name><uuid>{UUID}</uuid>
  <memory unit='MiB'>128</memory><vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/home/pm1/pool/vm-7.qcow2'/>
      <backingStore type='file'><format type='qcow2'/>
        <source file='/home/pm1/pool/image-1.qcow2'/></backingStore>
      <target dev='vda' bus='virtio'/></disk>
    <serial type='file'><source path='/home/pm1/pool/vm-7.console.log'/><target port='0'/></serial>
    <console type='file'><source path='/home/pm1/pool/vm-7.console.log'/>
      <target type='serial' port='0'/></console>
  </devices>
</domain>"""


@pytest.fixture
def conns(tmp_path: Path):
    src = libvirt.open("test:///default")
    node = tmp_path / "node.xml"
    node.write_text(
        "<node><cpu><mhz>2000</mhz><model>x86_64</model><active>2</active>"
        "<nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads>"
        "</cpu><memory>2097152</memory></node>"
    )
    dst = libvirt.open(f"test://{node}")
    yield src, dst
    src.close()
    dst.close()


def test_dest_xml_rewrites_disks_and_files_next_to_them_and_keeps_the_identity():
    paths = {
        "/home/pm1/pool/vm-7.qcow2": "/home/pm2/pool/vm-7.qcow2",
        "/home/pm1/pool/image-1.qcow2": "/home/pm2/pool/image-1.qcow2",
    }
    root = safe_fromstring(DOMAIN)

    class Dom:
        def blockInfo(self, path: str) -> list[int]:  # noqa: N802 (libvirt's name)
            return [1 << 30, 0, 0]

    moves = _disk_moves(Dom(), DOMAIN, paths)  # type: ignore[arg-type]
    assert [(m.target_dev, m.target_path, m.target_backing, m.capacity) for m in moves] == [
        ("vda", "/home/pm2/pool/vm-7.qcow2", "/home/pm2/pool/image-1.qcow2", 1 << 30)
    ]
    out = safe_fromstring(_dest_xml(DOMAIN, paths, moves))
    assert out.findtext("uuid") == root.findtext("uuid") == UUID
    assert out.findtext("name") == "fabric-vm-7"
    assert out.find("./devices/disk/source").get("file") == "/home/pm2/pool/vm-7.qcow2"
    assert out.find("./devices/disk/backingStore") is None  # the target's image says
    for kind in ("serial", "console"):
        src = out.find(f"./devices/{kind}/source").get("path")
        assert src == "/home/pm2/pool/vm-7.console.log"


def test_a_forwarded_guest_is_refused():
    fwd = DOMAIN.replace(
        "</devices>",
        "</devices><qemu:commandline><qemu:arg value='-netdev'/>"
        "<qemu:arg value='user,id=n0,hostfwd=tcp:10.251.254.2:22022-:22'/></qemu:commandline>",
    )
    with pytest.raises(HypervisorError, match="forwarded to its host's own address"):
        _dest_xml(fwd, {}, [])


def test_unmapped_disk_unknown_domain_and_a_taken_uuid_are_refused_source_untouched(conns):
    src, dst = conns
    kw = {"migrate_address": "10.251.252.2", "timeout": 5}
    with pytest.raises(
        HypervisorError, match="no target path given for the disk /guest/diskimage1"
    ):
        live_migrate(src, dst, UUID, target_disk_paths={}, **kw)
    with pytest.raises(HypervisorError, match="is not on the source host"):
        live_migrate(src, dst, "11111111-2222-3333-4444-555555555555", target_disk_paths={}, **kw)
    dst.defineXML(DOMAIN.replace("type='qemu'", "type='test'", 1))
    with pytest.raises(HypervisorError, match="already has a domain with UUID"):
        live_migrate(src, dst, UUID, target_disk_paths={"/guest/diskimage1": "/p/d"}, **kw)
    assert dst.lookupByUUIDString(UUID).name() == "fabric-vm-7"  # not touched
    assert src.lookupByUUIDString(UUID).isActive()
