"""The placement pipeline: filter the hosts, weigh the survivors, rank them."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter
from typing import Any

from orchestrator.errors import NoValidHost
from orchestrator.scheduler.filters import FILTERS, HostFilter, default_filters
from orchestrator.scheduler.policy import Policy
from orchestrator.scheduler.state import HostState, PlacementRequest
from orchestrator.scheduler.weighers import WEIGHERS, Weigher, weigh_hosts

# A placement ranks this many hosts (or host_subset_size, if more) up front;
# the rest only when something reads past them.
RANKED_UP_FRONT = 32


class RankedHosts(Sequence[HostState]):
    """Hosts best first, ranked as far as they are read.

    The best few come ranked; the rest are ranked the first time something reads
    past them (a caller that lost that many claim races, ``len`` aside). Reads
    give exactly what a full ranking would. Compares equal to a list of the
    same hosts.
    """

    __slots__ = ("_hosts", "_rest", "_len")

    def __init__(
        self,
        ranked: list[HostState],
        rest: Callable[[], list[HostState]] | None = None,
        length: int | None = None,
    ) -> None:
        self._hosts = ranked
        self._rest = rest
        self._len = len(ranked) if length is None else length

    def _all(self) -> list[HostState]:
        if self._rest is not None:
            self._hosts.extend(self._rest())
            self._rest = None
        return self._hosts

    @property
    def fully_ranked(self) -> bool:
        """Whether every host is ranked already (the rest have been read)."""
        return self._rest is None

    def promote(self, index: int) -> None:
        """Move the host at ``index`` (one of those ranked already) to the front."""
        self._hosts.insert(0, self._hosts.pop(index))

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int) and 0 <= index < len(self._hosts):
            return self._hosts[index]
        return self._all()[index]

    def __iter__(self) -> Iterator[HostState]:
        i = 0
        while True:
            if i < len(self._hosts):
                yield self._hosts[i]
                i += 1
            elif self._rest is not None:
                self._all()
            else:
                return

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RankedHosts | list):
            return self._all() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RankedHosts({self._all()!r})"


@dataclass(slots=True)
class Placement:
    """Candidate hosts, best first, and what each filter removed.

    The caller claims ``hosts[0]`` and, when it loses the claim race, moves on
    to the next. ``hosts`` from ``Scheduler.select`` is a RankedHosts: the
    whole ranking, of which only the best few are sorted until read. Each
    ``report`` entry is ``{"filter", "removed", "remaining", "detail"}``
    (detail is "" when the filter removed nothing).
    """

    hosts: Sequence[HostState]
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


_by_id = attrgetter("id")
_STANDARD_FILTERS = set(FILTERS.values())


def _standard_pass(
    fleet: list[HostState], req: PlacementRequest
) -> tuple[list[HostState], list[HostState]]:
    """(hosts every standard filter passes, the others), both in input order.

    Inline the status, exclude, arch, cpu, ram and disk checks of filters.py
    (keep the two in step).
    """
    exclude, arch, cpu, ram, disk = req.exclude, req.arch, req.cpu, req.ram, req.disk
    kept: list[HostState] = []
    rejected: list[HostState] = []
    keep, reject = kept.append, rejected.append
    for h in fleet:
        if (
            h.up
            and h.enabled
            and h.maintenance is None
            and h.id not in exclude
            and (arch is None or h.arch is None or h.arch == arch)
            and cpu <= h.cpu_total - h.cpu_used
            and ram <= h.ram_total - h.ram_used
            and disk <= h.disk_total - h.disk_used
        ):
            keep(h)
        else:
            reject(h)
    return kept, rejected


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
        fleet = hosts if isinstance(hosts, list) else list(hosts)
        if {type(f) for f in self.filters} != _STANDARD_FILTERS:
            return self._filter_each(fleet, req)
        # Exactly the standard filters (any order): one inline pass finds the
        # survivors; only the hosts it rejects go through the filters one by one.
        kept, rejected = _standard_pass(fleet, req)
        if not rejected:
            report = [
                {"filter": flt.name, "removed": 0, "remaining": len(kept), "detail": ""}
                for flt in self.filters
            ]
            return kept, report
        # Which filter removed each rejected host, as the one-by-one pipeline says.
        _, report = self._filter_each(rejected, req)
        remaining = len(fleet)
        for entry in report:
            remaining -= entry["removed"]
            entry["remaining"] = remaining
        if remaining:  # the pipeline stopped when the rejected ran out; the kept go on
            report += [
                {"filter": flt.name, "removed": 0, "remaining": remaining, "detail": ""}
                for flt in self.filters[len(report) :]
            ]
        return kept, report

    def _filter_each(
        self, candidates: list[HostState], req: PlacementRequest
    ) -> tuple[list[HostState], list[dict[str, Any]]]:
        """The pipeline one filter at a time (any filters)."""
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
        return list(self._rank(hosts, req, len(hosts)))

    def _rank(self, hosts: Sequence[HostState], req: PlacementRequest, head: int) -> RankedHosts:
        """``rank``, with at least the best ``head`` hosts ranked now, the rest on demand."""
        if not self.policy.weighted or not self._weighers:
            return RankedHosts(sorted(hosts, key=_by_id))
        weights = weigh_hosts(hosts, req, self._weighers)

        def ranked(picked: list[int]) -> list[HostState]:
            # By pmid, then by weight highest first: both sorts are stable
            # (reverse=True too), so this is one sort by (-weight, pmid).
            if len(picked) > 2 * head:
                ids = [h.id for h in hosts]
                picked.sort(key=ids.__getitem__)
            else:
                picked.sort(key=lambda i: hosts[i].id)
            picked.sort(key=weights.__getitem__, reverse=True)
            return [hosts[i] for i in picked]

        n = len(hosts)
        if n <= 4 * head:
            return RankedHosts(ranked(list(range(n))))
        # Rank now only the hosts weighing at least ``cut``, at least ``head`` of
        # them; every other host weighs less. A cut from a sample of the weights
        # keeps about 2 * head hosts; failing that, the head-th highest weight.
        sample = sorted(weights[:: max(1, n // 256)], reverse=True)
        cut = sample[min(len(sample) - 1, 2 * head * len(sample) // n)]
        top = list(compress(range(n), map(cut.__le__, weights)))
        if len(top) < head:
            cut = heapq.nlargest(head, weights)[-1]
            top = list(compress(range(n), map(cut.__le__, weights)))
        if len(top) == n:
            return RankedHosts(ranked(top))
        return RankedHosts(
            ranked(top),
            lambda: ranked(list(compress(range(n), map(cut.__gt__, weights)))),
            n,
        )

    def select(self, hosts: Iterable[HostState], req: PlacementRequest) -> Placement:
        """Rank the hosts that can take ``req``; raise NoValidHost when none can.

        With host_subset_size k > 1 the first host is picked at random among the
        best k; the others keep their rank order. ``Placement.hosts`` ranks the
        best RANKED_UP_FRONT (or k) hosts now and the others when read.
        """
        fleet = list(hosts)
        if not fleet:
            raise NoValidHost("no physical machines are known", [])
        candidates, report = self.filter_hosts(fleet, req)
        if not candidates:
            raise NoValidHost(refusal_message(req, report), report)
        subset = self.policy.host_subset_size
        ranked = self._rank(candidates, req, max(RANKED_UP_FRONT, subset))
        k = min(subset, len(ranked))
        if k > 1:
            pick = self.rng.randrange(k)
            if pick:
                ranked.promote(pick)  # the best k are ranked already
        return Placement(hosts=ranked, report=report)
