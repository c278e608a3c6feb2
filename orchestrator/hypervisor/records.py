"""What the libvirt driver is given and returns: host targets, VM plans, staged images, domains."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostTarget:
    """What the driver needs to know about a host."""

    id: int
    label: str
    uri: str
    domain_type: str = "kvm"
    network: str = "user"
    address: str | None = None
    pool_path: str | None = None
    # the host's address for incoming live-migration streams (pm file migrate_address=)
    migrate_address: str | None = None

    @property
    def is_test(self) -> bool:
        """libvirt's test driver, in this process (test:///...) or in a daemon
        (test+unix:///default?socket=...), where it is shared by every client."""
        return is_test_uri(self.uri)


def is_test_uri(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] == "test"


@dataclass(frozen=True)
class HostFacts:
    cpu: int
    ram_mb: int
    disk_gb: int
    arch: str


@dataclass(frozen=True)
class StagedImage:
    path: str
    format: str
    capacity: int  # bytes
    kernel: str | None = None
    initrd: str | None = None


@dataclass(frozen=True)
class DomainRecord:
    name: str
    uuid: str
    vm_id: int | None  # None: not a fabric's
    active: bool
    installation: str | None = None  # which fabric registry made it


@dataclass(frozen=True)
class VmPlan:
    """One VM to make on one host."""

    vm_id: int
    name: str
    domain_name: str
    uuid: str
    mac: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    arch: str | None
    ssh_port: int | None = None
    cmdline: str | None = None
    installation: str | None = None
