"""What a placement gives (ranked hosts, the filters' report, the refusal's
words), and the reference pipeline the columnar scheduler is tested against."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from orchestrator.errors import NoValidHost
from orchestrator.scheduler.filters import HostFilter, default_filters
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


class Placement:
    """Candidate hosts, best first, and what each filter removed.

    The caller claims ``hosts[0]`` and, when it loses the claim race, moves on
    to the next. ``hosts`` from ``Scheduler.select`` is a RankedHosts: the
    whole ranking, of which only the best few are sorted until read. Each
    ``report`` entry is ``{"filter", "removed", "remaining", "detail"}``
    (detail is "" when the filter removed nothing). A placement that found
    hosts works the report out only when it is read (nothing on the request
    path reads it), from the hosts as they are then.
    """

    __slots__ = ("hosts", "_report")

    def __init__(
        self,
        hosts: Sequence[HostState],
        report: list[dict[str, Any]] | Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.hosts = hosts
        self._report = [] if report is None else report

    @property
    def report(self) -> list[dict[str, Any]]:
        if callable(self._report):
            self._report = self._report()
        return self._report

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


class ReferenceScheduler:
    """The pipeline written plainly, one filter, one host and one weigher at a
    time, and one full sort: the oracle the columnar ``Scheduler`` is tested
    against (same choices, same report, same refusals). Not used to serve.
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
        self.weighers: tuple[tuple[Weigher, float], ...] = tuple(
            (WEIGHERS[name](), multiplier) for name, multiplier in policy.weights
        )

    def filter_hosts(
        self, hosts: Iterable[HostState], req: PlacementRequest
    ) -> tuple[list[HostState], list[dict[str, Any]]]:
        """Hosts passing every filter (input order) and the per-filter report.
        Stops at the first filter that leaves no host."""
        candidates = list(hosts)
        report: list[dict[str, Any]] = []
        for flt in self.filters:
            removed: list[HostState] = []
            if not flt.is_noop(req):
                removed = [h for h in candidates if not flt.host_passes(h, req)]
                candidates = [h for h in candidates if flt.host_passes(h, req)]
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
        if not self.policy.weighted or not self.weighers:
            return sorted(hosts, key=lambda h: h.id)
        weights = weigh_hosts(hosts, req, self.weighers)
        order = sorted(range(len(hosts)), key=lambda i: (-weights[i], hosts[i].id))
        return [hosts[i] for i in order]

    def select(self, hosts: Iterable[HostState], req: PlacementRequest) -> Placement:
        """Rank the hosts that can take ``req``; raise NoValidHost when none can.
        With host_subset_size k > 1 the first host is picked at random among the
        best k; the others keep their rank order."""
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
            ranked.insert(0, ranked.pop(pick))
        return Placement(RankedHosts(ranked), report)
