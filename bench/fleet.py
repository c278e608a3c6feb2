#!/usr/bin/env python3
"""A fleet: creating and destroying thousands of VMs over 1,000 libvirt test:// hosts,
through the full path (HTTP API -> scheduler -> registry claim -> libvirt), with one
and with two fabric servers sharing one PostgreSQL registry.

Each configuration gets a fresh database on a throwaway PostgreSQL server (on
loopback, started here and stopped by PID at the end) and fresh servers
(`./script ...` processes, started one after the other and timed until /healthz
answers: the server that discovers at start reads every host; with the cluster
leases a second server leaves that to the first). Client threads then create
``--vms`` VMs (POST /vm/create, spread round-robin over the servers), and once
all exist, destroy them (POST /vm/destroy). VMs/s is create+destroy cycles per
second over both phases. The 1-server run is the baseline measured in the same
run; the 2-server figures are printed as ratios against it (the machine is
shared and noisy: absolute numbers are not comparable between runs, and the CPU
time per VM of the fabric and of PostgreSQL is printed as the steadier figure).
Lines of the servers' logs that bear on the figures are printed after the table:
warnings, errors, and background-work leases that moved (a server that takes the
discovery lease after start re-reads every host in the middle of the load).

Affinity: a test:///node.xml host lives inside the server process that opened
it, so with two servers each has a private copy of every fake host, while the
registry (PostgreSQL) is shared and arbitrates capacity. A VM's destroy is
therefore sent to the server that created it (sticky, like a load balancer with
affinity); creates are spread freely. For the same reason background discovery
(and its reconcile, which would find the other server's VMs missing from its own
copy of a host) is pushed out of the run with a long ``discovery.interval``.

    .venv/bin/python bench/fleet.py [--hosts 1000] [--vms 2000] [--clients 32]
                                    [--threads 32] [--rounds 2] [--sqlite] [--quick]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.launch import free_port  # noqa: E402 - needs ROOT on the path
from tests.pg import PgServer  # noqa: E402

NODE = """<node><cpu><mhz>2000</mhz><model>x86_64</model><active>{cpus}</active><nodes>1</nodes>
<sockets>1</sockets><cores>{cpus}</cores><threads>1</threads></cpu><memory>{kib}</memory>
<pool type='dir'><name>fabric</name><target><path>/fabric-pool</path></target></pool></node>
"""
# Per host: what the pm file lets the fabric hand out (a small VM is 1 vCPU, 512 MB, 1 GB).
HOST_CPU, HOST_RAM, HOST_DISK = 8, 16384, 200


# -- the rig: hosts, image, types, config ----------------------------------------


@dataclass
class Rig:
    dir: Path
    pm: Path
    images: Path
    types: Path
    hosts: int


def write_rig(tmp: Path, hosts: int) -> Rig:
    nodes = tmp / "nodes"
    nodes.mkdir()
    lines = []
    for i in range(1, hosts + 1):
        node = nodes / f"node{i}.xml"
        node.write_text(NODE.format(cpus=HOST_CPU, kib=HOST_RAM * 1024))
        lines.append(f"uri=test://{node} cpu={HOST_CPU} ram={HOST_RAM} disk={HOST_DISK}")
    pm = tmp / "physical_machines"
    pm.write_text("\n".join(lines) + "\n")
    (tmp / "base.qcow2").write_bytes(b"QFI\xfb" + b"\0" * 60)
    images = tmp / "images"
    images.write_text(f"{tmp / 'base.qcow2'} name=base\n")
    types = tmp / "vm_types.json"
    types.write_text(
        json.dumps({"types": [{"tid": 1, "cpu": 1, "ram": 512, "disk": 1, "name": "small"}]})
    )
    return Rig(tmp, pm, images, types, hosts)


def write_config(rig: Rig, name: str) -> Path:
    """A config of its own per server (its own state_dir); background discovery
    is pushed out of the run (start-up discovery is what is timed)."""
    cfg = rig.dir / f"{name}.yaml"
    # Every client creates at once: admission (create.concurrent) is not what is measured.
    cfg.write_text(
        f"state_dir: {rig.dir / name}\ndiscovery:\n  interval: 86400\ncreate:\n  concurrent: 256\n"
    )
    return cfg


# -- a throwaway PostgreSQL: the tests' own (tests/pg.py), stopped at the end ----


# -- fabric servers --------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path
    startup: float


def db_upgrade(db: str, log: Path) -> None:
    with log.open("ab") as out:
        subprocess.run(
            [str(ROOT / "script"), "db", "upgrade", "--db", db],
            stdout=out, stderr=subprocess.STDOUT, check=True, timeout=120,
        )  # fmt: skip


def start_server(rig: Rig, name: str, db: str, threads: int, timeout: float = 600) -> Server:
    """``./script`` with output to a log; returns once /healthz answers (start-up timed)."""
    cfg = write_config(rig, name)
    log = rig.dir / f"{name}.log"
    port = free_port()
    t0 = time.perf_counter()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(ROOT / "script"), str(rig.pm), str(rig.images), str(rig.types),
             "--config", str(cfg), "--db", db, "--port", str(port),
             "--threads", str(threads), "--log-level", "INFO"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return Server(proc, url, log, time.perf_counter() - t0)
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{name} did not start within {timeout:g}s; see {log}")


def stop_servers(servers: list[Server]) -> None:
    for s in servers:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
    for s in servers:
        try:
            s.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait()


# -- the load --------------------------------------------------------------------


class Client:
    """Keep-alive HTTP/1.1 connections, one per server, for one client thread."""

    def __init__(self, urls: list[str]) -> None:
        self.addrs = [urlsplit(u) for u in urls]
        self.conns: list[http.client.HTTPConnection | None] = [None] * len(urls)

    def post(self, server: int, path: str, body: dict) -> tuple[int, dict]:
        conn = self.conns[server]
        if conn is None:
            a = self.addrs[server]
            conn = http.client.HTTPConnection(a.hostname, a.port, timeout=120)
            self.conns[server] = conn
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            self.conns[server] = None
            return 0, {"error": f"{type(e).__name__}: {e}"}
        if r.getheader("connection", "").lower() == "close":
            conn.close()
            self.conns[server] = None
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, {"error": data[:200].decode(errors="replace")}

    def close(self) -> None:
        for c in self.conns:
            if c is not None:
                c.close()


@dataclass
class Phase:
    seconds: float = 0.0
    lat: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.lat) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.lat:
            return float("nan")
        xs = sorted(self.lat)
        return xs[min(len(xs) - 1, max(0, round(q * len(xs)) - 1))] * 1000

    def add(self, other: Phase) -> None:
        self.seconds += other.seconds
        self.lat += other.lat
        self.errors += other.errors


def run_phase(
    urls: list[str], jobs: list[tuple[int, str, dict]], clients: int
) -> tuple[Phase, list[tuple[int, dict]]]:
    """Run ``jobs`` (server index, path, body) on ``clients`` threads, each taking
    the next job as soon as it is free. Returns the phase's figures and, per job,
    (status, answer)."""
    phase = Phase()
    results: list[tuple[int, dict]] = [(0, {})] * len(jobs)
    lock = threading.Lock()
    it = iter(range(len(jobs)))
    start = threading.Barrier(clients + 1)

    def worker() -> None:
        c = Client(urls)
        lat: list[float] = []
        start.wait()
        while True:
            with lock:
                i = next(it, None)
            if i is None:
                break
            server, path, body = jobs[i]
            t0 = time.perf_counter()
            status, answer = c.post(server, path, body)
            dt = time.perf_counter() - t0
            results[i] = (status, answer)
            if status == 200 and not answer.get("error"):
                lat.append(dt)
            else:
                with lock:
                    phase.errors.append(f"{path} -> server {server}: {status} {answer}")
        c.close()
        with lock:
            phase.lat.extend(lat)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    phase.seconds = time.perf_counter() - t0
    return phase, results


# -- CPU accounting (less sensitive to a busy machine than wall-clock rates) -----

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # fields from "state" on (field 3)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads)."""
    f = _stat(pid)
    return (int(f[11]) + int(f[12])) / _TICK if f else 0.0


def tree_cpu_seconds(pid: int) -> float:
    """CPU of ``pid``, its live children and its waited-for children (PostgreSQL's
    postmaster and its backends)."""
    f = _stat(pid)
    if f is None:
        return 0.0
    total = sum(int(x) for x in f[11:15])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            c = _stat(int(entry.name))
            if c is not None and c[1] == str(pid):
                total += int(c[11]) + int(c[12])
    return total / _TICK


@dataclass
class Result:
    label: str
    servers: int
    startups: list[list[float]] = field(default_factory=list)  # per round, per server
    create: Phase = field(default_factory=Phase)
    destroy: Phase = field(default_factory=Phase)
    fabric_cpu: float = 0.0  # seconds, all servers, during the load
    db_cpu: float = 0.0  # seconds, PostgreSQL during the load (0 for SQLite: in-process)
    load: list[float] = field(default_factory=list)  # 1-min load average at each load start
    notes: list[str] = field(default_factory=list)  # the servers' own warnings and errors

    @property
    def cycles(self) -> int:
        return len(self.destroy.lat)

    @property
    def cycles_per_s(self) -> float:
        spent = self.create.seconds + self.destroy.seconds
        return self.cycles / spent if spent else 0.0

    def startup(self, k: int) -> float:
        return statistics.median(r[k] for r in self.startups)

    def cpu_ms_per_vm(self, what: float) -> float:
        return what / self.cycles * 1000 if self.cycles else float("nan")


def fleet_run(
    res: Result,
    rig: Rig,
    name: str,
    db: str,
    vms: int,
    args: argparse.Namespace,
    pg: PgServer | None,
) -> None:
    """Start ``res.servers`` fabrics on the fresh database ``db``, create ``vms``
    VMs spread over them, then destroy them; add the figures to ``res``. ``name``
    names the files (logs, state)."""
    n = res.servers
    db_upgrade(db, rig.dir / f"{name}-db.log")
    running: list[Server] = []
    try:
        # One after the other: the first fills the registry from the files, the
        # second finds the rows there (two first starts at once would race on them).
        for k in range(n):
            running.append(start_server(rig, f"{name}-s{k + 1}", db, args.threads))
        urls = [s.url for s in running]
        res.load.append(os.getloadavg()[0])
        fab0 = sum(cpu_seconds(s.proc.pid) for s in running)
        db0 = tree_cpu_seconds(pg.pid) if pg else 0.0
        create_jobs = [
            (i % n, "/vm/create", {"name": f"fleet-{i}", "instance_type": 1, "image_id": 1})
            for i in range(vms)
        ]
        create, made = run_phase(urls, create_jobs, args.clients)
        destroy_jobs = [
            (create_jobs[i][0], "/vm/destroy", {"vmid": answer["vmid"]})  # sticky
            for i, (status, answer) in enumerate(made)
            if status == 200 and answer.get("vmid")
        ]
        destroy, _ = run_phase(urls, destroy_jobs, args.clients)
        res.fabric_cpu += sum(cpu_seconds(s.proc.pid) for s in running) - fab0
        res.db_cpu += (tree_cpu_seconds(pg.pid) - db0) if pg else 0.0
        res.startups.append([s.startup for s in running])
        res.create.add(create)
        res.destroy.add(destroy)
    finally:
        stop_servers(running)
        if running:
            res.notes += server_notes([srv.log for srv in running])


def server_notes(logs: list[Path]) -> list[str]:
    """What the servers' logs say that bears on the figures: WARNING and ERROR lines
    (not waitress's queue-depth notices, which only say that requests waited for a
    thread), and background-work leases taken other than once each by the first
    server at its start (a lease that lapsed and moved makes a server rediscover
    every host, and reconcile, in the middle of the load)."""
    notes, gains = [], []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            parts = line.split(" ", 2)
            msg = f"{parts[1] if len(parts) == 3 else ''} {log.stem}: {parts[-1][:200]}"
            if (" WARNING " in line or " ERROR " in line) and "waitress.queue" not in line:
                notes.append(msg)
            elif " now runs " in line:
                gains.append((log, line.rsplit(" ", 1)[-1], msg))
    leases = [lease for _, lease, _ in gains]
    if any(log != logs[0] for log, _, _ in gains) or len(leases) != len(set(leases)):
        notes += [msg for _, _, msg in gains]
    return sorted(notes)


# -- report ----------------------------------------------------------------------


def report(results: list[Result], args: argparse.Namespace) -> None:
    base = results[0]
    print(
        f"fleet: {args.hosts} test:// hosts; per configuration {args.vms} VMs created, then"
        f" destroyed, in {args.rounds} round(s) (the order of 1 and 2 servers alternates);"
        f" {args.clients} client threads;"
        f" {args.threads} request threads per server; destroys go to the creating server;"
        f" {os.cpu_count()} CPUs"
    )
    head = (
        f"{'configuration':<17} {'start s':>9} {'create/s':>8} {'destroy/s':>9} {'VMs/s':>6}"
        f" {'create p50/p99 ms':>17} {'destroy p50/p99 ms':>18} {'CPU ms/VM fabric+db':>19}"
        f" {'load':>5} {'errors':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        start = "+".join(f"{r.startup(k):.1f}" for k in range(r.servers))
        errors = len(r.create.errors) + len(r.destroy.errors)
        c = f"{r.create.pct(0.5):.0f}/{r.create.pct(0.99):.0f}"
        d = f"{r.destroy.pct(0.5):.0f}/{r.destroy.pct(0.99):.0f}"
        cpu = f"{r.cpu_ms_per_vm(r.fabric_cpu):.0f}+{r.cpu_ms_per_vm(r.db_cpu):.0f}"
        print(
            f"{r.label:<17} {start:>9} {r.create.rate:>8.1f} {r.destroy.rate:>9.1f}"
            f" {r.cycles_per_s:>6.1f} {c:>17} {d:>18} {cpu:>19}"
            f" {statistics.mean(r.load):>5.1f} {errors:>6}"
        )
    print(
        "(start s: until /healthz answers, per server, started one after the other;"
        " VMs/s: create+destroy cycles per second of both phases; CPU: the fabric"
        " processes' and PostgreSQL's CPU time per cycle; load: 1-min load average)"
    )
    for r in results[1:]:
        print(
            f"ratio {r.label} / {base.label}:"
            f" VMs/s {r.cycles_per_s / base.cycles_per_s:.2f},"
            f" create/s {r.create.rate / base.create.rate:.2f},"
            f" destroy/s {r.destroy.rate / base.destroy.rate:.2f},"
            f" create p99 {r.create.pct(0.99) / base.create.pct(0.99):.2f},"
            f" destroy p99 {r.destroy.pct(0.99) / base.destroy.pct(0.99):.2f},"
            f" fabric CPU/VM {r.fabric_cpu / r.cycles / (base.fabric_cpu / base.cycles):.2f},"
            f" start-up (first server) {r.startup(0) / base.startup(0):.2f}"
        )
    for r in results:
        if r.notes:
            print(f"server logs ({r.label}): {len(r.notes)} line(s) to look at")
            for line in r.notes[:12]:
                print(f"  {line}")
    shown = 0
    for r in results:
        for e in r.create.errors + r.destroy.errors:
            if shown < 20:
                print(f"error ({r.label}): {e}")
            shown += 1
    if shown > 20:
        print(f"... and {shown - 20} more errors")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument(
        "--vms", type=int, default=2000, help="VMs created and destroyed per configuration"
    )
    ap.add_argument("--clients", type=int, default=32, help="client threads")
    ap.add_argument("--threads", type=int, default=32, help="request threads per server")
    ap.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="split the VMs over rounds; the order of 1 and 2 servers alternates",
    )
    ap.add_argument("--sqlite", action="store_true", help="also 1 server on SQLite (context)")
    ap.add_argument("--quick", action="store_true", help="300 VMs in 1 round (a smoke run)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (server logs)")
    args = ap.parse_args()
    if args.quick:
        args.vms, args.rounds = min(args.vms, 300), 1
    tmp = Path(tempfile.mkdtemp(prefix="fabric-fleet-"))
    pg = PgServer()
    one, two = Result("1 server, PG", 1), Result("2 servers, PG", 2)
    results = [one, two]
    sqlite = Result("1 server, SQLite", 1)
    try:
        rig = write_rig(tmp, args.hosts)
        for r in range(args.rounds):
            vms = args.vms // args.rounds + (r < args.vms % args.rounds)
            for res in (one, two) if r % 2 == 0 else (two, one):
                db = pg.new_database()
                fleet_run(res, rig, f"r{r + 1}-pg{res.servers}", db, vms, args, pg)
            if args.sqlite:
                db = f"sqlite:///{tmp / f'r{r + 1}-registry.db'}"
                fleet_run(sqlite, rig, f"r{r + 1}-sqlite", db, vms, args, None)
        if args.sqlite:
            results.append(sqlite)
    finally:
        pg.stop()
        if args.keep:
            print(f"logs and files in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(results, args)
    return 1 if any(r.create.errors or r.destroy.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
