"""VMs (table ``vms``) and their capacity claims.

A VM's state (``VmState``) is changed here and in reservations.py (check-out,
check-in, expiry): every change is a conditional UPDATE from the states the
caller expects, checked against ``VM_TRANSITIONS``.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..clock import utcnow
from ..errors import Conflict, NotFound
from ..hostnames import new_hostname
from ..model import VM_OWNED, VM_TRANSITIONS, VmState, check_transition
from .addresses import AddressStore
from .claims import Claims
from .cluster import ClusterStore
from .database import Database
from .events import add_row
from .quotas import Quota, QuotaStore, Usage
from .tables import EventRow, HostnameRow, VmRow
from .volumes import VolumeStore


def _new_mac() -> str:
    # 52:54:00 is QEMU's locally administered prefix; the column is unique.
    tail = secrets.token_bytes(3)
    return "52:54:00:" + ":".join(f"{b:02x}" for b in tail)


class VmStore:
    def __init__(
        self,
        db: Database,
        cluster: ClusterStore,
        claims: Claims,
        volumes: VolumeStore,
        addresses: AddressStore,
        quotas: QuotaStore,
        installation: Callable[[], str],
    ) -> None:
        self.db = db
        self.cluster = cluster
        self.claims = claims
        self.volumes = volumes
        self.addresses = addresses
        self.quotas = quotas
        self._installation = installation

    # -- claims ------------------------------------------------------------------

    def claim(
        self,
        host_id: int,
        *,
        name: str,
        tid: int,
        image_id: int,
        cpu: int,
        ram: int,
        disk: int,
        ssh_ports: range | None = None,
        avoid_ports: set[int] | None = None,
        pool: str | None = None,
        network: str | None = None,
        created_by: str | None = None,
        quota: Quota | None = None,
    ) -> VmRow | None:
        """Atomically claim capacity on ``host_id`` and record a ``building`` VM there,
        within ``quota`` (QuotaExceeded if not).

        Returns None when the host no longer fits (a lost race): the caller moves
        on to its next candidate. Nothing is written in that case.
        """
        for _attempt in range(8):
            try:
                with self.db.tx() as s:
                    self.quotas.check(s, quota, Usage(vms=1, vcpu=cpu, ram=ram, disk=disk))
                    if not self.claims.take(s, host_id, cpu=cpu, ram=ram, disk=disk):
                        return None
                    port = (
                        _free_port(s, host_id, ssh_ports, avoid_ports or set())
                        if ssh_ports
                        else None
                    )
                    vm_uuid = str(uuid.uuid4())
                    vm = VmRow(
                        name=name,
                        hostname=new_hostname(pool or name),
                        tid=tid,
                        image_id=image_id,
                        host_id=host_id,
                        state=VmState.BUILDING,
                        uuid=vm_uuid,
                        domain_name=f"fabric-{vm_uuid[:8]}",
                        mac=_new_mac(),
                        cpu=cpu,
                        ram=ram,
                        disk=disk,
                        ssh_port=port,
                        pool=pool,
                        network=network,
                        created_by=created_by,
                        owner=self.cluster.server_id,
                    )
                    s.add(vm)
                    s.flush()
                    # The domain name carries the stable id, which is only known now.
                    vm.domain_name = f"fabric-{self._installation()}-vm-{vm.id}"
                    # Its hostname, kept for ever (a collision: IntegrityError, again).
                    s.add(HostnameRow(name=vm.hostname, vm_id=vm.id))
                    s.flush()
                    self.claims.record(s, host_id, vm_id=vm.id, cpu=cpu, ram=ram, disk=disk)
                    detail = {"user": created_by} if created_by else None
                    s.add(EventRow(kind="vm.claim", vm_id=vm.id, host_id=host_id, detail=detail))
                    return vm
            except IntegrityError:
                # A MAC, uuid, port or hostname collided with a concurrent claim (or a
                # hostname with one given before): try again.
                continue
        raise Conflict(f"could not record a new VM on pmid {host_id} (id collisions)")

    def forget(self, vm_id: int, *, event_kind: str, detail: dict | None = None) -> None:
        """Release the VM's claim and delete its row, in one transaction; its
        volumes outlive it (detached, available, data kept); its planned address is
        free again."""
        with self.db.tx() as s:
            vm = s.get(VmRow, vm_id)
            if vm is None:
                return
            self.claims.release(s, vm_id=vm_id)
            self.volumes.release_vm(s, vm_id)
            self.addresses.release(s, vm_id)
            s.add(EventRow(kind=event_kind, vm_id=vm_id, host_id=vm.host_id, detail=detail))
            s.delete(vm)

    # -- reads -------------------------------------------------------------------

    def get(self, vm_id: int) -> VmRow:
        with self.db.read() as s:
            row = s.get(VmRow, vm_id)
        if row is None:
            raise NotFound(f"vmid {vm_id} does not exist")
        return row

    def by_hostname(self, hostname: str) -> VmRow:
        """The VM with this (short) hostname; 404 if none has it (any more)."""
        with self.db.read() as s:
            vm = s.scalars(select(VmRow).where(VmRow.hostname == hostname)).first()
        if vm is None:
            raise NotFound(f"no VM has hostname {hostname!r}")
        return vm

    def set_tags(self, vm_id: int, tags: dict[str, str]) -> dict[str, str]:
        """Merge ``tags`` into the VM's tags (an empty value removes a key)."""
        with self.db.tx() as s:
            vm = s.get(VmRow, vm_id, with_for_update=True)
            if vm is None:
                raise NotFound(f"vmid {vm_id} does not exist")
            merged = dict(vm.tags or {})
            for k, v in tags.items():
                if v == "":
                    merged.pop(k, None)
                else:
                    merged[k] = v
            vm.tags = merged or None
            s.add(
                EventRow(kind="vm.tagged", vm_id=vm_id, host_id=vm.host_id, detail={"tags": tags})
            )
            return merged

    def exists(self, vm_id: int) -> bool:
        with self.db.read() as s:
            return s.get(VmRow, vm_id) is not None

    def list(self, host_id: int | None = None, states: Iterable[str] | None = None) -> list[VmRow]:
        with self.db.read() as s:
            q = select(VmRow).order_by(VmRow.id)
            if host_id is not None:
                q = q.where(VmRow.host_id == host_id)
            if states is not None:
                q = q.where(VmRow.state.in_(list(states)))
            return list(s.scalars(q))

    def counts_by_host(self) -> dict[int, int]:
        """VMs per host id."""
        with self.db.read() as s:
            q = select(VmRow.host_id, func.count()).group_by(VmRow.host_id)
            return {host_id: n for host_id, n in s.execute(q) if host_id is not None}

    def count(self) -> int:
        with self.db.read() as s:
            return int(s.scalar(select(func.count()).select_from(VmRow)) or 0)

    # -- changes -----------------------------------------------------------------

    def transition(
        self,
        vm_id: int,
        to: VmState,
        *,
        expect: Iterable[VmState],
        event: EventRow | None = None,
        unowned: bool = False,
        mine: bool = False,
        **values: Any,
    ) -> bool:
        """Move a VM to state ``to`` only if it is in one of ``expect``; True if it moved.

        ``event`` is recorded in the same transaction, only if the VM moved. Moving to
        ``building`` or ``deleting`` marks this server as the VM's owner (it works on
        it); any other state clears the owner. ``unowned``: only if no live server
        (this one included) works on it; ``mine``: only if unowned or owned by this
        server.
        """
        expect = [VmState(e) for e in expect]
        check_transition(VM_TRANSITIONS, expect, to, "vm")
        values.setdefault("owner", self.cluster.server_id if to in VM_OWNED else None)
        with self.db.tx() as s:
            q = update(VmRow).where(VmRow.id == vm_id, VmRow.state.in_(expect))
            if unowned or mine:
                q = q.where(self.cluster.free(VmRow.owner, mine=mine))
            res = s.execute(
                q.values(state=to, updated_at=utcnow(), **values).execution_options(
                    synchronize_session=False
                )
            )
            moved = res.rowcount == 1
            if moved and event is not None:
                add_row(s.connection(), event)  # a Core INSERT: no unit of work to flush
            return moved

    def resize(
        self,
        vm_id: int,
        *,
        tid: int,
        cpu: int,
        ram: int,
        disk: int,
        quota: Quota | None = None,
        detail: dict | None = None,
    ) -> VmRow:
        """Give a VM this server works on (``take``) another type: its claim on its host
        and its row change in one transaction, within ``quota`` (QuotaExceeded), with a
        ``vm.resized`` event. Conflict naming what does not fit on its host (nothing
        changed then)."""
        with self.db.tx() as s:
            vm = s.get(VmRow, vm_id)
            if vm is None:
                raise NotFound(f"vmid {vm_id} does not exist")
            if vm.owner != self.cluster.server_id:
                raise Conflict(f"vmid {vm_id} is not being resized by this server")
            grow = Usage(
                vms=0,
                vcpu=max(0, cpu - vm.cpu),
                ram=max(0, ram - vm.ram),
                disk=max(0, disk - vm.disk),
            )
            self.quotas.check(s, quota, grow)
            short = self.claims.resize(s, vm_id, cpu=cpu, ram=ram, disk=disk)
            if short:
                raise Conflict(
                    f"vmid {vm_id} does not fit on pmid {vm.host_id} as type {tid}: "
                    + "; ".join(short)
                )
            before = {"tid": vm.tid, "cpu": vm.cpu, "ram": vm.ram, "disk": vm.disk}
            vm.tid, vm.cpu, vm.ram, vm.disk = tid, cpu, ram, disk
            vm.updated_at = utcnow()
            after = {"tid": tid, "cpu": cpu, "ram": ram, "disk": disk}
            s.add(
                EventRow(
                    kind="vm.resized",
                    vm_id=vm_id,
                    host_id=vm.host_id,
                    detail={"from": before, "to": after, **(detail or {})},
                )
            )
            return vm

    def record_address(self, vm_id: int, ip: str | None, source: str | None) -> str | None:
        """The VM's address as ``source`` sees it now; returns the one it had."""
        with self.db.tx() as s:
            vm = s.get(VmRow, vm_id)
            if vm is None:
                return None
            before = vm.ip
            vm.ip, vm.ip_source = ip, source
            vm.ip_seen_at = utcnow() if ip else None
            return before

    def set_guest_host_key(self, vm_id: int, key: str) -> None:
        """Pin the key a guest showed the first time (trust on first use)."""
        with self.db.tx() as s:
            s.execute(
                update(VmRow)
                .where(VmRow.id == vm_id, VmRow.guest_host_key.is_(None))
                .values(guest_host_key=key)
            )

    # -- who works on it -----------------------------------------------------------

    def take(self, vm_id: int, states: Iterable[str]) -> bool:
        """Become the server working on a VM in one of ``states``, if no live server
        (this one included) already is. True if taken."""
        with self.db.tx() as s:
            res = s.execute(
                update(VmRow)
                .where(
                    VmRow.id == vm_id,
                    VmRow.state.in_(list(states)),
                    self.cluster.free(VmRow.owner),
                )
                .values(owner=self.cluster.server_id)
                .execution_options(synchronize_session=False)
            )
            return res.rowcount == 1

    def let_go(self, vm_id: int) -> None:
        """Stop working on a VM without changing its state."""
        with self.db.tx() as s:
            s.execute(
                update(VmRow)
                .where(VmRow.id == vm_id, VmRow.owner == self.cluster.server_id)
                .values(owner=None)
                .execution_options(synchronize_session=False)
            )

    # -- evacuation ------------------------------------------------------------------

    def move(
        self,
        vm_id: int,
        from_host: int,
        to_host: int,
        *,
        ssh_ports: range | None = None,
        avoid_ports: set[int] | None = None,
        network: str | None = None,
        origin: int | None = None,
    ) -> VmRow | None:
        """Rebuild bookkeeping for a VM whose host died: in one transaction, claim its
        capacity on ``to_host`` (None when it no longer fits there: the caller tries its
        next candidate), give back its claim on ``from_host``, and record it on the new
        host (its address there unknown yet), with when it was rebuilt and the host it
        came from (``origin``, the dead one; default ``from_host``: a second try moves
        it on from a host where the rebuild failed). Only while this server works on it
        (it ``take``-s it first)."""
        for _attempt in range(4):
            try:
                with self.db.tx() as s:
                    vm = s.get(VmRow, vm_id)
                    if vm is None or vm.host_id != from_host or vm.owner != self.cluster.server_id:
                        return None
                    if not self.claims.take(s, to_host, cpu=vm.cpu, ram=vm.ram, disk=vm.disk):
                        return None
                    self.claims.release(s, vm_id=vm_id)
                    self.claims.record(
                        s, to_host, vm_id=vm_id, cpu=vm.cpu, ram=vm.ram, disk=vm.disk
                    )
                    vm.ssh_port = None
                    s.flush()
                    vm.ssh_port = (
                        _free_port(s, to_host, ssh_ports, avoid_ports or set())
                        if ssh_ports
                        else None
                    )
                    vm.host_id = to_host
                    vm.network = network
                    vm.ip = vm.ip_source = vm.ip_seen_at = None
                    vm.guest_host_key = None  # a new guest: a new host key
                    vm.rebuilt_at = utcnow()
                    vm.rebuilt_from = origin if origin is not None else from_host
                    vm.updated_at = utcnow()
                    s.flush()
                    s.expunge(vm)
                    return vm
            except IntegrityError:
                continue  # a port taken by a concurrent claim: try again
        return None

    def rebuilt(self, vm_id: int, **values: Any) -> None:
        """A move's rebuild is done: record ``values`` (console, address) and stop
        working on the VM, its state unchanged."""
        with self.db.tx() as s:
            s.execute(
                update(VmRow)
                .where(VmRow.id == vm_id, VmRow.owner == self.cluster.server_id)
                .values(owner=None, updated_at=utcnow(), **values)
                .execution_options(synchronize_session=False)
            )

    def evacuated_from(self, vm_id: int, host_id: int) -> bool:
        """Whether the VM was taken off ``host_id`` by an evacuation (rebuilt elsewhere
        or, for a pool VM, removed): a domain of it still there is stale."""
        with self.db.read() as s:
            q = select(func.count()).where(
                EventRow.kind.in_(["vm.evacuated", "vm.rebuilt"]),
                EventRow.vm_id == vm_id,
                EventRow.host_id == host_id,
            )
            return bool(s.scalar(q))

    def orphans(self) -> list[VmRow]:
        """VMs left building or deleting by a server that is no longer alive."""
        with self.db.read() as s:
            q = (
                select(VmRow)
                .where(VmRow.state.in_(list(VM_OWNED)), self.cluster.free(VmRow.owner))
                .order_by(VmRow.id)
            )
            return list(s.scalars(q))


def _free_port(s: Session, host_id: int, ports: range, avoid: set[int]) -> int:
    used = set(s.scalars(select(VmRow.ssh_port).where(VmRow.host_id == host_id))) | avoid
    for p in ports:
        if p not in used:
            return p
    raise Conflict(f"pmid {host_id} has no free forwarded port in {ports.start}-{ports.stop - 1}")
