"""Domains on a host: discovery, create (with rollback), destroy, reset, start, and listing."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import libvirt

from .base import GIB, DriverBase, drop_volume, ignore_missing, pool_target, vm_files_named
from .connection import Fence
from .records import DomainRecord, HostFacts, HostTarget, StagedImage, VmPlan
from .xml import METADATA_NS, DomainSpec, domain_xml, read_metadata, volume_xml

log = logging.getLogger(__name__)


class DomainsMixin(DriverBase):
    """The domain half of LibvirtDriver."""

    def discover(self, host: HostTarget) -> HostFacts:
        """Read the host's real capacity: CPUs, memory (MB), the fabric pool's size (GB)."""

        def fn(conn: libvirt.virConnect) -> HostFacts:
            arch, mem_mb, cpus = conn.getInfo()[:3]
            pool = self._ensure_pool(conn, host)
            # A refresh is refused while an image is being uploaded into the pool
            # ("asynchronous jobs running"): the last reading is good enough then,
            # and the host is not down for it.
            with contextlib.suppress(libvirt.libvirtError):
                pool.refresh(0)
            capacity = pool.info()[1]
            return HostFacts(cpu=int(cpus), ram_mb=int(mem_mb), disk_gb=capacity // GIB, arch=arch)

        return self.connection(host).call(fn)

    def create(
        self, host: HostTarget, plan: VmPlan, image: StagedImage, fence: Fence | None = None
    ) -> str | None:
        """Make the VM's disk (a copy-on-write overlay), define and start its domain.

        Returns the console log path. On any failure, removes what it made, then raises.
        ``fence`` says whether the VM is still wanted: it is abandoned when this call
        times out (or by the caller, when it gives up). Work that goes on after that
        checks it before each step (disk, definition, start) and after the last, and
        removes what it made instead of leaving a domain nobody knows.
        """
        fence = fence or Fence(f"the create of vm {plan.vm_id}")

        def fn(conn: libvirt.virConnect) -> str | None:
            pool = self._ensure_pool(conn, host)
            pool_dir = self._pool_path(host) if host.pool_path or host.is_test else None
            # Names that carry the installation: a disk of the same VM id made by
            # another installation sharing this pool is never this one's to replace.
            disk_name, console_name = self.vm_files(plan.vm_id, plan.installation)
            capacity = max(plan.disk_gb * GIB, image.capacity)
            made: list[Callable[[], None]] = []
            try:
                fence.check("making its disk")
                ignore_missing(
                    lambda: pool.storageVolLookupByName(disk_name).delete(0),
                    libvirt.VIR_ERR_NO_STORAGE_VOL,
                )
                vol = pool.createXML(
                    volume_xml(disk_name, capacity, "qcow2", image.path, image.format), 0
                )
                made.append(lambda: vol.delete(0))
                console = None
                if pool_dir is None:
                    pool_dir = _pool_target(pool)
                if pool_dir:
                    console = f"{pool_dir.rstrip('/')}/{console_name}"
                spec = DomainSpec(
                    name=plan.domain_name,
                    uuid=plan.uuid,
                    vm_id=plan.vm_id,
                    fabric_name=plan.name,
                    domain_type="test" if host.is_test else host.domain_type,
                    vcpus=plan.vcpus,
                    ram_mb=plan.ram_mb,
                    disk_path=vol.path(),
                    mac=plan.mac,
                    arch=plan.arch,
                    network=host.network,
                    forward_address=host.address,
                    forward_port=plan.ssh_port,
                    console_path=console,
                    kernel=image.kernel,
                    initrd=image.initrd,
                    cmdline=plan.cmdline,
                    installation=plan.installation,
                )
                fence.check("defining its domain")
                dom = conn.defineXML(domain_xml(spec))
                made.append(lambda: _undefine(dom))
                fence.check("starting its domain")
                dom.create()
                made.append(lambda: ignore_missing(dom.destroy, libvirt.VIR_ERR_OPERATION_INVALID))
                fence.check("it was done")  # given up while starting: it goes
                return console
            except BaseException:
                if fence.abandoned:
                    log.warning(
                        "%s: vm %d was given up on while being created; removing what the "
                        "late call made",
                        host.label,
                        plan.vm_id,
                    )
                for undo in reversed(made):
                    try:
                        undo()
                    except libvirt.libvirtError as e:
                        log.warning("rollback step failed on %s: %s", host.label, e)
                raise

        return self.connection(host).call(fn, fence=fence)

    def destroy(self, host: HostTarget, uuid: str, vm_id: int) -> None:
        """Stop and undefine the domain and delete its disk and console log. Absent is fine.

        The domain is found by its UUID, so a foreign domain that happens to carry
        the same name is never touched. The files deleted are the ones with this
        installation's names for the VM, and the ones the domain's own definition
        names as its disk or console (a VM made before the names carried the
        installation has ``vm-<id>.qcow2``): never a file only another installation's
        domain uses.
        """

        def fn(conn: libvirt.virConnect) -> None:
            pool = self._ensure_pool(conn, host)
            names = self._vm_pool_files(conn, pool, uuid, vm_id)
            remove_domain(conn, uuid)
            with contextlib.suppress(libvirt.libvirtError):
                pool.refresh(0)
            for vol_name in names:
                ignore_missing(
                    lambda n=vol_name: pool.storageVolLookupByName(n).delete(0),
                    libvirt.VIR_ERR_NO_STORAGE_VOL,
                )

        self.connection(host).call(fn)

    def reset(self, host: HostTarget, plan: VmPlan, image: StagedImage) -> None:
        """Give the VM a fresh disk (a new overlay on its image) and boot it again."""

        def fn(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByUUIDString(plan.uuid)
            if dom.isActive():
                ignore_missing(dom.destroy, libvirt.VIR_ERR_OPERATION_INVALID)
            pool = self._ensure_pool(conn, host)
            # The disk the domain has (a VM from before the names carried the
            # installation keeps its vm-<id>.qcow2), else this installation's name.
            own = self.vm_files(plan.vm_id, plan.installation)
            named = vm_files_named(dom.XMLDesc(0), plan.vm_id, _pool_target(pool), own)
            disk_name = next((n for n in named if n.endswith(".qcow2")), own[0])
            drop_volume(pool, disk_name)
            capacity = max(plan.disk_gb * GIB, image.capacity)
            pool.createXML(volume_xml(disk_name, capacity, "qcow2", image.path, image.format), 0)
            dom.create()

        self.connection(host).call(fn)

    def domain_defined(self, host: HostTarget, uuid: str) -> bool:
        def fn(conn: libvirt.virConnect) -> bool:
            try:
                conn.lookupByUUIDString(uuid)
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return False
                raise
            return True

        return self.connection(host).call(fn)

    def domain_running(self, host: HostTarget, uuid: str) -> bool:
        def fn(conn: libvirt.virConnect) -> bool:
            try:
                return bool(conn.lookupByUUIDString(uuid).isActive())
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return False
                raise

        return self.connection(host).call(fn)

    def domains(self, host: HostTarget) -> list[DomainRecord]:
        """Every domain on the host, with the fabric VM id for the ones that are ours."""

        def fn(conn: libvirt.virConnect) -> list[DomainRecord]:
            out = []
            for dom in conn.listAllDomains(0):
                # A domain undefined between the listing and these calls (another
                # server destroying a VM meanwhile) is simply no longer there.
                try:
                    try:
                        meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
                        vm_id, inst = read_metadata(meta)
                    except libvirt.libvirtError as e:
                        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                            raise
                        vm_id, inst = None, None
                    record = DomainRecord(
                        dom.name(), dom.UUIDString(), vm_id, bool(dom.isActive()), inst
                    )
                except libvirt.libvirtError as e:
                    if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                        continue
                    raise
                out.append(record)
            return out

        return self.connection(host).call(fn)

    def start(self, host: HostTarget, domain_name: str) -> None:
        def fn(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByName(domain_name)
            if not dom.isActive():
                dom.create()

        self.connection(host).call(fn)


def remove_domain(conn: libvirt.virConnect, uuid: str) -> None:
    """Stop (hard) and undefine the domain with ``uuid``; absent is fine. Found by its
    UUID, so a foreign domain that happens to carry the same name is never touched."""
    try:
        dom = conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
        return
    if dom.isActive():
        ignore_missing(dom.destroy, libvirt.VIR_ERR_OPERATION_INVALID)
    _undefine(dom)


def _undefine(dom: libvirt.virDomain) -> None:
    flags = (
        libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    )
    try:
        dom.undefineFlags(flags)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return
        if e.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
            # a driver without NVRAM (libvirt's test driver): the other flags alone, so
            # that a domain with snapshots still goes
            try:
                dom.undefineFlags(flags & ~libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError as again:
                if again.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return
                if again.get_error_code() not in (
                    libvirt.VIR_ERR_NO_SUPPORT,
                    libvirt.VIR_ERR_INVALID_ARG,
                ):
                    raise
                ignore_missing(dom.undefine, libvirt.VIR_ERR_NO_DOMAIN)
            return
        raise


_pool_target = pool_target
