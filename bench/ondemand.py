#!/usr/bin/env python3
"""Time from an on-demand request to fulfilled, for N VMs of an empty pool, against
N cold creates (`/vm/create`) issued directly, measured in the same run.

The fabric runs as `./script` (waitress) in its own process, on libvirt's test://
hosts by default: the figures are the fabric's own cost (HTTP, registry, the pool
worker's pass, builds, set-aside), not a hypervisor's. Each round:

- on demand: `POST /requests {"pools": {"od": N}}` on an empty pool (size 0), then
  `GET /requests/<id>` every 10 ms until it is ready (the pool worker builds the
  N VMs, `workers.build_workers` = N at once, and sets them aside); the VMs are
  then destroyed, so the next round starts from an empty pool again;
- direct: N clients call `/vm/create` at once (`create.concurrent` >= N), timed
  until the last returns; the VMs are then destroyed.

Prints per-round times, medians and the ratio on-demand / direct.

    .venv/bin/python bench/ondemand.py [--vms 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from checkout import start as start_server  # bench/checkout.py: ./script on a free port

NODE = """<node><cpu><mhz>2000</mhz><model>x86_64</model><active>64</active><nodes>1</nodes>
<sockets>1</sockets><cores>64</cores><threads>1</threads></cpu><memory>{kib}</memory>
<pool type='dir'><name>fabric</name><target><path>/fabric-pool</path></target></pool></node>"""
TYPES = {"types": [{"tid": 1, "cpu": 1, "ram": 128, "disk": 1, "name": "tiny"}]}


def start(tmp: Path, n: int) -> tuple[subprocess.Popen, str]:
    hosts = []
    for i in range(2):
        node = tmp / f"node{i}.xml"
        node.write_text(NODE.format(kib=64 * 1024 * 1024))
        hosts.append(f"uri=test://{node}")
    (tmp / "pm").write_text("\n".join(hosts) + "\n")
    img = tmp / "base.qcow2"
    img.write_bytes(b"QFI\xfb" + b"\0" * 60)
    (tmp / "images").write_text(f"{img}\n")
    (tmp / "types").write_text(json.dumps(TYPES))
    cfg = {
        "state_dir": str(tmp / "state"),
        "workers": {"interval": 2, "build_workers": n},
        "create": {"concurrent": max(8, n)},
        "ondemand": {"max_per_request": n},
        "pools": [
            {
                "name": "od",
                "instance_type": 1,
                "image": "base",
                "ready_check": "none",
                "size": 0,
                "max": n,
                "cleanup": "reset",
            }
        ],
    }
    (tmp / "fabric.yaml").write_text(json.dumps(cfg))  # YAML reads JSON
    args = [str(tmp / "pm"), str(tmp / "images"), str(tmp / "types")]
    args += ["--config", str(tmp / "fabric.yaml"), "--db", f"sqlite:///{tmp / 'registry.db'}"]
    return start_server(args, tmp / "server.log")


def destroy(s: requests.Session, url: str, vmids: list[int]) -> None:
    for vmid in vmids:
        s.get(url + "/vm/destroy", params={"vmid": vmid, "force": 1}).raise_for_status()


def on_demand(s: requests.Session, url: str, n: int) -> float:
    t0 = time.perf_counter()
    r = s.post(url + "/requests", json={"pools": {"od": n}})
    r.raise_for_status()
    rid = r.json()["request_id"]
    while True:
        g = s.get(f"{url}/requests/{rid}")
        if g.status_code == 200:
            break
        time.sleep(0.01)
    took = time.perf_counter() - t0
    body = g.json()
    if body["state"] != "ready" or len(body["vms"]) != n:
        raise SystemExit(f"request {rid} ended {body['state']}: {body.get('message')}")
    destroy(s, url, [v["vmid"] for v in body["vms"]])
    return took


def direct(url: str, n: int, round_no: int) -> float:
    def create(i: int) -> int:
        r = requests.get(
            url + "/vm/create",
            params={"name": f"cold-{round_no}-{i}", "instance_type": 1, "image_id": 1},
        )
        r.raise_for_status()
        return r.json()["vmid"]

    with ThreadPoolExecutor(n) as pool:
        t0 = time.perf_counter()
        vmids = list(pool.map(create, range(n)))
        took = time.perf_counter() - t0
    destroy(requests.Session(), url, vmids)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n = args.vms
    with tempfile.TemporaryDirectory() as td:
        proc, url = start(Path(td), n)
        try:
            s = requests.Session()
            direct(url, n, -1)  # warm-up: stage the image on both hosts
            od, dr = [], []
            for r in range(args.rounds):
                od.append(on_demand(s, url, n))
                dr.append(direct(url, n, r))
                print(f"round {r + 1}: on demand {od[-1] * 1000:.0f} ms, "
                      f"direct {dr[-1] * 1000:.0f} ms")  # fmt: skip
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    om, dm = statistics.median(od), statistics.median(dr)
    print(f"{n} VMs of an empty pool on test:// hosts, {args.rounds} rounds")
    print(
        f"on demand, request to fulfilled: median {om * 1000:.0f} ms, max {max(od) * 1000:.0f} ms"
    )
    print(f"direct, {n} cold /vm/create at once: median {dm * 1000:.0f} ms, "
          f"max {max(dr) * 1000:.0f} ms")  # fmt: skip
    print(f"ratio on-demand/direct (median): {om / dm:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
