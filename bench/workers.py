#!/usr/bin/env python3
"""One serving process against N (``./script ... --workers N``), same machine, same
run: the no-op rate (two ``GET /healthz``) and the check-out + check-in pair rate,
each printed as a ratio of N workers to 1.

The hosts are libvirt test-driver hosts inside session libvirtd daemons
(tests/daemons.py), which every worker process sees alike (a plain ``test://``
host would be private to the process that opened it). Clients are separate
processes (bench/checkout.py's), each with one keep-alive connection: the kernel
hands each connection to whichever worker accepts it.

    .venv/bin/python bench/workers.py [--workers 3] [--clients 32] [--seconds 5]
                                      [--db sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from checkout import run, start, wait_ready  # noqa: E402 - bench/checkout.py's helpers

from tests.daemons import TestDaemons  # noqa: E402

POOL_SIZE = 64


def write_files(tmp: Path, uris: list[str]) -> list[str]:
    (tmp / "pm").write_text(
        "".join(f"uri={u} cpu=64 ram=65536 disk=1000 network=user\n" for u in uris)
    )
    (tmp / "base.qcow2").write_bytes(b"QFI\xfb" + b"\0" * 60)
    (tmp / "images").write_text(f"{tmp / 'base.qcow2'} name=base\n")
    (tmp / "types").write_text(json.dumps({"types": [{"cpu": 1, "ram": 128, "disk": 1}]}))
    (tmp / "fabric.yaml").write_text(
        f"state_dir: {tmp / 'state'}\n"
        f"pools: [{{name: bench, instance_type: 1, image: base, size: {POOL_SIZE},"
        f" max: {POOL_SIZE}, cleanup: reset, ready_check: none}}]\n"
        "workers: {interval: 0.5, build_workers: 8, cleanup_workers: 8}\n"
    )
    return [str(tmp / "pm"), str(tmp / "images"), str(tmp / "types"),
            "--config", str(tmp / "fabric.yaml")]  # fmt: skip


def measure(args: list[str], workers: int, log: Path, clients: int, seconds: float) -> dict:
    proc, url = start([*args, "--workers", str(workers)], log)
    try:
        wait_ready(url, "bench", POOL_SIZE)
        noop = run(url, "noop", clients, seconds)
        pair = run(url, "pair", clients, seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    return {"noop": noop, "pair": pair}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    a = p.parse_args()
    print(f"load before: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} CPUs")
    pg = None
    with tempfile.TemporaryDirectory() as t, TestDaemons(2) as hosts:
        tmp = Path(t)
        files = write_files(tmp, hosts.uris)
        results = {}
        for n in (1, a.workers):
            if a.db == "postgresql":
                if pg is None:
                    from tests.pg import PgServer

                    pg = PgServer()
                db = pg.new_database()
            else:
                db = f"sqlite:///{tmp / f'bench-{n}.db'}"
            upgrade = [str(ROOT / "script"), "db", "upgrade", "--db", db]
            if os.spawnv(os.P_WAIT, upgrade[0], upgrade) != 0:
                raise SystemExit("db upgrade failed")
            results[n] = measure(
                [*files, "--db", db], n, tmp / f"fabric-{n}.log", a.clients, a.seconds
            )
        if pg is not None:
            pg.stop()
    one, many = results[1], results[a.workers]
    print(f"{a.db}, {a.clients} clients, {a.seconds:g} s each; rates per second")
    print(f"{'workers':>7} {'no-op':>8} {'pairs':>8} {'pair/no-op':>10} {'pair p99 ms':>11}")
    for n, r in results.items():
        noop, pair = r["noop"]["pairs_per_s"], r["pair"]["pairs_per_s"]
        print(f"{n:>7} {noop:>8.0f} {pair:>8.0f} {pair / noop:>10.2f} {r['pair']['p99_ms']:>11.1f}")
    print(
        f"ratio {a.workers} workers / 1: no-op "
        f"{many['noop']['pairs_per_s'] / one['noop']['pairs_per_s']:.2f}, pairs "
        f"{many['pair']['pairs_per_s'] / one['pair']['pairs_per_s']:.2f}"
    )
    print(f"load after: {os.getloadavg()[0]:.1f} (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
