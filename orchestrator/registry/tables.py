"""The registry's tables (SQLAlchemy 2). Every fact the fabric knows lives here."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..model import HostStatus

# SQLite's AUTOINCREMENT keeps ids from ever being reused after a delete;
# PostgreSQL's sequences already behave that way.
_NEVER_REUSE = {"sqlite_autoincrement": True}
# BIGINT on PostgreSQL, but INTEGER on SQLite so it stays the rowid alias.
Id = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class MetaRow(Base):
    """Facts about the registry itself (e.g. the installation id)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class HostRow(Base):
    """A physical machine. ``*_total`` is effective capacity (after ratios), ``*_used`` claimed."""

    __tablename__ = "hosts"
    __table_args__ = _NEVER_REUSE

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(512), unique=True)
    label: Mapped[str] = mapped_column(String(256))
    uri: Mapped[str] = mapped_column(String(512))
    address: Mapped[str | None] = mapped_column(String(256))
    domain_type: Mapped[str] = mapped_column(String(16), default="kvm")
    # What the pm file says (None: nothing, decided at discovery), and what VMs get.
    network_setting: Mapped[str | None] = mapped_column(String(128))
    network: Mapped[str] = mapped_column(String(128), default="user")
    networks: Mapped[list | None] = mapped_column(JSON)  # libvirt networks discovered there
    pool_path: Mapped[str | None] = mapped_column(String(1024))
    # where QEMU on another host sends a live migration's stream (pm file migrate_address=)
    migrate_address: Mapped[str | None] = mapped_column(String(256))
    arch: Mapped[str | None] = mapped_column(String(32))
    in_inventory: Mapped[bool] = mapped_column(Boolean, default=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # In maintenance (an operator's reason; None: in service): nothing is placed there.
    maintenance: Mapped[str | None] = mapped_column(Text)
    maintenance_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default=HostStatus.UNKNOWN)
    reason: Mapped[str | None] = mapped_column(Text)
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the pm file declares (None: read it from libvirt), what libvirt reported.
    cpu_override: Mapped[int | None] = mapped_column(Integer)
    ram_override: Mapped[int | None] = mapped_column(Integer)
    disk_override: Mapped[int | None] = mapped_column(Integer)
    phys_cpu: Mapped[int] = mapped_column(Integer, default=0)
    phys_ram: Mapped[int] = mapped_column(Integer, default=0)
    phys_disk: Mapped[int] = mapped_column(Integer, default=0)
    cpu_total: Mapped[int] = mapped_column(Integer, default=0)
    ram_total: Mapped[int] = mapped_column(Integer, default=0)
    disk_total: Mapped[int] = mapped_column(Integer, default=0)
    cpu_used: Mapped[int] = mapped_column(Integer, default=0)
    ram_used: Mapped[int] = mapped_column(Integer, default=0)
    disk_used: Mapped[int] = mapped_column(Integer, default=0)


class ImageRow(Base):
    __tablename__ = "images"
    __table_args__ = _NEVER_REUSE

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    location: Mapped[str] = mapped_column(String(1024), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict] = mapped_column(JSON)
    in_inventory: Mapped[bool] = mapped_column(Boolean, default=True)


class TypeRow(Base):
    __tablename__ = "vm_types"

    tid: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=False)
    name: Mapped[str | None] = mapped_column(String(64))
    cpu: Mapped[int] = mapped_column(Integer)
    ram: Mapped[int] = mapped_column(Integer)
    disk: Mapped[int] = mapped_column(Integer)
    in_inventory: Mapped[bool] = mapped_column(Boolean, default=True)


class VmRow(Base):
    """A VM the fabric owns. Rows of destroyed VMs are deleted; ids are never reused."""

    __tablename__ = "vms"
    __table_args__ = (
        UniqueConstraint("host_id", "ssh_port", name="uq_vm_host_port"),
        # An index, not a constraint: SQLite adds it without rebuilding the table.
        Index("uq_vm_hostname", "hostname", unique=True),
        _NEVER_REUSE,
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    # Its DNS name: unique, and never given again (see HostnameRow, hostnames.py).
    hostname: Mapped[str | None] = mapped_column(String(63))
    # Labels users set (vmpooler's tags): {"key": "value"}.
    tags: Mapped[dict | None] = mapped_column(JSON)
    tid: Mapped[int] = mapped_column(Id)
    image_id: Mapped[int] = mapped_column(Id, ForeignKey("images.id"))
    host_id: Mapped[int | None] = mapped_column(Id, ForeignKey("hosts.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    domain_name: Mapped[str] = mapped_column(String(128), unique=True)
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    cpu: Mapped[int] = mapped_column(Integer)
    ram: Mapped[int] = mapped_column(Integer)
    disk: Mapped[int] = mapped_column(Integer)
    network: Mapped[str | None] = mapped_column(String(128))  # its host's, when it was made
    ip: Mapped[str | None] = mapped_column(String(64))
    ip_source: Mapped[str | None] = mapped_column(String(16))  # an AddressSource
    ip_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ssh_port: Mapped[int | None] = mapped_column(Integer)
    disk_path: Mapped[str | None] = mapped_column(String(1024))
    console_path: Mapped[str | None] = mapped_column(String(1024))
    error: Mapped[str | None] = mapped_column(Text)
    # Pools and reservations: a pool VM is ready, in-use (under one reservation) or cleaning.
    pool: Mapped[str | None] = mapped_column(String(64), index=True)
    reservation_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    reserved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    guest_host_key: Mapped[str | None] = mapped_column(Text)  # trusted on first use
    # Who made it (/vm/create; None: the fabric, for a pool, or anyone with auth off)
    # and who holds it checked out.
    created_by: Mapped[str | None] = mapped_column(String(128), index=True)
    held_by: Mapped[str | None] = mapped_column(String(128), index=True)
    borrower_keys: Mapped[int] = mapped_column(Integer, default=0)  # put into its guest
    # The on-demand request it is set aside for, or was handed out by (RequestRow);
    # cleared when its reservation ends.
    request_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # The server working on it now (building, deleting, cleaning, retiring); None when
    # no one is. Work whose owner is no longer alive is taken over (see servers).
    owner: Mapped[str | None] = mapped_column(String(32), index=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    # Rebuilt from its image on another host because its host died (evacuation):
    # when, and the host (pmid) it was on.
    rebuilt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rebuilt_from: Mapped[int | None] = mapped_column(Id)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class HostnameRow(Base):
    """Every hostname the registry ever gave, kept after its VM is gone: the primary
    key makes sure none is given twice."""

    __tablename__ = "hostnames"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    vm_id: Mapped[int] = mapped_column(Id)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RequestRow(Base):
    """An on-demand request (orchestrator/ondemand.py): VMs of some pools for one
    requester, set aside as they become ready. ``id`` is its arrival order."""

    __tablename__ = "requests"
    __table_args__ = _NEVER_REUSE

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    requested_by: Mapped[str | None] = mapped_column(String(128), index=True)
    pools: Mapped[dict] = mapped_column(JSON)  # {pool: count}
    state: Mapped[str] = mapped_column(String(16), index=True)  # a RequestState
    message: Mapped[str | None] = mapped_column(Text)
    hours: Mapped[float | None] = mapped_column()  # the VMs' lifetime (None: the pool's)
    # what it got: [{"vmid", "hostname", "pool"}], when it became ready
    vms: Mapped[list | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class VolumeRow(Base):
    """A block-storage volume: where it lives, and the VM it is attached to."""

    __tablename__ = "volumes"
    __table_args__ = _NEVER_REUSE

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(Integer)  # GB
    host_id: Mapped[int | None] = mapped_column(Id, ForeignKey("hosts.id"), index=True)
    backend: Mapped[str] = mapped_column(String(64), default="dir")  # dir, or rbd:POOL
    vol_name: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    vm_id: Mapped[int | None] = mapped_column(Id, index=True)
    target: Mapped[str | None] = mapped_column(String(16))  # vdb, vdc, ... when attached
    error: Mapped[str | None] = mapped_column(Text)
    # The server creating, attaching, detaching or deleting it now (see VmRow.owner).
    created_by: Mapped[str | None] = mapped_column(String(128), index=True)
    owner: Mapped[str | None] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class StagedImageRow(Base):
    """An image already copied onto a host's pool, so later creates reuse it."""

    __tablename__ = "staged_images"
    __table_args__ = (UniqueConstraint("host_id", "image_id", name="uq_staged"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    host_id: Mapped[int] = mapped_column(Id, ForeignKey("hosts.id"))
    image_id: Mapped[int] = mapped_column(Id, ForeignKey("images.id"))
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    staged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AddressRow(Base):
    """An address of a network's plan, given to one VM (freed with it). The unique
    constraints make sure no address is given twice, whichever server gives it."""

    __tablename__ = "addresses"
    __table_args__ = (
        UniqueConstraint("network", "address", name="uq_address"),
        UniqueConstraint("vm_id", name="uq_address_vm"),
        _NEVER_REUSE,
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    network: Mapped[str] = mapped_column(String(128))
    address: Mapped[str] = mapped_column(String(64))
    vm_id: Mapped[int] = mapped_column(Id)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ClaimRow(Base):
    """Capacity a consumer (a VM, later a volume) holds on a host; hosts.*_used is their sum."""

    __tablename__ = "claims"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    host_id: Mapped[int] = mapped_column(Id, ForeignKey("hosts.id"), index=True)
    vm_id: Mapped[int | None] = mapped_column(Id, unique=True)
    volume_id: Mapped[int | None] = mapped_column(Id, unique=True)
    # Capacity held on a move's target while the VM moves (its own claim stays on the
    # source until the move is done).
    migration_id: Mapped[int | None] = mapped_column(Id, unique=True)
    cpu: Mapped[int] = mapped_column(Integer, default=0)
    ram: Mapped[int] = mapped_column(Integer, default=0)
    disk: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MigrationRow(Base):
    """The move of one VM from ``source_id`` to ``target_id`` (a ``MigrationPhase``),
    written before the domain is touched; ``server`` is the server moving it."""

    __tablename__ = "migrations"
    __table_args__ = _NEVER_REUSE

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    vm_id: Mapped[int] = mapped_column(Id, index=True)
    source_id: Mapped[int] = mapped_column(Id, ForeignKey("hosts.id"))
    target_id: Mapped[int] = mapped_column(Id, ForeignKey("hosts.id"))
    phase: Mapped[str] = mapped_column(String(16), index=True)
    drain_id: Mapped[int | None] = mapped_column(Id, index=True)
    server: Mapped[str | None] = mapped_column(String(32))
    requested_by: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DrainRow(Base):
    """Moving every VM off a host (a ``DrainState``): how many, how far, what stayed."""

    __tablename__ = "drains"
    __table_args__ = _NEVER_REUSE

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    host_id: Mapped[int] = mapped_column(Id, ForeignKey("hosts.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    moved: Mapped[int] = mapped_column(Integer, default=0)
    # [{"vmid": N, "reason": "..."}] for each VM that stayed
    failed: Mapped[list | None] = mapped_column(JSON)
    server: Mapped[str | None] = mapped_column(String(32))
    requested_by: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EventRow(Base):
    """What happened, and who did it: creates, failures, reconciliation findings, and
    one audit event per state-changing API request (``operation`` set).

    ``actor``: the user, ``anonymous`` or ``system``; ``object_type``/``object_id``:
    what it was about; ``outcome``: ok, refused or failed, with the HTTP ``status``
    of an API request; ``owner``: whose the object was. Left out, they are filled
    in at insert (registry/events.py, ``before_insert``)."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_object", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    vm_id: Mapped[int | None] = mapped_column(Id, index=True)
    host_id: Mapped[int | None] = mapped_column(Id)
    duration: Mapped[float | None] = mapped_column()
    detail: Mapped[dict | None] = mapped_column(JSON)
    actor: Mapped[str | None] = mapped_column(String(128), index=True)
    operation: Mapped[str | None] = mapped_column(String(256))
    object_type: Mapped[str | None] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(128))
    outcome: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[int | None] = mapped_column(Integer)
    # Whose the object was when it happened (a VM's holder, else its creator; a
    # volume's, schedule's or key's user): who may read it besides the actor.
    owner: Mapped[str | None] = mapped_column(String(128), index=True)


class ServerRow(Base):
    """A fabric server sharing this registry; alive while its heartbeat is fresh."""

    __tablename__ = "servers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class LeaseRow(Base):
    """Who runs one piece of background work (pool worker, schedules, discovery).

    A holder renews it every heartbeat; once it expires any server may take it.
    ``fence`` grows at every change of holder.
    """

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(32))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acquired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    fence: Mapped[int] = mapped_column(BigInteger, default=0)
