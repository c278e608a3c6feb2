"""Moving a VM's domain from one host to another.

``migrate`` makes sure the target has the fabric's storage pool (the image the VM's
disk is an overlay of is staged by the caller), works out where each of the VM's
local disks goes there, and then:

- on real hosts, calls ``migration.live_migrate`` (libvirt's live migration over the
  hosts' qemu+ssh connections, local disks copied): the guest keeps running;
- on libvirt's ``test://`` hosts, which cannot migrate, does a cold move with the
  same outcome (the domain's XML from the source, its disks made in the target's
  pool, defined and started there, then destroyed and undefined on the source, its
  disks there deleted), so the fast suite exercises every step of the orchestration.

Either way: on success the domain runs, persistent, on the target only; on failure
it runs on the source only and what was made on the target is removed.

``discard`` removes one side's copy of a domain after an interrupted move (the
reconciliation of a move whose server died).
"""

from __future__ import annotations

import contextlib
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable

import libvirt

from ..errors import FabricError, HypervisorError
from .base import DriverBase, drop_volume, ignore_missing, vm_files_named
from .connection import Fence
from .domains import _pool_target, _undefine, remove_domain
from .records import HostTarget, StagedImage
from .xml import safe_fromstring, volume_xml

log = logging.getLogger(__name__)


def local_disks(domain_xml_text: str, pool_dir: str | None) -> list[str]:
    """The file paths of the domain's disks (and console log) in ``pool_dir``."""
    if not pool_dir:
        return []
    prefix = pool_dir.rstrip("/") + "/"
    root = safe_fromstring(domain_xml_text)
    out = []
    for src in root.findall("devices/disk/source"):
        path = src.get("file")
        if path and path.startswith(prefix):
            out.append(path)
    return out


def backing_files(domain_xml_text: str, disk_path: str) -> list[str]:
    """The backing files of the disk at ``disk_path`` (its image's staged copy), as the
    domain's live XML lists them."""
    root = safe_fromstring(domain_xml_text)
    for disk in root.findall("devices/disk"):
        src = disk.find("source")
        if src is None or src.get("file") != disk_path:
            continue
        return [b.get("file", "") for b in disk.findall(".//backingStore/source") if b.get("file")]
    return []


def _source_dir(paths: dict[str, str]) -> str | None:
    """The directory of the source side's local disks (they are all in its pool)."""
    first = next(iter(paths), None)
    return first.rsplit("/", 1)[0] if first else None


def rewrite_paths(domain_xml_text: str, paths: dict[str, str]) -> str:
    """The domain's XML with each file path in ``paths`` (disks, console log) replaced."""
    root = safe_fromstring(domain_xml_text)
    for el in root.iter():
        for attr in ("file", "path"):
            value = el.get(attr)
            if value in paths:
                el.set(attr, paths[value])
    return ET.tostring(root, encoding="unicode")


class MovingMixin(DriverBase):
    """The moving half of LibvirtDriver."""

    def migrate(
        self,
        source: HostTarget,
        target: HostTarget,
        uuid: str,
        vm_id: int,
        *,
        staged: StagedImage | None = None,
        migrate_address: str | None = None,
        timeout: float = 600.0,
        fence: Fence | None = None,
    ) -> dict[str, str]:
        """Move the running domain ``uuid`` (fabric VM ``vm_id``) from ``source`` to
        ``target``. Returns the map of its local disks' paths (source -> target).
        Raises HypervisorError (the domain still on the source only) when it cannot."""
        fence = fence or Fence(f"the move of vm {vm_id}")
        target_dir = self.connection(target).call(
            lambda conn: _pool_target(self._ensure_pool(conn, target))
        )

        def read_source(conn: libvirt.virConnect) -> tuple[str, str | None, dict[str, int]]:
            dom = conn.lookupByUUIDString(uuid)
            if not dom.isActive():
                raise HypervisorError(f"vm {vm_id} is not running on {source.label}")
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)
            pool = self._ensure_pool(conn, source)
            src_dir = _pool_target(pool)
            sizes = {}
            for path in local_disks(xml, src_dir):
                with contextlib.suppress(libvirt.libvirtError):
                    sizes[path] = int(conn.storageVolLookupByPath(path).info()[1])
            return xml, src_dir, sizes

        try:
            xml, src_dir, sizes = self.connection(source).call(read_source)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"{source.label}: cannot read vm {vm_id}: {e}") from None
        if not target_dir:
            raise HypervisorError(f"{target.label}: the fabric's storage pool has no directory")
        paths = {
            p: f"{target_dir.rstrip('/')}/{p.rsplit('/', 1)[-1]}" for p in local_disks(xml, src_dir)
        }
        fence.check("moving its domain")
        if source.is_test and target.is_test:
            self._cold_move(source, target, uuid, vm_id, xml, paths, sizes, staged)
            return paths
        # The VM's own disk is an overlay on its image, staged on the target by the
        # caller: only the overlay's clusters are copied (live_migrate's incremental
        # copy), the base is mapped to the target's staged copy.
        full = dict(paths)
        if staged is not None:
            disks = vm_files_named(xml, vm_id, src_dir, self.vm_files(vm_id))
            own_name = next((n for n in disks if n.endswith(".qcow2")), None)
            own = next((p for p in paths if own_name and p.endswith(f"/{own_name}")), None)
            for base in backing_files(xml, own) if own else []:
                full.setdefault(base, staged.path)
        address = migrate_address or target.migrate_address
        self._live_move(source, target, uuid, full, address, timeout, fence)
        return paths

    def _live_move(
        self,
        source: HostTarget,
        target: HostTarget,
        uuid: str,
        paths: dict[str, str],
        migrate_address: str | None,
        timeout: float,
        fence: Fence,
    ) -> None:
        try:
            from .migration import live_migrate  # mig14's part of issue 14
        except ImportError:
            raise HypervisorError("live migration is not available in this build") from None

        def outer(src: libvirt.virConnect) -> None:
            def inner(dst: libvirt.virConnect) -> None:
                live_migrate(
                    src,
                    dst,
                    uuid,
                    target_disk_paths=paths,
                    migrate_address=migrate_address,
                    timeout=timeout,
                    fence=fence,
                )

            self.connection(target).call(inner, timeout=timeout + 60)

        self.connection(source).call(outer, timeout=timeout + 120)

    def _cold_move(
        self,
        source: HostTarget,
        target: HostTarget,
        uuid: str,
        vm_id: int,
        xml: str,
        paths: dict[str, str],
        sizes: dict[str, int],
        staged: StagedImage | None,
    ) -> None:
        """test:// hosts: the same outcome as a live move, without moving memory."""
        own = self.vm_files(vm_id)
        named = vm_files_named(xml, vm_id, _source_dir(paths), own)
        disk_name = next((n for n in named if n.endswith(".qcow2")), own[0])

        def on_target(conn: libvirt.virConnect) -> None:
            pool = self._ensure_pool(conn, target)
            made: list[Callable[[], None]] = []
            try:
                for src, dst in paths.items():
                    name = dst.rsplit("/", 1)[-1]
                    if name.endswith(".console.log"):
                        continue
                    backing = staged.path if staged and name == disk_name else None
                    ignore_missing(
                        lambda n=name: pool.storageVolLookupByName(n).delete(0),
                        libvirt.VIR_ERR_NO_STORAGE_VOL,
                    )
                    vol = pool.createXML(
                        volume_xml(
                            name,
                            sizes.get(src, 1 << 30),
                            "qcow2",
                            backing,
                            staged.format if staged and backing else None,
                        ),
                        0,
                    )
                    made.append(lambda v=vol: v.delete(0))
                dom = conn.defineXML(rewrite_paths(xml, paths))
                made.append(lambda: _undefine(dom))
                dom.create()
            except BaseException:
                for undo in reversed(made):
                    with contextlib.suppress(libvirt.libvirtError):
                        undo()
                raise

        try:
            self.connection(target).call(on_target)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"{target.label}: cannot start vm {vm_id} there: {e}") from None
        self.discard(source, uuid, vm_id, list(paths))

    def discard(self, host: HostTarget, uuid: str, vm_id: int, disks: list[str] | None) -> None:
        """Remove one side's copy of a moved domain: stop and undefine it, and delete
        ``disks`` (paths in the host's fabric pool; None: the VM's own disk and console
        log). Absent is fine."""

        def fn(conn: libvirt.virConnect) -> None:
            pool = self._ensure_pool(conn, host)
            names = (
                [p.rsplit("/", 1)[-1] for p in disks]
                if disks is not None
                else self._vm_pool_files(conn, pool, uuid, vm_id)
            )
            remove_domain(conn, uuid)
            for name in names:
                drop_volume(pool, name)

        try:
            self.connection(host).call(fn)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"{host.label}: cannot remove vm {vm_id}'s copy: {e}") from None

    def resume_if_paused(self, host: HostTarget, uuid: str) -> bool:
        """Resume the domain if it is paused (a migration that was cut off may leave
        the source paused). True if it was resumed."""

        def fn(conn: libvirt.virConnect) -> bool:
            dom = conn.lookupByUUIDString(uuid)
            if dom.isActive() and dom.info()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()
                return True
            return False

        return self.connection(host).call(fn)

    def pool_dir(self, host: HostTarget) -> str | None:
        """The directory of the fabric's pool on ``host``."""
        try:
            return self.connection(host).call(
                lambda conn: _pool_target(self._ensure_pool(conn, host))
            )
        except (libvirt.libvirtError, FabricError):
            return None
