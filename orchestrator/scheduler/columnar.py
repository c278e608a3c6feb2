"""Placement over columns (HostColumns), as in nova's filter scheduler: each
filter is a function giving a mask of the hosts it lets through (and, only when
someone asks why, words for the hosts it removed); each weigher a function
scoring hosts from the columns, normalised to 0..1 and multiplied as the Policy
says; a partial sort finds the best hosts.

Same choices, report and refusal text as engine.ReferenceScheduler, the plain
one-host-at-a-time pipeline the tests hold it to.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.errors import NoValidHost
from orchestrator.scheduler import filters as ref
from orchestrator.scheduler.columns import NO_ARCH, HostColumns
from orchestrator.scheduler.engine import (
    RANKED_UP_FRONT,
    Placement,
    RankedHosts,
    refusal_message,
)
from orchestrator.scheduler.policy import Policy
from orchestrator.scheduler.state import HostState, PlacementRequest

Mask = np.ndarray  # bool, one per host
# A filter's mask for a request, or None when it cannot remove any host.
MaskFn = Callable[[HostColumns, PlacementRequest], Mask | None]
# Why the hosts in ``removed`` (a mask) were removed, in the words of filters.py.
DetailFn = Callable[[HostColumns, Mask, PlacementRequest], str]


# --- filters ---------------------------------------------------------------


def status_mask(c: HostColumns, req: PlacementRequest) -> Mask | None:
    return c.ok


def exclude_mask(c: HostColumns, req: PlacementRequest) -> Mask | None:
    if not req.exclude:
        return None
    return ~np.isin(c.id, np.fromiter(req.exclude, dtype=np.int64, count=len(req.exclude)))


def arch_mask(c: HostColumns, req: PlacementRequest) -> Mask | None:
    if req.arch is None:
        return None
    key = ("arch mask", req.arch)  # hosts' arches change seldom: remember the mask
    mask = c.memo.get(key)
    if mask is None:
        code = c.arch_codes.get(req.arch, -2)  # -2: no host has it
        mask = c.memo[key] = (c.arch == NO_ARCH) | (c.arch == code)
    return mask


def cpu_mask(c: HostColumns, req: PlacementRequest) -> Mask | None:
    return c.cpu_free >= req.cpu


def ram_mask(c: HostColumns, req: PlacementRequest) -> Mask | None:
    return c.ram_free >= req.ram


def disk_mask(c: HostColumns, req: PlacementRequest) -> Mask | None:
    return c.disk_free >= req.disk


def _hosts_detail(flt: ref.HostFilter) -> DetailFn:
    """The reference filter's detail, given the removed hosts themselves: it
    depends on which hosts (their labels) and on the request's arch only."""

    def detail(c: HostColumns, removed: Mask, req: PlacementRequest) -> str:
        key = (flt.name, removed.tobytes(), req.arch)
        text = c.memo.get(key)
        if text is None:
            text = c.memo[key] = flt.detail(c.pick(np.flatnonzero(removed)), req)
        return text

    return detail


def _most_free_detail(flt: ref._ResourceFilter, column: str) -> DetailFn:
    """ "needs X, most free Y", Y read from the column."""

    def detail(c: HostColumns, removed: Mask, req: PlacementRequest) -> str:
        most = int(getattr(c, column)[removed].max())
        return f"needs {flt._amount(flt.need(req))}, most free {flt._amount(most)}"

    return detail


@dataclass(frozen=True, slots=True)
class ColumnFilter:
    name: str
    mask: MaskFn
    detail: DetailFn


COLUMN_FILTERS: tuple[ColumnFilter, ...] = (
    ColumnFilter("status", status_mask, _hosts_detail(ref.StatusFilter())),
    ColumnFilter("exclude", exclude_mask, _hosts_detail(ref.ExcludeFilter())),
    ColumnFilter("arch", arch_mask, _hosts_detail(ref.ArchFilter())),
    ColumnFilter("cpu", cpu_mask, _most_free_detail(ref.CpuFilter(), "cpu_free")),
    ColumnFilter("ram", ram_mask, _most_free_detail(ref.RamFilter(), "ram_free")),
    ColumnFilter("disk", disk_mask, _most_free_detail(ref.DiskFilter(), "disk_free")),
)


# --- weighers: raw score per candidate row (higher: more wanted) -------------
# The min-max normalisation ignores a constant added to every score: the
# "free after placement" weighers return what is free now (free minus the
# request's need, the same need for every host, normalises the same).

ScoreFn = Callable[[HostColumns, np.ndarray, PlacementRequest], np.ndarray]


def ram_free_score(c: HostColumns, rows: np.ndarray, req: PlacementRequest) -> np.ndarray:
    return c.ram_free[rows]


def cpu_free_score(c: HostColumns, rows: np.ndarray, req: PlacementRequest) -> np.ndarray:
    return c.cpu_free[rows]


def disk_free_score(c: HostColumns, rows: np.ndarray, req: PlacementRequest) -> np.ndarray:
    return c.disk_free[rows]


def _fraction(used: np.ndarray, total: np.ndarray) -> np.ndarray:
    """used / total, 1.0 where total is 0 (``used`` is a new array: it becomes the
    answer)."""
    if len(total) and _min(total) > 0:
        return np.divide(used, total, out=used)
    return np.divide(used, total, out=np.ones(len(used)), where=total > 0)


def balance_score(c: HostColumns, rows: np.ndarray, req: PlacementRequest) -> np.ndarray:
    """-|cpu fraction used - ram fraction used| after placement, to 9 digits
    (0: balanced). Over every host, then the rows: one gather, not four."""
    skew = _fraction(c.cpu_used + req.cpu, c.cpu_total)
    skew -= _fraction(c.ram_used + req.ram, c.ram_total)
    skew = np.abs(skew, out=skew)[rows]
    return np.negative(np.round(skew, 9, out=skew), out=skew)


def vms_score(c: HostColumns, rows: np.ndarray, req: PlacementRequest) -> np.ndarray:
    return -c.vms[rows]


COLUMN_WEIGHERS: dict[str, ScoreFn] = {
    "ram_free": ram_free_score,
    "cpu_free": cpu_free_score,
    "disk_free": disk_free_score,
    "balance": balance_score,
    "vms": vms_score,
}


def weigh(
    c: HostColumns,
    rows: np.ndarray,
    req: PlacementRequest,
    weighers: Iterable[tuple[ScoreFn, float]],
) -> np.ndarray:
    """Total weight per row: sum of multiplier * score normalised to 0..1 (nova's
    min-max; all equal gives all 0). A score is a new float array (a gather from
    the columns), scaled here in place."""
    totals: np.ndarray | None = None
    for score, multiplier in weighers:
        s = score(c, rows, req)
        low = _min(s)
        span = _max(s) - low
        if span == 0:
            continue
        s -= low  # exact: whole numbers below 2**53, or the balance's floats
        s *= multiplier / span
        if totals is None:
            totals = s  # 0.0 + term, but for the sign of zeros, which rank alike
        else:
            totals += s
    return np.zeros(len(rows)) if totals is None else totals


_min, _max = np.minimum.reduce, np.maximum.reduce


# --- the engine ------------------------------------------------------------


class Scheduler:
    """Ranks hosts for a request under a Policy. Pure: no I/O, inputs untouched.

    ``select`` takes a HostColumns (kept up to date by its owner as claims land:
    see hostcache.py) or any iterable of HostState (put into columns for the
    call). ``rng`` (a ``random.Random``) drives the host_subset_size pick; pass
    a seeded one for repeatable tests. ``filters`` defaults to COLUMN_FILTERS
    (status, exclude, arch, cpu, ram, disk); any subset, in any order, works.
    """

    def __init__(
        self,
        policy: Policy,
        rng: random.Random | None = None,
        filters: Iterable[ColumnFilter] | None = None,
    ) -> None:
        self.policy = policy
        self.rng = rng if rng is not None else random.Random()
        self.filters: tuple[ColumnFilter, ...] = (
            tuple(filters) if filters is not None else COLUMN_FILTERS
        )
        self.weighers = tuple(
            (COLUMN_WEIGHERS[name], multiplier) for name, multiplier in policy.weights
        )

    def passing(self, c: HostColumns, req: PlacementRequest) -> np.ndarray:
        """The rows every filter passes, in row order."""
        alive: Mask | None = None
        for flt in self.filters:
            mask = flt.mask(c, req)
            if mask is None:
                continue
            if alive is None:
                alive = mask.copy()
            else:
                alive &= mask
        return np.arange(len(c)) if alive is None else np.flatnonzero(alive)

    def explain(self, c: HostColumns, req: PlacementRequest) -> list[dict[str, Any]]:
        """What each filter removed, in order, and why; up to the first filter that
        leaves no host."""
        alive = np.ones(len(c), dtype=bool)
        remaining = len(c)
        report: list[dict[str, Any]] = []
        for flt in self.filters:
            mask = flt.mask(c, req)
            removed = 0
            detail = ""
            if mask is not None:
                kept = alive & mask
                removed = remaining - int(np.count_nonzero(kept))
                if removed:
                    detail = flt.detail(c, alive ^ kept, req)
                    alive = kept
                    remaining -= removed
            report.append(
                {"filter": flt.name, "removed": removed, "remaining": remaining, "detail": detail}
            )
            if not remaining:
                break
        return report

    def _rank(
        self, c: HostColumns, rows: np.ndarray, req: PlacementRequest, head: int
    ) -> RankedHosts:
        """Rows best first: by weight (highest first), ties and first-fit by pmid;
        the best ``head`` (and any tied with the last of them) now, the rest when read."""
        if self.policy.weighted and self.weighers:
            key = weigh(c, rows, req, self.weighers)
        else:
            key = -c.id[rows]  # first-fit: lowest pmid first

        def ranked(sel: np.ndarray) -> list[HostState]:
            picked = rows[sel]
            return c.pick(picked[np.lexsort((c.id[picked], -key[sel]))])

        n = len(rows)
        if n <= 4 * head:
            return RankedHosts(ranked(np.arange(n)))
        cut = np.partition(key, n - head)[n - head]  # the head-th highest
        top = np.flatnonzero(key >= cut)
        if len(top) == n:
            return RankedHosts(ranked(top))
        return RankedHosts(ranked(top), lambda: ranked(np.flatnonzero(key < cut)), n)

    def rank(
        self, hosts: HostColumns | Iterable[HostState], req: PlacementRequest
    ) -> list[HostState]:
        """The hosts every filter passes, all ranked, best first."""
        c = hosts if isinstance(hosts, HostColumns) else HostColumns(hosts)
        rows = self.passing(c, req)
        return list(self._rank(c, rows, req, len(rows)))

    def select(self, hosts: HostColumns | Iterable[HostState], req: PlacementRequest) -> Placement:
        """Rank the hosts that can take ``req``; raise NoValidHost (with every
        filter's report) when none can.

        With host_subset_size k > 1 the first host is picked at random among the
        best k; the others keep their rank order. ``Placement.hosts`` ranks the
        best RANKED_UP_FRONT (or k) hosts now and the others when read.
        """
        c = hosts if isinstance(hosts, HostColumns) else HostColumns(hosts)
        if not len(c):
            raise NoValidHost("no physical machines are known", [])
        rows = self.passing(c, req)
        if not len(rows):
            report = self.explain(c, req)
            raise NoValidHost(refusal_message(req, report), report)
        subset = self.policy.host_subset_size
        ranked = self._rank(c, rows, req, max(RANKED_UP_FRONT, subset))
        k = min(subset, len(ranked))
        if k > 1:
            pick = self.rng.randrange(k)
            if pick:
                ranked.promote(pick)
        return Placement(ranked, lambda: self.explain(c, req))
