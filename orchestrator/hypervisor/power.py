"""A domain's power (graceful shutdown then forced, start), its size (vCPUs, memory,
disk) while it is off, and the tail of its serial console log."""

from __future__ import annotations

import contextlib
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from ..errors import Conflict, HypervisorError
from .base import GIB, DriverBase, ignore_missing, pool_target, vm_files_named
from .records import HostTarget
from .xml import safe_fromstring

# How often a graceful shutdown looks whether the guest has powered off.
POLL = 0.2


@dataclass(frozen=True)
class ConsoleTail:
    """The last bytes of a VM's serial console log: ``data`` (at most what was
    asked), ``size`` the whole log's size in bytes, ``note`` why there is none."""

    data: bytes
    size: int
    note: str | None = None


class PowerMixin(DriverBase):
    """The power, resize and console half of LibvirtDriver."""

    def shutdown(self, host: HostTarget, uuid: str, grace: float) -> str:
        """Power the domain off: the ACPI power button first, then, if the guest is
        still running after ``grace`` seconds (0: at once), pulled off. Returns how it
        ended: ``graceful``, ``forced`` or ``off`` (it was not running)."""

        def fn(conn: libvirt.virConnect) -> str:
            dom = conn.lookupByUUIDString(uuid)
            if not dom.isActive():
                return "off"
            if grace > 0:
                try:
                    dom.shutdown()
                except libvirt.libvirtError as e:
                    if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                        raise  # else: it went off meanwhile
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline:
                    if not dom.isActive():
                        return "graceful"
                    time.sleep(POLL)
                if not dom.isActive():
                    return "graceful"
            ignore_missing(dom.destroy, libvirt.VIR_ERR_OPERATION_INVALID)
            return "forced"

        return self.connection(host).call(fn, timeout=grace + self.call_timeout)

    def power_on(self, host: HostTarget, uuid: str) -> bool:
        """Start the domain if it is off; True if it was started now."""

        def fn(conn: libvirt.virConnect) -> bool:
            dom = conn.lookupByUUIDString(uuid)
            if dom.isActive():
                return False
            dom.create()
            return True

        return self.connection(host).call(fn)

    def resize_domain(
        self, host: HostTarget, uuid: str, vm_id: int, *, vcpus: int, ram_mb: int, disk_gb: int
    ) -> None:
        """Give the (shut off) domain ``vcpus`` and ``ram_mb`` in its persistent
        definition, and grow its disk to ``disk_gb`` if it is smaller (never shrunk)."""

        def fn(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByUUIDString(uuid)
            if dom.isActive():
                raise Conflict("the VM is running; it is resized while off")
            root = safe_fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            for tag in ("memory", "currentMemory"):
                el = root.find(tag)
                if el is not None:
                    el.text = str(ram_mb)
                    el.set("unit", "MiB")
            vcpu = root.find("vcpu")
            if vcpu is None:
                raise HypervisorError("the domain's definition has no <vcpu>")
            vcpu.text = str(vcpus)
            vcpu.attrib.pop("current", None)
            conn.defineXML(ET.tostring(root, encoding="unicode"))
            if host.is_test:
                return  # the test driver keeps no disk bytes to grow
            pool = self._ensure_pool(conn, host)
            with contextlib.suppress(libvirt.libvirtError):
                pool.refresh(0)
            own = self.vm_files(vm_id)
            text = ET.tostring(root, encoding="unicode")
            named = vm_files_named(text, vm_id, pool_target(pool), own)
            disk = next((n for n in named if n.endswith(".qcow2")), own[0])
            vol = pool.storageVolLookupByName(disk)
            want = disk_gb * GIB
            if vol.info()[1] < want:
                vol.resize(want, 0)

        self.connection(host).call(fn)

    def domain_size(self, host: HostTarget, uuid: str) -> tuple[int, int]:
        """(vCPUs, memory MiB) of the domain's persistent definition."""

        def fn(conn: libvirt.virConnect) -> tuple[int, int]:
            root = safe_fromstring(
                conn.lookupByUUIDString(uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            )
            mem = root.find("memory")
            vcpu = root.find("vcpu")
            kib = _kib(int(mem.text or 0), mem.get("unit", "KiB")) if mem is not None else 0
            return (int(vcpu.text or 0) if vcpu is not None else 0), kib // 1024

        return self.connection(host).call(fn)

    def console_tail(
        self, host: HostTarget, vm_id: int, limit: int, *, uuid: str | None = None
    ) -> ConsoleTail:
        """The last ``limit`` bytes of the VM's serial console log, read through
        libvirt (the log is a file in the fabric's pool on the host, so a storage
        volume download reaches it over ``qemu+ssh`` with no other access). The log
        is the one the domain ``uuid`` names (a VM made before the names carried the
        installation has ``vm-<id>.console.log``), else this installation's name."""
        if host.is_test:
            return ConsoleTail(b"", 0, "a test:// host keeps no console log")

        def fn(conn: libvirt.virConnect) -> ConsoleTail:
            pool = self._ensure_pool(conn, host)
            with contextlib.suppress(libvirt.libvirtError):
                pool.refresh(0)
            name = self.vm_files(vm_id)[1]
            if uuid is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    xml = conn.lookupByUUIDString(uuid).XMLDesc(0)
                    logs = vm_files_named(xml, vm_id, pool_target(pool), [name])
                    name = next((n for n in logs if n.endswith(".console.log")), name)
            try:
                vol = pool.storageVolLookupByName(name)
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise
                return ConsoleTail(b"", 0, "the VM has no console log on its host (yet)")
            size = int(vol.info()[1])
            if size == 0:
                return ConsoleTail(b"", 0, None)
            offset = max(0, size - limit)
            stream = conn.newStream(0)
            vol.download(stream, offset, size - offset, 0)
            chunks: list[bytes] = []
            got = 0
            try:
                while got < size - offset:
                    chunk = stream.recv(min(65536, size - offset - got))
                    if isinstance(chunk, int) or not chunk:
                        break  # -2 (would block) is not expected on a blocking stream
                    chunks.append(chunk)
                    got += len(chunk)
                stream.finish()
            except BaseException:
                with contextlib.suppress(libvirt.libvirtError):
                    stream.abort()
                raise
            return ConsoleTail(b"".join(chunks)[-limit:], size, None)

        return self.connection(host).call(fn)


def _kib(value: int, unit: str) -> int:
    scale = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "m": 1024, "mib": 1024}
    scale |= {"g": 1024**2, "gib": 1024**2, "kb": 1000 / 1024, "mb": 1000**2 / 1024}
    return int(value * scale.get(unit.lower(), 1))
