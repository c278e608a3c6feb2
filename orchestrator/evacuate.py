"""A dead host's VMs rebuilt elsewhere (evacuation), and its stale domains fenced
when it comes back, so that no VM ever runs twice.

- Evacuation: a host down (``HostStatus.DOWN``) for ``evacuate.after`` seconds since
  it last answered, or on an admin's word (``POST /pm/evacuate``). Its pool VMs that
  are not checked out are simply removed (their pools refill); a checked-out or
  plain VM is rebuilt from its image on another host by the create path, keeping its
  id, name, reservation and holder (``rebuilt_at``/``rebuilt_from`` and a
  ``vm.rebuilt`` event say so); its host-local volumes are marked ``lost``, shared
  ones are attached again to the rebuilt VM. Claims move with the VMs.
- Fencing: when a host answers again (discovery, before it is marked up) and at
  every reconciliation, a domain of this installation whose VM the registry now
  places on another host, or that an evacuation removed, is destroyed and undefined
  (never started), with a ``vm.fenced`` event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .access import SYSTEM, Principal
from .clock import utcnow
from .config import EvacuateConfig
from .errors import Conflict, FabricError
from .hosts import host_target
from .hypervisor.driver import DomainRecord, LibvirtDriver
from .model import VM_OWNED, HostStatus, VmState, VolumeState
from .registry import HostRow, Registry, VmRow

if TYPE_CHECKING:
    from .fabric import Fabric
    from .hosts import Discovery
    from .volumes import Volumes

log = logging.getLogger(__name__)

# States of a VM that is rebuilt elsewhere (the rest are removed, or left for an admin).
REBUILT = frozenset({VmState.ACTIVE, VmState.IN_USE})


def stale_reason(
    registry: Registry, host_id: int, dom: DomainRecord, *, returning: bool = False
) -> str | None:
    """Why a domain on host ``host_id`` must not run (None: it is not stale): it is
    this installation's, for a VM the registry places on another host, or for a VM an
    evacuation of this host removed. On a host that is up, a VM some live server works
    on is left alone (a move between hosts may be in flight); on a host that is only
    now answering again (``returning``), no work of the fabric can involve it."""
    if dom.vm_id is None or dom.installation != registry.installation_id:
        return None
    try:
        vm = registry.vms.get(dom.vm_id)
    except FabricError:
        if registry.vms.evacuated_from(dom.vm_id, host_id):
            return f"vm {dom.vm_id} was removed when pmid {host_id} was evacuated"
        return None  # unknown: reconciliation's grace decides (reconcile.py)
    if vm.host_id == host_id:
        return None
    if not returning and registry.cluster.owner_alive(vm.owner):
        return None
    return f"vm {vm.id} now runs on pmid {vm.host_id}"


class Evacuator:
    def __init__(
        self,
        registry: Registry,
        driver: LibvirtDriver,
        fabric: Fabric,
        volumes: Volumes,
        config: EvacuateConfig,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.registry = registry
        self.driver = driver
        self.fabric = fabric
        self.volumes = volumes
        self.config = config
        self.clock = clock
        self.discovery: Discovery | None = None  # set by build_services (a cycle)

    # -- evacuation ------------------------------------------------------------------

    def due(self) -> list[HostRow]:
        """Hosts down for ``evacuate.after`` seconds or more (since they last answered)
        that still have VMs or volumes; none when automatic evacuation is off."""
        if self.config.after is None:
            return []
        limit = self.clock() - timedelta(seconds=self.config.after)
        out = []
        for host in self.registry.hosts.list(include_retired=True):
            if host.status != HostStatus.DOWN or host.last_seen is None:
                continue
            seen = host.last_seen
            if seen.tzinfo is None:
                seen = seen.replace(tzinfo=limit.tzinfo)
            if seen > limit:
                continue
            if self._occupied(host.id):
                out.append(host)
        return out

    def run_auto(self) -> list[dict[str, Any]]:
        """Evacuate every host that is due (the discovery lease's pass)."""
        reports = []
        for host in self.due():
            log.warning("host %s has been down since %s: evacuating it", host.label, host.last_seen)
            try:
                reports.append(self.evacuate(host.id, reason="down too long", discover=False))
            except FabricError as e:
                log.warning("could not evacuate %s: %s", host.label, e)
        return reports

    def evacuate(
        self,
        host_id: int,
        *,
        by: Principal = SYSTEM,
        reason: str = "an admin's word",
        discover: bool = True,
    ) -> dict[str, Any]:
        """Rebuild or remove every VM of a host that is down (Conflict if it answers:
        its VMs are migrated or drained instead). ``discover``: look at the host once
        more first (an admin's word must not act on an old reading)."""
        by.require_admin("evacuate hosts")
        host = self.registry.hosts.get_any(host_id)
        if discover and self.discovery is not None:
            self.discovery.discover_host(host)
            host = self.registry.hosts.get_any(host_id)
        if host.status != HostStatus.DOWN:
            raise Conflict(
                f"pmid {host_id} ({host.label}) is {host.status}, not down: only a dead "
                "host is evacuated (a live host's VMs are migrated or it is drained)"
            )
        report: dict[str, Any] = {
            "pmid": host.id,
            "host": host.label,
            "replaced": [],
            "rebuilt": [],
            "failed": [],
            "busy": [],
            "left": [],
            "volumes_lost": [],
        }
        # Its local volumes first: the rebuilt VMs are made without them.
        report["volumes_lost"] = self.registry.volumes.lose(
            host.id, f"its host {host.label} died and was evacuated"
        )
        for vm in self.registry.vms.list(host_id=host.id):
            self._one(vm, host, report)
        self.registry.events.record(
            "host.evacuated",
            host_id=host.id,
            detail={
                "reason": reason,
                **{k: v for k, v in report.items() if k not in ("pmid", "host")},
            },
        )
        log.warning("evacuated %s: %s", host.label, report)
        return report

    def _one(self, vm: VmRow, host: HostRow, report: dict[str, Any]) -> None:
        if not self.registry.vms.take(vm.id, [vm.state]):
            report["busy"].append(vm.id)  # a live server works on it: next pass
            return
        pooled = vm.pool is not None and vm.state != VmState.IN_USE
        if pooled or vm.state in VM_OWNED:
            # A pool VM nobody holds is simply replaced (its pool refills); a create or
            # destroy left half-done on the dead host is over.
            self.fabric.addresses.unpublish(vm)
            self.registry.vms.forget(
                vm.id,
                event_kind="vm.evacuated",
                detail={"host": host.label, "pool": vm.pool, "state": vm.state},
            )
            report["replaced"].append(vm.id)
            return
        if vm.state not in REBUILT:
            self.registry.vms.let_go(vm.id)  # failed or vanished: an admin decides
            report["left"].append(vm.id)
            return
        shared = [
            v for v in self.registry.volumes.list(vm_id=vm.id) if v.status == VolumeState.ATTACHED
        ]
        try:
            self.fabric.rebuild_vm(vm, host)
        except FabricError as e:
            self.registry.vms.let_go(vm.id)
            report["failed"].append({"vmid": vm.id, "error": e.message})
            return
        report["rebuilt"].append(vm.id)
        for vol in shared:  # shared storage: the rebuilt VM gets its volumes again
            if not self.registry.volumes.transition(
                vol.id, VolumeState.AVAILABLE, expect=[VolumeState.ATTACHED],
                vm_id=None, target=None,
            ):  # fmt: skip
                continue
            try:
                self.volumes.attach(vm.id, vol.id)
            except FabricError as e:
                log.warning("vm %d: volume %d not attached again: %s", vm.id, vol.id, e)

    def _occupied(self, host_id: int) -> bool:
        if self.registry.vms.list(host_id=host_id):
            return True
        return any(
            v.status != VolumeState.LOST and v.backend == "dir"
            for v in self.registry.volumes.list(host_id=host_id)
        )

    # -- fencing ---------------------------------------------------------------------

    def fence_host(self, host: HostRow) -> list[dict[str, Any]]:
        """Destroy and undefine the stale domains on ``host`` (see ``stale_reason``),
        never starting them; FabricError if the host cannot be listed or one of them
        cannot be removed (the host must then not be used)."""
        target = host_target(host)
        fenced = []
        for dom in self.driver.domains(target):
            why = stale_reason(self.registry, host.id, dom, returning=True)
            if why is None:
                continue
            self.driver.destroy(target, dom.uuid, dom.vm_id or 0)
            entry = {"domain": dom.name, "vmid": dom.vm_id, "was_running": dom.active, "why": why}
            log.warning("fenced a stale domain on %s: %s", host.label, entry)
            self.registry.events.record("vm.fenced", vm_id=dom.vm_id, host_id=host.id, detail=entry)
            fenced.append(entry)
        return fenced
