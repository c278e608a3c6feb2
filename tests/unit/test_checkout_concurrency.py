"""Hundreds of check-outs and check-ins by 32 client processes racing for 8 VMs,
against the fabric served by `./script` in its own process: no VM is ever held by
two clients, none is lost, every VM is cleaned between two borrowers, and a 503
comes only when the pool really had nothing ready. Correctness only, bounded by
count (no assertion on elapsed time or rate; the only clocks are give-ups on a
hang, and the clients' own hold spans compared with each other); throughput is
bench/checkout.py's."""

from __future__ import annotations

import multiprocessing as mp
import random
import time

import requests
from sqlalchemy import create_engine, text

from tests.conftest import wait_for
from tests.unit.test_served import Server

CLIENTS = 32
# 512 check-out/check-in pairs in all: 4 clients for every VM, each VM handed out
# about 64 times. More pairs only make the run longer (it runs on SQLite and again
# on PostgreSQL in bin/test), not the race any harder.
PAIRS_PER_CLIENT = 16
POOL_SIZE = 8
# A client refused this many times in a row gives up: the pool never refilled. A
# bound on work, not on time: however busy the machine, a working fabric serves
# every client long before (each refusal sleeps 10-40 ms).
MAX_REFUSALS_IN_A_ROW = 20_000
# Only to give up on a pool that will never fill (a hang), never to time the fabric.
GIVE_UP = 300.0

POOLS = f"""
pools:
  - name: load
    instance_type: 1
    image: base
    size: {POOL_SIZE}
    max: {POOL_SIZE}
    cleanup: reset
    ready_check: none
workers: {{interval: 0.5, cleanup_workers: 4, retry_after: 1}}
"""


def client(args: tuple[str, int, object]) -> dict:
    url, seed, barrier = args
    rng = random.Random(seed)
    session = requests.Session()
    # (vmid, reservation id, got it, about to give it back)
    held: list[tuple[int, str, float, float]] = []
    refused: list[dict] = []
    errors: list[str] = []
    barrier.wait()
    done = 0
    in_a_row = 0
    while done < PAIRS_PER_CLIENT:
        r = session.post(f"{url}/vm/checkout", json={"pool": "load"}, timeout=120)
        if r.status_code == 503:
            refused.append(r.json())
            in_a_row += 1
            if in_a_row >= MAX_REFUSALS_IN_A_ROW:
                errors.append(f"refused {in_a_row} times in a row: {r.text}")
                break
            time.sleep(rng.uniform(0.01, 0.04))
            continue
        in_a_row = 0
        if r.status_code != 200:
            errors.append(f"checkout {r.status_code}: {r.text}")
            continue
        body = r.json()
        got = time.monotonic()
        time.sleep(rng.uniform(0, 0.003))
        giving = time.monotonic()
        c = session.post(
            f"{url}/vm/checkin",
            json={"vmid": body["vmid"], "reservation_id": body["reservation_id"]},
            timeout=120,
        )
        if c.status_code != 200:
            errors.append(f"checkin {c.status_code}: {c.text}")
        held.append((body["vmid"], body["reservation_id"], got, giving))
        done += 1
    return {"held": held, "refused": refused, "errors": errors, "done": done}


def ready_pool(url: str) -> dict | None:
    """The pool's counts once every VM is ready, else None."""
    st = requests.get(f"{url}/pool/query", params={"pool": "load"}, timeout=60).json()
    return st if st["ready"] == POOL_SIZE else None


def test_32_parallel_clients_never_share_or_lose_a_vm(tmp_path):
    srv = Server(tmp_path, [(8, 8192), (8, 8192)], POOLS)
    srv.images.write_text(srv.images.read_text().replace("base.qcow2", "base.qcow2 name=base"))
    srv.start()
    try:
        st = wait_for(lambda: ready_pool(srv.url), timeout=GIVE_UP, interval=0.1)
        assert st["ready"] == POOL_SIZE, st

        ctx = mp.get_context("spawn")
        barrier = ctx.Manager().Barrier(CLIENTS)
        with ctx.Pool(CLIENTS) as pool:
            results = pool.map(client, [(srv.url, i, barrier) for i in range(CLIENTS)])

        assert [e for r in results for e in r["errors"]] == []
        assert sum(r["done"] for r in results) == CLIENTS * PAIRS_PER_CLIENT
        # no VM was held by two clients at once: the intervals each client saw it
        # held (inside the server's own hold interval) never overlap for one VM
        by_vm: dict[int, list[tuple[float, float]]] = {}
        for r in results:
            for vmid, _, got, giving in r["held"]:
                by_vm.setdefault(vmid, []).append((got, giving))
        for vmid, spans in by_vm.items():
            spans.sort()
            for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
                assert start >= end, f"vm {vmid} was handed out twice"
        assert len(by_vm) == POOL_SIZE
        # every check-out was a reservation of its own
        reservations = [res for r in results for _, res, _, _ in r["held"]]
        assert len(set(reservations)) == len(reservations) == CLIENTS * PAIRS_PER_CLIENT
        # a 503 only when the pool had nothing ready (counted in the same request)
        refusals = [x for r in results for x in r["refused"]]
        assert all(x["pools"]["load"]["ready"] == 0 for x in refusals)
        assert all(x["vmid"] == 0 and "retry later" in x["error"] for x in refusals)
        # nothing lost: every VM comes back ready, none is held
        st = wait_for(lambda: ready_pool(srv.url), timeout=GIVE_UP, interval=0.1)
        assert (st["ready"], st["in_use"], st["total"]) == (POOL_SIZE, 0, POOL_SIZE), st
    finally:
        assert srv.stop() == 0
    # the registry recorded exactly what the clients saw
    engine = create_engine(srv.db)
    with engine.connect() as conn:
        n_out = conn.execute(text("SELECT count(*) FROM events WHERE kind='vm.checkout'")).scalar()
        n_in = conn.execute(text("SELECT count(*) FROM events WHERE kind='vm.checkin'")).scalar()
        held = conn.execute(text("SELECT count(*) FROM vms WHERE reservation_hash IS NOT NULL"))
        assert held.scalar() == 0
        # Each VM's own history, in the order the registry committed it (an event is
        # written in the transaction that changes the VM's state): handed out, given
        # back, cleaned, and again. Two check-outs in a row would be two holders; a
        # check-out right after a check-in, a VM handed on without its cleanup.
        history: dict[int, list[str]] = {}
        for vm_id, kind in conn.execute(
            text(
                "SELECT vm_id, kind FROM events"
                " WHERE kind IN ('vm.checkout', 'vm.checkin', 'vm.cleaned') ORDER BY id"
            )
        ):
            history.setdefault(vm_id, []).append(kind)
    engine.dispose()
    assert n_out == n_in == CLIENTS * PAIRS_PER_CLIENT
    cycle = ["vm.checkout", "vm.checkin", "vm.cleaned"]
    seen = {vmid: len(spans) for vmid, spans in by_vm.items()}
    assert {vmid: len(kinds) // 3 for vmid, kinds in history.items()} == seen
    for vm_id, kinds in history.items():
        assert kinds == cycle * seen[vm_id], f"vm {vm_id}: {kinds[:12]}..."
