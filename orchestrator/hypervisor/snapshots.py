"""Snapshots of a domain (vmpooler's ``POST /vm/<hostname>/snapshot`` and revert):
libvirt's own, internal to the VM's qcow2 disk (with its memory when it runs), made
with ``virDomainSnapshotCreateXML`` and gone back to with
``virDomainRevertToSnapshot``. The domain is found by its UUID; the snapshot XML is
built with ElementTree."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from ..errors import NotFound
from .base import DriverBase
from .records import HostTarget
from .xml import safe_fromstring


def snapshot_xml(
    name: str, description: str | None = None, disks: dict[str, str] | None = None
) -> str:
    """``disks``: target -> ``internal`` or ``no`` (each disk's part in the snapshot)."""
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    if description:
        ET.SubElement(root, "description").text = description
    if disks:
        el = ET.SubElement(root, "disks")
        for target, mode in disks.items():
            ET.SubElement(el, "disk", name=target, snapshot=mode)
    return ET.tostring(root, encoding="unicode")


def disk_modes(domain_xml: str) -> dict[str, str]:
    """Which of a domain's disks an internal snapshot covers: its qcow2 disks (the
    VM's own); raw ones (volumes attached later) are left out, as qemu cannot keep a
    snapshot inside them."""
    modes: dict[str, str] = {}
    for disk in safe_fromstring(domain_xml).findall("devices/disk"):
        if disk.get("device", "disk") != "disk":
            continue
        target = disk.find("target")
        driver = disk.find("driver")
        if target is None or target.get("dev") is None:
            continue
        fmt = driver.get("type") if driver is not None else None
        modes[target.get("dev") or ""] = "internal" if fmt == "qcow2" else "no"
    return modes


class SnapshotsMixin(DriverBase):
    """The snapshot part of LibvirtDriver."""

    def create_snapshot(
        self, host: HostTarget, uuid: str, name: str, description: str | None = None
    ) -> str:
        """Snapshot the domain now as ``name``; returns the name libvirt kept."""

        def fn(conn: libvirt.virConnect) -> str:
            dom = conn.lookupByUUIDString(uuid)
            modes = disk_modes(dom.XMLDesc(0))
            # only when some disk is left out: a plain snapshot otherwise
            disks = modes if "no" in modes.values() else None
            xml = snapshot_xml(name, description, disks)
            return dom.snapshotCreateXML(xml, 0).getName()

        return self.connection(host).call(fn)

    def revert_snapshot(self, host: HostTarget, uuid: str, name: str) -> None:
        """Put the domain back to snapshot ``name`` (NotFound if it has none such)."""

        def fn(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByUUIDString(uuid)
            try:
                snap = dom.snapshotLookupByName(name, 0)
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                    raise NotFound(f"the VM has no snapshot {name!r}") from None
                raise
            dom.revertToSnapshot(snap, 0)

        self.connection(host).call(fn)

    def snapshots(self, host: HostTarget, uuid: str) -> list[str]:
        """The names of the domain's snapshots."""

        def fn(conn: libvirt.virConnect) -> list[str]:
            return list(conn.lookupByUUIDString(uuid).snapshotListNames(0))

        return self.connection(host).call(fn)
