"""Block storage use cases: create, attach, detach, destroy volumes; reconcile them.

Volumes live in the host's ``fabric`` dir pool (host-local storage) unless the
configuration puts a host on a Ceph RBD pool (shared storage). A host-local
volume is created on the host the scheduler picks for its size; attaching it
to a VM on another host **moves** it there first, while it is detached, with a
real copy through libvirt streams (then the old copy is deleted). Volume sizes
count against the host's disk, as VM disks do.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .access import SYSTEM, Principal
from .config import Storage
from .errors import BadRequest, Conflict, FabricError, HypervisorError, NotFound, NoValidHost
from .hostcache import HostCache
from .hosts import host_target
from .hypervisor.driver import LibvirtDriver
from .hypervisor.xml import NO_TARGET_LEFT, VOLUME_TARGETS, RbdBackend
from .model import NAME_RULE, VM_ATTACHABLE, VOLUME_BUSY, HostStatus, VolumeState, is_name
from .registry import Registry, VmRow, VolumeRow
from .scheduler import PlacementRequest, Scheduler

if TYPE_CHECKING:
    from .quotas import Quotas

log = logging.getLogger(__name__)

MAX_SIZE_GB = 16384


class Volumes:
    def __init__(
        self,
        registry: Registry,
        driver: LibvirtDriver,
        scheduler: Scheduler,
        hosts: HostCache,
        storage: Storage | None = None,
        max_attempts: int = 3,
        quotas: Quotas | None = None,
    ) -> None:
        self.registry = registry
        self.driver = driver
        self.scheduler = scheduler
        self.hosts = hosts
        self.max_attempts = max_attempts
        self.quotas = quotas  # None: no user has a quota (tests of the mechanics)
        storage = storage or Storage()
        self.rbd: dict[str, RbdBackend] = dict(storage.backends)
        self.host_backend: dict[str, str] = dict(storage.hosts)
        self._keys: dict[str, bytes] = dict(storage.keys)

    # -- helpers -------------------------------------------------------------

    def backend_of(self, host_label: str) -> str:
        return self.host_backend.get(host_label, "dir")

    def _rbd_for(self, backend: str) -> RbdBackend | None:
        return self.rbd[backend[4:]] if backend.startswith("rbd:") else None

    def _prepare(self, host: Any, backend: str) -> RbdBackend | None:
        rbd = self._rbd_for(backend)
        if rbd is not None:
            self.driver.ensure_ceph_secret(host_target(host), rbd, self._keys[rbd.name])
        return rbd

    @staticmethod
    def check_name(name: Any) -> str:
        if not is_name(name):
            raise BadRequest(f"name must be {NAME_RULE}")
        return name

    # -- create / destroy ----------------------------------------------------

    def create(
        self, name: str, size: int, *, host_id: int | None = None, by: Principal = SYSTEM
    ) -> VolumeRow:
        """Make a volume of ``size`` GB for ``by`` (within their quota) on the host the
        scheduler picks (or ``host_id``)."""
        by.require_writer("create volumes")
        quota = self.quotas.of(by) if self.quotas is not None else None
        self.check_name(name)
        if size > MAX_SIZE_GB:
            raise BadRequest(f"size must be at most {MAX_SIZE_GB} GB")
        req = PlacementRequest(cpu=0, ram=0, disk=size, label=f"a {size} GB volume")
        tried: set[int] = set()
        failures: list[str] = []
        while len(failures) < self.max_attempts:
            states = self.hosts.states()
            if host_id is not None:
                states = [h for h in states if h.id == host_id]
            placement = self.scheduler.select(states, replace(req, exclude=frozenset(tried)))
            vol = host = None
            for cand in placement.hosts:
                vol = self.registry.volumes.claim(
                    cand.id, name=name, size=size, created_by=by.name, quota=quota
                )
                if vol is not None:
                    host = self.registry.hosts.get(cand.id)
                    break
            if vol is None or host is None:
                continue
            backend = self.backend_of(host.label)
            try:
                rbd = self._prepare(host, backend)
                self.driver.create_volume(host_target(host), vol.vol_name, size, rbd)
            except FabricError as e:
                with contextlib.suppress(FabricError):
                    self.driver.delete_volume(host_target(host), vol.vol_name)
                self.registry.volumes.forget(vol.id, event_kind="volume.create_failed")
                failures.append(f"{host.label}: {e.message}")
                tried.add(host.id)
                continue
            self.registry.volumes.transition(
                vol.id, VolumeState.AVAILABLE, expect=[VolumeState.CREATING], backend=backend
            )
            self.registry.events.record("volume.create", host_id=host.id, detail={"volume": vol.id})
            return self.registry.volumes.get(vol.id)
        raise HypervisorError(f"could not create the volume: {'; '.join(failures)}")  # 502

    def destroy(self, volume_id: int, *, by: Principal = SYSTEM) -> None:
        vol = self.registry.volumes.get(volume_id)
        by.require_owner(vol.created_by, f"destroy volumeid {volume_id}")
        if vol.status == VolumeState.ATTACHED:
            raise Conflict(f"volumeid {volume_id} is attached to vmid {vol.vm_id}; detach it first")
        if not self.registry.volumes.transition(
            volume_id,
            VolumeState.DELETING,
            expect=[
                VolumeState.AVAILABLE,
                VolumeState.ERROR,
                VolumeState.DELETING,
                VolumeState.LOST,
            ],
        ):
            current = self.registry.volumes.get(volume_id).status
            raise Conflict(f"volumeid {volume_id} is {current}; it cannot be destroyed now")
        if vol.status == VolumeState.LOST:
            # Its host died and was evacuated: whatever is left there is removed if the
            # host answers; the record goes either way.
            with contextlib.suppress(FabricError):
                host = self.registry.hosts.get_any(vol.host_id) if vol.host_id else None
                if host is not None and host.status == HostStatus.UP:
                    self.driver.delete_volume(
                        host_target(host), vol.vol_name, self._rbd_for(vol.backend)
                    )
            self.registry.volumes.forget(volume_id, event_kind="volume.destroy")
            return
        if vol.host_id is not None:
            host = self.registry.hosts.get_any(vol.host_id)
            try:
                self.driver.delete_volume(
                    host_target(host), vol.vol_name, self._rbd_for(vol.backend)
                )
            except FabricError:
                self.registry.volumes.transition(
                    volume_id, vol.status, expect=[VolumeState.DELETING]
                )
                raise
        self.registry.volumes.forget(volume_id, event_kind="volume.destroy")

    # -- attach / detach -----------------------------------------------------

    def add_disk(self, vm: VmRow, gb: int, *, by: Principal = SYSTEM) -> VolumeRow:
        """A new ``gb`` GB volume on the VM's host, owned by ``by``, attached to the VM
        (vmpooler's ``POST /vm/<hostname>/disk/<GB>``); destroyed again if the attach
        fails."""
        suffix = secrets.token_hex(3)
        vol = self.create(f"{vm.hostname}-disk-{suffix}", gb, host_id=vm.host_id, by=by)
        try:
            self.attach(vm.id, vol.id, by=by)
        except BaseException:
            with contextlib.suppress(FabricError):  # else the reconciliation finds it
                self.destroy(vol.id, by=SYSTEM)
            raise
        return vol

    def attach(self, vm_id: int, volume_id: int, *, by: Principal = SYSTEM) -> str:
        vm = self.registry.vms.get(vm_id)
        vol = self.registry.volumes.get(volume_id)
        by.require_owner(vol.created_by, f"attach volumeid {volume_id}")
        _require_vm(by, vm, f"attach volumes to vmid {vm_id}")
        if vol.status == VolumeState.ATTACHED:
            raise Conflict(f"volumeid {volume_id} is already attached to vmid {vol.vm_id}")
        if vol.status != VolumeState.AVAILABLE:
            raise Conflict(f"volumeid {volume_id} is {vol.status}; it cannot be attached now")
        if vm.state not in VM_ATTACHABLE or vm.host_id is None:
            raise Conflict(f"vmid {vm_id} is {vm.state}; volumes attach to running VMs")
        if len(self.registry.volumes.list(vm_id=vm_id)) >= len(VOLUME_TARGETS):
            # before a volume is moved to the VM's host for nothing (the driver checks too)
            raise Conflict(f"vmid {vm_id} has {NO_TARGET_LEFT}")
        if not self.registry.volumes.transition(
            volume_id, VolumeState.ATTACHING, expect=[VolumeState.AVAILABLE], vm_id=vm_id
        ):
            raise Conflict(f"volumeid {volume_id} is being changed by another request")
        try:
            host = self.registry.hosts.get(vm.host_id)
            target = host_target(host)
            if not self.driver.domain_running(target, vm.uuid):
                raise Conflict(f"vmid {vm_id} is not running; volumes attach to running VMs")
            vol = self._bring_to(vol, host)
            rbd = self._rbd_for(vol.backend)
            path = None
            if rbd is None:
                path = self._volume_path(host, vol.vol_name)
            dev = self.driver.attach_volume(
                target, vm.uuid, path=path, rbd=rbd, rbd_image=vol.vol_name
            )
        except BaseException:
            self.registry.volumes.transition(
                volume_id, VolumeState.AVAILABLE, expect=[VolumeState.ATTACHING], vm_id=None
            )
            raise
        self.registry.volumes.transition(
            volume_id, VolumeState.ATTACHED, expect=[VolumeState.ATTACHING], vm_id=vm_id, target=dev
        )
        self.registry.events.record(
            "volume.attach", vm_id=vm_id, host_id=host.id, detail={"volume": volume_id, "dev": dev}
        )
        return dev

    def _volume_path(self, host: Any, vol_name: str) -> str:
        paths = self.driver.volume_paths(host_target(host))
        if vol_name not in paths:
            raise NotFound(f"volume {vol_name} is missing on {host.label}")
        return paths[vol_name]

    def _bring_to(self, vol: VolumeRow, host: Any) -> VolumeRow:
        """A host-local volume on another host is copied here (detached), then removed there."""
        if vol.host_id == host.id:
            return vol
        src_backend = vol.backend
        dst_backend = self.backend_of(host.label)
        if src_backend.startswith("rbd:") and src_backend == dst_backend:
            return vol  # shared storage: every host of that backend sees it
        if src_backend != "dir" or dst_backend != "dir":
            raise Conflict(
                f"volumeid {vol.id} lives on {src_backend} storage, which pmid {host.id} "
                f"({dst_backend}) cannot reach"
            )
        src = self.registry.hosts.get_any(vol.host_id) if vol.host_id else None
        if src is None or src.status != HostStatus.UP:
            raise Conflict(f"volumeid {vol.id} lives on a host that is down; it cannot move")
        if not self.registry.volumes.move_claim(vol.id, host.id):
            raise NoValidHost(
                f"pmid {host.id} has no room for volumeid {vol.id} ({vol.size} GB) to move there"
            )
        try:
            self.driver.copy_volume(host_target(src), host_target(host), vol.vol_name, vol.size)
        except BaseException:
            self.registry.volumes.move_claim(vol.id, src.id)
            raise
        with contextlib.suppress(FabricError):
            self.driver.delete_volume(host_target(src), vol.vol_name)
        self.registry.events.record(
            "volume.move", host_id=host.id, detail={"volume": vol.id, "from": src.id}
        )
        return self.registry.volumes.get(vol.id)

    def detach(self, volume_id: int, *, by: Principal = SYSTEM) -> None:
        vol = self.registry.volumes.get(volume_id)
        if not by.owns(vol.created_by):
            # the VM's user may free its device of someone else's volume
            vm = self.registry.vms.get(vol.vm_id) if vol.vm_id is not None else None
            if vm is None:
                by.require_owner(vol.created_by, f"detach volumeid {volume_id}")
            else:
                _require_vm(by, vm, f"detach volumeid {volume_id}")
        by.require_writer(f"detach volumeid {volume_id}")
        if vol.status != VolumeState.ATTACHED or vol.vm_id is None:
            raise Conflict(f"volumeid {volume_id} is not attached (it is {vol.status})")
        if not self.registry.volumes.transition(
            volume_id, VolumeState.DETACHING, expect=[VolumeState.ATTACHED]
        ):
            raise Conflict(f"volumeid {volume_id} is being changed by another request")
        try:
            with contextlib.suppress(NotFound):
                vm = self.registry.vms.get(vol.vm_id)
                host = self.registry.hosts.get_any(vm.host_id)
                self.driver.detach_volume(host_target(host), vm.uuid, vol.target or "")
        except BaseException:
            self.registry.volumes.transition(
                volume_id, VolumeState.ATTACHED, expect=[VolumeState.DETACHING]
            )
            raise
        self.registry.volumes.transition(
            volume_id,
            VolumeState.AVAILABLE,
            expect=[VolumeState.DETACHING],
            vm_id=None,
            target=None,
        )
        self.registry.events.record("volume.detach", vm_id=vol.vm_id, detail={"volume": volume_id})

    # -- reconciliation ------------------------------------------------------

    def reconcile(self) -> dict[str, list[int]]:
        """Volumes whose storage volume is gone are marked ``error``; attachments the
        domain no longer has are released; work a server died in the middle of
        (creating, attaching, detaching, deleting) is finished or undone. A volume a
        live server is changing is left alone. Safe to run while serving."""
        missing: list[int] = []
        released: list[int] = []
        finished: list[int] = []
        vols = [
            v
            for v in self.registry.volumes.list()
            if not self.registry.cluster.owner_alive(v.owner)
        ]
        by_host: dict[int, list[VolumeRow]] = {}
        for vol in vols:
            if vol.host_id is not None:
                by_host.setdefault(vol.host_id, []).append(vol)
        for host in self.registry.hosts.list():
            if host.status != HostStatus.UP or host.id not in by_host:
                continue
            try:
                present = set(self.driver.volume_paths(host_target(host)))
            except FabricError:
                continue
            for vol in by_host[host.id]:
                if vol.backend != "dir" or vol.status in VOLUME_BUSY:
                    continue
                if vol.status == VolumeState.LOST:
                    continue  # known gone: its host was evacuated
                if vol.vol_name not in present and self.registry.volumes.transition(
                    vol.id, VolumeState.ERROR, expect=[vol.status], unowned=True,
                    error=f"{vol.vol_name} is no longer in {host.label}'s pool",
                ):  # fmt: skip
                    missing.append(vol.id)
        for vol in vols:
            if vol.status == VolumeState.ATTACHED and vol.vm_id is not None:
                if not self.registry.vms.exists(vol.vm_id) and self.registry.volumes.transition(
                    vol.id,
                    VolumeState.AVAILABLE,
                    expect=[VolumeState.ATTACHED],
                    unowned=True,
                    vm_id=None,
                    target=None,
                ):
                    released.append(vol.id)
            elif vol.status in VOLUME_BUSY and self._finish(vol):
                finished.append(vol.id)
        return {"missing": missing, "released": released, "finished": finished}

    def _finish(self, vol: VolumeRow) -> bool:
        """A volume left half-changed by a server that died (or by this one before a
        restart): creates and deletes are completed as deletes; an attach or detach
        ends in whatever state the VM's domain shows."""
        # First become its owner (its status unchanged), so no one else finishes it.
        if not self.registry.volumes.take(vol.id, vol.status):
            return False
        try:
            if vol.status in (VolumeState.CREATING, VolumeState.DELETING):
                if vol.host_id is not None:
                    host = self.registry.hosts.get_any(vol.host_id)
                    self.driver.delete_volume(
                        host_target(host), vol.vol_name, self._rbd_for(vol.backend)
                    )
                kind = (
                    "volume.create_failed"
                    if vol.status == VolumeState.CREATING
                    else "volume.destroy"
                )
                self.registry.volumes.forget(vol.id, event_kind=kind)
                return True
            target = self._attached_as(vol)
            if target is not None:
                return self.registry.volumes.transition(
                    vol.id, VolumeState.ATTACHED, expect=[vol.status], target=target
                )
            return self.registry.volumes.transition(
                vol.id, VolumeState.AVAILABLE, expect=[vol.status], vm_id=None, target=None
            )
        except FabricError as e:
            log.warning("volume %d: could not finish its %s yet: %s", vol.id, vol.status, e)
            self.registry.volumes.let_go(vol.id, vol.status)
            return False

    def _attached_as(self, vol: VolumeRow) -> str | None:
        """The device the volume is on in its VM's domain, or None."""
        if vol.vm_id is None or not self.registry.vms.exists(vol.vm_id):
            return None
        vm = self.registry.vms.get(vol.vm_id)
        if vm.host_id is None:
            return None
        target = host_target(self.registry.hosts.get_any(vm.host_id))
        # Live first; the persistent definition too (a hot-plug writes both, but the
        # test driver only the latter).
        for persistent in (False, True):
            disks = self.driver.domain_disks(target, vm.uuid, persistent=persistent)
            for dev, source in disks.items():
                if source and source.rsplit("/", 1)[-1] == vol.vol_name:
                    return dev
        return None


def _require_vm(by: Principal, vm: VmRow, what: str) -> None:
    """The VM's creator, its holder (checked out) or an admin."""
    by.require_writer(what)
    if by.owns(vm.created_by) or (by.name is not None and vm.held_by == by.name):
        return
    by.require_owner(vm.created_by, what)
