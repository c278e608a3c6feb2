"""Plain data shared by every layer: input-file records and the states of things."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# -- names ---------------------------------------------------------------------

# What a user may call a VM, volume, pool or schedule: the one rule, used by the
# API's parameters, the configuration's schema and the OpenAPI document alike.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
NAME = re.compile(NAME_PATTERN)
NAME_RULE = "1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"


def is_name(value: object) -> bool:
    return isinstance(value, str) and NAME.fullmatch(value) is not None


# -- states ----------------------------------------------------------------------
#
# Every state machine of the fabric, each beside the transitions it allows (nova's
# vm_states.py is the model). The registry refuses a transition that is not listed
# here: a bug, not a user's mistake, so it raises ValueError.


class VmState(enum.StrEnum):
    """Where a VM is in its life. Every transition is one registry transaction."""

    BUILDING = "building"  # claimed a host, domain being made
    ACTIVE = "active"  # running, owned by whoever created it (plain /vm/create)
    STOPPED = "stopped"  # a plain VM shut off on purpose; keeps its claim (see power.py)
    READY = "ready"  # pool VM, running, free for checkout
    IN_USE = "in-use"  # pool VM, checked out under a reservation
    CLEANING = "cleaning"  # pool VM, returned, being cleaned
    DELETING = "deleting"  # being destroyed
    FAILED = "failed"  # something went wrong; not handed out; see `error`
    VANISHED = "vanished"  # the registry knows it but its host no longer has the domain


# States in which a VM holds its host's capacity and has (or will have) a domain:
# every state a VM row can be in (a destroyed VM's row is deleted).
VM_LIVE = frozenset(VmState)
# States from which a VM may be destroyed (a create in flight is undone by its own
# server, or by the sweep once that server is dead).
VM_DESTROYABLE = VM_LIVE - {VmState.BUILDING}
# States whose domain should be running; one found stopped is started again (a
# ``stopped`` VM is not among them: it was stopped on purpose and stays so).
VM_RUNNING = frozenset({VmState.ACTIVE, VmState.READY, VmState.IN_USE, VmState.CLEANING})
# States in which a volume may be attached to the VM.
VM_ATTACHABLE = frozenset({VmState.ACTIVE, VmState.READY, VmState.IN_USE})
# States in which a server works on the VM and marks itself its owner.
VM_OWNED = frozenset({VmState.BUILDING, VmState.DELETING})

VM_TRANSITIONS: dict[VmState, frozenset[VmState]] = {
    # a plain VM ends active; a pool VM stays building (its address recorded)
    # until its guest answers, then ready; a broken one fails; one whose domain runs
    # while the fabric waits for its address may be destroyed
    VmState.BUILDING: frozenset(
        {VmState.BUILDING, VmState.ACTIVE, VmState.READY, VmState.FAILED, VmState.DELETING}
    ),
    VmState.ACTIVE: frozenset(
        {VmState.STOPPED, VmState.DELETING, VmState.FAILED, VmState.VANISHED}
    ),
    # started again, or destroyed; its claim stays until then
    VmState.STOPPED: frozenset(
        {VmState.ACTIVE, VmState.DELETING, VmState.FAILED, VmState.VANISHED}
    ),
    # checked out, or removed (destroyed, a schedule trimming its pool)
    VmState.READY: frozenset({VmState.IN_USE, VmState.DELETING, VmState.FAILED, VmState.VANISHED}),
    # checked in or expired: cleaned before it serves again; ready again only when
    # it was set aside for an on-demand request that ended before anyone got it
    # (ondemand.py: never used, so nothing to clean)
    VmState.IN_USE: frozenset(
        {VmState.READY, VmState.CLEANING, VmState.DELETING, VmState.FAILED, VmState.VANISHED}
    ),
    VmState.CLEANING: frozenset(
        {VmState.READY, VmState.DELETING, VmState.FAILED, VmState.VANISHED}
    ),
    # a destroy that failed on its host puts the VM back where it was
    VmState.DELETING: frozenset(VM_DESTROYABLE),
    VmState.FAILED: frozenset({VmState.DELETING, VmState.VANISHED}),
    VmState.VANISHED: frozenset({VmState.DELETING}),
}


class RequestState(enum.StrEnum):
    """Where an on-demand request (a row of ``requests``, orchestrator/ondemand.py) is."""

    PENDING = "pending"  # waiting for VMs; those found are set aside for it
    READY = "ready"  # every VM it asked for is the requester's
    FAILED = "failed"  # not met by its deadline; ``message`` says why
    CANCELLED = "cancelled"  # cancelled by its requester or an admin


REQUEST_DONE = frozenset({RequestState.READY, RequestState.FAILED, RequestState.CANCELLED})
REQUEST_TRANSITIONS: dict[RequestState, frozenset[RequestState]] = {
    RequestState.PENDING: frozenset(
        {RequestState.READY, RequestState.FAILED, RequestState.CANCELLED}
    ),
    # a ready request's cancel ends its VMs' reservations
    RequestState.READY: frozenset({RequestState.CANCELLED}),
    RequestState.FAILED: frozenset(),
    RequestState.CANCELLED: frozenset(),
}


class HostStatus(enum.StrEnum):
    """What discovery last found on a host."""

    UNKNOWN = "unknown"  # listed, never looked at yet
    UP = "up"  # its libvirt answered: VMs may be placed there
    DOWN = "down"  # unreachable or refusing; ``reason`` says why


HOST_TRANSITIONS: dict[HostStatus, frozenset[HostStatus]] = {
    HostStatus.UNKNOWN: frozenset({HostStatus.UP, HostStatus.DOWN}),
    HostStatus.UP: frozenset({HostStatus.UP, HostStatus.DOWN}),
    HostStatus.DOWN: frozenset({HostStatus.UP, HostStatus.DOWN}),
}


# States of a VM that may be moved to another host (a running VM that no server is
# working on: building, cleaning and deleting VMs are someone's work in flight; a
# failed or vanished one has nothing to move).
VM_MOVABLE = frozenset({VmState.ACTIVE, VmState.READY, VmState.IN_USE})


class MigrationPhase(enum.StrEnum):
    """Where the move of one VM to another host is (a row of ``migrations``). The
    row is written, with the claim on the target, before the domain is touched, so a
    server killed mid-move leaves a record that reconciliation finishes."""

    MIGRATING = "migrating"  # capacity claimed on the target; the domain is moving
    DONE = "done"  # the VM runs on the target; its source claim is given back
    FAILED = "failed"  # the VM stayed on the source; the target claim is given back


MIGRATION_TRANSITIONS: dict[MigrationPhase, frozenset[MigrationPhase]] = {
    MigrationPhase.MIGRATING: frozenset({MigrationPhase.DONE, MigrationPhase.FAILED}),
    MigrationPhase.DONE: frozenset(),
    MigrationPhase.FAILED: frozenset(),
}


class DrainState(enum.StrEnum):
    """Where the drain of a host (moving every VM off it) is (a row of ``drains``)."""

    RUNNING = "running"  # moving VMs one at a time
    CANCELLING = "cancelling"  # asked to stop: the move in flight ends, no other starts
    DONE = "done"  # every VM was tried; ``failed`` lists those that stayed
    CANCELLED = "cancelled"  # stopped on an operator's word
    INTERRUPTED = "interrupted"  # its server died; start it again to go on


DRAIN_ACTIVE = frozenset({DrainState.RUNNING, DrainState.CANCELLING})
DRAIN_TRANSITIONS: dict[DrainState, frozenset[DrainState]] = {
    DrainState.RUNNING: frozenset({DrainState.CANCELLING, DrainState.DONE, DrainState.INTERRUPTED}),
    DrainState.CANCELLING: frozenset({DrainState.CANCELLED, DrainState.INTERRUPTED}),
    DrainState.DONE: frozenset(),
    DrainState.CANCELLED: frozenset(),
    DrainState.INTERRUPTED: frozenset(),
}


class VolumeState(enum.StrEnum):
    """Where a block-storage volume is in its life."""

    CREATING = "creating"  # claimed a host, storage volume being made
    AVAILABLE = "available"  # exists, attached to nothing
    ATTACHING = "attaching"  # being copied to its VM's host (host-local) and hot-plugged
    ATTACHED = "attached"  # a disk of ``vm_id``
    DETACHING = "detaching"  # being hot-unplugged
    DELETING = "deleting"  # being removed
    ERROR = "error"  # its storage volume is gone; see ``error``
    LOST = "lost"  # it lived on a host that died and was evacuated: its data is gone


# States in which a server works on the volume and marks itself its owner.
VOLUME_BUSY = frozenset(
    {VolumeState.CREATING, VolumeState.ATTACHING, VolumeState.DETACHING, VolumeState.DELETING}
)
VOLUME_TRANSITIONS: dict[VolumeState, frozenset[VolumeState]] = {
    VolumeState.CREATING: frozenset({VolumeState.CREATING, VolumeState.AVAILABLE}),
    VolumeState.AVAILABLE: frozenset(
        {VolumeState.ATTACHING, VolumeState.DELETING, VolumeState.ERROR, VolumeState.LOST}
    ),
    # an attach that fails falls back; a dead server's attach ends as the domain shows
    VolumeState.ATTACHING: frozenset(
        {VolumeState.ATTACHING, VolumeState.ATTACHED, VolumeState.AVAILABLE}
    ),
    # detached, or released because its VM was destroyed
    VolumeState.ATTACHED: frozenset(
        {VolumeState.DETACHING, VolumeState.AVAILABLE, VolumeState.ERROR, VolumeState.LOST}
    ),
    VolumeState.DETACHING: frozenset(
        {VolumeState.DETACHING, VolumeState.AVAILABLE, VolumeState.ATTACHED}
    ),
    # a delete that failed on its host puts the volume back where it was
    VolumeState.DELETING: frozenset(
        {VolumeState.DELETING, VolumeState.AVAILABLE, VolumeState.ERROR}
    ),
    VolumeState.ERROR: frozenset({VolumeState.DELETING, VolumeState.ERROR, VolumeState.LOST}),
    # its host was evacuated: only removing it is left (the record says what was lost)
    VolumeState.LOST: frozenset({VolumeState.DELETING, VolumeState.LOST}),
}


class SchedulePhase(enum.StrEnum):
    """Where one window of a schedule is (a row of ``schedule_runs``)."""

    ACTIVE = "active"  # the window is open: its extra capacity is made and kept
    ENDING = "ending"  # the window is over: its extra VMs are being removed
    DONE = "done"  # all it added is gone


SCHEDULE_TRANSITIONS: dict[SchedulePhase, frozenset[SchedulePhase]] = {
    SchedulePhase.ACTIVE: frozenset({SchedulePhase.ENDING}),
    SchedulePhase.ENDING: frozenset({SchedulePhase.DONE}),
    SchedulePhase.DONE: frozenset(),
}


class ScheduleState(enum.StrEnum):
    """How a schedule looks from outside (derived from its windows, not stored)."""

    PENDING = "pending"  # no window open now; ``next_start`` says when
    ACTIVE = "active"  # a window is open (or still being torn down)
    DONE = "done"  # a one-off whose window is over


class Lease(enum.StrEnum):
    """Background work that runs on exactly one of several servers: the one
    holding its lease (see cluster.py)."""

    POOL_WORKER = "pool-worker"  # refill, cleanup pass, reaper, retirement
    SCHEDULES = "schedules"  # scheduled capacity windows
    DISCOVERY = "discovery"  # discovery, reconciliation, the orphan sweep, volumes


class NetworkKind(enum.StrEnum):
    """How a host connects its VMs (the pm file's ``network=``)."""

    USER = "user"  # QEMU user networking: the guest reaches out, nothing reaches it
    FORWARD = "forward"  # user networking with the guest's port 22 on the host's address
    NETWORK = "network"  # a libvirt-managed network (network:NAME): DHCP by libvirt
    BRIDGE = "bridge"  # a host bridge onto a LAN (bridge:NAME): the LAN's DHCP server


@dataclass(frozen=True)
class NetworkMode:
    """A host's ``network=`` value, parsed: ``kind`` and, for network/bridge, ``name``."""

    kind: NetworkKind
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> NetworkMode:
        kind, _, name = text.partition(":")
        return cls(NetworkKind(kind), name or None)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else str(self.kind)

    @property
    def on_lan(self) -> bool:
        """Its VMs get an address of their own on a network (learned by the fabric)."""
        return self.kind in (NetworkKind.NETWORK, NetworkKind.BRIDGE)

    @property
    def reachable(self) -> bool:
        """Something outside the host can reach its VMs' SSH."""
        return self.kind != NetworkKind.USER


# When a host's pm-file line sets no ``network=``: libvirt's own ``default`` network
# where the host has one (as virt-install does), else user networking.
DEFAULT_NETWORK = "network:default"


class AddressSource(enum.StrEnum):
    """Who said what a VM's address is, most trusted first."""

    FORWARD = "forward"  # network=forward: the host's address, a port forwarded
    AGENT = "agent"  # the QEMU guest agent inside the guest
    LEASE = "lease"  # the DHCP server's lease for the VM's MAC
    ARP = "arp"  # the host's neighbour table for the VM's MAC


def check_transition(
    table: dict[Any, frozenset[Any]], frm: Iterable[Any], to: Any, what: str
) -> None:
    """Refuse a transition the state machine does not allow (a bug: ValueError)."""
    bad = [str(s) for s in frm if to not in table[s]]
    if bad:
        raise ValueError(f"{what}: {', '.join(bad)} -> {to} is not an allowed transition")


@dataclass(frozen=True)
class Source:
    """Where a record came from, for error messages: file path and 1-based line."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class HostSpec:
    """One physical machine as the pm file declares it.

    ``key`` identifies the host across restarts (so its pmid stays the same):
    ``user@address:port`` or the explicit URI. Capacity fields are overrides:
    ``None`` means "read it from libvirt".
    """

    user: str | None
    address: str | None
    port: int | None
    uri: str
    domain_type: str = "kvm"  # "kvm" or "qemu" (TCG)
    cpu: int | None = None
    ram: int | None = None  # MB
    disk: int | None = None  # GB
    arch: str | None = None
    network: str | None = None  # user, forward, network:NAME, bridge:NAME; None: not set
    pool_path: str | None = None  # directory of the fabric's storage pool on the host
    # where other hosts send this host live-migration streams (None: QEMU's own choice,
    # the host's hostname as libvirt sees it)
    migrate_address: str | None = None
    source: Source | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return self.uri

    @property
    def label(self) -> str:
        if self.user and self.address:
            return f"{self.user}@{self.address}"
        return self.uri


@dataclass(frozen=True)
class ImageSpec:
    """One image as the images file declares it.

    ``host`` is None for a path on the fabric's own machine; otherwise the image
    is read over SSH from ``user@host:port``.
    """

    name: str
    path: str
    user: str | None = None
    host: str | None = None
    port: int | None = None
    format: str = "qcow2"  # "qcow2" or "raw"
    arch: str | None = None  # None: runs on any host
    kernel: str | None = None  # direct kernel boot (paths on the same image host)
    initrd: str | None = None
    cmdline: str | None = None
    source: Source | None = field(default=None, compare=False)

    @property
    def location(self) -> str:
        """The image's identity across restarts, as written in the original format."""
        if self.host:
            return (
                f"{self.user}@{self.host}:{self.path}" if self.user else f"{self.host}:{self.path}"
            )
        return self.path


@dataclass(frozen=True)
class VmType:
    """A flavor: ``ram`` in MB, ``disk`` in GB."""

    tid: int
    cpu: int
    ram: int
    disk: int
    name: str | None = None
    source: Source | None = field(default=None, compare=False)

    def as_api(self) -> dict:
        return {"tid": self.tid, "cpu": self.cpu, "ram": self.ram, "disk": self.disk}


@dataclass(frozen=True)
class Inventory:
    hosts: tuple[HostSpec, ...]
    images: tuple[ImageSpec, ...]
    types: tuple[VmType, ...]
