#!/usr/bin/env python3
"""Time from create to a known address and to a working SSH login, for VMs on the
local datacenter's guest LAN (``bridge:br0``: the address learned from the DHCP
server) next to the same VMs reached through a forwarded port (``forward``: the
address known at once), in the same run; then a warm pool's check-out to SSH on
the LAN.

Each mode runs its own fabric (``./script``) on the rig's files:
``physical_machines`` (LAN) and ``physical_machines-forward``. Real guests (TCG),
one at a time.

    .venv/bin/python bench/time_to_address.py [--vms 3] [--rig /var/lib/fabric-demo]
"""

from __future__ import annotations

import argparse
import logging
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
sys.path.insert(0, str(ROOT))

from orchestrator.remote import Remote, SshSettings  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Fabric:
    """``./script`` on the rig's files with its own registry and state."""

    def __init__(self, rig: Path, tmp: Path, name: str, pm: str, extra: str = "") -> None:
        self.tmp = tmp / name
        self.tmp.mkdir()
        base = (rig / "fabric.yaml").read_text()
        if pm.endswith("-forward"):
            base = (rig / "fabric-forward.yaml").read_text()
        config = self.tmp / "fabric.yaml"
        config.write_text(base + f"\nstate_dir: {self.tmp / 'state'}\n" + extra)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = (self.tmp / "fabric.log").open("ab")
        self.proc = subprocess.Popen(
            [str(ROOT / "script"), str(rig / pm), str(rig / "images"), str(rig / "vm_types"),
             "--config", str(config), "--db", f"sqlite:///{self.tmp / 'r.db'}",
             "--port", str(port)],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        for _ in range(600):
            try:
                requests.get(self.url + "/healthz", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise SystemExit(f"the fabric did not start; see {self.tmp / 'fabric.log'}")

    def get(self, path: str, **params: object) -> dict:
        return requests.get(self.url + path, params=params, timeout=60).json()

    def stop(self) -> None:
        for vmid in self.get("/vm/list")["vmids"]:
            self.get("/vm/destroy", vmid=vmid, force=1)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def ssh_ready(vm: dict, settings: SshSettings, host_key: str, deadline: float) -> None:
    remote = Remote("root", vm["ssh"]["host"], vm["ssh"]["port"], settings, pinned_keys=[host_key])
    while time.monotonic() < deadline:
        try:
            if remote.run(["true"], timeout=10).status == 0:
                return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    raise SystemExit(f"vmid {vm['vmid']} never answered SSH at {vm['ssh']}")


def one_vm(fab: Fabric, settings: SshSettings, host_key: str, name: str) -> tuple[float, float]:
    """Seconds from create to a known address, and to an SSH login."""
    t0 = time.perf_counter()
    vmid = fab.get("/vm/create", name=name, instance_type=1, image_id=1)["vmid"]
    deadline = time.monotonic() + 300
    while True:
        vm = fab.get("/vm/query", vmid=vmid)
        if vm.get("ip") and vm.get("ssh"):
            break
        if vm.get("status") == "failed" or time.monotonic() > deadline:
            raise SystemExit(f"vmid {vmid} got no address: {vm}")
        time.sleep(0.1)
    addressed = time.perf_counter() - t0
    ssh_ready(vm, settings, host_key, time.monotonic() + 300)
    login = time.perf_counter() - t0
    fab.get("/vm/destroy", vmid=vmid)
    return addressed, login


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=3, help="VMs per mode, one at a time")
    ap.add_argument("--rig", default="/var/lib/fabric-demo")
    args = ap.parse_args()
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # a guest still booting
    rig = Path(args.rig)
    if not (rig / "physical_machines-forward").exists():
        raise SystemExit(f"no local datacenter in {rig}: run bin/local-datacenter up")
    kt = (rig / "guest" / "guest-host-key.pub").read_text().split()
    host_key = f"{kt[0]} {kt[1]}"
    settings = SshSettings(key=str(rig / "keys/id_ed25519"), connect_timeout=5)
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for mode, pm in (("lan", "physical_machines"), ("forward", "physical_machines-forward")):
            fab = Fabric(rig, tmp, mode, pm)
            try:
                results[mode] = [
                    one_vm(fab, settings, host_key, f"{mode}{i}") for i in range(args.vms)
                ]
            finally:
                fab.stop()
        pool = "pools: [{name: warm, instance_type: 1, image: guest, size: 1, max: 1}]\n"
        fab = Fabric(rig, tmp, "pool", "physical_machines", pool + "workers: {interval: 1}\n")
        warm = []
        try:
            for _ in range(args.vms):
                while fab.get("/pool/query", pool="warm")["ready"] < 1:
                    time.sleep(0.2)
                t0 = time.perf_counter()
                got = requests.post(fab.url + "/vm/checkout", json={"pool": "warm"}).json()
                ssh_ready(got, settings, host_key, time.monotonic() + 60)
                warm.append(time.perf_counter() - t0)
                requests.post(
                    fab.url + "/vm/checkin",
                    json={"vmid": got["vmid"], "reservation_id": got["reservation_id"]},
                )
        finally:
            fab.stop()
    print(f"{args.vms} VM(s) per mode, one at a time, real guests (TCG):")
    print(f"{'mode':>8} {'address p50 ms':>15} {'ssh p50 ms':>11} {'ssh max ms':>11}")
    med = {}
    for mode, rows in results.items():
        addr = statistics.median(r[0] for r in rows)
        login = statistics.median(r[1] for r in rows)
        med[mode] = login
        print(
            f"{mode:>8} {addr * 1000:>15.0f} {login * 1000:>11.0f}"
            f" {max(r[1] for r in rows) * 1000:>11.0f}"
        )
    print(f"ratio lan/forward (create to SSH, median): {med['lan'] / med['forward']:.2f}")
    print(f"warm pool check-out to SSH on the LAN: median {statistics.median(warm) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
