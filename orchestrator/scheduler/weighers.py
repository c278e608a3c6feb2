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
    """Base of the weighers. Subclasses set ``name`` and override ``raw``.

    ``scores`` gives ``raw`` for many hosts at once; the built-in weighers
    compute it inline (no call per host), falling back to ``raw`` when a subclass
    overrides ``raw``.
    """

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

    def scores(self, hosts: Sequence[HostState], req: PlacementRequest) -> list[float]:
        if type(self).raw is not RamFreeWeigher.raw:
            return super().scores(hosts, req)
        need = req.ram
        return [h.ram_total - h.ram_used - need for h in hosts]


class CpuFreeWeigher(Weigher):
    """vCPUs left free after placement."""

    name = "cpu_free"

    def raw(self, host: HostState, req: PlacementRequest) -> float:
        return host.cpu_total - host.cpu_used - req.cpu

    def scores(self, hosts: Sequence[HostState], req: PlacementRequest) -> list[float]:
        if type(self).raw is not CpuFreeWeigher.raw:
            return super().scores(hosts, req)
        need = req.cpu
        return [h.cpu_total - h.cpu_used - need for h in hosts]


class DiskFreeWeigher(Weigher):
    """Disk left free after placement."""

    name = "disk_free"

    def raw(self, host: HostState, req: PlacementRequest) -> float:
        return host.disk_total - host.disk_used - req.disk

    def scores(self, hosts: Sequence[HostState], req: PlacementRequest) -> list[float]:
        if type(self).raw is not DiskFreeWeigher.raw:
            return super().scores(hosts, req)
        need = req.disk
        return [h.disk_total - h.disk_used - need for h in hosts]


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

    def scores(self, hosts: Sequence[HostState], req: PlacementRequest) -> list[float]:
        if type(self).raw is not BalanceWeigher.raw:
            return super().scores(hosts, req)
        cpu, ram, digits = req.cpu, req.ram, _BALANCE_DIGITS
        return [
            -round(
                abs(
                    ((h.cpu_used + cpu) / h.cpu_total if h.cpu_total > 0 else 1.0)
                    - ((h.ram_used + ram) / h.ram_total if h.ram_total > 0 else 1.0)
                ),
                digits,
            )
            for h in hosts
        ]


class VmsWeigher(Weigher):
    """Number of VMs on the host: a positive multiplier prefers fewer VMs."""

    name = "vms"

    def raw(self, host: HostState, req: PlacementRequest) -> float:
        return -host.vms

    def scores(self, hosts: Sequence[HostState], req: PlacementRequest) -> list[float]:
        if type(self).raw is not VmsWeigher.raw:
            return super().scores(hosts, req)
        return [-h.vms for h in hosts]


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
    terms = []  # (scores, low, scale) of each weigher that tells hosts apart
    for weigher, multiplier in weighers:
        if multiplier == 0:
            continue
        scores = weigher.scores(hosts, req)
        low = min(scores)
        span = max(scores) - low
        if span == 0:
            continue  # all equal: every host scores 0
        terms.append((scores, low, multiplier / span))
    totals = [0.0] * len(hosts)
    # Up to three weighers per pass; the sums are the same (left to right) as
    # adding one weigher at a time.
    for at in range(0, len(terms), 3):
        chunk = terms[at : at + 3]
        if len(chunk) == 3:
            (a, la, ka), (b, lb, kb), (c, lc, kc) = chunk
            totals = [
                t + (x - la) * ka + (y - lb) * kb + (z - lc) * kc
                for t, x, y, z in zip(totals, a, b, c, strict=True)
            ]
        elif len(chunk) == 2:
            (a, la, ka), (b, lb, kb) = chunk
            totals = [
                t + (x - la) * ka + (y - lb) * kb for t, x, y in zip(totals, a, b, strict=True)
            ]
        else:
            ((a, la, ka),) = chunk
            totals = [t + (x - la) * ka for t, x in zip(totals, a, strict=True)]
    return totals
