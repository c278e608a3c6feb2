"""What the driver's parts share: a connection per host, the fabric storage pool, absent-is-fine."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path

import libvirt

from ..errors import HypervisorError
from .connection import HostConnection, SshOptions
from .records import HostTarget
from .xml import pool_xml

POOL_NAME = "fabric"
GIB = 1024**3
MIB = 1024**2
CHUNK = 1024 * 1024


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


def active_pool(
    conn: libvirt.virConnect, name: str, define: Callable[[], libvirt.virStoragePool]
) -> libvirt.virStoragePool:
    """The storage pool ``name``, defined by ``define()`` if libvirt has none, and started."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise
        pool = define()
    if not pool.isActive():
        pool.create(0)
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
        def define() -> libvirt.virStoragePool:
            pool = conn.storagePoolDefineXML(pool_xml(POOL_NAME, self._pool_path(host)), 0)
            with contextlib.suppress(libvirt.libvirtError):
                pool.build(0)
            with contextlib.suppress(libvirt.libvirtError):
                pool.setAutostart(1)
            return pool

        return active_pool(conn, POOL_NAME, define)
