"""Weighers (nova ``nova/weights.py`` style).

Each weigher gives a raw score per host, higher meaning "more wanted" with a
positive multiplier. ``weigh_hosts`` normalises each weigher's scores to 0..1
over the candidates (min-max; all equal gives all 0), multiplies them by the
weigher's multiplier and sums them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from orchestrator.scheduler.state import HostState, PlacementRequest

# Rounding the balance score keeps float noise (1e-17) from being stretched to a
# whole point by the min-max normalisation.
_BALANCE_DIGITS = 9


class Weigher:
    """Base of the weighers. Subclasses set ``name`` and override ``raw``."""

    name: ClassVar[str] = ""

    def raw(self, host: HostState, req: PlacementRequest) -> float:
        raise NotImplementedError

    def scores(self, hosts: Sequence[HostState], req: PlacementRequest) -> list[float]:
        """``[raw(h, req) for h in hosts]``."""
        raw = self.raw
        return [raw(h, req) for h in hosts]


class RamFreeWeigher(Weigher):
    """RAM left free after placement: positive multiplier spreads, negative packs."""

    name = "ram_free"

    def raw(self, host: HostState, req: PlacementRequest) -> float:
        return host.ram_total - host.ram_used - req.ram


class CpuFreeWeigher(Weigher):
    """vCPUs left free after placement."""

    name = "cpu_free"

    def raw(self, host: HostState, req: PlacementRequest) -> float:
        return host.cpu_total - host.cpu_used - req.cpu


class DiskFreeWeigher(Weigher):
    """Disk left free after placement."""

    name = "disk_free"

    def raw(self, host: HostState, req: PlacementRequest) -> float:
        return host.disk_total - host.disk_used - req.disk


def _fraction(used: int, total: int) -> float:
    return used / total if total > 0 else 1.0


class BalanceWeigher(Weigher):
    """How close the cpu-used and ram-used fractions stay after placement.

    Score is ``-abs(cpu_frac_after - ram_frac_after)``: 0 is perfectly
    balanced, so a positive multiplier prefers hosts the VM keeps balanced.
    """

    name = "balance"

    def raw(self, host: HostState, req: PlacementRequest) -> float:
        cpu = _fraction(host.cpu_used + req.cpu, host.cpu_total)
        ram = _fraction(host.ram_used + req.ram, host.ram_total)
        return -round(abs(cpu - ram), _BALANCE_DIGITS)


class VmsWeigher(Weigher):
    """Number of VMs on the host: a positive multiplier prefers fewer VMs."""

    name = "vms"

    def raw(self, host: HostState, req: PlacementRequest) -> float:
        return -host.vms


WEIGHERS: dict[str, type[Weigher]] = {
    cls.name: cls
    for cls in (RamFreeWeigher, CpuFreeWeigher, DiskFreeWeigher, BalanceWeigher, VmsWeigher)
}


def weigh_hosts(
    hosts: Sequence[HostState],
    req: PlacementRequest,
    weighers: Sequence[tuple[Weigher, float]],
) -> list[float]:
    """Total weight per host (same order as ``hosts``): sum of multiplier * normalised raw."""
    totals = [0.0] * len(hosts)
    for weigher, multiplier in weighers:
        scores = weigher.scores(hosts, req)
        low = min(scores, default=0)
        span = max(scores, default=0) - low
        if span == 0 or multiplier == 0:
            continue  # all equal: every host scores 0
        scale = multiplier / span
        totals = [t + (x - low) * scale for t, x in zip(totals, scores, strict=True)]
    return totals
