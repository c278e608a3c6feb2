"""Engine set-up and the registry's transactions.

Every state change is one short transaction; no libvirt or SSH call ever runs
inside one. Capacity is claimed by a conditional ``UPDATE`` checked by its row
count, so two claims can never overcommit a host, whichever process makes them.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    case,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..clock import as_utc as _aware
from ..clock import utcnow as _now
from ..errors import Conflict, Forbidden, NotFound
from ..model import HostSpec, ImageSpec, Inventory, VmState, VmType
from .tables import (
    ClaimRow,
    EventRow,
    HostRow,
    ImageRow,
    LeaseRow,
    MetaRow,
    ServerRow,
    StagedImageRow,
    TypeRow,
    VmRow,
    VolumeRow,
)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and write-locking transactions."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 60},
            pool_size=20,
            max_overflow=20,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy (not the sqlite3 module) decide when transactions begin.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Writers take the write lock up front: a read-then-write transaction can
            # then never fail half-way with "database is locked" nor interleave.
            # Readers (WAL) see a consistent snapshot without blocking anyone.
            if conn.get_execution_options().get("fabric_readonly"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)


log = logging.getLogger(__name__)
VOLUME_BUSY = ("creating", "attaching", "detaching", "deleting")
_STARTUP_LOCK = 0x66616272  # "fabr": the advisory lock key for start-up


def _new_mac() -> str:
    # 52:54:00 is QEMU's locally administered prefix; the column is unique.
    tail = secrets.token_bytes(3)
    return "52:54:00:" + ":".join(f"{b:02x}" for b in tail)


# A VM whose reservation ended (checked in or expired): to be cleaned, held by no one.
_RETURNED = {
    "state": VmState.CLEANING,
    "owner": None,
    "reservation_hash": None,
    "reserved_at": None,
    "expires_at": None,
}


class HostChanges:
    """Hosts whose row this process changed (capacity freed, status, enabled), so an
    in-memory view of them (hostcache.py) reads them again. Other servers' changes
    reach that view when it expires."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[int] = set()
        self._all = True

    def mark(self, host_id: int) -> None:
        with self._lock:
            self._ids.add(host_id)

    def mark_all(self) -> None:
        with self._lock:
            self._all = True

    def take(self) -> tuple[bool, set[int]]:
        with self._lock:
            out = (self._all, self._ids)
            self._all, self._ids = False, set()
            return out


class _LostRace(Exception):
    """A row changed between reading and updating it: the transaction is undone."""


class Registry:
    """The fabric's store of facts. Methods are transactions; rows come back detached."""

    def __init__(self, url: str, *, dead_after: float = 10.0) -> None:
        self.url = url
        # This process, as one of possibly several servers sharing the registry. Work
        # it does on a VM is marked with this id; a server whose heartbeat is older
        # than ``dead_after`` seconds is dead and its work may be taken over.
        self.server_id = secrets.token_hex(8)
        self.dead_after = dead_after
        self.host_changes = HostChanges()
        self._whoami: tuple[str, int] | None = None  # (machine, pid) once registered
        self.inventory_gen = 0  # grows when the files are synced (types, images cached)
        self._installation: str | None = None
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite lets one writer in at a time and makes the others poll with sleeps
        # that grow to 100 ms; queueing this process's writers on a lock instead
        # keeps them in order without the sleeps. Correctness does not rest on it:
        # the database's own locking and the conditional UPDATEs do that, across
        # processes too.
        self._writer_gate: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if url.startswith("sqlite") else contextlib.nullcontext()
        )
        self._readers = sessionmaker(
            self.engine.execution_options(fabric_readonly=True), expire_on_commit=False
        )

    def create_schema(self) -> None:
        """Bring an empty database to the current schema (Alembic), or check that an
        existing one is at it; then make sure it has an installation id."""
        from .migrate import ensure_schema

        ensure_schema(self.engine)
        self._installation = None
        with self.tx() as s:
            if s.get(MetaRow, "installation_id") is None:
                s.add(MetaRow(key="installation_id", value=secrets.token_hex(4)))

    @property
    def installation_id(self) -> str:
        """A short random id of this registry: it tells our domains from another
        fabric's on shared hosts, and keeps domain names unique between them."""
        if self._installation is None:
            with self.read() as s:
                row = s.get(MetaRow, "installation_id")
                if row is None:
                    raise Conflict("the registry has no schema yet")
                self._installation = row.value
        return self._installation

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def startup_lock(self) -> Iterator[None]:
        """Servers starting together set up the schema and sync the files one at a
        time (a PostgreSQL advisory lock; SQLite's write lock already does that)."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _STARTUP_LOCK})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _STARTUP_LOCK})
                conn.commit()

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """A read-write transaction."""
        with self._writer_gate, self._sessions.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction (a snapshot; it never holds the write lock)."""
        with self._readers.begin() as session:
            yield session

    # -- inventory -----------------------------------------------------------

    def sync_inventory(self, inv: Inventory) -> None:
        """Make the registry's hosts, images and types match the files; ids stay stable."""
        self.host_changes.mark_all()
        self.inventory_gen += 1
        with self.tx() as s:
            self._sync_hosts(s, inv.hosts)
            self._sync_images(s, inv.images)
            self._sync_types(s, inv.types)

    def _sync_hosts(self, s: Session, hosts: Iterable[HostSpec]) -> None:
        known = {h.key: h for h in s.scalars(select(HostRow))}
        seen = set()
        for spec in hosts:
            seen.add(spec.key)
            row = known.get(spec.key)
            if row is None:
                row = HostRow(key=spec.key, status="unknown")
                s.add(row)
            row.label = spec.label
            row.uri = spec.uri
            row.address = spec.address
            row.domain_type = spec.domain_type
            row.network = spec.network
            row.pool_path = spec.pool_path
            row.arch = spec.arch
            row.cpu_override, row.ram_override, row.disk_override = spec.cpu, spec.ram, spec.disk
            row.in_inventory = True
        for key, row in known.items():
            if key not in seen:
                row.in_inventory = False

    def _sync_images(self, s: Session, images: Iterable[ImageSpec]) -> None:
        known = {i.location: i for i in s.scalars(select(ImageRow))}
        seen = set()
        for spec in images:
            seen.add(spec.location)
            row = known.get(spec.location)
            if row is None:
                row = ImageRow(location=spec.location)
                s.add(row)
            row.name = spec.name
            row.spec = image_spec_to_dict(spec)
            row.in_inventory = True
        for loc, row in known.items():
            if loc not in seen:
                row.in_inventory = False

    def _sync_types(self, s: Session, types: Iterable[VmType]) -> None:
        known = {t.tid: t for t in s.scalars(select(TypeRow))}
        seen = set()
        for vt in types:
            seen.add(vt.tid)
            row = known.get(vt.tid)
            if row is None:
                row = TypeRow(tid=vt.tid)
                s.add(row)
            row.name, row.cpu, row.ram, row.disk = vt.name, vt.cpu, vt.ram, vt.disk
            row.in_inventory = True
        for tid, row in known.items():
            if tid not in seen:
                row.in_inventory = False

    # -- reads ---------------------------------------------------------------

    def _one(self, model: type, key: int, what: str, *, listed_only: bool = True) -> Any:
        """The row ``key`` of ``model``, or NotFound naming ``what``. With
        ``listed_only``, rows that left the input files count as absent."""
        with self.read() as s:
            row = s.get(model, key)
            if row is None or (listed_only and not getattr(row, "in_inventory", True)):
                raise NotFound(f"{what} does not exist")
            return row

    def _listed(self, model: type, order: Any) -> list[Any]:
        """The rows of ``model`` that the input files list, in ``order``."""
        with self.read() as s:
            q = select(model).where(model.in_inventory.is_(True)).order_by(order)
            return list(s.scalars(q))

    def hosts(self, include_retired: bool = False) -> list[HostRow]:
        if not include_retired:
            return self._listed(HostRow, HostRow.id)
        with self.read() as s:
            return list(s.scalars(select(HostRow).order_by(HostRow.id)))

    def host(self, host_id: int) -> HostRow:
        return self._one(HostRow, host_id, f"pmid {host_id}")

    def host_any(self, host_id: int) -> HostRow:
        """A host even if it left the pm file (its VMs still need it)."""
        return self._one(HostRow, host_id, f"pmid {host_id}", listed_only=False)

    def images(self) -> list[ImageRow]:
        return self._listed(ImageRow, ImageRow.id)

    def image(self, image_id: int) -> ImageRow:
        return self._one(ImageRow, image_id, f"image_id {image_id}")

    def types(self) -> list[TypeRow]:
        return self._listed(TypeRow, TypeRow.tid)

    def vm_type(self, tid: int) -> TypeRow:
        return self._one(TypeRow, tid, f"instance_type {tid}")

    def vm(self, vm_id: int) -> VmRow:
        return self._one(VmRow, vm_id, f"vmid {vm_id}")

    def vms(self, host_id: int | None = None, states: Iterable[str] | None = None) -> list[VmRow]:
        with self.read() as s:
            q = select(VmRow).order_by(VmRow.id)
            if host_id is not None:
                q = q.where(VmRow.host_id == host_id)
            if states is not None:
                q = q.where(VmRow.state.in_(list(states)))
            return list(s.scalars(q))

    def vm_counts(self) -> dict[int, int]:
        """VMs per host id."""
        with self.read() as s:
            q = select(VmRow.host_id, func.count()).group_by(VmRow.host_id)
            return {hid: n for hid, n in s.execute(q) if hid is not None}

    # -- discovery -----------------------------------------------------------

    def record_discovery(
        self,
        host_id: int,
        *,
        up: bool,
        reason: str | None,
        phys: tuple[int, int, int] | None = None,
        totals: tuple[int, int, int] | None = None,
        arch: str | None = None,
    ) -> None:
        self.host_changes.mark(host_id)
        with self.tx() as s:
            row = s.get(HostRow, host_id)
            if row is None:
                return
            row.status = "up" if up else "down"
            row.reason = reason
            if up:
                row.last_seen = _now()
            if phys is not None:
                row.phys_cpu, row.phys_ram, row.phys_disk = phys
            if totals is not None:
                row.cpu_total, row.ram_total, row.disk_total = totals
            if arch and not row.arch:
                row.arch = arch

    def set_host_enabled(self, host_id: int, enabled: bool) -> None:
        self.host_changes.mark(host_id)
        with self.tx() as s:
            s.execute(update(HostRow).where(HostRow.id == host_id).values(enabled=enabled))

    # -- claims and VM lifecycle --------------------------------------------

    def claim_vm(
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
    ) -> VmRow | None:
        """Atomically claim capacity on ``host_id`` and record a ``building`` VM there.

        Returns None when the host no longer fits (a lost race): the caller moves
        on to its next candidate. Nothing is written in that case.
        """
        for _attempt in range(8):
            try:
                with self.tx() as s:
                    res = s.execute(
                        update(HostRow)
                        .where(
                            HostRow.id == host_id,
                            HostRow.status == "up",
                            HostRow.enabled.is_(True),
                            HostRow.in_inventory.is_(True),
                            HostRow.cpu_used + cpu <= HostRow.cpu_total,
                            HostRow.ram_used + ram <= HostRow.ram_total,
                            HostRow.disk_used + disk <= HostRow.disk_total,
                        )
                        .values(
                            cpu_used=HostRow.cpu_used + cpu,
                            ram_used=HostRow.ram_used + ram,
                            disk_used=HostRow.disk_used + disk,
                        )
                        .execution_options(synchronize_session=False)
                    )
                    if res.rowcount != 1:
                        return None
                    port = (
                        self._free_port(s, host_id, ssh_ports, avoid_ports or set())
                        if ssh_ports
                        else None
                    )
                    vm_uuid = _uuid()
                    vm = VmRow(
                        name=name,
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
                        owner=self.server_id,
                    )
                    s.add(vm)
                    s.flush()
                    # The domain name carries the stable id, which is only known now.
                    vm.domain_name = f"fabric-{self.installation_id}-vm-{vm.id}"
                    s.add(ClaimRow(host_id=host_id, vm_id=vm.id, cpu=cpu, ram=ram, disk=disk))
                    s.add(EventRow(kind="vm.claim", vm_id=vm.id, host_id=host_id))
                    return vm
            except IntegrityError:
                # A MAC, uuid or port collided with a concurrent claim: try again.
                continue
        raise Conflict(f"could not record a new VM on pmid {host_id} (id collisions)")

    def _free_port(self, s: Session, host_id: int, ports: range, avoid: set[int]) -> int:
        used = set(s.scalars(select(VmRow.ssh_port).where(VmRow.host_id == host_id))) | avoid
        for p in ports:
            if p not in used:
                return p
        raise Conflict(
            f"pmid {host_id} has no free forwarded port in {ports.start}-{ports.stop - 1}"
        )

    def update_vm(self, vm_id: int, **values: Any) -> None:
        with self.tx() as s:
            s.execute(update(VmRow).where(VmRow.id == vm_id).values(**values, updated_at=_now()))

    def transition(
        self,
        vm_id: int,
        to: str,
        *,
        expect: Iterable[str],
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
        values.setdefault(
            "owner", self.server_id if to in (VmState.BUILDING, VmState.DELETING) else None
        )
        with self.tx() as s:
            q = update(VmRow).where(VmRow.id == vm_id, VmRow.state.in_(list(expect)))
            if unowned or mine:
                q = q.where(self._free(s, mine=mine))
            res = s.execute(
                q.values(state=to, updated_at=_now(), **values).execution_options(
                    synchronize_session=False
                )
            )
            moved = res.rowcount == 1
            if moved and event is not None:
                s.add(event)
            return moved

    def forget_vm(self, vm_id: int, *, event_kind: str, detail: dict | None = None) -> None:
        """Release the VM's claim and delete its row, in one transaction."""
        with self.tx() as s:
            vm = s.get(VmRow, vm_id)
            if vm is None:
                return
            self._release(s, vm_id)
            # Its volumes outlive it: detached, available, data kept.
            s.execute(
                update(VolumeRow)
                .where(VolumeRow.vm_id == vm_id)
                .values(status="available", vm_id=None, target=None, updated_at=_now())
                .execution_options(synchronize_session=False)
            )
            s.add(EventRow(kind=event_kind, vm_id=vm_id, host_id=vm.host_id, detail=detail))
            s.delete(vm)

    def _release(self, s: Session, vm_id: int) -> None:
        self._release_claim(s, s.scalar(select(ClaimRow).where(ClaimRow.vm_id == vm_id)))

    def _release_claim(self, s: Session, claim: ClaimRow | None) -> None:
        if claim is None:
            return
        self.host_changes.mark(claim.host_id)
        s.execute(
            update(HostRow)
            .where(HostRow.id == claim.host_id)
            .values(
                cpu_used=HostRow.cpu_used - claim.cpu,
                ram_used=HostRow.ram_used - claim.ram,
                disk_used=HostRow.disk_used - claim.disk,
            )
            .execution_options(synchronize_session=False)
        )
        s.execute(delete(ClaimRow).where(ClaimRow.id == claim.id))

    def claims_consistent(self) -> list[str]:
        """Hosts whose ``*_used`` disagree with the sum of their claims (should be none)."""
        problems = []
        with self.read() as s:
            sums = {
                hid: (c, r, d)
                for hid, c, r, d in s.execute(
                    select(
                        ClaimRow.host_id,
                        func.sum(ClaimRow.cpu),
                        func.sum(ClaimRow.ram),
                        func.sum(ClaimRow.disk),
                    ).group_by(ClaimRow.host_id)
                )
            }
            for h in s.scalars(select(HostRow)):
                want = sums.get(h.id, (0, 0, 0))
                have = (h.cpu_used, h.ram_used, h.disk_used)
                if tuple(int(x or 0) for x in want) != have:
                    problems.append(f"pmid {h.id}: used {have} but claims sum to {want}")
        return problems

    # -- pools and reservations ---------------------------------------------

    def checkout(
        self,
        pools: list[str],
        hashes: list[str],
        expires_at: datetime,
        seen: dict[str, int] | None = None,
    ) -> tuple[str, list[VmRow]] | None:
        """Atomically hand out ``len(hashes)`` ready VMs of one pool (the first that has
        enough, in the given order), each under its own reservation hash.

        All or nothing: returns (pool, VMs) or None. A VM on a host that is down is
        not ready. ``FOR UPDATE SKIP LOCKED`` lets concurrent checkouts on PostgreSQL
        take different rows; on SQLite the transaction holds the write lock.
        """
        try:
            return self._checkout(pools, hashes, expires_at, {} if seen is None else seen)
        except _LostRace:
            return None

    def _checkout(
        self, pools: list[str], hashes: list[str], expires_at: datetime, seen: dict[str, int]
    ) -> tuple[str, list[VmRow]] | None:
        count = len(hashes)
        now = _now()
        with self.tx() as s:
            up_hosts = select(HostRow.id).where(HostRow.status == "up", HostRow.enabled.is_(True))
            for pool in pools:
                ids = list(
                    s.scalars(
                        select(VmRow.id)
                        .where(
                            VmRow.pool == pool,
                            VmRow.state == VmState.READY,
                            VmRow.host_id.in_(up_hosts),
                        )
                        .order_by(VmRow.updated_at, VmRow.id)
                        .limit(count)
                        .with_for_update(skip_locked=True)
                    )
                )
                seen[pool] = len(ids)  # ready VMs found, in this very transaction
                if len(ids) < count:
                    continue
                for vm_id, digest in zip(ids, hashes, strict=True):
                    res = s.execute(
                        update(VmRow)
                        .where(VmRow.id == vm_id, VmRow.state == VmState.READY)
                        .values(
                            state=VmState.IN_USE,
                            reservation_hash=digest,
                            reserved_at=now,
                            expires_at=expires_at,
                            updated_at=now,
                        )
                        .execution_options(synchronize_session=False)
                    )
                    if res.rowcount != 1:  # taken under us: undo the whole batch
                        raise _LostRace
                rows = list(s.scalars(select(VmRow).where(VmRow.id.in_(ids))))
                for vm in rows:
                    s.add(EventRow(kind="vm.checkout", vm_id=vm.id, host_id=vm.host_id))
                return pool, sorted(rows, key=lambda v: ids.index(v.id))
        return None

    def reserved_vm(self, *, vm_id: int | None, ip: str | None, digest: str) -> VmRow:
        """The VM a check-in names: by id, or by IP together with its reservation."""
        with self.read() as s:
            if vm_id is not None:
                vm = s.get(VmRow, vm_id)
                if vm is None:
                    raise NotFound(f"vmid {vm_id} does not exist")
                return vm
            rows = list(s.scalars(select(VmRow).where(VmRow.ip == ip)))
            if not rows:
                raise NotFound(f"no VM has ip {ip}")
            for vm in rows:
                if vm.reservation_hash == digest:
                    return vm
            if not any(vm.state == VmState.IN_USE for vm in rows):
                raise Conflict(f"no VM with ip {ip} is checked out")
            raise Forbidden(f"the reservation does not hold a VM with ip {ip}")

    def end_reservation(self, vm_id: int, digest: str, *, event_kind: str) -> VmRow:
        """in-use -> cleaning, only for the holder of the reservation."""
        with self.tx() as s:
            vm = s.get(VmRow, vm_id, populate_existing=True)
            if vm is None:
                raise NotFound(f"vmid {vm_id} does not exist")
            if vm.state != VmState.IN_USE or vm.reservation_hash is None:
                raise Conflict(f"vmid {vm_id} is not checked out (it is {vm.state})")
            if not hmac.compare_digest(vm.reservation_hash, digest):
                raise Forbidden(f"this reservation does not hold vmid {vm_id}")
            res = s.execute(
                update(VmRow)
                .where(
                    VmRow.id == vm_id,
                    VmRow.state == VmState.IN_USE,
                    VmRow.reservation_hash == digest,
                )
                .values(**_RETURNED, updated_at=_now())
                .execution_options(synchronize_session=False)
            )
            if res.rowcount != 1:
                raise Conflict(f"vmid {vm_id} changed while being checked in")
            s.add(EventRow(kind=event_kind, vm_id=vm_id, host_id=vm.host_id))
            s.flush()
            s.refresh(vm)
            return vm

    def extend_reservation(
        self, vm_id: int, digest: str, hours: float, cap_hours: float
    ) -> datetime:
        with self.tx() as s:
            vm = s.get(VmRow, vm_id)
            if vm is None:
                raise NotFound(f"vmid {vm_id} does not exist")
            if vm.state != VmState.IN_USE or vm.reservation_hash is None:
                raise Conflict(f"vmid {vm_id} is not checked out (it is {vm.state})")
            if not hmac.compare_digest(vm.reservation_hash, digest):
                raise Forbidden(f"this reservation does not hold vmid {vm_id}")
            reserved = _aware(vm.reserved_at) or _now()
            current = _aware(vm.expires_at) or _now()
            wanted = current + timedelta(hours=hours)
            cap = reserved + timedelta(hours=cap_hours)
            if wanted > cap:
                raise Conflict(
                    f"vmid {vm_id} cannot be held past {cap.isoformat(timespec='seconds')} "
                    f"({cap_hours:g} h after checkout, the pool's cap)"
                )
            vm.expires_at = wanted
            vm.updated_at = _now()
            s.add(EventRow(kind="vm.extend", vm_id=vm_id, detail={"hours": hours}))
            return wanted

    def expire_reservations(self, now: datetime | None = None) -> list[int]:
        """Reservations past ``expires_at`` end: their VMs go to cleaning."""
        now = now or _now()
        with self.tx() as s:
            ids = list(
                s.scalars(
                    select(VmRow.id).where(VmRow.state == VmState.IN_USE, VmRow.expires_at < now)
                )
            )
            if not ids:
                return []
            s.execute(
                update(VmRow)
                .where(VmRow.id.in_(ids), VmRow.state == VmState.IN_USE)
                .values(**_RETURNED, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            for vm_id in ids:
                s.add(EventRow(kind="vm.expired", vm_id=vm_id))
            return ids

    def pool_counts(self) -> dict[str, dict[str, int]]:
        """Per pool: VMs per state, plus ``ready`` counting only VMs on hosts that are up."""
        out: dict[str, dict[str, int]] = {}
        with self.read() as s:
            q = (
                select(VmRow.pool, VmRow.state, HostRow.status, func.count())
                .join(HostRow, HostRow.id == VmRow.host_id, isouter=True)
                .where(VmRow.pool.is_not(None))
                .group_by(VmRow.pool, VmRow.state, HostRow.status)
            )
            for pool, state, host_status, n in s.execute(q):
                c = out.setdefault(pool, {})
                key = state
                if state == VmState.READY and host_status != "up":
                    key = "unreachable"
                c[key] = c.get(key, 0) + n
        return out

    def count_vms(self) -> int:
        with self.read() as s:
            return int(s.scalar(select(func.count()).select_from(VmRow)) or 0)

    def set_guest_host_key(self, vm_id: int, key: str) -> None:
        with self.tx() as s:
            s.execute(
                update(VmRow)
                .where(VmRow.id == vm_id, VmRow.guest_host_key.is_(None))
                .values(guest_host_key=key)
            )

    # -- servers, leases and who works on what --------------------------------

    def db_now(self, s: Session) -> datetime:
        """The time every server agrees on: the database server's clock on
        PostgreSQL (servers' own clocks may drift), this machine's on SQLite."""
        if self.engine.dialect.name == "postgresql":
            return _aware(s.scalar(select(func.now())))
        return _now()

    def _live_servers(self, now: datetime | None = None) -> Select[tuple[str]]:
        """Ids of servers whose heartbeat is fresh at ``now`` (default: the
        database's now, inside the statement, so it costs no round trip)."""
        if now is None:
            if self.engine.dialect.name == "postgresql":
                cutoff: Any = func.now() - timedelta(seconds=self.dead_after)
                return select(ServerRow.id).where(ServerRow.heartbeat_at >= cutoff)
            now = _now()
        cutoff = now - timedelta(seconds=self.dead_after)
        return select(ServerRow.id).where(ServerRow.heartbeat_at >= cutoff)

    def _free(self, s: Session, *, mine: bool = False, col: Any = None) -> ColumnElement[bool]:
        """No live server works on the VM (``mine``: or only this one does).
        ``col``: another table's owner column (volumes)."""
        owner = VmRow.owner if col is None else col
        live = self._live_servers()
        if mine:
            return or_(owner.is_(None), owner == self.server_id, owner.not_in(live))
        return or_(owner.is_(None), (owner != self.server_id) & owner.not_in(live))

    def register_server(self, host: str, pid: int) -> None:
        self._whoami = (host, pid)
        with self.tx() as s:
            now = self.db_now(s)
            s.merge(
                ServerRow(id=self.server_id, host=host, pid=pid, started_at=now, heartbeat_at=now)
            )

    def heartbeat(self) -> None:
        """Say this server is alive; forget servers silent for a day."""
        with self.tx() as s:
            now = self.db_now(s)
            res = s.execute(
                update(ServerRow).where(ServerRow.id == self.server_id).values(heartbeat_at=now)
            )
            if res.rowcount == 0 and self._whoami is not None:
                # Taken for dead (silent too long): say so, and be counted again.
                log.warning("server %s had been given up for dead; rejoining", self.server_id)
                host, pid = self._whoami
                s.add(
                    ServerRow(
                        id=self.server_id, host=host, pid=pid, started_at=now, heartbeat_at=now
                    )
                )
            forget = now - timedelta(seconds=max(86400.0, 10 * self.dead_after))
            s.execute(delete(ServerRow).where(ServerRow.heartbeat_at < forget))

    def unregister_server(self) -> None:
        """A clean stop: give up every lease at once and leave the cluster."""
        with self.tx() as s:
            now = self.db_now(s)
            s.execute(
                update(LeaseRow)
                .where(LeaseRow.holder == self.server_id)
                .values(holder=None, expires_at=now)
            )
            s.execute(
                update(VmRow)
                .where(VmRow.owner == self.server_id)
                .values(owner=None)
                .execution_options(synchronize_session=False)
            )
            s.execute(delete(ServerRow).where(ServerRow.id == self.server_id))

    def bury_servers(self, ids: list[str]) -> None:
        """Servers known to be dead: their leases are free and their work orphaned now."""
        with self.tx() as s:
            now = self.db_now(s)
            s.execute(
                update(LeaseRow).where(LeaseRow.holder.in_(ids)).values(holder=None, expires_at=now)
            )
            s.execute(delete(ServerRow).where(ServerRow.id.in_(ids)))

    def acquire_lease(self, name: str, ttl: float) -> str | None:
        """Take or renew lease ``name`` for ``ttl`` seconds: "taken" (it was not
        ours), "renewed" (it was), or None (another server holds it).

        Free, expired, or already ours: it is ours (one conditional UPDATE, so two
        servers can never both win). Held by another and fresh: not ours.
        """
        me = self.server_id
        try:
            with self.tx() as s:
                now = self.db_now(s)
                held_before = s.scalar(
                    select(LeaseRow.holder).where(LeaseRow.name == name).with_for_update()
                )
                until = now + timedelta(seconds=ttl)
                ours = LeaseRow.holder == me
                res = s.execute(
                    update(LeaseRow)
                    .where(
                        LeaseRow.name == name,
                        or_(ours, LeaseRow.holder.is_(None), LeaseRow.expires_at < now),
                    )
                    .values(
                        holder=me,
                        expires_at=until,
                        acquired_at=case((ours, LeaseRow.acquired_at), else_=now),
                        fence=case((ours, LeaseRow.fence), else_=LeaseRow.fence + 1),
                    )
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount == 1:
                    return "renewed" if held_before == me else "taken"
                if s.get(LeaseRow, name) is not None:
                    return None
                s.add(LeaseRow(name=name, holder=me, expires_at=until, acquired_at=now, fence=1))
            return "taken"
        except IntegrityError:
            return None  # another server created it first

    def release_lease(self, name: str) -> None:
        with self.tx() as s:
            s.execute(
                update(LeaseRow)
                .where(LeaseRow.name == name, LeaseRow.holder == self.server_id)
                .values(holder=None, expires_at=self.db_now(s))
            )

    def cluster(self) -> dict[str, Any]:
        """Servers (alive or not) and leases, as the database sees them now."""
        with self.read() as s:
            now = self.db_now(s)
            cutoff = now - timedelta(seconds=self.dead_after)
            servers = [
                {
                    "id": r.id,
                    "host": r.host,
                    "pid": r.pid,
                    "started_at": _aware(r.started_at),
                    "heartbeat_at": _aware(r.heartbeat_at),
                    "alive": _aware(r.heartbeat_at) >= cutoff,
                    "me": r.id == self.server_id,
                }
                for r in s.scalars(select(ServerRow).order_by(ServerRow.started_at))
            ]
            leases = [
                {
                    "name": r.name,
                    "holder": r.holder if _aware(r.expires_at) >= now else None,
                    "expires_at": _aware(r.expires_at),
                    "fence": r.fence,
                }
                for r in s.scalars(select(LeaseRow).order_by(LeaseRow.name))
            ]
        return {"now": now, "servers": servers, "leases": leases}

    def take_vm(self, vm_id: int, states: Iterable[str]) -> bool:
        """Become the server working on a VM in one of ``states``, if no live server
        (this one included) already is. True if taken."""
        with self.tx() as s:
            res = s.execute(
                update(VmRow)
                .where(VmRow.id == vm_id, VmRow.state.in_(list(states)), self._free(s))
                .values(owner=self.server_id)
                .execution_options(synchronize_session=False)
            )
            return res.rowcount == 1

    def orphans(self) -> list[VmRow]:
        """VMs left building or deleting by a server that is no longer alive."""
        with self.read() as s:
            q = (
                select(VmRow)
                .where(VmRow.state.in_([VmState.BUILDING, VmState.DELETING]), self._free(s))
                .order_by(VmRow.id)
            )
            return list(s.scalars(q))

    def let_go(self, vm_id: int) -> None:
        """Stop working on a VM without changing its state."""
        with self.tx() as s:
            s.execute(
                update(VmRow)
                .where(VmRow.id == vm_id, VmRow.owner == self.server_id)
                .values(owner=None)
                .execution_options(synchronize_session=False)
            )

    def owner_alive(self, row: VmRow | VolumeRow) -> bool:
        """Whether some live server (this one included) works on a VM or volume."""
        if row.owner is None:
            return False
        if row.owner == self.server_id:
            return True
        with self.read() as s:
            return row.owner in set(s.scalars(self._live_servers()))

    # -- volumes -------------------------------------------------------------

    def _take_disk(self, s: Session, host_id: int, size: int) -> bool:
        res = s.execute(
            update(HostRow)
            .where(
                HostRow.id == host_id,
                HostRow.status == "up",
                HostRow.enabled.is_(True),
                HostRow.disk_used + size <= HostRow.disk_total,
            )
            .values(disk_used=HostRow.disk_used + size)
            .execution_options(synchronize_session=False)
        )
        return res.rowcount == 1

    def claim_volume(self, host_id: int, *, name: str, size: int) -> VolumeRow | None:
        """Claim ``size`` GB on the host and record a ``creating`` volume there; None
        when the host no longer has the room (the caller tries its next candidate)."""
        with self.tx() as s:
            self.host_changes.mark(host_id)
            if not self._take_disk(s, host_id, size):
                return None
            vol = VolumeRow(
                name=name,
                size=size,
                host_id=host_id,
                status="creating",
                vol_name=f"volume-{secrets.token_hex(8)}",
                owner=self.server_id,
            )
            s.add(vol)
            s.flush()
            vol.vol_name = f"volume-{self.installation_id}-{vol.id}"
            s.add(ClaimRow(host_id=host_id, volume_id=vol.id, disk=size))
            s.add(EventRow(kind="volume.claim", host_id=host_id, detail={"volume": vol.id}))
            return vol

    def volume(self, volume_id: int) -> VolumeRow:
        return self._one(VolumeRow, volume_id, f"volumeid : {volume_id}")

    def volumes(self, *, vm_id: int | None = None, host_id: int | None = None) -> list[VolumeRow]:
        with self.read() as s:
            q = select(VolumeRow).order_by(VolumeRow.id)
            if vm_id is not None:
                q = q.where(VolumeRow.vm_id == vm_id)
            if host_id is not None:
                q = q.where(VolumeRow.host_id == host_id)
            return list(s.scalars(q))

    def volume_transition(
        self,
        volume_id: int,
        to: str,
        *,
        expect: Iterable[str],
        unowned: bool = False,
        **values: Any,
    ) -> bool:
        """Like ``transition`` for VMs: moving to a busy state (creating, attaching,
        detaching, deleting) marks this server as the volume's owner, any other state
        clears it; ``unowned``: only if no live server is changing it."""
        values.setdefault("owner", self.server_id if to in VOLUME_BUSY else None)
        with self.tx() as s:
            q = update(VolumeRow).where(
                VolumeRow.id == volume_id, VolumeRow.status.in_(list(expect))
            )
            if unowned:
                q = q.where(self._free(s, col=VolumeRow.owner))
            res = s.execute(
                q.values(status=to, updated_at=_now(), **values).execution_options(
                    synchronize_session=False
                )
            )
            return res.rowcount == 1

    def move_volume_claim(self, volume_id: int, to_host: int) -> bool:
        """Move a volume's disk claim to another host (for a copy there); False if it
        does not fit."""
        with self.tx() as s:
            vol = s.get(VolumeRow, volume_id)
            if vol is None:
                raise NotFound(f"volumeid : {volume_id} does not exist")
            if not self._take_disk(s, to_host, vol.size):
                return False
            self.host_changes.mark(to_host)
            self._release_claim(
                s, s.scalar(select(ClaimRow).where(ClaimRow.volume_id == volume_id))
            )
            s.add(ClaimRow(host_id=to_host, volume_id=volume_id, disk=vol.size))
            vol.host_id = to_host
            return True

    def forget_volume(self, volume_id: int, *, event_kind: str) -> None:
        with self.tx() as s:
            vol = s.get(VolumeRow, volume_id)
            if vol is None:
                return
            self._release_claim(
                s, s.scalar(select(ClaimRow).where(ClaimRow.volume_id == volume_id))
            )
            s.add(EventRow(kind=event_kind, host_id=vol.host_id, detail={"volume": volume_id}))
            s.delete(vol)

    # -- staged images -------------------------------------------------------

    def staged_image(self, host_id: int, image_id: int) -> StagedImageRow | None:
        with self.read() as s:
            return s.scalar(
                select(StagedImageRow).where(
                    StagedImageRow.host_id == host_id, StagedImageRow.image_id == image_id
                )
            )

    def record_staged(self, host_id: int, image_id: int, path: str, size: int) -> None:
        try:
            with self.tx() as s:
                s.add(StagedImageRow(host_id=host_id, image_id=image_id, path=path, size=size))
        except IntegrityError:
            pass  # another create staged it at the same time: same content, same path

    def forget_staged(self, host_id: int, image_id: int) -> None:
        with self.tx() as s:
            s.execute(
                delete(StagedImageRow).where(
                    StagedImageRow.host_id == host_id, StagedImageRow.image_id == image_id
                )
            )

    # -- events --------------------------------------------------------------

    def record_event(
        self,
        kind: str,
        *,
        vm_id: int | None = None,
        host_id: int | None = None,
        duration: float | None = None,
        detail: dict | None = None,
    ) -> None:
        with self.tx() as s:
            s.add(
                EventRow(kind=kind, vm_id=vm_id, host_id=host_id, duration=duration, detail=detail)
            )

    def events(self, kind: str | None = None, limit: int = 100) -> list[EventRow]:
        with self.read() as s:
            q = select(EventRow).order_by(EventRow.id.desc()).limit(limit)
            if kind:
                q = q.where(EventRow.kind == kind)
            return list(s.scalars(q))


def _uuid() -> str:
    import uuid

    return str(uuid.uuid4())


def image_spec_to_dict(spec: ImageSpec) -> dict:
    return {
        "name": spec.name,
        "path": spec.path,
        "user": spec.user,
        "host": spec.host,
        "port": spec.port,
        "format": spec.format,
        "arch": spec.arch,
        "kernel": spec.kernel,
        "initrd": spec.initrd,
        "cmdline": spec.cmdline,
    }


def image_spec_from_row(row: ImageRow) -> ImageSpec:
    d = dict(row.spec)
    return ImageSpec(**d)
