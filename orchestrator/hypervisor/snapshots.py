"""Snapshots of a domain (vmpooler's ``POST /vm/<hostname>/snapshot`` and revert):
libvirt's own, internal to the VM's qcow2 disk (with its memory when it runs), made
with ``virDomainSnapshotCreateXML`` and gone back to with
``virDomainRevertToSnapshot``. The domain is found by its UUID; the snapshot XML is
built with ElementTree."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from ..errors import Conflict, NotFound
from .base import DriverBase
from .records import HostTarget
from .xml import safe_fromstring


def snapshot_xml(name: str, description: str | None = None) -> str:
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    if description:
        ET.SubElement(root, "description").text = description
    return ET.tostring(root, encoding="unicode")


def unsnapshottable(*domain_xmls: str) -> list[str]:
    """The domain's disks an internal snapshot cannot cover (``vdb (raw)``): qemu
    keeps one inside qcow2 disks only, and refuses the whole snapshot (and a revert)
    while any other writable disk is attached (libvirt 9: "internal snapshot for
    disk vdb unsupported for storage type raw"). The live and the persistent
    definitions are both looked at."""
    out: dict[str, str] = {}
    for xml in domain_xmls:
        for disk in safe_fromstring(xml).findall("devices/disk"):
            if disk.get("device", "disk") != "disk" or disk.find("readonly") is not None:
                continue
            target = disk.find("target")
            driver = disk.find("driver")
            dev = target.get("dev") if target is not None else None
            fmt = (driver.get("type") if driver is not None else None) or "raw"
            if dev and fmt != "qcow2":
                out[dev] = f"{dev} ({fmt})"
    return sorted(out.values())


def _require_snapshottable(dom: libvirt.virDomain) -> None:
    bad = unsnapshottable(dom.XMLDesc(0), dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    if bad:
        raise Conflict(
            f"the VM has disks an internal snapshot cannot cover: {', '.join(bad)} "
            "(an attached volume); qemu keeps snapshots inside qcow2 disks only"
        )


class SnapshotsMixin(DriverBase):
    """The snapshot part of LibvirtDriver."""

    def create_snapshot(
        self, host: HostTarget, uuid: str, name: str, description: str | None = None
    ) -> str:
        """Snapshot the domain now as ``name``; returns the name libvirt kept."""

        def fn(conn: libvirt.virConnect) -> str:
            dom = conn.lookupByUUIDString(uuid)
            _require_snapshottable(dom)
            return dom.snapshotCreateXML(snapshot_xml(name, description), 0).getName()

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
            _require_snapshottable(dom)
            dom.revertToSnapshot(snap, 0)

        self.connection(host).call(fn)

    def snapshots(self, host: HostTarget, uuid: str) -> list[str]:
        """The names of the domain's snapshots."""

        def fn(conn: libvirt.virConnect) -> list[str]:
            return list(conn.lookupByUUIDString(uuid).snapshotListNames(0))

        return self.connection(host).call(fn)
