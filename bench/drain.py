#!/usr/bin/env python3
"""Time to drain a host of N running VMs: through the fabric's API against the same live
migrations done directly with libvirt-python, in the same run, on the local datacenter.

Both paths move booted TCG guests on the guest LAN (``bridge:br0``) off the source
host (pm1 by default) one at a time, over the rig's migration LAN, copying only each
VM's overlay (the base image is staged on every host beforehand, so neither path pays
for staging):

- **direct**: N domains of the fabric's shape made with libvirt-python on the source
  (overlay on the staged base, define, start), booted; then, timed, for each: the
  target overlay is created through the target's storage pool and the domain moves
  with ``migrate3`` (``LIVE | PERSIST_DEST | UNDEFINE_SOURCE | NON_SHARED_INC``, the
  destination XML with rewritten paths, ``tcp://`` the target's ``migrate_address``),
  targets taken in turn.
- **fabric**: ``./script`` on the rig's LAN files; the other hosts are put in
  maintenance while N VMs are created (so they land on the source), then taken out
  of it; timed: ``POST /pm/<pmid>/drain`` until ``GET /pm/<pmid>/drain`` says the
  drain is over; it must have moved all N.

Prints both totals, per-VM means and the ratio fabric / direct. Needs the rig's pm
files with ``migrate_address=`` (``bin/local-datacenter up`` writes them) and a
fabric with the drain API (``POST /pm/<pmid>/drain``). Hold /tmp/rig.lock.

    .venv/bin/python bench/drain.py [--vms 2] [--source 1] [--rig /var/lib/fabric-demo]
        [--targets 2,3] [--skip-fabric]
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import libvirt
import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.hypervisor.connection import SshOptions, transport_uri  # noqa: E402
from orchestrator.hypervisor.xml import (  # noqa: E402
    DomainSpec,
    domain_xml,
    safe_fromstring,
    volume_xml,
)
from orchestrator.inventory import load_hosts  # noqa: E402
from orchestrator.model import HostSpec  # noqa: E402

GIB = 1024**3
BOOT_MARKER = "FABRIC-GUEST-READY"
FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    | libvirt.VIR_MIGRATE_NON_SHARED_INC
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Host:
    spec: HostSpec
    conn: libvirt.virConnect

    @property
    def pool(self) -> libvirt.virStoragePool:
        return self.conn.storagePoolLookupByName("fabric")

    def base(self) -> str:
        """The staged guest image (image id 1) in the host's pool."""
        pool = self.pool
        pool.refresh(0)
        names = [v for v in pool.listVolumes() if v.startswith("image-1-")]
        if not names:
            raise SystemExit(f"{self.spec.label}: image 1 is not staged (create one VM there)")
        return pool.storageVolLookupByName(names[0]).path()

    def pool_dir(self) -> str:
        return safe_fromstring(self.pool.XMLDesc(0)).findtext("target/path") or ""


# -- direct: libvirt-python only ------------------------------------------------------


def make_direct(src: Host, n: int) -> list[tuple[str, str]]:
    """N booted domains of the fabric's shape on the source: (uuid, overlay path)."""
    base = src.base()
    made = []
    for i in range(n):
        name = f"drain-direct-{i}.qcow2"
        with contextlib.suppress(libvirt.libvirtError):
            src.pool.storageVolLookupByName(name).delete(0)
        vol = src.pool.createXML(volume_xml(name, GIB, "qcow2", base, "qcow2"), 0)
        uid = str(uuid.uuid4())
        spec = DomainSpec(
            name=f"bench-drain-{i}",
            uuid=uid,
            vm_id=980000 + i,
            domain_type=src.spec.domain_type,
            vcpus=1,
            ram_mb=128,
            disk_path=vol.path(),
            mac=f"52:54:00:fd:00:{i:02x}",
            network=src.spec.network or "bridge:br0",
            console_path=f"{src.pool_dir()}/drain-direct-{i}.console.log",
        )
        src.conn.defineXML(domain_xml(spec)).create()
        made.append((uid, vol.path()))
    return made


def wait_booted(rig: Path, host: HostSpec, paths: list[str], timeout: float = 300) -> None:
    wrapper = rig / "ssh-wrapper"
    deadline = time.monotonic() + timeout
    for path in paths:
        while True:
            out = subprocess.run(
                [str(wrapper), "-p", str(host.port or 22), f"{host.user}@{host.address}",
                 "cat", path],
                capture_output=True, text=True, timeout=60,
            ).stdout  # fmt: skip
            if BOOT_MARKER in out:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{path} on {host.label}: the guest did not boot")
            time.sleep(1)


def direct_move(src: Host, dst: Host, uid: str, overlay: str) -> None:
    """One live migration, as the fabric would do it, in plain libvirt-python."""
    dom = src.conn.lookupByUUIDString(uid)
    capacity = dom.blockInfo(overlay)[0]
    name = overlay.rsplit("/", 1)[1]
    target_dir = dst.pool_dir()
    vol = dst.pool.createXML(volume_xml(name, capacity, "qcow2", dst.base(), "qcow2"), 0)
    root = safe_fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE))
    for el in root.iter():
        for attr in ("file", "path"):
            value = el.get(attr)
            if value and value.startswith(src.pool_dir().rstrip("/") + "/"):
                el.set(attr, f"{target_dir}/{value.rsplit('/', 1)[1]}")
    for disk in root.findall("./devices/disk"):
        for store in disk.findall("backingStore"):
            disk.remove(store)
    xml = ET.tostring(root, encoding="unicode")
    addr = dst.spec.migrate_address
    params = {
        libvirt.VIR_MIGRATE_PARAM_DEST_XML: xml,
        libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: xml,
        libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda"],
        libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{addr}",
        libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: addr,
    }
    try:
        dom.migrate3(dst.conn, params, FLAGS)
    except libvirt.libvirtError:
        vol.delete(0)
        raise
    # as live_migrate does: the source's stale overlay and console log go
    src.pool.refresh(0)
    for stale in (overlay, overlay.replace(".qcow2", ".console.log")):
        with contextlib.suppress(libvirt.libvirtError):
            src.conn.storageVolLookupByPath(stale).delete(0)


def remove_direct(hosts: list[Host], made: list[tuple[str, str]]) -> None:
    for h in hosts:
        with contextlib.suppress(libvirt.libvirtError):
            h.pool.refresh(0)
        for uid, overlay in made:
            with contextlib.suppress(libvirt.libvirtError):
                dom = h.conn.lookupByUUIDString(uid)
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()
                dom.undefine()
            name = overlay.rsplit("/", 1)[1]
            for vol in (name, name.replace(".qcow2", ".console.log")):
                with contextlib.suppress(libvirt.libvirtError):
                    h.pool.storageVolLookupByName(vol).delete(0)


def direct_drain(rig: Path, src: Host, targets: list[Host], n: int) -> float:
    made = make_direct(src, n)
    try:
        wait_booted(rig, src.spec, [f"{src.pool_dir()}/drain-direct-{i}.console.log"
                                    for i in range(n)])  # fmt: skip
        t0 = time.perf_counter()
        for i, (uid, overlay) in enumerate(made):
            direct_move(src, targets[i % len(targets)], uid, overlay)
        took = time.perf_counter() - t0
        for uid, _ in made:
            with contextlib.suppress(libvirt.libvirtError):
                src.conn.lookupByUUIDString(uid)
                raise SystemExit(f"direct: {uid} is still on the source")
        return took
    finally:
        remove_direct([src, *targets], made)


# -- fabric: its drain API ------------------------------------------------------------


class Fabric:
    def __init__(self, rig: Path, tmp: Path) -> None:
        config = tmp / "fabric.yaml"
        config.write_text(
            (rig / "fabric.yaml").read_text()
            + f"\nstate_dir: {tmp / 'state'}\n"
            + "libvirt: {connect_timeout: 10, call_timeout: 120}\n"
        )
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = tmp / "fabric.log"
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(ROOT / "script"), str(rig / "physical_machines"), str(rig / "images"),
                 str(rig / "vm_types"), "--config", str(config),
                 "--db", f"sqlite:///{tmp / 'r.db'}", "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        for _ in range(600):
            try:
                requests.get(self.url + "/healthz", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise SystemExit(f"the fabric did not start; see {self.log_path}")

    def call(self, method: str, path: str, ok: tuple[int, ...] = (200,), **data: object) -> dict:
        r = requests.request(method, self.url + path, json=data or None, timeout=120)
        if r.status_code not in ok:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise SystemExit(f"{method} {path}: {r.status_code} {r.text}\n{tail}")
        return r.json()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            for vmid in self.call("GET", "/vm/list")["vmids"]:
                requests.get(self.url + "/vm/destroy", params={"vmid": vmid, "force": 1})
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def fabric_drain(fab: Fabric, source: int, others: list[int], targets: list[int], n: int) -> float:
    for pmid in others:  # the VMs must land on the source
        fab.call("POST", f"/pm/{pmid}/maintenance", reason="bench/drain.py: placing on source")
    try:
        vmids = []
        for i in range(n):
            r = requests.get(
                fab.url + "/vm/create", params={"name": f"drain{i}", "instance_type": 1,
                                                "image_id": 1}, timeout=300,
            )  # fmt: skip
            if r.status_code != 200:
                raise SystemExit(f"create: {r.status_code} {r.text}")
            vmids.append(r.json()["vmid"])
        deadline = time.monotonic() + 300
        for vmid in vmids:  # booted: the fabric has its address
            while (vm := fab.call("GET", "/vm/query", vmid=vmid)).get("status") != "active":
                if time.monotonic() > deadline or vm.get("status") == "failed":
                    raise SystemExit(f"vmid {vmid} did not become active: {vm}")
                time.sleep(0.5)
            if vm["pmid"] != source:
                raise SystemExit(f"vmid {vmid} landed on pmid {vm['pmid']}, not {source}")
    finally:
        for pmid in targets:  # the others stay out of the drain's reach
            fab.call("DELETE", f"/pm/{pmid}/maintenance")
    t0 = time.perf_counter()
    fab.call("POST", f"/pm/{source}/drain", ok=(200, 202))
    while (d := fab.call("GET", f"/pm/{source}/drain"))["state"] in ("running", "cancelling"):
        time.sleep(0.1)
    took = time.perf_counter() - t0
    if d["state"] != "done" or d["moved"] != n:
        raise SystemExit(f"the drain did not move all {n} VMs: {d}")
    with contextlib.suppress(SystemExit):
        fab.call("DELETE", f"/pm/{source}/maintenance")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rig", default="/var/lib/fabric-demo")
    ap.add_argument("--vms", type=int, default=2)
    ap.add_argument("--source", type=int, default=1, help="pmid (line in the pm file)")
    ap.add_argument("--targets", help="pmids the VMs may go to, e.g. 2,3 (default: all others)")
    ap.add_argument("--skip-fabric", action="store_true", help="only the direct baseline")
    args = ap.parse_args()
    rig = Path(args.rig)
    specs = list(load_hosts(str(rig / "physical_machines")))
    if any(not s.migrate_address for s in specs):
        raise SystemExit(f"{rig / 'physical_machines'} has no migrate_address=: run up again")
    ssh = yaml.safe_load((rig / "fabric.yaml").read_text())["ssh"]
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        wrapper = SshOptions(ssh["key"], ssh["known_hosts"], 5).wrapper(tmp)
        hosts = [Host(s, libvirt.open(transport_uri(s.uri, wrapper))) for s in specs]
        src = hosts[args.source - 1]
        others = [i for i in range(1, len(hosts) + 1) if i != args.source]
        to = [int(t) for t in args.targets.split(",")] if args.targets else others
        if not to or any(t not in others for t in to):
            raise SystemExit(f"--targets must be among {others}")
        targets = [hosts[t - 1] for t in to]
        fab_time = None
        if not args.skip_fabric:
            fab = Fabric(rig, tmp)
            try:
                fab_time = fabric_drain(fab, args.source, others, to, args.vms)
            finally:
                fab.stop()
        direct = direct_drain(rig, src, targets, args.vms)
    print(f"drain of {args.vms} running VM(s) off {src.spec.label}, one at a time, "
          f"to {len(targets)} host(s) (real TCG guests, overlay-only copies):")  # fmt: skip
    print(f"libvirt-python direct: {direct:.2f} s ({direct / args.vms:.2f} s per VM)")
    if fab_time is None:
        print("fabric: not run (--skip-fabric)")
        return 0
    print(f"fabric drain API:      {fab_time:.2f} s ({fab_time / args.vms:.2f} s per VM)")
    print(f"ratio fabric/direct: {fab_time / direct:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
