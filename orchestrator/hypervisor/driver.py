"""The libvirt driver: discovery, image staging, domain create/destroy, listing.

Contract (after nova's virt driver):
- ``create`` either leaves a running domain with its disk, or raises after
  removing whatever it made (domain, definition, disk). Never half of one.
- ``destroy`` of a domain the host does not have succeeds: the goal is absence.
- Every call is time-limited; a dead host raises HostUnreachable/HostTimeout.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import libvirt

from ..errors import FabricError, HypervisorError
from .connection import HostConnection, SshOptions
from .xml import (
    METADATA_NS,
    DomainSpec,
    domain_xml,
    pool_xml,
    read_metadata,
    safe_fromstring,
    volume_xml,
)

log = logging.getLogger(__name__)

POOL_NAME = "fabric"
GIB = 1024**3
MIB = 1024**2
CHUNK = 1024 * 1024

# An opener yields (file object, size in bytes) for an image's source file.
Opener = Callable[[str], contextlib.AbstractContextManager[tuple[IO[bytes], int]]]


@dataclass(frozen=True)
class HostTarget:
    """What the driver needs to know about a host."""

    id: int
    label: str
    uri: str
    domain_type: str = "kvm"
    network: str = "user"
    address: str | None = None
    pool_path: str | None = None

    @property
    def is_test(self) -> bool:
        return self.uri.startswith("test:")


@dataclass(frozen=True)
class HostFacts:
    cpu: int
    ram_mb: int
    disk_gb: int
    arch: str


@dataclass(frozen=True)
class StagedImage:
    path: str
    format: str
    capacity: int  # bytes
    kernel: str | None = None
    initrd: str | None = None


@dataclass(frozen=True)
class DomainRecord:
    name: str
    uuid: str
    vm_id: int | None  # None: not a fabric's
    active: bool
    installation: str | None = None  # which fabric registry made it


@dataclass(frozen=True)
class VmPlan:
    """One VM to make on one host."""

    vm_id: int
    name: str
    domain_name: str
    uuid: str
    mac: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    arch: str | None
    ssh_port: int | None = None
    cmdline: str | None = None
    installation: str | None = None


def _ignore_missing(fn: Callable[[], object], *codes: int) -> None:
    try:
        fn()
    except libvirt.libvirtError as e:
        if e.get_error_code() not in codes:
            raise


class LibvirtDriver:
    def __init__(
        self,
        *,
        ssh: SshOptions | None = None,
        state_dir: Path | None = None,
        connect_timeout: float = 10.0,
        call_timeout: float = 60.0,
        upload_timeout: float = 900.0,
    ) -> None:
        self._ssh_command = ssh.wrapper(state_dir) if (ssh and state_dir) else None
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.upload_timeout = upload_timeout
        self._conns: dict[int, HostConnection] = {}
        self._conns_lock = threading.Lock()
        self._stage_locks: dict[tuple[int, str], threading.Lock] = {}

    # -- connections ---------------------------------------------------------

    def connection(self, host: HostTarget) -> HostConnection:
        with self._conns_lock:
            conn = self._conns.get(host.id)
            if conn is None or conn.uri != host.uri:
                if conn is not None:
                    conn.close()
                conn = HostConnection(
                    host.label,
                    host.uri,
                    ssh_command=self._ssh_command,
                    connect_timeout=self.connect_timeout,
                    call_timeout=self.call_timeout,
                )
                self._conns[host.id] = conn
            return conn

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()

    # -- discovery -----------------------------------------------------------

    def discover(self, host: HostTarget) -> HostFacts:
        """Read the host's real capacity: CPUs, memory (MB), the fabric pool's size (GB)."""

        def fn(conn: libvirt.virConnect) -> HostFacts:
            arch, mem_mb, cpus = conn.getInfo()[:3]
            pool = self._ensure_pool(conn, host)
            pool.refresh(0)
            capacity = pool.info()[1]
            return HostFacts(cpu=int(cpus), ram_mb=int(mem_mb), disk_gb=capacity // GIB, arch=arch)

        return self.connection(host).call(fn)

    def _pool_path(self, host: HostTarget) -> str:
        if host.pool_path:
            return host.pool_path
        if host.is_test:
            return "/fabric-pool"
        if host.uri.rstrip("/").split("?")[0].endswith("/session"):
            raise HypervisorError(
                f"host {host.label}: a session URI needs pool=/abs/dir in the pm file"
            )
        return "/var/lib/libvirt/images/fabric"

    def _ensure_pool(self, conn: libvirt.virConnect, host: HostTarget) -> libvirt.virStoragePool:
        try:
            pool = conn.storagePoolLookupByName(POOL_NAME)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise
            pool = conn.storagePoolDefineXML(pool_xml(POOL_NAME, self._pool_path(host)), 0)
            with contextlib.suppress(libvirt.libvirtError):
                pool.build(0)
            with contextlib.suppress(libvirt.libvirtError):
                pool.setAutostart(1)
        if not pool.isActive():
            pool.create(0)
        return pool

    # -- images --------------------------------------------------------------

    def stage(
        self,
        host: HostTarget,
        image_key: str,
        fmt: str,
        sources: dict[str, str],
        opener: Opener,
        reuse: bool,
    ) -> StagedImage:
        """Copy an image (and its kernel/initrd, if any) into the host's pool once.

        ``sources`` maps "disk"/"kernel"/"initrd" to source paths, read with
        ``opener``. With ``reuse`` and the volume present, nothing is copied.
        The copy goes through libvirt's storage streams, so it works on any host
        libvirt reaches. A failed copy deletes the partial volume.
        """
        lock = self._stage_locks.setdefault((host.id, image_key), threading.Lock())
        with lock:
            paths: dict[str, str] = {}
            capacity = 0
            for role, src in sources.items():
                suffix = {"disk": fmt, "kernel": "kernel", "initrd": "initrd"}[role]
                vol_name = f"image-{image_key}.{suffix}"
                path, size = self._stage_one(host, vol_name, src, opener, reuse)
                paths[role] = path
                if role == "disk":
                    capacity = size
            return StagedImage(
                path=paths["disk"],
                format=fmt,
                capacity=capacity,
                kernel=paths.get("kernel"),
                initrd=paths.get("initrd"),
            )

    def _stage_one(
        self, host: HostTarget, vol_name: str, src: str, opener: Opener, reuse: bool
    ) -> tuple[str, int]:
        def existing(conn: libvirt.virConnect) -> tuple[str, int] | None:
            pool = self._ensure_pool(conn, host)
            with contextlib.suppress(libvirt.libvirtError):
                pool.refresh(0)  # see files removed or added behind libvirt's back
            try:
                vol = pool.storageVolLookupByName(vol_name)
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise
                return None
            if reuse:
                return vol.path(), vol.info()[1]
            vol.delete(0)  # unknown leftover (e.g. an interrupted copy): copy again
            return None

        conn = self.connection(host)
        found = conn.call(existing)
        if found is not None:
            return found

        with opener(src) as (fh, size):

            def upload(c: libvirt.virConnect) -> tuple[str, int]:
                pool = self._ensure_pool(c, host)
                vol = pool.createXML(volume_xml(vol_name, max(size, 1), fmt="raw"), 0)
                try:
                    self._upload(c, vol, fh, size)
                except BaseException:
                    with contextlib.suppress(libvirt.libvirtError):
                        vol.delete(0)
                    raise
                return vol.path(), size

            return conn.call(upload, timeout=self.upload_timeout)

    @staticmethod
    def _upload(
        conn: libvirt.virConnect, vol: libvirt.virStorageVol, fh: IO[bytes], size: int
    ) -> None:
        if conn.getURI().startswith("test:"):
            return  # the test driver keeps no bytes (virStorageVolUpload is unsupported)
        stream = conn.newStream(0)
        vol.upload(stream, 0, size, 0)
        try:
            sent = 0
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    n = stream.send(view.tobytes())
                    if n < 0:
                        raise HypervisorError("image upload stream refused data")
                    view = view[n:]
                    sent += n
            if sent != size:
                raise HypervisorError(f"image upload sent {sent} of {size} bytes")
            stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise

    # -- domains -------------------------------------------------------------

    def create(self, host: HostTarget, plan: VmPlan, image: StagedImage) -> str | None:
        """Make the VM's disk (a copy-on-write overlay), define and start its domain.

        Returns the console log path. On any failure, removes what it made, then raises.
        """

        def fn(conn: libvirt.virConnect) -> str | None:
            pool = self._ensure_pool(conn, host)
            pool_dir = self._pool_path(host) if host.pool_path or host.is_test else None
            disk_name = f"vm-{plan.vm_id}.qcow2"
            capacity = max(plan.disk_gb * GIB, image.capacity)
            made: list[Callable[[], None]] = []
            try:
                _ignore_missing(
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
                    console = f"{pool_dir.rstrip('/')}/vm-{plan.vm_id}.console.log"
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
                dom = conn.defineXML(domain_xml(spec))
                made.append(lambda: _undefine(dom))
                dom.create()
                made.append(lambda: _ignore_missing(dom.destroy, libvirt.VIR_ERR_OPERATION_INVALID))
                return console
            except BaseException:
                for undo in reversed(made):
                    try:
                        undo()
                    except libvirt.libvirtError as e:
                        log.warning("rollback step failed on %s: %s", host.label, e)
                raise

        return self.connection(host).call(fn)

    def destroy(self, host: HostTarget, uuid: str, vm_id: int) -> None:
        """Stop and undefine the domain and delete its disk and console log. Absent is fine.

        The domain is found by its UUID, so a foreign domain that happens to carry
        the same name is never touched.
        """

        def fn(conn: libvirt.virConnect) -> None:
            try:
                dom = conn.lookupByUUIDString(uuid)
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
                dom = None
            if dom is not None:
                if dom.isActive():
                    _ignore_missing(dom.destroy, libvirt.VIR_ERR_OPERATION_INVALID)
                _undefine(dom)
            pool = self._ensure_pool(conn, host)
            with contextlib.suppress(libvirt.libvirtError):
                pool.refresh(0)
            for vol_name in (f"vm-{vm_id}.qcow2", f"vm-{vm_id}.console.log"):
                _ignore_missing(
                    lambda n=vol_name: pool.storageVolLookupByName(n).delete(0),
                    libvirt.VIR_ERR_NO_STORAGE_VOL,
                )

        self.connection(host).call(fn)

    def reset(self, host: HostTarget, plan: VmPlan, image: StagedImage) -> None:
        """Give the VM a fresh disk (a new overlay on its image) and boot it again."""

        def fn(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByUUIDString(plan.uuid)
            if dom.isActive():
                _ignore_missing(dom.destroy, libvirt.VIR_ERR_OPERATION_INVALID)
            pool = self._ensure_pool(conn, host)
            with contextlib.suppress(libvirt.libvirtError):
                pool.refresh(0)
            disk_name = f"vm-{plan.vm_id}.qcow2"
            _ignore_missing(
                lambda: pool.storageVolLookupByName(disk_name).delete(0),
                libvirt.VIR_ERR_NO_STORAGE_VOL,
            )
            capacity = max(plan.disk_gb * GIB, image.capacity)
            pool.createXML(volume_xml(disk_name, capacity, "qcow2", image.path, image.format), 0)
            dom.create()

        self.connection(host).call(fn)

    def domains(self, host: HostTarget) -> list[DomainRecord]:
        """Every domain on the host, with the fabric VM id for the ones that are ours."""

        def fn(conn: libvirt.virConnect) -> list[DomainRecord]:
            out = []
            for dom in conn.listAllDomains(0):
                try:
                    meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
                    vm_id, inst = read_metadata(meta)
                except libvirt.libvirtError:
                    vm_id, inst = None, None
                out.append(
                    DomainRecord(dom.name(), dom.UUIDString(), vm_id, bool(dom.isActive()), inst)
                )
            return out

        return self.connection(host).call(fn)

    def volumes(self, host: HostTarget) -> list[str]:
        def fn(conn: libvirt.virConnect) -> list[str]:
            pool = self._ensure_pool(conn, host)
            with contextlib.suppress(libvirt.libvirtError):
                pool.refresh(0)
            return sorted(pool.listVolumes())

        return self.connection(host).call(fn)

    def start(self, host: HostTarget, domain_name: str) -> None:
        def fn(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByName(domain_name)
            if not dom.isActive():
                dom.create()

        self.connection(host).call(fn)


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
            _ignore_missing(dom.undefine, libvirt.VIR_ERR_NO_DOMAIN)
            return
        raise


def _pool_target(pool: libvirt.virStoragePool) -> str | None:
    el = safe_fromstring(pool.XMLDesc(0)).find("target/path")
    return el.text if el is not None else None


@contextlib.contextmanager
def no_errors() -> Iterator[None]:
    try:
        yield
    except (FabricError, libvirt.libvirtError) as e:
        log.warning("ignored: %s", e)
