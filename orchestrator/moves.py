"""Day-two operations on hosts: maintenance, moving one VM to another host, and
draining a host (moving every VM off it in the background).

A move: the VM is taken (this server works on it: no cleaner, destroyer or
reconciliation touches it meanwhile), a target is chosen (the operator's, or the
scheduler's, never the source), the move is recorded with capacity claimed on the
target (registry/moves.py), the image is staged there, the driver moves the domain,
and one transaction points the VM at the target and gives back the source's claim.
A move that fails gives back the target's claim; the VM runs on the source as
before. A move whose server was killed is finished by ``recover`` (reconciliation):
the domain is looked for on both hosts and the registry made to agree.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from . import audit
from .access import SYSTEM, Principal, Role
from .errors import BadRequest, Conflict, FabricError, HypervisorError, NotFound, NoValidHost
from .hostcache import HostCache
from .hosts import host_target
from .hypervisor.driver import Fence, HostTarget, LibvirtDriver
from .images import ImageStager
from .model import VM_MOVABLE, DrainState, NetworkKind, NetworkMode
from .registry import DrainRow, HostRow, MigrationRow, Registry, VmRow
from .scheduler import PlacementRequest, Scheduler

log = logging.getLogger(__name__)

MAX_REASON = 200  # characters of a maintenance reason


class Mover:
    def __init__(
        self,
        registry: Registry,
        driver: LibvirtDriver,
        scheduler: Scheduler,
        hosts: HostCache,
        images: ImageStager,
        stopping: threading.Event,
        *,
        timeout: float = 900.0,
    ) -> None:
        self.registry = registry
        self.driver = driver
        self.scheduler = scheduler
        self.hosts = hosts
        self.images = images
        self.stopping = stopping
        self.timeout = timeout  # seconds one move may take
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()

    # -- maintenance -----------------------------------------------------------------

    def set_maintenance(self, host_id: int, reason: str, *, by: Principal = SYSTEM) -> HostRow:
        by.require_admin("put hosts into maintenance")
        reason = " ".join(str(reason).split())
        if not reason:
            raise BadRequest("reason: say why the host goes into maintenance")
        if len(reason) > MAX_REASON:
            raise BadRequest(f"reason: at most {MAX_REASON} characters")
        self.registry.moves.set_maintenance(host_id, reason)
        self.hosts.invalidate()
        return self.registry.hosts.get(host_id)

    def clear_maintenance(self, host_id: int, *, by: Principal = SYSTEM) -> HostRow:
        by.require_admin("take hosts out of maintenance")
        host = self.registry.hosts.get(host_id)
        drain = self.registry.moves.latest_drain(host_id)
        if drain is not None and drain.state == DrainState.RUNNING and self._alive(drain):
            raise Conflict(
                f"pmid {host_id} is being drained (drain {drain.id}); cancel the drain first"
            )
        if host.maintenance is not None:
            self.registry.moves.set_maintenance(host_id, None)
            self.hosts.invalidate()
        return self.registry.hosts.get(host_id)

    # -- one VM ----------------------------------------------------------------------

    def migrate_vm(
        self,
        vm_id: int,
        target_id: int | None = None,
        *,
        by: Principal = SYSTEM,
        drain_id: int | None = None,
    ) -> MigrationRow:
        """Move a running VM to ``target_id`` (None: the scheduler's choice) and wait for
        it. Returns the finished move; raises (the VM where it was) when it cannot."""
        by.require_admin("migrate VMs")
        vm = self.registry.vms.get(vm_id)
        if vm.host_id is None:
            raise Conflict(f"vmid {vm_id} has no host")
        if vm.state not in VM_MOVABLE:
            raise Conflict(f"vmid {vm_id} is {vm.state}; only a running VM moves")
        if vm.network and NetworkMode.parse(vm.network).kind == NetworkKind.FORWARD:
            raise Conflict(
                f"vmid {vm_id} is reached through a port forwarded on its host "
                "(network=forward): its address is its host's, so it cannot move"
            )
        if target_id is not None:
            if target_id == vm.host_id:
                raise BadRequest(f"vmid {vm_id} is on pmid {target_id} already")
            self.registry.hosts.get(target_id)  # 404 for an unknown pmid
        if not self.registry.vms.take(vm_id, list(VM_MOVABLE)):
            current = self.registry.vms.get(vm_id)
            raise Conflict(
                f"vmid {vm_id} is {current.state} and the fabric is working on it; "
                "try again shortly"
            )
        try:
            mig = self._claim_target(vm, target_id, drain_id, by)
        except BaseException:
            self.registry.vms.let_go(vm_id)
            raise
        return self._move(vm, mig)

    def _request(self, vm: VmRow, exclude: Iterable[int]) -> PlacementRequest:
        spec = self.registry.inventory.image_spec(vm.image_id)
        local = [
            v.size
            for v in self.registry.volumes.list(vm_id=vm.id)
            if v.backend == "dir" and v.host_id == vm.host_id
        ]
        return PlacementRequest(
            cpu=vm.cpu,
            ram=vm.ram,
            disk=vm.disk + sum(local),
            arch=spec.arch,
            label=f"vmid {vm.id}",
            exclude=frozenset(exclude),
        )

    def _claim_target(
        self, vm: VmRow, target_id: int | None, drain_id: int | None, by: Principal
    ) -> MigrationRow:
        """Choose the target and claim the VM's capacity there, with the move recorded."""
        # Its network must be the same on the target (a LAN both hosts are on, or
        # each host's own user networking): else it would lose its address.
        other_net = {
            h.id for h in self.registry.hosts.list() if vm.network and h.network != vm.network
        }
        if target_id in other_net:
            raise Conflict(
                f"pmid {target_id} does not give its VMs network {vm.network}: "
                f"vmid {vm.id} would lose its address there"
            )

        def candidates() -> list:
            return [
                h
                for h in self.hosts.states()
                if h.id not in other_net and (target_id is None or h.id == target_id)
            ]

        states = candidates()
        req = self._request(vm, {vm.host_id})  # type: ignore[arg-type]
        if not [h for h in states if h.id != vm.host_id]:
            raise NoValidHost(
                f"no host can take vmid {vm.id}: no other host gives its VMs network {vm.network}",
                [],
            )
        for _attempt in range(3):
            placement = self.scheduler.select(states, req)
            for cand in placement.hosts:
                mig = self.registry.moves.begin(
                    vm.id,
                    vm.host_id,  # type: ignore[arg-type]
                    cand.id,
                    cpu=req.cpu,
                    ram=req.ram,
                    disk=req.disk,
                    drain_id=drain_id,
                    requested_by=by.name,
                )
                if mig is not None:
                    self.hosts.claimed(cand.id, req.cpu, req.ram, req.disk)
                    return mig
                self.hosts.refresh_host(cand.id)
            states = [h for h in self.hosts.states() if target_id is None or h.id == target_id]
        raise NoValidHost(f"no host could take vmid {vm.id}: every candidate was taken", [])

    def _move(self, vm: VmRow, mig: MigrationRow) -> MigrationRow:
        source = self.registry.hosts.get_any(mig.source_id)
        target = self.registry.hosts.get_any(mig.target_id)
        started = time.monotonic()
        fence = Fence(f"the move of vm {vm.id}")
        try:
            spec = self.registry.inventory.image_spec(vm.image_id)
            staged = self.images.stage(target, vm.image_id, spec)
            self.driver.migrate(
                host_target(source),
                host_target(target),
                vm.uuid,
                vm.id,
                staged=staged,
                timeout=self.timeout,
                fence=fence,
            )
        except BaseException as e:
            fence.abandon()
            reason = e.message if isinstance(e, FabricError) else str(e)
            self._give_up(vm, mig, source, target, reason)
            if isinstance(e, FabricError):
                raise
            raise HypervisorError(f"vmid {vm.id} could not move: {reason}") from e
        elapsed = round(time.monotonic() - started, 3)
        self.registry.moves.finish(mig.id, detail={"seconds": elapsed})
        self.hosts.invalidate()
        log.info("vm %d moved from %s to %s in %.1fs", vm.id, source.label, target.label, elapsed)
        return self.registry.moves.get(mig.id)

    def _give_up(
        self, vm: VmRow, mig: MigrationRow, source: HostRow, target: HostRow, reason: str
    ) -> None:
        """A move that failed: the VM must run on the source only. If it is already
        on the target only (the move got that far), the move is finished instead."""
        src_t, dst_t = host_target(source), host_target(target)
        try:
            on_source = self.driver.domain_running(src_t, vm.uuid)
            on_target = self.driver.domain_defined(dst_t, vm.uuid)
        except FabricError:
            on_source, on_target = True, False  # unsure: reconciliation looks again
        if not on_source and on_target:
            self.registry.moves.finish(mig.id, detail={"after": reason})
        else:
            if on_source and on_target:  # a half-made copy on the target goes
                try:
                    shared = self._same_pool(src_t, dst_t)
                    self.driver.discard(dst_t, vm.uuid, vm.id, [] if shared else None)
                except FabricError as e:
                    log.warning("vm %d: its copy on %s stays for now: %s", vm.id, target.label, e)
            self.registry.moves.fail(mig.id, reason)
        self.hosts.invalidate()

    # -- draining --------------------------------------------------------------------

    def drain(self, host_id: int, *, by: Principal = SYSTEM, wait: bool = False) -> DrainRow:
        """Move every VM off the host in the background (``wait``: here), the scheduler
        choosing each one's target. The host goes into maintenance first (if it was not),
        so nothing new lands there. A VM that cannot move stays, running, and the
        drain's ``failed`` says why."""
        by.require_admin("drain hosts")
        host = self.registry.hosts.get(host_id)
        if host.maintenance is None:
            self.set_maintenance(host_id, "drained", by=by)
        vms = [vm.id for vm in self.registry.vms.list(host_id=host_id)]
        row = self.registry.moves.start_drain(host_id, len(vms), by.name)
        if wait:
            self._run_drain(row.id, vms)
            return self.registry.moves.drain(row.id)
        thread = threading.Thread(  # its events name who asked for the drain
            target=audit.carry(self._run_drain),
            args=(row.id, vms),
            name=f"drain-{host_id}",
            daemon=True,
        )
        with self._lock:
            self._threads[row.id] = thread
        thread.start()
        return row

    def _run_drain(self, drain_id: int, vm_ids: list[int]) -> None:
        try:
            for vm_id in vm_ids:
                if self.stopping.is_set():
                    return  # the server stops: the drain is interrupted
                if self.registry.moves.drain(drain_id).state != DrainState.RUNNING:
                    break  # cancelled
                try:
                    self.migrate_vm(vm_id, drain_id=drain_id)
                except NotFound:
                    self.registry.moves.drain_progress(
                        drain_id, failure={"vmid": vm_id, "reason": "destroyed meanwhile"}
                    )
                except FabricError as e:
                    log.warning("drain %d: vm %d stays: %s", drain_id, vm_id, e.message)
                    self.registry.moves.drain_progress(
                        drain_id, failure={"vmid": vm_id, "reason": e.message}
                    )
                else:
                    self.registry.moves.drain_progress(drain_id, moved=True)
            self.registry.moves.end_drain(drain_id)
        except Exception:
            log.exception("drain %d stopped", drain_id)
        finally:
            with self._lock:
                self._threads.pop(drain_id, None)

    def cancel_drain(self, host_id: int, *, by: Principal = SYSTEM) -> DrainRow:
        """Stop the host's drain: the move in flight ends, no other starts."""
        by.require_admin("cancel drains")
        self.registry.hosts.get(host_id)
        return self.registry.moves.cancel_drain(host_id)

    def wait(self, drain_id: int, timeout: float | None = None) -> None:
        """Wait for this server's drain thread (tests, shutdown)."""
        with self._lock:
            thread = self._threads.get(drain_id)
        if thread is not None:
            thread.join(timeout)

    def _alive(self, drain: DrainRow) -> bool:
        return self.registry.cluster.owner_alive(drain.server)

    # -- after a crash ---------------------------------------------------------------

    def recover(self) -> list[int]:
        """Finish the moves whose server died mid-move: find where the domain really is
        (if both hosts have it, the source's running one wins and the target's copy is
        removed), point the registry there and give back the claim on the other host.
        Drains whose server died are marked interrupted and go on here. Returns the VM
        ids settled."""
        settled = []
        for mig in self.registry.moves.orphaned():
            if self.stopping.is_set():
                break
            try:
                if self._settle(mig):
                    settled.append(mig.vm_id)
            except FabricError as e:
                log.warning("move %d of vm %d: not settled yet: %s", mig.id, mig.vm_id, e)
        for drain in self.registry.moves.interrupt_dead_drains():
            self._resume_drain(drain)
        if settled:
            self.hosts.invalidate()
        return settled

    def _resume_drain(self, drain: DrainRow) -> None:
        """A drain whose server died goes on here (a new drain of the same host, for
        whoever asked for the first), unless it was being cancelled or the host has
        left maintenance since."""
        log.warning(
            "drain %d of pmid %d was interrupted (its server died)", drain.id, drain.host_id
        )
        if drain.state == DrainState.CANCELLING:
            return
        try:
            host = self.registry.hosts.get(drain.host_id)
            if host.maintenance is None or self.stopping.is_set():
                return
            by = Principal(drain.requested_by, Role.ADMIN, system=drain.requested_by is None)
            row = self.drain(drain.host_id, by=by)
        except FabricError as e:
            log.warning("drain of pmid %d not resumed: %s", drain.host_id, e.message)
            return
        log.info("drain %d of pmid %d goes on as drain %d", drain.id, drain.host_id, row.id)

    def _settle(self, mig: MigrationRow) -> bool:
        source = self.registry.hosts.get_any(mig.source_id)
        target = self.registry.hosts.get_any(mig.target_id)
        src_t, dst_t = host_target(source), host_target(target)
        try:
            vm = self.registry.vms.get(mig.vm_id)
        except NotFound:
            # Destroyed meanwhile: nothing of it may be left on the target.
            return self.registry.moves.fail(mig.id, "the VM was destroyed")
        on_source = self.driver.domain_defined(src_t, vm.uuid)
        on_target = self.driver.domain_defined(dst_t, vm.uuid)
        src_running = on_source and self.driver.domain_running(src_t, vm.uuid)
        dst_running = on_target and self.driver.domain_running(dst_t, vm.uuid)
        shared = self._same_pool(src_t, dst_t)
        if on_source and (src_running or not dst_running):
            if on_target:  # the target's incoming copy goes
                self.driver.discard(dst_t, vm.uuid, vm.id, [] if shared else None)
            if src_running and self.driver.resume_if_paused(src_t, vm.uuid):
                log.warning("vm %d: resumed on its source after an interrupted move", vm.id)
            done = self.registry.moves.fail(mig.id, "interrupted: the VM stayed on its source")
            kind = "source"
        elif on_target:
            if on_source:  # stopped on the source, running on the target: the target wins
                self.driver.discard(src_t, vm.uuid, vm.id, [] if shared else None)
            done = self.registry.moves.finish(mig.id, detail={"recovered": True})
            kind = "target"
        else:
            # On neither: the registry keeps the source (reconciliation marks it vanished).
            done = self.registry.moves.fail(mig.id, "interrupted: the domain is on neither host")
            kind = "neither"
        if done:
            self.registry.events.record(
                "reconcile.migration",
                vm_id=vm.id,
                host_id=mig.target_id if kind == "target" else mig.source_id,
                detail={"migration": mig.id, "found_on": kind},
            )
        return done

    def _same_pool(self, a: HostTarget, b: HostTarget) -> bool:
        """Whether two hosts' fabric pools are one directory (shared storage, or two
        session daemons on one machine): then a discarded copy keeps its disks."""
        if a.is_test or b.is_test:
            return False
        da, db = self.driver.pool_dir(a), self.driver.pool_dir(b)
        return da is not None and da == db and a.address == b.address
