#!/usr/bin/env python3
"""One serving process against N (``./script ... --workers N``), same machine, same
run: the no-op rate (two ``GET /healthz``) and the check-out + check-in pair rate,
each printed as a ratio of N workers to 1.

The hosts are libvirt test-driver hosts inside session libvirtd daemons
(tests/daemons.py), which every worker process sees alike (a plain ``test://``
host would be private to the process that opened it). Clients are separate
processes (bench/checkout.py's), each with one keep-alive connection: the kernel
hands each connection to whichever worker accepts it.

    .venv/bin/python bench/workers.py [--workers 3] [--clients 32] [--seconds 4]
                                      [--rounds 3] [--db sqlite|postgresql]

Both servers (1 worker, N workers) run side by side and are measured in turn,
round after round: on a shared, noisy machine the load then falls on both alike,
and each ratio printed is the median of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from checkout import run, start, wait_ready  # noqa: E402 - bench/checkout.py's helpers

from tests.daemons import TestDaemons  # noqa: E402

POOL_SIZE = 64


def write_files(tmp: Path, uris: list[str]) -> list[str]:
    tmp.mkdir()
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    a = p.parse_args()
    print(f"load before: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} CPUs")
    pg = None
    counts = (1, a.workers)
    # rates[n][mode]: one figure per round. Both servers run side by side and are
    # measured in turn, round after round, so a change in the machine's load
    # falls on both alike; the ratio is the median of each round's ratio.
    rates: dict[int, dict[str, list[float]]] = {n: {"noop": [], "pair": []} for n in counts}
    servers: dict[int, tuple[subprocess.Popen, str]] = {}
    with tempfile.TemporaryDirectory() as t, TestDaemons(2) as hosts:
        tmp = Path(t)
        try:
            for n in counts:
                if a.db == "postgresql":
                    if pg is None:
                        from tests.pg import PgServer

                        pg = PgServer()
                    db = pg.new_database()
                else:
                    db = f"sqlite:///{tmp / f'bench-{n}.db'}"
                files = write_files(tmp / f"w{n}", hosts.uris)
                upgrade = [str(ROOT / "script"), "db", "upgrade", "--db", db]
                if subprocess.run(upgrade, capture_output=True).returncode != 0:
                    raise SystemExit("db upgrade failed")
                servers[n] = start([*files, "--db", db, "--workers", str(n)], tmp / f"w{n}.log")
            for n in counts:
                wait_ready(servers[n][1], "bench", POOL_SIZE)
            for r in range(a.rounds):
                order = counts if r % 2 == 0 else counts[::-1]
                for mode in ("noop", "pair"):
                    for n in order:
                        res = run(servers[n][1], mode, a.clients, a.seconds)
                        rates[n][mode].append(res["pairs_per_s"])
        finally:
            for proc, _ in servers.values():
                proc.send_signal(signal.SIGTERM)
            for proc, _ in servers.values():
                proc.wait(timeout=120)
            if pg is not None:
                pg.stop()
    print(f"{a.db}, {a.clients} clients, {a.rounds} rounds of {a.seconds:g} s; rates per second")
    print(f"{'workers':>7}  {'no-op, each round':<24} {'pairs, each round':<24}")
    for n in counts:
        noop = " ".join(f"{x:6.0f}" for x in rates[n]["noop"])
        pair = " ".join(f"{x:6.0f}" for x in rates[n]["pair"])
        print(f"{n:>7}  {noop:<24} {pair:<24}")
    for mode, name in (("noop", "no-op"), ("pair", "pairs")):
        ratios = [m / o for m, o in zip(rates[a.workers][mode], rates[1][mode], strict=True)]
        shown = " ".join(f"{x:.2f}" for x in ratios)
        print(
            f"ratio {a.workers} workers / 1, {name}: median {statistics.median(ratios):.2f}"
            f" (rounds: {shown})"
        )
    pair_noop = [p / o for p, o in zip(rates[1]["pair"], rates[1]["noop"], strict=True)]
    print(f"pair / no-op at 1 worker: median {statistics.median(pair_noop):.2f}")
    print(f"load after: {os.getloadavg()[0]:.1f} (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
