"""Reading the physical machines file again while serving (SIGHUP, or an admin's
``POST /pm/reload``): hosts added, changed or removed at run time.

The file is read by the loader used at start (``orchestrator.inventory``): a file
with a problem changes nothing, and the answer (or the log) says ``path:line:
problem``. A host that leaves the file must be empty (no VMs, no volumes), or
nothing changes and the answer names it and what is on it. New and changed hosts
are discovered at once and the scheduler's view is refreshed.

Several servers on one registry: the reload writes the registry's hosts (the
same upsert-and-retire as at start); every server's scheduler reads them from the
registry at its next host-cache refresh (``cluster.host_cache`` seconds), and the
discovery lease's holder discovers them at its next pass. The file itself is each
server's own: a server restarted with an older file would undo the change at its
start, so the file must be changed wherever a server reads it.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from .access import SYSTEM, Principal
from .errors import Conflict, FabricError
from .hostcache import HostCache
from .hosts import Discovery
from .inventory import load_hosts
from .registry import Registry

log = logging.getLogger(__name__)


class HostReloader:
    def __init__(
        self,
        registry: Registry,
        discovery: Discovery,
        hosts: HostCache,
        pm_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.registry = registry
        self.discovery = discovery
        self.hosts = hosts
        self.pm_file = pm_file  # the file the server was started with
        self._lock = threading.Lock()  # one reload at a time on this server

    def reload(self, *, by: Principal = SYSTEM) -> dict[str, Any]:
        """Read the file again and apply it (InventoryError: a problem in the file;
        Conflict: a host leaving that is not empty; either way nothing changed)."""
        by.require_admin("reload the physical machines file")
        if self.pm_file is None:
            raise Conflict("this server was not started from a physical machines file")
        if not self._lock.acquire(blocking=False):
            raise Conflict("a reload of the physical machines file is already in progress")
        try:
            specs = load_hosts(self.pm_file)  # path:line: problem on the first one
            with self.registry.startup_lock():  # not beside another server's start-up sync
                report = self.registry.inventory.reload_hosts(specs)
            self.hosts.invalidate()
            discovered = []
            for host_id in [*report.added, *report.changed]:
                row = self.registry.hosts.get(host_id)
                up = self.discovery.discover_host(row)
                discovered.append({"pmid": host_id, "up": up})
            self.hosts.invalidate()
            out = {"file": os.fspath(self.pm_file), **report.as_dict(), "discovered": discovered}
            self.registry.events.record("pm.reload", detail=out)
            log.info("physical machines file reloaded: %s", out)
            return out
        finally:
            self._lock.release()

    def reload_logged(self) -> None:
        """A reload on SIGHUP: its outcome, or why nothing changed, goes to the log."""
        try:
            self.reload()
        except FabricError as e:
            log.error("physical machines file not reloaded, nothing changed: %s", e)
