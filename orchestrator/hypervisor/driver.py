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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import libvirt

from ..errors import Conflict, FabricError, HypervisorError
from .connection import HostConnection, SshOptions
from .xml import (
    METADATA_NS,
    DomainSpec,
    RbdBackend,
    ceph_secret_xml,
    disk_targets,
    disk_xml,
    domain_xml,
    next_free_target,
    pool_xml,
    rbd_pool_xml,
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
        """libvirt's test driver, in this process (test:///...) or in a daemon
        (test+unix:///default?socket=...), where it is shared by every client."""
        return is_test_uri(self.uri)


def is_test_uri(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] == "test"


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
            # A refresh is refused while an image is being uploaded into the pool
            # ("asynchronous jobs running"): the last reading is good enough then,
            # and the host is not down for it.
            with contextlib.suppress(libvirt.libvirtError):
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
                    self._upload(c, vol, fh, size, host.is_test)
                except BaseException:
                    with contextlib.suppress(libvirt.libvirtError):
                        vol.delete(0)
                    raise
                return vol.path(), size

            return conn.call(upload, timeout=self.upload_timeout)

    @staticmethod
    def _upload(
        conn: libvirt.virConnect,
        vol: libvirt.virStorageVol,
        fh: IO[bytes],
        size: int,
        test_driver: bool = False,
    ) -> None:
        if test_driver:
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
            disk_name = f"vm-{plan.vm_id}.qcow2"
            _drop_volume(pool, disk_name)
            capacity = max(plan.disk_gb * GIB, image.capacity)
            pool.createXML(volume_xml(disk_name, capacity, "qcow2", image.path, image.format), 0)
            dom.create()

        self.connection(host).call(fn)

    # -- volumes -------------------------------------------------------------

    def _volume_pool(
        self, conn: libvirt.virConnect, host: HostTarget, rbd: RbdBackend | None
    ) -> libvirt.virStoragePool:
        if rbd is None:
            return self._ensure_pool(conn, host)
        try:
            pool = conn.storagePoolLookupByName(rbd.libvirt_pool)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise
            pool = conn.storagePoolDefineXML(rbd_pool_xml(rbd), 0)
        if not pool.isActive():
            pool.create(0)
        return pool

    def ensure_ceph_secret(self, host: HostTarget, rbd: RbdBackend, key: bytes) -> None:
        """Give libvirt the cephx key as a secret object (private: never read back)."""

        def fn(conn: libvirt.virConnect) -> None:
            try:
                secret = conn.secretLookupByUUIDString(rbd.secret_uuid)
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_SECRET:
                    raise
                secret = conn.secretDefineXML(ceph_secret_xml(rbd), 0)
            secret.setValue(key, 0)

        self.connection(host).call(fn)

    def create_volume(
        self, host: HostTarget, vol_name: str, size_gb: int, rbd: RbdBackend | None = None
    ) -> str:
        """Make an empty raw volume of ``size_gb``; returns its path (or RBD name)."""

        def fn(conn: libvirt.virConnect) -> str:
            pool = self._volume_pool(conn, host, rbd)
            _drop_volume(pool, vol_name)
            vol = pool.createXML(volume_xml(vol_name, size_gb * GIB, "raw"), 0)
            return vol.path()

        return self.connection(host).call(fn)

    def delete_volume(self, host: HostTarget, vol_name: str, rbd: RbdBackend | None = None) -> None:
        def fn(conn: libvirt.virConnect) -> None:
            pool = self._volume_pool(conn, host, rbd)
            _drop_volume(pool, vol_name)

        self.connection(host).call(fn)

    def copy_volume(self, src: HostTarget, dst: HostTarget, vol_name: str, size_gb: int) -> str:
        """Copy a detached volume to another host through libvirt streams (download on
        one connection, upload on the other). The source is left as it is; a failed
        copy removes the partial target."""
        path = self.create_volume(dst, vol_name, size_gb)
        src_conn = self.connection(src)
        dst_conn = self.connection(dst)
        size = size_gb * GIB

        def pump(sc: libvirt.virConnect) -> None:
            if src.is_test:
                return  # the test driver keeps no bytes (no volume streams)
            src_vol = self._ensure_pool(sc, src).storageVolLookupByName(vol_name)
            dc = dst_conn.call(lambda c: c)
            dst_vol = self._ensure_pool(dc, dst).storageVolLookupByName(vol_name)
            down = sc.newStream(0)
            up = dc.newStream(0)
            src_vol.download(down, 0, size, 0)
            dst_vol.upload(up, 0, size, 0)
            try:
                moved = 0
                while True:
                    chunk = down.recv(CHUNK)
                    if not chunk:
                        break
                    if isinstance(chunk, int):  # -2: would block (blocking streams: not expected)
                        continue
                    view = memoryview(chunk)
                    while view:
                        n = up.send(view.tobytes())
                        view = view[n:]
                    moved += len(chunk)
                down.finish()
                up.finish()
                if moved != size:
                    raise HypervisorError(f"volume copy moved {moved} of {size} bytes")
            except BaseException:
                with contextlib.suppress(libvirt.libvirtError):
                    down.abort()
                with contextlib.suppress(libvirt.libvirtError):
                    up.abort()
                raise

        try:
            src_conn.call(pump, timeout=self.upload_timeout)
        except BaseException:
            with contextlib.suppress(FabricError):
                self.delete_volume(dst, vol_name)
            raise
        return path

    def volume_paths(self, host: HostTarget) -> dict[str, str]:
        """Name -> path of every volume in the host's fabric pool."""

        def fn(conn: libvirt.virConnect) -> dict[str, str]:
            pool = self._ensure_pool(conn, host)
            with contextlib.suppress(libvirt.libvirtError):
                pool.refresh(0)
            return {v.name(): v.path() for v in pool.listAllVolumes(0)}

        return self.connection(host).call(fn)

    def attach_volume(
        self,
        host: HostTarget,
        uuid: str,
        *,
        path: str | None = None,
        rbd: RbdBackend | None = None,
        rbd_image: str | None = None,
    ) -> str:
        """Hot-plug a volume into a running domain as its next free virtio disk, in the
        live and the persistent definition; returns the target (vdb, vdc, ...)."""

        def fn(conn: libvirt.virConnect) -> str:
            dom = conn.lookupByUUIDString(uuid)
            if not dom.isActive():
                raise Conflict("the VM is not running; volumes attach to running VMs")
            live = disk_targets(dom.XMLDesc(0))
            persistent = disk_targets(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            want = f"{rbd.pool}/{rbd_image}" if rbd else path
            for dev, source in live.items():
                if source == want:
                    return dev  # already there (a retried attach)
            target = next_free_target(set(live) | set(persistent))
            xml = disk_xml(target, path=path, rbd=rbd, rbd_image=rbd_image)
            flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
            try:
                dom.attachDeviceFlags(xml, flags)
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT or not host.is_test:
                    raise
                # libvirt's test driver cannot hot-plug; its definition is all it has.
                _edit_persistent(conn, dom, lambda devices: devices.append(_parse(xml)))
            return target

        return self.connection(host).call(fn)

    def detach_volume(self, host: HostTarget, uuid: str, target: str, wait: float = 20.0) -> None:
        """Hot-unplug the disk ``target`` from the domain (live and persistent) and wait
        until the guest has let it go. A domain or disk that is already gone is fine."""

        def fn(conn: libvirt.virConnect) -> None:
            try:
                dom = conn.lookupByUUIDString(uuid)
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return
                raise
            active = bool(dom.isActive())
            xml_text = dom.XMLDesc(0 if active else libvirt.VIR_DOMAIN_XML_INACTIVE)
            disk = _find_disk(xml_text, target)
            persistent = _find_disk(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), target)
            if disk is None and persistent is None:
                return
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
            if active and disk is not None:
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            try:
                dom.detachDeviceFlags(disk or persistent, flags)
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT or not host.is_test:
                    raise
                _edit_persistent(conn, dom, lambda devices: _remove_target(devices, target))
                return
            deadline = time.monotonic() + wait
            while active and target in disk_targets(dom.XMLDesc(0)):
                if time.monotonic() > deadline:
                    raise HypervisorError(f"the guest did not release {target} within {wait:g}s")
                time.sleep(0.2)

        self.connection(host).call(fn, timeout=wait + 30)

    def domain_disks(
        self, host: HostTarget, uuid: str, *, persistent: bool = False
    ) -> dict[str, str | None]:
        """Target -> source of the domain's disks (live if running, else persistent;
        ``persistent``: the persistent definition always)."""

        def fn(conn: libvirt.virConnect) -> dict[str, str | None]:
            dom = conn.lookupByUUIDString(uuid)
            live = dom.isActive() and not persistent
            flags = 0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE
            return disk_targets(dom.XMLDesc(flags))

        return self.connection(host).call(fn)

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


def _drop_volume(pool: libvirt.virStoragePool, name: str) -> None:
    """Delete a volume from the pool if it is there (the pool re-read first)."""
    with contextlib.suppress(libvirt.libvirtError):
        pool.refresh(0)
    _ignore_missing(
        lambda: pool.storageVolLookupByName(name).delete(0), libvirt.VIR_ERR_NO_STORAGE_VOL
    )


def _parse(xml_text: str) -> Any:
    return safe_fromstring(xml_text)


def _find_disk(domain_xml_text: str, target: str) -> str | None:
    """The XML of the domain's disk with ``target``, or None."""
    import xml.etree.ElementTree as ET

    for disk in safe_fromstring(domain_xml_text).iter("disk"):
        t = disk.find("target")
        if t is not None and t.get("dev") == target:
            return ET.tostring(disk, encoding="unicode")
    return None


def _remove_target(devices: Any, target: str) -> None:
    for disk in list(devices.iter("disk")):
        t = disk.find("target")
        if t is not None and t.get("dev") == target:
            devices.remove(disk)


def _edit_persistent(conn: libvirt.virConnect, dom: libvirt.virDomain, edit: Any) -> None:
    """Change a domain's persistent definition with ``edit(devices_element)``."""
    import xml.etree.ElementTree as ET

    root = safe_fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    devices = root.find("devices")
    edit(devices)
    conn.defineXML(ET.tostring(root, encoding="unicode"))


def _pool_target(pool: libvirt.virStoragePool) -> str | None:
    el = safe_fromstring(pool.XMLDesc(0)).find("target/path")
    return el.text if el is not None else None


@contextlib.contextmanager
def no_errors() -> Iterator[None]:
    try:
        yield
    except (FabricError, libvirt.libvirtError) as e:
        log.warning("ignored: %s", e)
