#!/usr/bin/env python3
"""Create-and-start overhead of the fabric against plain libvirt, on the local datacenter.

For each round: create N VMs through the fabric's API (`./script` as its own
process; each call returns once the domain runs), destroy them, on the rig's
forward files (both paths then make the same domains, with a forwarded port); then make the
same domains directly with libvirt-python on the same hosts (overlay volume,
define, start), destroy them. Images are staged before timing, so both paths
do the same work on the host. Prints per-VM medians and the ratio
fabric / direct, measured in the same run.

    .venv/bin/python bench/create_overhead.py [--vms 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import libvirt
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.hypervisor.connection import SshOptions, transport_uri  # noqa: E402
from orchestrator.hypervisor.xml import DomainSpec, domain_xml, volume_xml  # noqa: E402
from orchestrator.inventory import load_hosts  # noqa: E402

GIB = 1024**3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_fabric(rig: Path, tmp: Path) -> tuple[subprocess.Popen, str]:
    pm = (rig / "physical_machines-forward").read_text()
    for key, value in (("cpu", 4), ("ram", 2048), ("disk", 8)):
        pm = re.sub(rf"\b{key}=\d+", f"{key}={value}", pm)
    (tmp / "pm").write_text(pm)
    cfg = tmp / "fabric.yaml"
    cfg.write_text((rig / "fabric-forward.yaml").read_text() + f"\nstate_dir: {tmp / 'state'}\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(ROOT / "script"),
            str(tmp / "pm"),
            str(rig / "images"),
            str(rig / "vm_types"),
            "--config",
            str(cfg),
            "--db",
            f"sqlite:///{tmp / 'registry.db'}",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            requests.get(url + "/pm/list", timeout=1)
            return proc, url
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit("fabric did not start")


def fabric_round(url: str, n: int) -> tuple[list[float], list[tuple[int, str]]]:
    times, made = [], []
    for i in range(n):
        t0 = time.perf_counter()
        r = requests.get(
            url + "/vm/create", params={"name": f"bench{i}", "instance_type": 1, "image_id": 1}
        )
        times.append(time.perf_counter() - t0)
        r.raise_for_status()
        vmid = r.json()["vmid"]
        made.append((vmid, requests.get(url + "/vm/query", params={"vmid": vmid}).json()["pmid"]))
    for vmid, _ in made:
        requests.get(url + "/vm/destroy", params={"vmid": vmid}).raise_for_status()
    return times, made


def direct_round(conns: list[tuple[libvirt.virConnect, str]], n: int, port0: int) -> list[float]:
    times = []
    made = []
    for i in range(n):
        conn, address = conns[i % len(conns)]
        t0 = time.perf_counter()
        pool = conn.storagePoolLookupByName("fabric")
        base = next(v for v in pool.listVolumes() if v.startswith("image-1-"))
        base_path = pool.storageVolLookupByName(base).path()
        vol = pool.createXML(volume_xml(f"direct-{i}.qcow2", GIB, "qcow2", base_path, "qcow2"), 0)
        spec = DomainSpec(
            name=f"bench-direct-{i}",
            uuid=str(uuid.uuid4()),
            vm_id=900000 + i,
            domain_type="qemu",
            vcpus=1,
            ram_mb=128,
            disk_path=vol.path(),
            mac=f"52:54:00:fe:00:{i:02x}",
            network="forward",
            forward_address=address,
            forward_port=port0 + i,
        )
        dom = conn.defineXML(domain_xml(spec))
        dom.create()
        times.append(time.perf_counter() - t0)
        made.append((dom, vol))
    for dom, vol in made:
        dom.destroy()
        dom.undefine()
        vol.delete(0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rig", default="/var/lib/fabric-demo")
    ap.add_argument("--vms", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rig = Path(args.rig)
    import yaml

    ssh = yaml.safe_load((rig / "fabric-forward.yaml").read_text())["ssh"]
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        proc, url = start_fabric(rig, tmp)
        try:
            # Warm-up: stage the image on every host (timed separately: the cold path).
            t0 = time.perf_counter()
            _, warm = fabric_round(url, 3)
            cold = time.perf_counter() - t0
            wrapper = SshOptions(ssh["key"], ssh["known_hosts"], 5).wrapper(tmp / "state")
            conns = []
            for h in load_hosts(tmp / "pm"):
                conn = libvirt.open(transport_uri(h.uri, wrapper))
                conns.append((conn, h.address))
            fab, direct = [], []
            for r in range(args.rounds):
                ft, _ = fabric_round(url, args.vms)
                dt = direct_round(conns, args.vms, 23000 + 10 * r)
                fab += ft
                direct += dt
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    fm, dm = statistics.median(fab), statistics.median(direct)
    print(f"VMs per round: {args.vms}, rounds: {args.rounds}, hosts: {len(conns)}")
    print(f"first creates incl. staging the image on 3 hosts: {cold:.2f} s for 3 VMs (+ destroy)")
    print(f"fabric  create+start per VM: median {fm * 1000:.0f} ms, max {max(fab) * 1000:.0f} ms")
    worst = max(direct) * 1000
    print(f"libvirt create+start per VM: median {dm * 1000:.0f} ms, max {worst:.0f} ms")
    print(f"ratio fabric/direct (median): {fm / dm:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
