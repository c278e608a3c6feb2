"""Yes/no filters, one concern each (nova ``nova/scheduler/filters`` style).

A filter says whether a host may take a request (``host_passes``) and, for the
hosts it removed, explains why in a few words (``detail``) so a refusal can
tell the user what is short.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from orchestrator.scheduler.state import HostState, PlacementRequest

MAX_NAMED_HOSTS = 5  # how many hosts a detail names before "and N more"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _named(items: Sequence[str], total: int | None = None) -> list[str]:
    """The first few items, then "and N more" (``total`` counts items not passed in)."""
    total = len(items) if total is None else total
    shown = list(items[:MAX_NAMED_HOSTS])
    if total > MAX_NAMED_HOSTS:
        shown.append(f"and {total - MAX_NAMED_HOSTS} more")
    return shown


class HostFilter:
    """Base of the filters. Subclasses set ``name`` and override ``host_passes``."""

    name: ClassVar[str] = ""

    def host_passes(self, host: HostState, req: PlacementRequest) -> bool:
        raise NotImplementedError

    def is_noop(self, req: PlacementRequest) -> bool:
        """True when this filter cannot remove any host for ``req`` (it is skipped)."""
        return False

    def detail(self, removed: Sequence[HostState], req: PlacementRequest) -> str:
        """A short human reason for removing ``removed`` (non-empty)."""
        raise NotImplementedError


class StatusFilter(HostFilter):
    """Hosts that are up, enabled and in service (not in maintenance)."""

    name = "status"

    def host_passes(self, host: HostState, req: PlacementRequest) -> bool:
        return host.up and host.enabled and host.maintenance is None

    def detail(self, removed: Sequence[HostState], req: PlacementRequest) -> str:
        def why(h: HostState) -> str:
            if h.down_reason:
                return f"{h.name} {h.down_reason}"
            return f"{h.name} {'down' if not h.up else 'disabled'}"

        # A host in maintenance is named by its pmid with the operator's reason
        # ("pm2 in maintenance: kernel update"), whatever else is true of it.
        kept = [h for h in removed if h.maintenance is None]
        parts = [f"pm{h.id} in maintenance: {h.maintenance}" for h in removed if h.maintenance]
        if kept:
            first = [why(h) for h in kept[:MAX_NAMED_HOSTS]]
            parts.append("down: " + "; ".join(_named(first, len(kept))))
        return "; ".join(_named(parts[: MAX_NAMED_HOSTS + 1], len(parts)))


class ExcludeFilter(HostFilter):
    """Hosts not in the request's ``exclude`` set (earlier attempts failed there)."""

    name = "exclude"

    def host_passes(self, host: HostState, req: PlacementRequest) -> bool:
        return host.id not in req.exclude

    def is_noop(self, req: PlacementRequest) -> bool:
        return not req.exclude

    def detail(self, removed: Sequence[HostState], req: PlacementRequest) -> str:
        first = [h.name for h in removed[:MAX_NAMED_HOSTS]]
        return "failed earlier: " + ", ".join(_named(first, len(removed)))


class ArchFilter(HostFilter):
    """Hosts whose architecture matches the image's (``None`` on either side: any)."""

    name = "arch"

    def host_passes(self, host: HostState, req: PlacementRequest) -> bool:
        return req.arch is None or host.arch is None or host.arch == req.arch

    def is_noop(self, req: PlacementRequest) -> bool:
        return req.arch is None

    def detail(self, removed: Sequence[HostState], req: PlacementRequest) -> str:
        arches = sorted({h.arch or "?" for h in removed})
        return f"needs arch {req.arch}, hosts are " + ", ".join(_named(arches))


class _ResourceFilter(HostFilter):
    """Hosts with at least the requested amount of one resource free."""

    unit: ClassVar[str] = ""
    plural_unit: ClassVar[bool] = False  # "2 vCPUs" vs "2 MB"

    def need(self, req: PlacementRequest) -> int:
        raise NotImplementedError

    def free(self, host: HostState) -> int:
        raise NotImplementedError

    def is_noop(self, req: PlacementRequest) -> bool:
        return False  # a zero need still removes hosts already over capacity

    def _amount(self, n: int) -> str:
        return _plural(n, self.unit) if self.plural_unit else f"{n} {self.unit}"

    def detail(self, removed: Sequence[HostState], req: PlacementRequest) -> str:
        most = max(self.free(h) for h in removed)
        return f"needs {self._amount(self.need(req))}, most free {self._amount(most)}"


class CpuFilter(_ResourceFilter):
    name = "cpu"
    unit = "vCPU"
    plural_unit = True

    def need(self, req: PlacementRequest) -> int:
        return req.cpu

    def free(self, host: HostState) -> int:
        return host.cpu_total - host.cpu_used

    def host_passes(self, host: HostState, req: PlacementRequest) -> bool:
        return req.cpu <= host.cpu_total - host.cpu_used


class RamFilter(_ResourceFilter):
    name = "ram"
    unit = "MB"

    def need(self, req: PlacementRequest) -> int:
        return req.ram

    def free(self, host: HostState) -> int:
        return host.ram_total - host.ram_used

    def host_passes(self, host: HostState, req: PlacementRequest) -> bool:
        return req.ram <= host.ram_total - host.ram_used


class DiskFilter(_ResourceFilter):
    name = "disk"
    unit = "GB"

    def need(self, req: PlacementRequest) -> int:
        return req.disk

    def free(self, host: HostState) -> int:
        return host.disk_total - host.disk_used

    def host_passes(self, host: HostState, req: PlacementRequest) -> bool:
        return req.disk <= host.disk_total - host.disk_used


FILTERS: dict[str, type[HostFilter]] = {
    cls.name: cls
    for cls in (StatusFilter, ExcludeFilter, ArchFilter, CpuFilter, RamFilter, DiskFilter)
}


def default_filters() -> tuple[HostFilter, ...]:
    """The standard pipeline, in order: status, exclude, arch, cpu, ram, disk."""
    return tuple(cls() for cls in FILTERS.values())
