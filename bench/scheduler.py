#!/usr/bin/env python3
"""Placement speed at 100, 1,000 and 10,000 simulated hosts, per policy, and
packing quality of ``pack``; the scheduler alone (HostState in, no I/O).

Speed: a heterogeneous fleet (three host sizes, a few hosts down, disabled or
aarch64), already part full of VMs, takes the same stream of requests drawn
from a VM-type mix under each policy; every placement's claim is applied to the
chosen host (``HostState.consume``) before the next decision, as the registry
would. Each ``Scheduler.select`` call is timed. The baseline, measured in the
same run on the same fleet and requests, is a naive placement loop: one plain
Python pass over the HostState list keeping the lowest-pmid host that is up,
enabled, of the right arch and ``fits()``, i.e. the least work any scheduler
that looks at every host must do (a loop that stops at the first fit would do
O(1) work on a part-empty fleet and measure nothing about its size). The
baseline and the policies take turns request by request, so a burst of load
elsewhere on the machine hits them alike. Ratios are a policy's time per
decision over the baseline's, at the median and the 99th percentile (lower is
better); decisions per second count the time spent in ``select`` only.
The scheduler's fleet is a HostColumns that each claim updates in place, as the
server's host cache does; with --reference, "ref" rows time the plain
one-host-at-a-time pipeline (``ReferenceScheduler``, the tests' oracle) too.

Packing: a batch of VMs from the same mix, in random order, is placed one by one
on a fleet of IDENTICAL hosts twice the size it needs, so the lower bound is
simple: max over cpu, ram, disk of ceil(total demand / one host's capacity).
Hosts used (with at least one VM) by each policy, and over the lower bound.

    .venv/bin/python bench/scheduler.py [--quick] [--sizes 100,1000,10000] [--seed 1]
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.errors import NoValidHost  # noqa: E402
from orchestrator.heap import keep_freed_memory  # noqa: E402
from orchestrator.scheduler import (  # noqa: E402
    HostState,
    PlacementRequest,
    Policy,
    ReferenceScheduler,
    Scheduler,
)
from orchestrator.scheduler.columns import HostColumns  # noqa: E402

POLICIES = ("first-fit", "pack", "spread", "balanced")
GIB = 1024  # ram is in MB


@dataclass(frozen=True)
class Kind:
    name: str
    cpu: int
    ram: int  # MB
    disk: int  # GB
    weight: int


# Effective capacity (after overcommit), as HostState carries it.
HOST_KINDS = (
    Kind("std", 64, 256 * GIB, 2000, 50),
    Kind("big", 128, 512 * GIB, 4000, 35),
    Kind("huge", 256, 1024 * GIB, 8000, 15),
)
PACK_HOST = HOST_KINDS[0]  # the packing part's identical hosts

VM_KINDS = (  # general purpose about 4 GB per vCPU, plus a few compute and memory types
    Kind("small", 1, 2 * GIB, 20, 35),
    Kind("medium", 2, 8 * GIB, 40, 30),
    Kind("large", 4, 16 * GIB, 80, 15),
    Kind("xlarge", 8, 32 * GIB, 160, 10),
    Kind("compute", 8, 8 * GIB, 40, 5),
    Kind("memory", 4, 32 * GIB, 80, 5),
)

# decisions timed per (size, policy): default, --quick
DECISIONS = {100: (1000, 300), 1000: (1000, 200), 10_000: (300, 60)}
PACK_BATCH = (3000, 600)


def pick(rng: random.Random, kinds: Sequence[Kind]) -> Kind:
    return rng.choices(kinds, weights=[k.weight for k in kinds])[0]


def make_fleet(n: int, rng: random.Random) -> list[HostState]:
    """``n`` hosts in pmid order, each filled with random VMs to 0-85% of its cpu and ram."""
    fleet = []
    for i in range(1, n + 1):
        kind = pick(rng, HOST_KINDS)
        target = rng.uniform(0.0, 0.85)
        cpu = ram = disk = vms = 0
        for _ in range(200):
            vm = pick(rng, VM_KINDS)
            if cpu + vm.cpu > target * kind.cpu or ram + vm.ram > target * kind.ram:
                break
            cpu, ram, disk, vms = cpu + vm.cpu, ram + vm.ram, disk + vm.disk, vms + 1
        roll = rng.random()
        up, enabled = roll >= 0.02, not 0.02 <= roll < 0.03
        fleet.append(
            HostState(
                id=i,
                name=f"pm{i}",
                up=up,
                enabled=enabled,
                arch="aarch64" if rng.random() < 0.05 else "x86_64",
                cpu_total=kind.cpu,
                ram_total=kind.ram,
                disk_total=kind.disk,
                cpu_used=cpu,
                ram_used=ram,
                disk_used=disk,
                vms=vms,
                down_reason=None if up else "ssh refused",
            )
        )
    return fleet


def make_requests(n: int, rng: random.Random) -> list[PlacementRequest]:
    out = []
    for _ in range(n):
        vm = pick(rng, VM_KINDS)
        out.append(
            PlacementRequest(
                cpu=vm.cpu,
                ram=vm.ram,
                disk=vm.disk,
                arch=None if rng.random() < 0.1 else "x86_64",
                label=f"instance_type {vm.name}",
            )
        )
    return out


Chooser = Callable[[list[HostState], PlacementRequest], HostState | None]
REFERENCE = "ref "  # a chooser named so is the reference pipeline, its fleet a list


def naive(fleet: list[HostState], req: PlacementRequest) -> HostState | None:
    """The baseline: one plain pass, lowest pmid that can take the request."""
    best = None
    for h in fleet:
        if (
            h.up
            and h.enabled
            and (req.arch is None or h.arch is None or h.arch == req.arch)
            and h.fits(req)
            and (best is None or h.id < best.id)
        ):
            best = h
    return best


def scheduler_chooser(policy: str, seed: int, engine: type = Scheduler) -> Chooser:
    sched = engine(Policy.named(policy), rng=random.Random(seed))

    def choose(fleet: list[HostState], req: PlacementRequest) -> HostState | None:
        try:
            return sched.select(fleet, req).best
        except NoValidHost:
            return None

    return choose


@dataclass
class Run:
    lat_ns: list[int]
    refused: int
    fleet: Sequence[HostState]

    @property
    def per_s(self) -> float:
        return len(self.lat_ns) / (sum(self.lat_ns) / 1e9)

    def pct_us(self, q: float) -> float:
        lat = sorted(self.lat_ns)
        return lat[min(len(lat) - 1, math.ceil(q * len(lat)) - 1)] / 1000


def place_all(
    choosers: dict[str, Chooser], start: list[HostState], reqs: list[PlacementRequest]
) -> dict[str, Run]:
    """Place ``reqs`` one by one under each chooser, each on its own copy of the
    fleet, timing each decision and applying each claim. The choosers take turns
    request by request, so a burst of load elsewhere on the machine hits them
    all alike."""
    fleets: dict[str, list[HostState] | HostColumns] = {
        name: list(start)
        if name.startswith(REFERENCE) or name == "naive loop"
        else HostColumns(start)
        for name in choosers
    }
    where = {h.id: i for i, h in enumerate(start)}
    lat: dict[str, list[int]] = {name: [] for name in choosers}
    refused = dict.fromkeys(choosers, 0)
    order = list(choosers.items())
    clock = time.perf_counter_ns
    gc.collect()
    for n, r in enumerate(reqs):
        for name, choose in order[n % len(order) :] + order[: n % len(order)]:
            fleet = fleets[name]
            t0 = clock()
            h = choose(fleet, r)
            lat[name].append(clock() - t0)
            if h is None:
                refused[name] += 1
            else:
                fleet[where[h.id]] = h.consume(r)
    return {name: Run(lat[name], refused[name], fleets[name]) for name in choosers}


def speed(sizes: Sequence[int], quick: bool, seed: int, reference: bool) -> None:
    print("placement speed: Scheduler.select per decision, claims applied between decisions")
    print("x base = latency / the naive loop's at that percentile, same fleet, requests and run")
    head = (
        f"{'hosts':>6} {'policy':>12} {'decisions':>9} {'dec/s':>9} {'p50 us':>9}"
        f" {'p99 us':>9} {'x base p50':>10} {'x base p99':>10} {'refused':>7}"
    )
    print(head)
    for n in sizes:
        count = DECISIONS.get(n, (max(30, 3_000_000 // n), max(10, 600_000 // n)))
        rng = random.Random(f"{seed}-{n}")
        fleet = make_fleet(n, rng)
        reqs = make_requests(count[1] if quick else count[0], rng)
        choosers = {"naive loop": naive}
        choosers |= {policy: scheduler_chooser(policy, seed) for policy in POLICIES}
        if reference:
            choosers |= {
                REFERENCE + p: scheduler_chooser(p, seed, ReferenceScheduler) for p in POLICIES
            }
        runs = place_all(choosers, fleet, reqs)
        base = runs["naive loop"]
        for name, run in runs.items():
            print(
                f"{n:>6} {name:>12} {len(run.lat_ns):>9} {run.per_s:>9.0f}"
                f" {run.pct_us(0.50):>9.1f} {run.pct_us(0.99):>9.1f}"
                f" {run.pct_us(0.50) / base.pct_us(0.50):>10.1f}"
                f" {run.pct_us(0.99) / base.pct_us(0.99):>10.1f} {run.refused:>7}"
            )


def packing(quick: bool, seed: int) -> None:
    rng = random.Random(f"{seed}-pack")
    reqs = make_requests(PACK_BATCH[1] if quick else PACK_BATCH[0], rng)
    demand = {
        "cpu": sum(r.cpu for r in reqs),
        "ram": sum(r.ram for r in reqs),
        "disk": sum(r.disk for r in reqs),
    }
    cap = {"cpu": PACK_HOST.cpu, "ram": PACK_HOST.ram, "disk": PACK_HOST.disk}
    bounds = {k: math.ceil(demand[k] / cap[k]) for k in demand}
    bound = max(bounds.values())
    size = 2 * bound
    fleet = [
        HostState(
            id=i,
            name=f"pm{i}",
            up=True,
            enabled=True,
            arch="x86_64",
            cpu_total=PACK_HOST.cpu,
            ram_total=PACK_HOST.ram,
            disk_total=PACK_HOST.disk,
            cpu_used=0,
            ram_used=0,
            disk_used=0,
            vms=0,
        )
        for i in range(1, size + 1)
    ]
    print()
    print(
        f"packing: {len(reqs)} VMs ({', '.join(k.name for k in VM_KINDS)}) in random order on"
        f" {size} identical hosts ({PACK_HOST.cpu} vCPU, {PACK_HOST.ram // GIB} GB ram,"
        f" {PACK_HOST.disk} GB disk)"
    )
    print(
        "lower bound = max over resources of ceil(total demand / host capacity) = "
        + ", ".join(f"{k} {v}" for k, v in bounds.items())
        + f" -> {bound} hosts"
    )
    print(
        f"{'policy':>12} {'hosts used':>10} {'x bound':>8} {'cpu used %':>10}"
        f" {'ram used %':>10} {'refused':>7}"
    )
    choosers = {policy: scheduler_chooser(policy, seed) for policy in POLICIES}
    runs = place_all(choosers, fleet, reqs)
    for policy, run in runs.items():
        used = [h for h in run.fleet if h.vms]
        cpu_pct = 100 * sum(h.cpu_used for h in used) / sum(h.cpu_total for h in used)
        ram_pct = 100 * sum(h.ram_used for h in used) / sum(h.ram_total for h in used)
        print(
            f"{policy:>12} {len(used):>10} {len(used) / bound:>8.2f} {cpu_pct:>10.1f}"
            f" {ram_pct:>10.1f} {run.refused:>7}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer decisions, about 10 s")
    ap.add_argument("--sizes", default="100,1000,10000", help="fleet sizes, comma-separated")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-packing", action="store_true", help="speed only")
    ap.add_argument(
        "--reference", action="store_true", help="also time the reference pipeline (slow)"
    )
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    keep_freed_memory()  # as the server does at start
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    speed(sizes, args.quick, args.seed, args.reference)
    if not args.no_packing:
        packing(args.quick, args.seed)
    load = os.getloadavg()[0]
    print(
        f"\n({time.perf_counter() - t0:.0f} s, python {sys.version.split()[0]},"
        f" {os.cpu_count()} cpus, load average {load0:.1f} at start, {load:.1f} at end)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
