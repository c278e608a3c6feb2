"""Live migration of one running domain between two hosts with local disks.

``live_migrate`` moves a running domain from the source host's libvirt to the
target's (libvirt-python ``migrate3``, driven by this client: the hosts need not
reach each other's libvirt, only QEMU on the source must reach ``migrate_address``
on the target). Flags: ``VIR_MIGRATE_LIVE | PERSIST_DEST | UNDEFINE_SOURCE`` and
one of the storage copies:

- ``NON_SHARED_INC`` when every copied disk's backing file is mapped in
  ``target_disk_paths`` (the caller staged the same base image on the target,
  e.g. the fabric's ``fabric-<inst>-vm-N.qcow2`` overlay on a staged ``guest.qcow2``): only the
  overlay's own clusters cross the network. This is the cheap case and what the
  fabric's VMs get.
- ``NON_SHARED_DISK`` otherwise: the whole chain is copied into one flat image.

**Who makes the target disks:** ``live_migrate`` does. The caller stages base
images (and the storage pool) on the target; ``live_migrate`` creates each
target disk itself through the target's storage pool (the pool whose directory
holds the target path): same format and the same virtual size as the source
disk (libvirt refuses other sizes), backed by the mapped base for
``NON_SHARED_INC``. A target path that already exists is refused (never
overwritten). On failure it deletes the disks it created.

``target_disk_paths`` maps source paths to target paths: every file-backed disk
of the domain (and, for the incremental copy, each disk's backing file: base
on the source -> its staged copy on the target). Files the domain writes next
to a disk (a ``<serial type='file'>`` console log) go next to that disk's target
unless mapped themselves. The destination XML is the source's migratable XML
with these paths rewritten (same name and UUID), used as both the running and
the persistent definition on the target. A domain whose NIC is forwarded to its
host's own address (``network=forward``, a ``<qemu:commandline>`` hostfwd) is
refused: that address does not exist on another host.

After a move the source's copies of the moved disks and the files next to them
(the console log) are deleted through the source's storage pool (base images
stay): the source is left as if the VM had never been there.

On failure (libvirt refuses, the stream breaks, ``timeout`` runs out, or
``fence`` is abandoned) the job is aborted (``virDomainAbortJob``), a target
domain libvirt left behind is destroyed and undefined, the target disks made
here are deleted, a source domain left paused is resumed, and
``HypervisorError`` (``Abandoned`` for a fence) is raised with the reason: the
domain runs on the source only.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import libvirt

from ..errors import HypervisorError
from .connection import Abandoned, Fence
from .xml import QEMU_NS, safe_fromstring, volume_xml

log = logging.getLogger(__name__)

FLAGS_BASE = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST
FLAGS_BASE |= libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
POLL = 0.2  # seconds between looks at the job while it runs
ABORT_GRACE = 60.0  # how long an aborted job may take to end before we stop waiting


@dataclass(frozen=True)
class DiskMove:
    """One disk to copy: where it is, where it goes, what the target needs."""

    target_dev: str
    source_path: str
    target_path: str
    format: str
    capacity: int  # bytes (virtual size)
    source_backing: str | None  # the source disk's backing file, if any
    target_backing: str | None  # its staged copy on the target (from target_disk_paths)
    backing_format: str | None


def live_migrate(
    source_conn: libvirt.virConnect,
    target_conn: libvirt.virConnect,
    domain_uuid: str,
    *,
    target_disk_paths: dict[str, str],
    migrate_address: str | None,
    timeout: float,
    fence: Fence | None = None,
) -> None:
    """Move the running domain ``domain_uuid`` live to the target (see the module's
    docstring). Returns when it runs on the target, persistent there and undefined on
    the source; raises HypervisorError with the domain running on the source only."""
    fence = fence or Fence(f"the migration of {domain_uuid}")
    fence.check("starting the migration")
    dom = _lookup(source_conn, domain_uuid)
    if dom is None:
        raise HypervisorError(f"domain {domain_uuid} is not on the source host")
    if not dom.isActive():
        raise HypervisorError(f"domain {domain_uuid} is not running (a live migration needs it)")
    if _lookup(target_conn, domain_uuid) is not None:
        raise HypervisorError(
            f"the target host already has a domain with UUID {domain_uuid}; not touching it"
        )
    live_xml = dom.XMLDesc(0)
    migratable = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
    moves = _disk_moves(dom, live_xml, target_disk_paths)
    incremental = all(m.source_backing is None or m.target_backing for m in moves)
    dest_xml = _dest_xml(migratable, target_disk_paths, moves)

    flags = FLAGS_BASE
    if moves:
        flags |= (
            libvirt.VIR_MIGRATE_NON_SHARED_INC
            if incremental
            else libvirt.VIR_MIGRATE_NON_SHARED_DISK
        )
    params: dict[str, Any] = {
        libvirt.VIR_MIGRATE_PARAM_DEST_XML: dest_xml,
        libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: dest_xml,
    }
    if moves:
        params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = [m.target_dev for m in moves]
    if migrate_address:
        host = f"[{migrate_address}]" if ":" in migrate_address else migrate_address
        params[libvirt.VIR_MIGRATE_PARAM_URI] = f"tcp://{host}"
        params[libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS] = migrate_address

    made: list[libvirt.virStorageVol] = []
    try:
        for m in moves:
            fence.check(f"making the target disk {m.target_path}")
            made.append(_make_target_disk(target_conn, m, incremental))
        fence.check("starting the migration job")
        _run_job(dom, target_conn, params, flags, timeout, fence, domain_uuid)
    except BaseException as e:
        moved = _cleanup(source_conn, target_conn, domain_uuid, made)
        if moved:  # the job ended after all, on the target: that is success
            log.warning("migration of %s reported %s but the domain moved", domain_uuid, e)
            _remove_source_files(source_conn, live_xml, moves, domain_uuid)
            return
        if isinstance(e, HypervisorError):
            raise
        if isinstance(e, libvirt.libvirtError):
            raise HypervisorError(f"live migration of {domain_uuid} failed: {_short(e)}") from e
        raise
    _remove_source_files(source_conn, live_xml, moves, domain_uuid)
    log.info(
        "migrated %s live (%s, %d disk(s))",
        domain_uuid,
        "incremental copy" if incremental else "full copy",
        len(moves),
    )


# -- the job -----------------------------------------------------------------------


def _run_job(
    dom: libvirt.virDomain,
    target_conn: libvirt.virConnect,
    params: dict[str, Any],
    flags: int,
    timeout: float,
    fence: Fence,
    uuid: str,
) -> None:
    """``migrate3`` on a thread of its own; the caller's thread watches the clock and the
    fence and aborts the job when either says stop."""
    outcome: dict[str, BaseException | None] = {}

    def job() -> None:
        try:
            dom.migrate3(target_conn, params, flags)
            outcome["error"] = None
        except BaseException as e:  # handed to the waiting thread
            outcome["error"] = e

    worker = threading.Thread(target=job, name=f"migrate-{uuid[:8]}", daemon=True)
    deadline = time.monotonic() + timeout
    worker.start()
    why = None
    while worker.is_alive():
        worker.join(POLL)
        if not worker.is_alive():
            break
        if fence.abandoned:
            why = "abandoned"
        elif time.monotonic() >= deadline:
            why = "timeout"
        if why:
            break
    if why:
        with contextlib.suppress(libvirt.libvirtError):
            dom.abortJob()
        worker.join(ABORT_GRACE)
        if worker.is_alive():
            log.warning("migration job of %s still running %gs after its abort", uuid, ABORT_GRACE)
        if why == "abandoned":
            raise Abandoned(f"{fence.what} was given up while the migration ran (job aborted)")
        raise HypervisorError(
            f"live migration of {uuid} did not finish within {timeout:g}s (job aborted)"
        )
    error = outcome.get("error")
    if error is not None:
        raise error


def _cleanup(
    source_conn: libvirt.virConnect,
    target_conn: libvirt.virConnect,
    uuid: str,
    made: list[libvirt.virStorageVol],
) -> bool:
    """After a failed job: True if the domain turned out to have moved (running on the
    target, gone from the source); otherwise remove the target's half-made domain and
    the disks made for it, resume the source if it was left paused, and return False.
    Nothing on the target is removed unless the source still has the domain."""
    src = _lookup(source_conn, uuid)
    dst = _lookup(target_conn, uuid)
    src_active = _active(src)
    if src is None:
        if dst is not None and _active(dst):
            return True
        raise HypervisorError(
            f"live migration of {uuid} failed after the source undefined it; the target "
            f"{'has it, not running' if dst is not None else 'does not have it'}: look there"
        )
    if dst is not None:
        log.warning("removing the half-made copy of %s on the target", uuid)
        with contextlib.suppress(libvirt.libvirtError):
            if dst.isActive():
                dst.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            dst.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    for vol in reversed(made):
        try:
            vol.delete(0)
        except libvirt.libvirtError as e:
            log.warning("could not delete the target disk made for %s: %s", uuid, _short(e))
    if src is not None and src_active:
        with contextlib.suppress(libvirt.libvirtError):
            state, _reason = src.state()
            if state == libvirt.VIR_DOMAIN_PAUSED:
                src.resume()
    return False


def _remove_source_files(
    conn: libvirt.virConnect, live_xml: str, moves: list[DiskMove], uuid: str
) -> None:
    """After a move: the source's copies of the moved disks, and the files the domain
    wrote next to them (its console log), are stale; delete them through the source's
    storage pool. Base images stay (other VMs use them). Failures are only logged."""
    dirs = {posixpath.dirname(m.source_path) for m in moves}
    files = [m.source_path for m in moves]
    root = safe_fromstring(live_xml)
    for kind in ("serial", "console", "parallel", "channel"):
        for source in root.findall(f"./devices/{kind}/source"):
            path = source.get("path")
            if path and posixpath.dirname(path) in dirs and path not in files:
                files.append(path)
    for d in dirs:
        with contextlib.suppress(libvirt.libvirtError):
            conn.storagePoolLookupByTargetPath(d).refresh(0)
    for path in files:
        try:
            conn.storageVolLookupByPath(path).delete(0)
        except libvirt.libvirtError as e:
            log.warning("moved %s; its old file %s stays on the source: %s", uuid, path, _short(e))


# -- disks and XML -------------------------------------------------------------------


def _disk_moves(dom: libvirt.virDomain, live_xml: str, paths: dict[str, str]) -> list[DiskMove]:
    root = safe_fromstring(live_xml)
    _refuse_host_bound_network(root)
    moves = []
    for disk in root.findall("./devices/disk"):
        source = disk.find("source")
        path = source.get("file") if source is not None else None
        if disk.get("type") != "file" or not path:
            continue  # network or empty disks are not copied
        if path not in paths:
            raise HypervisorError(f"no target path given for the disk {path}")
        if disk.get("device", "disk") != "disk" or disk.find("readonly") is not None:
            continue  # a read-only file (an ISO) is the caller's to stage; only its path moves
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if not dev:
            raise HypervisorError(f"the disk {path} has no target device")
        driver = disk.find("driver")
        fmt = (driver.get("type") if driver is not None else None) or "raw"
        backing, backing_fmt = _backing(disk)
        try:
            capacity = int(dom.blockInfo(path)[0])
        except libvirt.libvirtError as e:
            raise HypervisorError(f"cannot read the size of the disk {path}: {_short(e)}") from e
        moves.append(
            DiskMove(
                target_dev=dev,
                source_path=path,
                target_path=paths[path],
                format=fmt,
                capacity=capacity,
                source_backing=backing,
                target_backing=paths.get(backing) if backing else None,
                backing_format=backing_fmt,
            )
        )
    return moves


def _backing(disk: ET.Element) -> tuple[str | None, str | None]:
    """The disk's first backing file and its format, from the running domain's XML."""
    store = disk.find("backingStore")
    if store is None:
        return None, None
    source = store.find("source")
    fmt = store.find("format")
    path = source.get("file") if source is not None else None
    return path or None, (fmt.get("type") if fmt is not None else None)


def _refuse_host_bound_network(root: ET.Element) -> None:
    for arg in root.iter(f"{{{QEMU_NS}}}arg"):
        if "hostfwd=" in (arg.get("value") or ""):
            raise HypervisorError(
                "the domain's SSH port is forwarded to its host's own address (network=forward); "
                "that address does not exist on another host, so it cannot move live"
            )


def _dest_xml(migratable: str, paths: dict[str, str], moves: list[DiskMove]) -> str:
    """The migratable XML with every mapped path rewritten; files next to a moved disk
    (e.g. the console log) go next to its target."""
    root = safe_fromstring(migratable)
    _refuse_host_bound_network(root)
    dirs = {posixpath.dirname(m.source_path): posixpath.dirname(m.target_path) for m in moves}

    def moved(path: str) -> str:
        if path in paths:
            return paths[path]
        where = dirs.get(posixpath.dirname(path))
        return posixpath.join(where, posixpath.basename(path)) if where else path

    for disk in root.findall("./devices/disk"):
        source = disk.find("source")
        if source is not None and source.get("file"):
            source.set("file", moved(source.get("file", "")))
        # the target's image says what it is backed by; the source's chain is not its own
        for store in disk.findall("backingStore"):
            disk.remove(store)
    for kind in ("serial", "console", "parallel", "channel"):
        for dev in root.findall(f"./devices/{kind}"):
            if dev.get("type") != "file":
                continue
            for source in dev.findall("source"):
                if source.get("path"):
                    source.set("path", moved(source.get("path", "")))
            for logf in dev.findall("log"):
                if logf.get("file"):
                    logf.set("file", moved(logf.get("file", "")))
    return ET.tostring(root, encoding="unicode")


def _make_target_disk(
    conn: libvirt.virConnect, m: DiskMove, incremental: bool
) -> libvirt.virStorageVol:
    directory, name = posixpath.split(m.target_path)
    try:
        pool = conn.storagePoolLookupByTargetPath(directory)
    except libvirt.libvirtError:
        raise HypervisorError(
            f"the target host has no storage pool in {directory} for {m.target_path} "
            "(the caller sets it up before migrating)"
        ) from None
    with contextlib.suppress(libvirt.libvirtError):
        pool.refresh(0)
    try:
        pool.storageVolLookupByName(name)
        exists = True
    except libvirt.libvirtError:
        exists = False
    if exists:
        raise HypervisorError(f"the target disk {m.target_path} already exists; not overwriting it")
    backing = m.target_backing if incremental else None
    if backing:
        try:
            conn.storageVolLookupByPath(backing)
        except libvirt.libvirtError:
            raise HypervisorError(
                f"the target host has no staged base image {backing} "
                f"(the copy of {m.source_backing} the caller stages)"
            ) from None
    fmt = "qcow2" if backing else m.format
    try:
        return pool.createXML(
            volume_xml(name, m.capacity, fmt, backing, m.backing_format if backing else None), 0
        )
    except libvirt.libvirtError as e:
        raise HypervisorError(f"cannot make the target disk {m.target_path}: {_short(e)}") from e


# -- helpers -------------------------------------------------------------------------------


def _lookup(conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain | None:
    try:
        return conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise HypervisorError(f"cannot look up domain {uuid}: {_short(e)}") from e


def _active(dom: libvirt.virDomain | None) -> bool:
    if dom is None:
        return False
    try:
        return bool(dom.isActive())
    except libvirt.libvirtError:
        return False


def _short(e: libvirt.libvirtError) -> str:
    msg = (e.get_error_message() or str(e)).strip()
    return " ".join(msg.split())[:300]
