"""Storage on a host: image staging, volumes (create, delete, copy between hosts), hot-plugging."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import IO, Any

import libvirt

from ..errors import Conflict, FabricError, HypervisorError, Unavailable
from .base import CHUNK, GIB, DriverBase, active_pool, drop_volume
from .records import HostTarget, StagedImage
from .xml import (
    NO_TARGET_LEFT,
    RbdBackend,
    ceph_secret_xml,
    disk_targets,
    disk_xml,
    next_free_target,
    rbd_pool_xml,
    safe_fromstring,
    volume_xml,
)

# An opener yields (file object, size in bytes) for an image's source file.
Opener = Callable[[str], contextlib.AbstractContextManager[tuple[IO[bytes], int]]]


class StorageMixin(DriverBase):
    """The storage half of LibvirtDriver: images, volumes and the disks of domains."""

    def stage(
        self,
        host: HostTarget,
        image_key: str,
        fmt: str,
        sources: dict[str, str],
        opener: Opener,
        reuse: bool,
        wait: float | None = None,
    ) -> StagedImage:
        """Copy an image (and its kernel/initrd, if any) into the host's pool once.

        ``sources`` maps "disk"/"kernel"/"initrd" to source paths, read with
        ``opener``. With ``reuse`` and the volume present, nothing is copied.
        The copy goes through libvirt's storage streams, so it works on any host
        libvirt reaches. A failed copy deletes the partial volume. One copy of an
        image to a host at a time: a second waits for the first at most ``wait``
        seconds (None: as long as it takes), then is refused with Unavailable.
        """
        lock = self._stage_locks.setdefault((host.id, image_key), threading.Lock())
        if not lock.acquire(timeout=-1 if wait is None else wait):
            raise Unavailable(
                f"image {image_key} is still being copied to {host.label} for another "
                f"create (waited {wait:g}s); try again shortly"
            )
        try:
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
        finally:
            lock.release()

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
            sent = _pump(lambda: fh.read(CHUNK), stream, "image upload")
            if sent != size:
                raise HypervisorError(f"image upload sent {sent} of {size} bytes")
            stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise

    def _volume_pool(
        self, conn: libvirt.virConnect, host: HostTarget, rbd: RbdBackend | None
    ) -> libvirt.virStoragePool:
        if rbd is None:
            return self._ensure_pool(conn, host)
        return active_pool(
            conn, rbd.libvirt_pool, lambda: conn.storagePoolDefineXML(rbd_pool_xml(rbd), 0)
        )

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
            drop_volume(pool, vol_name)
            vol = pool.createXML(volume_xml(vol_name, size_gb * GIB, "raw"), 0)
            return vol.path()

        return self.connection(host).call(fn)

    def delete_volume(self, host: HostTarget, vol_name: str, rbd: RbdBackend | None = None) -> None:
        def fn(conn: libvirt.virConnect) -> None:
            pool = self._volume_pool(conn, host, rbd)
            drop_volume(pool, vol_name)

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
                moved = _pump(lambda: down.recv(CHUNK), up, "volume copy")
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
            if target is None:
                raise Conflict(f"the VM has {NO_TARGET_LEFT}")
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

    def volumes(self, host: HostTarget) -> list[str]:
        def fn(conn: libvirt.virConnect) -> list[str]:
            pool = self._ensure_pool(conn, host)
            with contextlib.suppress(libvirt.libvirtError):
                pool.refresh(0)
            return sorted(pool.listVolumes())

        return self.connection(host).call(fn)


def _pump(read: Callable[[], bytes | int], stream: libvirt.virStream, what: str) -> int:
    """Send what ``read`` returns into ``stream`` until it returns nothing; the bytes sent."""
    sent = 0
    while True:
        chunk = read()
        if not chunk:
            return sent
        if isinstance(chunk, int):  # -2: would block (blocking streams: not expected)
            continue
        view = memoryview(chunk)
        while view:
            n = stream.send(view.tobytes())
            if n < 0:
                raise HypervisorError(f"{what} stream refused data")
            view = view[n:]
            sent += n


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
