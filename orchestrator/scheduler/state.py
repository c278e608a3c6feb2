"""What the scheduler sees: a host's capacity and use, and what a VM needs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """What one VM needs (cpu count, ram MB, disk GB) and where it may not go.

    ``arch`` is the image's architecture (``None``: any); ``label`` names the
    request in refusals (e.g. ``"instance_type 3"``); ``exclude`` holds pmids
    to skip, e.g. hosts where a previous attempt failed.
    """

    cpu: int
    ram: int
    disk: int
    arch: str | None = None
    label: str = "the request"
    exclude: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        for name in ("cpu", "ram", "disk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not isinstance(self.exclude, frozenset):
            object.__setattr__(self, "exclude", frozenset(self.exclude))


@dataclass(frozen=True, slots=True)
class HostState:
    """One physical machine as placement sees it.

    ``*_total`` is the EFFECTIVE capacity (after overcommit ratios and reserved
    amounts): what VMs may claim. ``*_used`` is what placed VMs claim. ram is
    in MB, disk in GB. ``down_reason`` says briefly why a host is not up;
    ``maintenance`` is an operator's reason for taking it out of service (None: in
    service): nothing is placed on a host in maintenance.
    """

    id: int
    name: str
    up: bool
    enabled: bool
    arch: str | None
    cpu_total: int
    ram_total: int
    disk_total: int
    cpu_used: int
    ram_used: int
    disk_used: int
    vms: int
    down_reason: str | None = None
    maintenance: str | None = None

    @property
    def cpu_free(self) -> int:
        return self.cpu_total - self.cpu_used

    @property
    def ram_free(self) -> int:
        return self.ram_total - self.ram_used

    @property
    def disk_free(self) -> int:
        return self.disk_total - self.disk_used

    def fits(self, req: PlacementRequest) -> bool:
        """True when the request's cpu, ram and disk all fit in what is free."""
        return (
            req.cpu <= self.cpu_total - self.cpu_used
            and req.ram <= self.ram_total - self.ram_used
            and req.disk <= self.disk_total - self.disk_used
        )

    def consume(self, req: PlacementRequest) -> HostState:
        """A copy of this host with ``req`` claimed on it (one more VM).

        Does not check that it fits: the claim in the registry is the check.
        """
        return replace(
            self,
            cpu_used=self.cpu_used + req.cpu,
            ram_used=self.ram_used + req.ram,
            disk_used=self.disk_used + req.disk,
            vms=self.vms + 1,
        )
