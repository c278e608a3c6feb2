"""The placement pipeline: filter the hosts, weigh the survivors, rank them."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import NoValidHost
from orchestrator.scheduler.filters import HostFilter, default_filters
from orchestrator.scheduler.policy import Policy
from orchestrator.scheduler.state import HostState, PlacementRequest
from orchestrator.scheduler.weighers import WEIGHERS, Weigher, weigh_hosts


@dataclass(slots=True)
class Placement:
    """Candidate hosts, best first, and what each filter removed.

    The caller claims ``hosts[0]`` and, when it loses the claim race, moves on
    to the next. Each ``report`` entry is ``{"filter", "removed", "remaining",
    "detail"}`` (detail is "" when the filter removed nothing).
    """

    hosts: list[HostState]
    report: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> HostState:
        return self.hosts[0]


def refusal_message(req: PlacementRequest, report: Sequence[dict[str, Any]]) -> str:
    """``no host can fit <label>: ram filter removed 2 of 3 hosts (needs ...); ...``."""
    parts = []
    for entry in report:
        removed = entry["removed"]
        if removed:
            before = removed + entry["remaining"]
            part = f"{entry['filter']} filter removed {removed} of {before} hosts"
            if entry["detail"]:
                part += f" ({entry['detail']})"
            parts.append(part)
    return f"no host can fit {req.label}: " + "; ".join(parts)


class Scheduler:
    """Ranks hosts for a request under a Policy. Pure: no I/O, inputs untouched.

    ``rng`` (a ``random.Random``) drives the host_subset_size pick; pass a
    seeded one for repeatable tests. ``filters`` defaults to the standard
    pipeline (status, exclude, arch, cpu, ram, disk).
    """

    def __init__(
        self,
        policy: Policy,
        rng: random.Random | None = None,
        filters: Sequence[HostFilter] | None = None,
    ) -> None:
        self.policy = policy
        self.rng = rng if rng is not None else random.Random()
        self.filters: tuple[HostFilter, ...] = (
            tuple(filters) if filters is not None else default_filters()
        )
        self._weighers: tuple[tuple[Weigher, float], ...] = tuple(
            (WEIGHERS[name](), multiplier) for name, multiplier in policy.weights
        )

    def filter_hosts(
        self, hosts: Iterable[HostState], req: PlacementRequest
    ) -> tuple[list[HostState], list[dict[str, Any]]]:
        """Hosts passing every filter (input order) and the per-filter report.

        Stops at the first filter that leaves no host; later filters are not
        reported.
        """
        candidates = hosts if isinstance(hosts, list) else list(hosts)
        report: list[dict[str, Any]] = []
        for flt in self.filters:
            removed: list[HostState] = []
            if not flt.is_noop(req):
                passes = flt.host_passes
                kept: list[HostState] = []
                for host in candidates:
                    (kept if passes(host, req) else removed).append(host)
                candidates = kept
            report.append(
                {
                    "filter": flt.name,
                    "removed": len(removed),
                    "remaining": len(candidates),
                    "detail": flt.detail(removed, req) if removed else "",
                }
            )
            if not candidates:
                break
        return candidates, report

    def rank(self, hosts: Sequence[HostState], req: PlacementRequest) -> list[HostState]:
        """Hosts best first: by weight (highest first), ties and first-fit by pmid."""
        if not self.policy.weighted or not self._weighers:
            return sorted(hosts, key=lambda h: h.id)
        weights = weigh_hosts(hosts, req, self._weighers)
        order = sorted(range(len(hosts)), key=lambda i: (-weights[i], hosts[i].id))
        return [hosts[i] for i in order]

    def select(self, hosts: Iterable[HostState], req: PlacementRequest) -> Placement:
        """Rank the hosts that can take ``req``; raise NoValidHost when none can.

        With host_subset_size k > 1 the first host is picked at random among the
        best k; the others keep their rank order.
        """
        fleet = list(hosts)
        if not fleet:
            raise NoValidHost("no physical machines are known", [])
        candidates, report = self.filter_hosts(fleet, req)
        if not candidates:
            raise NoValidHost(refusal_message(req, report), report)
        ranked = self.rank(candidates, req)
        k = min(self.policy.host_subset_size, len(ranked))
        if k > 1:
            pick = self.rng.randrange(k)
            if pick:
                ranked.insert(0, ranked.pop(pick))
        return Placement(hosts=ranked, report=report)
