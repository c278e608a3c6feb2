"""Reconciliation: the registry compared with what each host really runs, and
the half-done work of servers that died (or of this one before a restart)
finished or undone. Safe to run while serving."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .addresses import AddressWatcher
from .errors import FabricError
from .evacuate import stale_reason
from .hosts import host_target
from .hypervisor.driver import DomainRecord, HostTarget, LibvirtDriver
from .model import VM_OWNED, VM_RUNNING, HostStatus, NetworkMode, VmState
from .registry import Registry, VmRow

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    vanished: list[int]
    resumed: list[int]
    removed: list[int]
    unknown_domains: list[dict]
    skipped_hosts: list[str]
    restarted: list[int] = field(default_factory=list)
    removed_unknown: list[dict] = field(default_factory=list)
    fenced: list[dict] = field(default_factory=list)
    migrations: list[int] = field(default_factory=list)  # interrupted moves settled

    def as_dict(self) -> dict[str, Any]:
        return {
            "vanished": self.vanished,
            "resumed": self.resumed,
            "removed": self.removed,
            "unknown_domains": self.unknown_domains,
            "skipped_hosts": self.skipped_hosts,
            "restarted": self.restarted,
            "removed_unknown": self.removed_unknown,
            "fenced": self.fenced,
            "migrations": self.migrations,
        }


class Reconciler:
    def __init__(
        self,
        registry: Registry,
        driver: LibvirtDriver,
        watcher: AddressWatcher,
        stopping: threading.Event,
        *,
        remove_unknown: bool = True,
        grace: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.driver = driver
        self.watcher = watcher
        self.stopping = stopping
        self.remove_unknown = remove_unknown
        self.grace = grace  # seconds a domain is seen unknown before it is removed
        self.clock = clock
        self.last: ReconcileReport | None = None
        # Settles the moves of VMs between hosts that a dead server left (moves.py).
        self.recover_moves: Callable[[], list[int]] | None = None
        # (host id, domain UUID) -> when a pass first saw it unknown (this server)
        self._unknown_since: dict[tuple[int, str], float] = {}

    def reconcile(self) -> ReconcileReport:
        """Compare the registry with what each reachable host really runs, and resume.

        - building, no domain: the create died half-way; its claim is released.
        - building, domain present: finished if it runs, removed if not.
        - deleting: the destroy is finished.
        - a live VM whose domain is gone: marked ``vanished`` (kept, so it is seen).
        - a domain with our metadata that the registry does not know: reported; one
          with this installation's id, seen so in passes ``grace`` seconds apart, is
          removed (domain and disk), with an event ``reconcile.removed_unknown``.
          Domains of other installations, or without our metadata, are never touched.

        A VM that a live server (this one included) is working on is left alone:
        its work is in flight, not half-done. Safe to run while serving.
        """
        report = ReconcileReport([], [], [], [], [])
        # Moves a dead server left half-way first: until one is settled (its hosts
        # reachable) its VM is left alone, for its domain may be on either host.
        if self.recover_moves is not None:
            report.migrations = self.recover_moves()
        moving = {m.vm_id for m in self.registry.moves.in_flight()}
        # The registry first, the hosts second: a VM that is live in this snapshot
        # had its domain before the listings below, so it cannot be taken for
        # vanished; one that changed since fails the conditional transitions.
        by_host: dict[int, dict[int, VmRow]] = {}
        for vm in self.registry.vms.list():
            if vm.host_id is not None:
                by_host.setdefault(vm.host_id, {})[vm.id] = vm
        for host in self.registry.hosts.list():
            if self.stopping.is_set():
                break
            if host.status != HostStatus.UP:
                report.skipped_hosts.append(host.label)
                continue
            target = host_target(host)
            known = by_host.get(host.id, {})
            try:
                domains = self.driver.domains(target)
            except FabricError as e:
                report.skipped_hosts.append(host.label)
                log.warning("reconcile skipped %s: %s", host.label, e)
                continue
            mine = self.registry.installation_id
            ours = {
                d.vm_id: d
                for d in domains
                if d.vm_id is not None and d.installation in (mine, None)
            }
            for vm in known.values():
                if self.registry.cluster.owner_alive(vm.owner) or vm.id in moving:
                    continue  # being built, cleaned, destroyed or moved right now
                dom = ours.get(vm.id)
                if vm.state == VmState.DELETING or (
                    vm.state == VmState.BUILDING
                    and (dom is None or not dom.active or vm.pool is not None)
                ):
                    if self._finish_orphan(target, vm):
                        report.removed.append(vm.id)
                elif vm.state == VmState.BUILDING:
                    if self._resume(vm):
                        report.resumed.append(vm.id)
                elif dom is not None and not dom.active and vm.state in VM_RUNNING:
                    # Stopped behind our back (e.g. the host rebooted): it should run.
                    # Held while we look again and start it, so that no cleaner is
                    # resetting it at the same time.
                    if self._restart(target, vm):
                        report.restarted.append(vm.id)
                elif dom is None and vm.state != VmState.VANISHED:
                    if self.registry.vms.transition(
                        vm.id,
                        VmState.VANISHED,
                        expect=[vm.state],
                        unowned=True,
                        error=f"domain {vm.domain_name} is no longer on {host.label}",
                    ):
                        report.vanished.append(vm.id)
            unknown = []
            for vm_id, dom in ours.items():
                if vm_id in known:
                    continue
                if self.registry.vms.exists(vm_id) or self.registry.vms.evacuated_from(
                    vm_id, host.id
                ):
                    # Placed on another host now (rebuilt or moved there) or removed by
                    # an evacuation: a stale copy, never started; fenced.
                    self._fence(target, host.id, dom, report)
                    continue
                with contextlib.suppress(FabricError):  # unsure: report it
                    if not self.driver.domain_defined(target, dom.uuid):
                        continue  # destroyed meanwhile, with its VM
                report.unknown_domains.append(
                    {"pmid": host.id, "domain": dom.name, "vmid": vm_id, "active": dom.active}
                )
                if dom.installation == mine:  # not a domain of an older, unmarked fabric
                    unknown.append(dom)
            self._remove_unknown(target, host.id, unknown, report)
        for kind, ids in (
            ("reconcile.vanished", report.vanished),
            ("reconcile.resumed", report.resumed),
            ("reconcile.restarted", report.restarted),
        ):
            for vm_id in ids:
                self.registry.events.record(kind, vm_id=vm_id)
        for d in report.unknown_domains:
            log.warning("unknown domain with fabric metadata: %s", d)
            self.registry.events.record("reconcile.unknown_domain", host_id=d["pmid"], detail=d)
        self.last = report
        return report

    def _remove_unknown(
        self, target: HostTarget, host_id: int, unknown: list[DomainRecord], report: ReconcileReport
    ) -> None:
        """Remove the domains of this installation that the registry does not know once
        an earlier pass, ``grace`` seconds ago or more, saw them unknown too (e.g. what a
        create's late call left, or a VM forgotten while its host was away)."""
        now = self.clock()
        seen = {(host_id, d.uuid) for d in unknown}
        for key in [k for k in self._unknown_since if k[0] == host_id and k not in seen]:
            self._unknown_since.pop(key, None)  # gone, or known again: its time starts anew
        for dom in unknown:
            since = self._unknown_since.get((host_id, dom.uuid))
            if since is None:
                self._unknown_since[(host_id, dom.uuid)] = now  # first seen: it gets its grace
                continue
            if not self.remove_unknown or now - since < self.grace:
                continue
            if dom.vm_id is None or self.registry.vms.exists(dom.vm_id):
                continue
            try:
                self.driver.destroy(target, dom.uuid, dom.vm_id)
            except FabricError as e:
                log.warning("could not remove unknown domain %s yet: %s", dom.name, e)
                continue
            self._unknown_since.pop((host_id, dom.uuid), None)
            entry = {"pmid": host_id, "domain": dom.name, "vmid": dom.vm_id, "active": dom.active}
            entry["unknown_for"] = round(now - since, 1)
            report.removed_unknown.append(entry)
            log.warning("removed a domain unknown to the registry: %s", entry)
            self.registry.events.record("reconcile.removed_unknown", host_id=host_id, detail=entry)

    def _fence(
        self, target: HostTarget, host_id: int, dom: DomainRecord, report: ReconcileReport
    ) -> None:
        why = stale_reason(self.registry, host_id, dom)
        if why is None:
            return
        try:
            self.driver.destroy(target, dom.uuid, dom.vm_id or 0)
        except FabricError as e:
            log.warning("could not fence stale domain %s yet: %s", dom.name, e)
            return
        entry = {"domain": dom.name, "vmid": dom.vm_id, "was_running": dom.active, "why": why}
        report.fenced.append(entry)
        log.warning("fenced a stale domain: %s", entry)
        self.registry.events.record("vm.fenced", vm_id=dom.vm_id, host_id=host_id, detail=entry)

    def _restart(self, target: HostTarget, vm: VmRow) -> bool:
        if not self.registry.vms.take(vm.id, [vm.state]):
            return False  # it moved on, or someone is working on it
        try:
            if self.registry.vms.get(vm.id).host_id != target.id:
                return False  # placed elsewhere since (evacuated): this copy is stale
            if self.driver.domain_running(target, vm.uuid):
                return False
            self.driver.start(target, vm.domain_name)
            return True
        except FabricError as e:
            self.registry.vms.transition(
                vm.id, VmState.FAILED, expect=[vm.state], error=f"could not restart: {e}"
            )
            return False
        finally:
            self.registry.vms.let_go(vm.id)

    def _finish_orphan(self, target: HostTarget, vm: VmRow) -> bool:
        """Remove a VM whose create or destroy stopped half-way (its server died, or
        this one restarted): the domain if any, then the VM and its claim."""
        if not self.registry.vms.take(vm.id, VM_OWNED):
            return False  # someone live took it meanwhile
        try:
            self.driver.destroy(target, vm.uuid, vm.id)
        except FabricError as e:
            log.warning("vm %d: could not remove its half-made domain yet: %s", vm.id, e)
            self.registry.vms.let_go(vm.id)
            return False
        self.watcher.addresses.unpublish(vm)
        self.registry.vms.forget(vm.id, event_kind="reconcile.removed")
        return True

    def _resume(self, vm: VmRow) -> bool:
        """A plain VM whose create got as far as a running domain: ``active`` now, or,
        on a LAN with no address seen yet, this server takes it over and watches for its
        address (then it is ``active``, or ``failed``)."""
        if vm.ip is None and vm.network and NetworkMode.parse(vm.network).on_lan:
            if not self.registry.vms.take(vm.id, [VmState.BUILDING]):
                return False
            self.watcher.watch(vm.id)
            return True
        return self.registry.vms.transition(
            vm.id, VmState.ACTIVE, expect=[VmState.BUILDING], unowned=True
        )

    def sweep_orphans(self) -> list[int]:
        """Finish the creates and destroys that servers died in the middle of. Cheap
        when there are none (one query), so it runs often."""
        done = []
        if self.recover_moves is not None:
            done.extend(self.recover_moves())
        for vm in self.registry.vms.orphans():
            if vm.host_id is None:
                continue
            host = self.registry.hosts.get_any(vm.host_id)
            target = host_target(host)
            if vm.state == VmState.BUILDING and vm.pool is None:
                # A create that got as far as a running domain is finished instead.
                try:
                    dom = next((d for d in self.driver.domains(target) if d.vm_id == vm.id), None)
                except FabricError:
                    continue  # the host is unreachable: next time
                if dom is not None and dom.active:
                    if self._resume(vm):
                        self.registry.events.record("reconcile.resumed", vm_id=vm.id)
                    continue
            if self._finish_orphan(target, vm):
                done.append(vm.id)
        return done
