#!/usr/bin/env python3
"""Check-out + check-in throughput and latency against a ready pool, next to a
no-op endpoint of the same app (the ceiling), measured in the same run; and
time-to-VM from a warm pool against creating a VM cold (on the local datacenter).

It prints the pair rate as a ratio of the no-op rate at 1 and at 32 clients, and
the check-in request alone against the check-out request alone (each as a rate:
the clients over its mean latency within the pairs).

The fabric runs as `./script` (waitress) in its own process; clients are
separate processes. Pool VMs live on libvirt's test:// hosts for the throughput
part, so the figures are the fabric's own cost (HTTP, registry, cleanup
hand-off), not a hypervisor's.

    .venv/bin/python bench/checkout.py [--seconds 5] [--rig /var/lib/fabric-demo]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
NODE = """<node><cpu><mhz>2000</mhz><model>x86_64</model><active>64</active><nodes>1</nodes>
<sockets>1</sockets><cores>64</cores><threads>1</threads></cpu><memory>{kib}</memory>
<pool type='dir'><name>fabric</name><target><path>/fabric-pool</path></target></pool></node>"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    out = log.open("ab")
    proc = subprocess.Popen(
        [str(ROOT / "script"), *args, "--port", str(port), "--threads", "48"],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            requests.get(url + "/healthz", timeout=1)
            return proc, url
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit(f"fabric did not start; see {log}")


def wait_ready(url: str, pool: str, n: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if requests.get(url + "/pool/query", params={"pool": pool}).json()["ready"] >= n:
            return
        time.sleep(0.2)
    raise SystemExit(f"pool {pool} never reached {n} ready")


def client(job: tuple[str, str, float, object]) -> dict:
    url, mode, seconds, barrier = job
    s = requests.Session()
    lat: list[float] = []
    out_lat: list[float] = []  # the check-out request alone
    in_lat: list[float] = []  # the check-in request alone
    refused = 0
    barrier.wait()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        if mode == "noop":
            s.get(url + "/healthz").raise_for_status()
            s.get(url + "/healthz").raise_for_status()
        else:
            r = s.post(url + "/vm/checkout", json={"pool": "bench"})
            if r.status_code == 503:
                refused += 1
                continue
            r.raise_for_status()
            b = r.json()
            t1 = time.perf_counter()
            s.post(
                url + "/vm/checkin", json={"vmid": b["vmid"], "reservation_id": b["reservation_id"]}
            ).raise_for_status()
            t2 = time.perf_counter()
            out_lat.append(t1 - t0)
            in_lat.append(t2 - t1)
        lat.append(time.perf_counter() - t0)
    return {"lat": lat, "refused": refused, "out": out_lat, "in": in_lat}


def run(url: str, mode: str, clients: int, seconds: float) -> dict:
    """``mode`` "noop" (two no-op requests) or "pair" (a check-out and its check-in)
    from ``clients`` processes for ``seconds``: pairs a second, latencies, and for
    "pair" each request alone as a rate (``clients`` / its mean latency)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Manager().Barrier(clients)
    with ctx.Pool(clients) as pool:
        res = pool.map(client, [(url, mode, seconds, barrier)] * clients)
    lat = sorted(x for r in res for x in r["lat"])
    out_lat = [x for r in res for x in r["out"]]
    in_lat = [x for r in res for x in r["in"]]
    return {
        "pairs_per_s": len(lat) / seconds,
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000,
        "refused": sum(r["refused"] for r in res),
        # each request alone, as a rate: requests a second if the clients did only it
        "out_per_s": clients * len(out_lat) / sum(out_lat) if out_lat else 0.0,
        "in_per_s": clients * len(in_lat) / sum(in_lat) if in_lat else 0.0,
    }


def throughput(tmp: Path, seconds: float) -> None:
    nodes = []
    for i in range(2):
        node = tmp / f"node{i}.xml"
        node.write_text(NODE.format(kib=64 * 1024 * 1024))
        nodes.append(f"uri=test://{node}")
    (tmp / "pm").write_text("\n".join(nodes) + "\n")
    (tmp / "base.qcow2").write_bytes(b"QFI\xfb")
    (tmp / "images").write_text(f"{tmp / 'base.qcow2'} name=base\n")
    (tmp / "types").write_text(json.dumps({"types": [{"cpu": 1, "ram": 128, "disk": 1}]}))
    (tmp / "fabric.yaml").write_text(
        f"state_dir: {tmp / 'state'}\n"
        "pools: [{name: bench, instance_type: 1, image: base, size: 64, max: 64,"
        " cleanup: reset, ready_check: none}]\n"
        "workers: {interval: 0.5, build_workers: 8, cleanup_workers: 8}\n"
    )
    proc, url = start(
        [str(tmp / "pm"), str(tmp / "images"), str(tmp / "types"), "--config",
         str(tmp / "fabric.yaml"), "--db", f"sqlite:///{tmp / 'bench.db'}"],
        tmp / "fabric.log",
    )  # fmt: skip
    try:
        wait_ready(url, "bench", 64)
        print("check-out + check-in pairs vs two no-op requests, same server, same run")
        print(f"{'clients':>7} {'what':>9} {'pairs/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'503s':>6}")
        ratios = {}
        for clients in (1, 32):
            noop = run(url, "noop", clients, seconds)
            pair = run(url, "pair", clients, seconds)
            wait_ready(url, "bench", 64)
            for name, r in (("no-op", noop), ("checkout", pair)):
                print(
                    f"{clients:>7} {name:>9} {r['pairs_per_s']:>9.0f} {r['p50_ms']:>8.1f}"
                    f" {r['p99_ms']:>8.1f} {r['refused']:>6}"
                )
            ratios[clients] = (
                pair["pairs_per_s"] / noop["pairs_per_s"],
                pair["out_per_s"],
                pair["in_per_s"],
            )
        print()
        print("pair rate / no-op rate (goal >= 0.5); check-in alone / check-out alone (goal >= 1)")
        print(f"{'clients':>7} {'pair/no-op':>10} {'out/s':>8} {'in/s':>8} {'in/out':>7}")
        for clients, (ratio, out_s, in_s) in ratios.items():
            print(
                f"{clients:>7} {ratio:>10.2f} {out_s:>8.0f} {in_s:>8.0f}"
                f" {in_s / out_s if out_s else 0.0:>7.2f}"
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def time_to_vm(tmp: Path, rig: Path) -> None:
    if not (rig / "physical_machines").exists():
        print(f"time-to-VM: skipped, no local datacenter in {rig} (bin/local-datacenter up)")
        return
    sys.path.insert(0, str(ROOT))
    from orchestrator.remote import Remote, SshSettings

    key = (rig / "guest" / "guest-host-key.pub").read_text().split()
    settings = SshSettings(key=str(rig / "keys/guest_ed25519"), connect_timeout=5)

    def ssh_ready(vm: dict, deadline: float) -> None:
        remote = Remote(
            "root", vm["ssh"]["host"], vm["ssh"]["port"], settings,
            pinned_keys=[f"{key[0]} {key[1]}"],
        )  # fmt: skip
        while time.monotonic() < deadline:
            try:
                if remote.run(["true"], timeout=10).status == 0:
                    return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        raise SystemExit("guest never answered SSH")

    (tmp / "rig.yaml").write_text(
        (rig / "fabric.yaml").read_text()
        + f"\nstate_dir: {tmp / 'rigstate'}\n"
        + "pools: [{name: warm, instance_type: 1, image: guest, size: 1, max: 1}]\n"
        + "workers: {interval: 1}\n"
    )
    proc, url = start(
        [str(rig / "physical_machines"), str(rig / "images"), str(rig / "vm_types"),
         "--config", str(tmp / "rig.yaml"), "--db", f"sqlite:///{tmp / 'rig.db'}"],
        tmp / "rig.log",
    )  # fmt: skip
    try:
        wait_ready(url, "warm", 1)
        t0 = time.perf_counter()
        got = requests.post(url + "/vm/checkout", json={"pool": "warm"}).json()
        ssh_ready(got, time.monotonic() + 60)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        vmid = requests.get(
            url + "/vm/create", params={"name": "cold", "instance_type": 1, "image_id": 1}
        ).json()["vmid"]
        deadline = time.monotonic() + 300
        vm = requests.get(url + "/vm/query", params={"vmid": vmid}).json()
        while "ssh" not in vm and time.monotonic() < deadline:  # its address, on a LAN
            time.sleep(0.1)
            vm = requests.get(url + "/vm/query", params={"vmid": vmid}).json()
        ssh_ready(vm, deadline)
        cold = time.perf_counter() - t0
        print("time to a VM that answers SSH (real guest, TCG):")
        print(f"  warm pool check-out: {warm * 1000:.0f} ms")
        print(f"  cold create + boot:  {cold * 1000:.0f} ms")
        print(f"  ratio cold/warm:     {cold / warm:.0f}x")
        requests.post(
            url + "/vm/checkin", json={"vmid": got["vmid"], "reservation_id": got["reservation_id"]}
        )
        requests.get(url + "/vm/destroy", params={"vmid": vmid})
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        # leave no pool VM behind on the shared hosts
        proc2, url2 = start(
            [str(rig / "physical_machines"), str(rig / "images"), str(rig / "vm_types"),
             "--config", str(rig / "fabric.yaml"), "--db", f"sqlite:///{tmp / 'rig.db'}"],
            tmp / "rig.log",
        )  # fmt: skip
        for v in requests.get(url2 + "/vm/list").json()["vmids"]:
            requests.get(url2 + "/vm/destroy", params={"vmid": v, "force": 1})
        proc2.send_signal(signal.SIGTERM)
        proc2.wait(timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rig", default="/var/lib/fabric-demo")
    ap.add_argument("--no-rig", action="store_true", help="skip the real-guest part")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        throughput(tmp, args.seconds)
        if not args.no_rig:
            time_to_vm(tmp, Path(args.rig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
