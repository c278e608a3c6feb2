"""Plain data shared by every layer: input-file records and the states of things."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class VmState(enum.StrEnum):
    """Where a VM is in its life. Every transition is one registry transaction."""

    BUILDING = "building"  # claimed a host, domain being made
    ACTIVE = "active"  # running, owned by whoever created it (plain /vm/create)
    READY = "ready"  # pool VM, running, free for checkout
    IN_USE = "in-use"  # pool VM, checked out under a reservation
    CLEANING = "cleaning"  # pool VM, returned, being cleaned
    DELETING = "deleting"  # being destroyed
    FAILED = "failed"  # something went wrong; not handed out; see `error`
    VANISHED = "vanished"  # the registry knows it but its host no longer has the domain


class HostStatus(enum.StrEnum):
    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"


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
    network: str = "user"  # "user", "forward", "network:NAME" or "bridge:NAME"
    pool_path: str | None = None  # directory of the fabric's storage pool on the host
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
