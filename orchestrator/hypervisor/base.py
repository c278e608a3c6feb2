"""What the driver's parts share: a connection per host, the fabric storage pool, absent-is-fine."""

from __future__ import annotations

import contextlib
import getpass
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import libvirt

from ..errors import HypervisorError
from .connection import HostConnection, SshOptions
from .records import HostTarget
from .xml import pool_xml, safe_fromstring

POOL_NAME = "fabric"
GIB = 1024**3
MIB = 1024**2
CHUNK = 1024 * 1024


SYSTEM_POOL_DIR = "/var/lib/libvirt/images/fabric"


def default_pool_path(uri: str) -> str:
    """The fabric pool's directory on a host whose pm line has no ``pool=``.

    A system daemon: ``/var/lib/libvirt/images/fabric``, beside libvirt's own images.
    A session daemon runs as a user and can write only what that user can: the
    ``fabric`` directory in libvirt's per-user images directory of that user's home,
    ``~/.local/share/libvirt/images`` (what virt-manager uses for a session). The home
    is this process's for a local URI (``qemu:///session``: the daemon is ours);
    over SSH it is ``/home/USER`` (``/root`` for root), USER being the URI's user or,
    as for ssh, ours. libvirt makes the directory, parents included, the first time.
    """
    parts = urlsplit(uri)
    if not parts.path.rstrip("/").endswith("/session"):
        return SYSTEM_POOL_DIR
    if not parts.hostname:
        home = str(Path.home())
    else:
        user = parts.username or getpass.getuser()
        home = "/root" if user == "root" else f"/home/{user}"
    return f"{home.rstrip('/')}/.local/share/libvirt/images/fabric"


def vm_file_stem(installation: str | None, vm_id: int) -> str:
    """What the files of VM ``vm_id`` in a host's pool are called, before the suffix:
    ``fabric-<installation>-vm-<id>``, the domain's own name, so two installations
    (two registries) whose VMs share a host's pool never share a file name. A driver
    that serves no registry (``installation`` None) uses ``vm-<id>``, the name every
    VM's files had before the installation was in it."""
    return f"fabric-{installation}-vm-{vm_id}" if installation else f"vm-{vm_id}"


def vm_file_names(installation: str | None, vm_id: int) -> tuple[str, str]:
    """(disk, console log) file names of VM ``vm_id`` in a host's pool."""
    stem = vm_file_stem(installation, vm_id)
    return f"{stem}.qcow2", f"{stem}.console.log"


def vm_files_named(
    xml_text: str, vm_id: int, pool_dir: str | None, own: tuple[str, ...] | list[str]
) -> list[str]:
    """The file names in ``pool_dir`` that the domain's XML names (disk sources,
    serial and console paths) and that are VM ``vm_id``'s: one of ``own`` (this
    installation's names) or the ``vm-<id>`` names from before the names carried the
    installation (then the file is this domain's because its definition says so)."""
    if not pool_dir:
        return []
    wanted = {*own, *vm_file_names(None, vm_id)}
    prefix = pool_dir.rstrip("/") + "/"
    out: list[str] = []
    for el in safe_fromstring(xml_text).iter():
        if el.tag not in ("source",):
            continue
        for attr in ("file", "path"):
            value = el.get(attr) or ""
            name = value[len(prefix) :] if value.startswith(prefix) else ""
            if name in wanted and name not in out:
                out.append(name)
    return out


def pool_target(pool: libvirt.virStoragePool) -> str | None:
    el = safe_fromstring(pool.XMLDesc(0)).find("target/path")
    return el.text if el is not None else None


def ignore_missing(fn: Callable[[], object], *codes: int) -> None:
    try:
        fn()
    except libvirt.libvirtError as e:
        if e.get_error_code() not in codes:
            raise


def drop_volume(pool: libvirt.virStoragePool, name: str) -> None:
    """Delete a volume from the pool if it is there (the pool re-read first)."""
    with contextlib.suppress(libvirt.libvirtError):
        pool.refresh(0)
    ignore_missing(
        lambda: pool.storageVolLookupByName(name).delete(0), libvirt.VIR_ERR_NO_STORAGE_VOL
    )


def _lookup_pool(conn: libvirt.virConnect, name: str) -> libvirt.virStoragePool | None:
    try:
        return conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise
        return None


def active_pool(
    conn: libvirt.virConnect,
    name: str,
    define: Callable[[], libvirt.virStoragePool],
    *,
    build: bool = False,
) -> libvirt.virStoragePool:
    """The storage pool ``name``, defined by ``define()`` if libvirt has none, and started.

    ``build``: a pool that is not running is built first (a dir pool's directory made,
    as ``virsh pool-start --build``; harmless when it exists), whether it was defined
    now or earlier (a directory removed since). A pool another server defines or
    starts at the same moment is taken as it is; a build that fails says why.
    """
    pool = _lookup_pool(conn, name)
    if pool is None:
        try:
            pool = define()
        except libvirt.libvirtError:
            pool = _lookup_pool(conn, name)  # defined meanwhile (another server)
            if pool is None:
                raise
    if not pool.isActive():
        try:
            if build:
                pool.build(0)
            pool.create(0)
        except libvirt.libvirtError:
            if not pool.isActive():  # else: started meanwhile, which is all we want
                raise
    return pool


class DriverBase:
    """The connections to hosts (one each, reused) and the fabric pool on each."""

    def __init__(
        self,
        *,
        ssh: SshOptions | None = None,
        state_dir: Path | None = None,
        connect_timeout: float = 10.0,
        call_timeout: float = 60.0,
        upload_timeout: float = 900.0,
        installation: str | None = None,
    ) -> None:
        # The registry's installation id (services.build_services sets it): it is in
        # the name of every file the driver makes for a VM (vm_file_names).
        self.installation = installation
        self._ssh_command = ssh.wrapper(state_dir) if (ssh and state_dir) else None
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.upload_timeout = upload_timeout
        self._conns: dict[int, HostConnection] = {}
        self._conns_lock = threading.Lock()
        self._stage_locks: dict[tuple[int, str], threading.Lock] = {}
        self._pool_locks: dict[int, threading.Lock] = {}

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

    def vm_files(self, vm_id: int, installation: str | None = None) -> tuple[str, str]:
        """(disk, console log) file names of this installation's VM ``vm_id``."""
        return vm_file_names(installation or self.installation, vm_id)

    def _vm_pool_files(
        self, conn: libvirt.virConnect, pool: libvirt.virStoragePool, uuid: str, vm_id: int
    ) -> list[str]:
        """The names of VM ``vm_id``'s files in ``pool``: this installation's names, and
        the ones the domain ``uuid`` (if defined) names as its disk or console log."""
        names = list(self.vm_files(vm_id))
        try:
            xml = conn.lookupByUUIDString(uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            return names
        for name in vm_files_named(xml, vm_id, pool_target(pool), names):
            if name not in names:
                names.append(name)
        return names

    def _pool_path(self, host: HostTarget) -> str:
        if host.pool_path:
            return host.pool_path
        if host.is_test:
            return "/fabric-pool"
        return default_pool_path(host.uri)

    def _ensure_pool(self, conn: libvirt.virConnect, host: HostTarget) -> libvirt.virStoragePool:
        """The fabric's pool on ``host``, running, its directory made the first time.
        Calls on one host take turns: discovery and a create at once must not both
        define it, nor one start it while the other has not built it yet."""

        def define() -> libvirt.virStoragePool:
            pool = conn.storagePoolDefineXML(pool_xml(POOL_NAME, self._pool_path(host)), 0)
            with contextlib.suppress(libvirt.libvirtError):
                pool.setAutostart(1)
            return pool

        with self._conns_lock:
            lock = self._pool_locks.setdefault(host.id, threading.Lock())
        with lock:
            try:
                return active_pool(conn, POOL_NAME, define, build=True)
            except libvirt.libvirtError as e:
                if e.get_error_domain() != libvirt.VIR_FROM_STORAGE:
                    raise  # e.g. the link: the connection sorts those out
                # The host's answer (a directory it cannot make or open), not a broken
                # link, though libvirt reports both as system errors.
                reason = " ".join((e.get_error_message() or str(e)).split())[:300]
                hint = "" if host.pool_path else "; set pool=/abs/dir in the pm file"
                raise HypervisorError(
                    f"host {host.label}: the fabric's storage pool in "
                    f"{self._pool_path(host)} cannot be started: {reason}{hint}"
                ) from None
