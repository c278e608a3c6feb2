"""Two fabric servers on one PostgreSQL registry over six libvirt hosts they share,
64 parallel clients doing check-outs/check-ins and creates/destroys, and one server
SIGKILLed a third of the way in.

What must hold: no VM is ever handed out twice, no host is overcommitted, no VM is
lost, the registry agrees with what libvirt runs, and after the kill the survivor
keeps serving and takes over the dead server's leases and half-done work.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import libvirt
import requests
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from orchestrator.registry import Registry
from orchestrator.registry.tables import EventRow, HostRow, MetaRow, VmRow

HOSTS = 6
HOST_CAPACITY = (8, 8192, 100)  # cpu, ram MB, disk GB in the pm file (cpu x4 by default ratio)
CLIENTS = 64
# The load is bounded by count, never by time: each client does OPS_PER_CLIENT
# operations that went through (a 503 or a refused connection does not count), and
# the kill comes once a third of them are done, however fast or slow the machine.
OPS_PER_CLIENT = 10  # 640 in all: about 480 check-out/check-in pairs, 160 creates
KILL_AT = CLIENTS * OPS_PER_CLIENT // 3
CHECKOUT_SHARE = 0.75  # the rest of the operations are create -> destroy
# A client refused this many times in a row gives up (and the test fails): the
# fabric stopped serving. A bound on work; each refusal sleeps 50-200 ms.
MAX_REFUSALS_IN_A_ROW = 2_000
# A check-in or destroy whose connection failed is sent again, at most this often
# (each after 200 ms): the survivor answers long before.
RETRIES = 500
GIVE_UP = 1800.0  # seconds: only to end a run that will never finish (a hang)
STARTUP = 300.0  # seconds: the same, for two servers meeting and the pool filling
KEEPERS = 12  # created VMs the clients never destroy (checked at the end)
POOL = "load"
POOL_SIZE = 12
POOL_MAX = 30
MAX_VMS = 200
HEARTBEAT = 0.5
DEAD_AFTER = 3
LEASES = ("pool-worker", "schedules", "discovery")
UNSETTLED = ("building", "deleting", "cleaning")

CONFIG = f"""
workers: {{interval: 0.2, build_workers: 4, cleanup_workers: 20, retry_after: 1}}
discovery: {{interval: 5}}
libvirt: {{connect_timeout: 5, call_timeout: 20}}
limits: {{max_vms: {MAX_VMS}}}
pools:
  - name: {POOL}
    instance_type: 1
    image: base
    size: {POOL_SIZE}
    max: {POOL_MAX}
    cleanup: reset
    ready_check: none
cluster:
  heartbeat: {HEARTBEAT}
  dead_after: {DEAD_AFTER}
"""


def _refused(e: requests.ConnectionError) -> bool:
    """The request never reached a server (nothing happened), as opposed to a
    connection cut while the request was in flight (outcome unknown)."""
    if isinstance(e, requests.ConnectTimeout):
        return True
    msg = str(e)
    return "Failed to establish a new connection" in msg or "Connection refused" in msg


@dataclass
class Hold:
    vmid: int
    client: int
    got: float  # after the check-out answered
    giving: float  # before the check-in was sent


@dataclass
class Load:
    """The clients, what they saw, and the samplers that watch the registry meanwhile."""

    urls: list[str]
    image_id: int
    engine: Engine
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ops: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    holding: dict[int, int] = field(default_factory=dict)  # vmid -> client, right now
    holds: list[Hold] = field(default_factory=list)
    double: list[str] = field(default_factory=list)
    maybe_checkouts: int = 0  # check-outs cut in flight: a reservation may exist
    unconfirmed_checkins: list[int] = field(default_factory=list)
    kept: dict[int, str] = field(default_factory=dict)  # created, never destroyed
    destroyed: set[int] = field(default_factory=set)
    maybe_vms: set[int] = field(default_factory=set)  # destroy cut in flight
    maybe_creates: int = 0  # create cut in flight: a VM may exist
    keeper_slots: int = KEEPERS
    violations: list[str] = field(default_factory=list)  # seen by the sampler
    refusals: list[tuple[float, str]] = field(default_factory=list)  # create 503s: when, why
    samples: int = 0
    t0: float = 0.0
    done: int = 0  # operations that went through, all clients together
    gave_up: list[int] = field(default_factory=list)  # clients refused too often

    # -- requests ------------------------------------------------------------

    def call(
        self, session: requests.Session, rng: random.Random, path: str, data: dict
    ) -> tuple[requests.Response | None, str]:
        """POST to a server picked at random; when it refuses the connection, to the
        other. Returns (response, "") or (None, "cut" | "refused")."""
        for url in rng.sample(self.urls, len(self.urls)):
            try:
                return session.post(url + path, json=data, timeout=60), ""
            except requests.ConnectionError as e:
                if _refused(e):
                    continue
                return None, "cut"
            except (requests.Timeout, requests.exceptions.ChunkedEncodingError):
                return None, "cut"  # no answer, or half of one: outcome unknown
        return None, "refused"

    def count(self, kind: str) -> None:
        with self.lock:
            self.ops[kind] += 1

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] += 1

    def wrong(self, what: str, r: requests.Response) -> None:
        with self.lock:
            self.errors[f"{what} {r.status_code}"] += 1
            self.unexpected.append(f"{what} -> {r.status_code} {r.text[:300]}")

    # -- the two kinds of work -------------------------------------------------

    def checkout_pair(self, cid: int, session: requests.Session, rng: random.Random) -> bool:
        """One check-out and its check-in; False when nothing was handed out."""
        r, how = self.call(session, rng, "/vm/checkout", {"pool": POOL})
        if r is None:
            self.error(f"checkout {how}")
            if how == "cut":
                with self.lock:
                    self.maybe_checkouts += 1
            else:
                time.sleep(0.1)
            return False
        if r.status_code == 503:
            self.count("checkout 503 (pool empty)")
            time.sleep(rng.uniform(0.05, 0.2))
            return False
        if r.status_code != 200:
            self.wrong("checkout", r)
            return False
        body = r.json()
        vmid, token = body["vmid"], body["reservation_id"]
        got = time.monotonic()
        self.count("checkout")
        with self.lock:
            other = self.holding.get(vmid)
            if other is not None:
                self.double.append(f"vm {vmid} handed to client {cid} while client {other} held it")
            self.holding[vmid] = cid
        time.sleep(rng.uniform(0, 0.03))  # use it briefly
        giving = time.monotonic()
        with self.lock:
            if self.holding.get(vmid) == cid:
                del self.holding[vmid]
            self.holds.append(Hold(vmid, cid, got, giving))
        cut = False
        for _attempt in range(RETRIES):
            r, how = self.call(session, rng, "/vm/checkin", {"vmid": vmid, "reservation_id": token})
            if r is None:
                self.error(f"checkin {how}")
                cut = cut or how == "cut"
                time.sleep(0.2)
                continue  # the same check-in again, on whichever server answers
            if r.status_code == 200:
                self.count("checkin")
                return True
            if cut and r.status_code in (403, 409):
                # the cut request had checked it in (409: being cleaned; 403: cleaned
                # and already handed to someone else)
                self.count(f"checkin done by a cut request ({r.status_code})")
                return True
            self.wrong("checkin", r)
            break
        with self.lock:
            self.unconfirmed_checkins.append(vmid)
        return True

    def create_destroy(self, cid: int, session: requests.Session, rng: random.Random) -> bool:
        """One create and (mostly) its destroy; False when nothing was created."""
        tid = rng.choice((1, 2))
        data = {"name": f"c{cid}-{rng.randrange(10**6)}", "instance_type": tid,
                "image_id": self.image_id}  # fmt: skip
        r, how = self.call(session, rng, "/vm/create", data)
        if r is None:
            self.error(f"create {how}")
            if how == "cut":
                with self.lock:
                    self.maybe_creates += 1
            else:
                time.sleep(0.1)
            return False
        if r.status_code == 503:
            self.count("create 503 (no capacity)")
            with self.lock:
                self.refusals.append((time.monotonic() - self.t0, r.json().get("error", "")))
            time.sleep(rng.uniform(0.05, 0.2))
            return False
        if r.status_code != 200:
            self.wrong("create", r)
            return False
        vmid = r.json()["vmid"]
        self.count("create")
        with self.lock:
            keep = self.keeper_slots > 0 and rng.random() < 0.1
            if keep:
                self.keeper_slots -= 1
                self.kept[vmid] = data["name"]
        if keep:
            return True
        time.sleep(rng.uniform(0, 0.05))
        cut = False
        for _attempt in range(RETRIES):
            r, how = self.call(session, rng, "/vm/destroy", {"vmid": vmid})
            if r is None:
                self.error(f"destroy {how}")
                if how == "cut":
                    cut = True
                    with self.lock:
                        self.maybe_vms.add(vmid)
                    return True  # outcome unknown: the VM's fate is left to the fabric
                time.sleep(0.2)
                continue
            if r.status_code == 200:
                self.count("destroy")
                with self.lock:
                    self.destroyed.add(vmid)
                return True
            self.wrong("destroy", r)
            break
        with self.lock:
            if vmid not in self.destroyed and not cut:
                self.kept[vmid] = data["name"]  # still ours: it must still exist
        return True

    def client(self, cid: int) -> None:
        rng = random.Random(cid)
        session = requests.Session()
        done = refused = 0
        try:
            while done < OPS_PER_CLIENT and not self.stop.is_set():
                went = False
                try:
                    if rng.random() < CHECKOUT_SHARE:
                        went = self.checkout_pair(cid, session, rng)
                    else:
                        went = self.create_destroy(cid, session, rng)
                except Exception as e:  # noqa: BLE001 - recorded, the client goes on
                    self.error(f"client exception {type(e).__name__}")
                    with self.lock:
                        self.unexpected.append(f"client {cid}: {e!r}")
                if went:
                    done += 1
                    refused = 0
                    with self.lock:
                        self.done += 1
                    continue
                refused += 1
                if refused >= MAX_REFUSALS_IN_A_ROW:
                    with self.lock:
                        self.gave_up.append(cid)
                    return
        finally:
            session.close()

    # -- the registry, watched while the load runs ----------------------------

    def sample(self) -> None:
        """Each check is one SQL statement, so it reads one consistent snapshot."""
        hosts_vs_claims = text(
            "SELECT h.id, h.cpu_used, h.cpu_total, h.ram_used, h.ram_total, h.disk_used,"
            " h.disk_total, COALESCE(c.cpu, 0), COALESCE(c.ram, 0), COALESCE(c.disk, 0)"
            " FROM hosts h LEFT JOIN (SELECT host_id, sum(cpu) AS cpu, sum(ram) AS ram,"
            " sum(disk) AS disk FROM claims GROUP BY host_id) c ON c.host_id = h.id"
        )
        pool_total = text("SELECT count(*) FROM vms WHERE pool = :p")
        held_wrong = text(
            "SELECT count(*) FROM vms WHERE (state = 'in-use') <> (reservation_hash IS NOT NULL)"
        )
        while not self.stop.wait(0.5):
            try:
                with self.engine.connect() as conn:
                    found = []
                    for row in conn.execute(hosts_vs_claims):
                        hid, cu, ct, ru, rt, du, dt, cc, rc, dc = row
                        if cu > ct or ru > rt or du > dt:
                            found.append(f"host {hid} overcommitted: {tuple(row)}")
                        if (cu, ru, du) != (cc, rc, dc):
                            found.append(f"host {hid} used != its claims: {tuple(row)}")
                    n = conn.execute(pool_total, {"p": POOL}).scalar_one()
                    if n > POOL_MAX:
                        found.append(f"pool {POOL} has {n} VMs, max {POOL_MAX}")
                    bad = conn.execute(held_wrong).scalar_one()
                    if bad:
                        found.append(f"{bad} VMs in-use without a reservation or vice versa")
            except Exception as e:  # noqa: BLE001
                found = [f"sampler: {e!r}"]
            with self.lock:
                self.samples += 1
                t = time.monotonic() - self.t0
                self.violations.extend(f"t={t:.1f}s {f}" for f in found)


def get_json(url: str, path: str, **params: Any) -> Any:
    r = requests.get(url + path, params=params, timeout=60)
    assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:300]}"
    return r.json()


def took_over(cluster: dict, me: str, dead: str) -> bool:
    servers = {s["id"]: s for s in cluster["servers"]}
    leases = {x["name"]: x["holder"] for x in cluster["leases"]}
    return (
        cluster["server"] == me
        and dead in servers
        and not servers[dead]["alive"]
        and servers[me]["alive"]
        and all(leases.get(name) == me for name in LEASES)
    )


def domains_by_host(engine: Engine) -> dict[int, set[str]]:
    """Per host row: the names of the fabric's domains libvirt has there."""
    with engine.connect() as conn:
        hosts = conn.execute(select(HostRow.id, HostRow.uri)).all()
    out = {}
    for hid, uri in hosts:
        conn = libvirt.open(uri)
        try:
            names = {d.name() for d in conn.listAllDomains(0)}
        finally:
            conn.close()
        out[hid] = {n for n in names if n.startswith("fabric-")}
    return out


def check_invariants(load: Load, engine: Engine, pairs: int) -> dict[int, set[str]]:
    """After the run: no double hand-out, no overcommit, no lost VM, registry == libvirt.
    Returns the fabric's domains per host, as libvirt lists them."""
    # zero double hand-outs
    assert load.double == []
    by_vm: dict[int, list[Hold]] = {}
    for h in load.holds:
        by_vm.setdefault(h.vmid, []).append(h)
    for vmid, spans in by_vm.items():
        spans.sort(key=lambda h: h.got)
        for x, y in zip(spans, spans[1:], strict=False):
            assert y.got >= x.giving, f"vm {vmid} held by clients {x.client} and {y.client}"
    assert load.unexpected == [], load.unexpected[:20]
    assert load.unconfirmed_checkins == []
    assert load.violations == [], load.violations[:20]
    assert pairs == load.ops["checkout"], (pairs, load.ops["checkout"])  # each given back

    # the registry: hosts never overcommitted, used == claims == its VMs
    with Session(engine) as s:
        hosts = list(s.scalars(select(HostRow)))
        vms = list(s.scalars(select(VmRow)))
        inst = s.scalar(select(MetaRow.value).where(MetaRow.key == "installation_id"))
    assert len(hosts) == HOSTS
    registry = Registry(engine.url.render_as_string(hide_password=False))
    try:
        assert registry.claims.consistent() == []  # used == the sum of its claims
    finally:
        registry.close()
    vm_sums: dict[int, list[int]] = {}
    for vm in vms:
        s = vm_sums.setdefault(vm.host_id, [0, 0, 0])
        s[0] += vm.cpu
        s[1] += vm.ram
        s[2] += vm.disk
    for h in hosts:
        used = (h.cpu_used, h.ram_used, h.disk_used)
        assert h.cpu_used <= h.cpu_total and h.ram_used <= h.ram_total, h.id
        assert h.disk_used <= h.disk_total, h.id
        assert tuple(vm_sums.get(h.id, (0, 0, 0))) == used, h.id

    # the registry agrees with libvirt, host by host: no leaked domain, none missing
    domains = domains_by_host(engine)
    names_by_host: dict[int, set[str]] = {}
    for vm in vms:
        names_by_host.setdefault(vm.host_id, set()).add(vm.domain_name)
    for h in hosts:
        have, want = domains.get(h.id, set()), names_by_host.get(h.id, set())
        assert have == want, (
            f"pmid {h.id}: leaked {sorted(have - want)}, missing {sorted(want - have)}"
        )
    all_domains = set().union(*domains.values())

    # zero lost VMs: what a client made and kept is there; what it destroyed is gone
    rows = {vm.id: vm for vm in vms}
    for vmid, name in load.kept.items():
        assert vmid in rows, f"vm {vmid} ({name}) was created, never destroyed, and is gone"
        assert rows[vmid].state == "active", (vmid, rows[vmid].state)
        assert rows[vmid].domain_name in all_domains
    for vmid in load.destroyed:
        assert vmid not in rows, f"vm {vmid} was destroyed but is still registered"
        assert f"fabric-{inst}-vm-{vmid}" not in all_domains
    plain = [vm for vm in rows.values() if vm.pool is None]
    unknown = [vm.id for vm in plain if vm.id not in load.kept]
    # plain VMs nobody asked to keep: only those whose create or destroy was cut
    assert len(unknown) <= load.maybe_creates + len(load.maybe_vms), unknown

    # pool VMs: in-use only under a reservation, and only for cut check-outs
    pool_vms = [vm for vm in rows.values() if vm.pool == POOL]
    in_use = [vm for vm in pool_vms if vm.state == "in-use"]
    assert all(vm.reservation_hash for vm in in_use)
    assert all(vm.reservation_hash is None for vm in pool_vms if vm.state != "in-use")
    assert len(in_use) <= load.maybe_checkouts, (len(in_use), load.maybe_checkouts)
    assert len(pool_vms) <= POOL_MAX
    return domains


def test_two_servers_64_clients_and_a_sigkill(make_cluster):  # noqa: PLR0915
    cluster = make_cluster(HOSTS, CONFIG, HOST_CAPACITY)
    a = cluster.start("a")
    b = cluster.start("b")
    servers = [a, b]
    urls = [s.url for s in servers]
    engine = create_engine(cluster.db_url, pool_size=4, max_overflow=4)
    try:
        # both serve, see each other, and the pool fills (STARTUP: a give-up on a hang,
        # not a bound on how long 12 VMs may take to build on a busy machine)
        t_up = time.monotonic()
        while time.monotonic() - t_up < STARTUP:
            views = [get_json(u, "/cluster") for u in urls]
            ids = [v["server"] for v in views]
            alive = [{s["id"] for s in v["servers"] if s["alive"]} for v in views]
            ready = get_json(a.url, "/pool/query", pool=POOL)["ready"]
            if all(set(ids) <= al for al in alive) and ready >= POOL_SIZE:
                break
            time.sleep(0.2)
        assert len(set(ids)) == 2, views
        assert all(set(ids) <= al for al in alive), views
        assert ready >= POOL_SIZE
        image_id = next(i["id"] for i in get_json(a.url, "/image/list")["images"])

        # kill the server that runs the background work, so that work has to move
        holder = {x["name"]: x["holder"] for x in views[0]["leases"]}.get("pool-worker")
        victim = next((s for s, i in zip(servers, ids, strict=True) if i == holder), a)
        survivor = b if victim is a else a
        dead_id, survivor_id = ids[servers.index(victim)], ids[servers.index(survivor)]

        load = Load(urls, image_id, engine)
        load.t0 = time.monotonic()
        threads = [
            threading.Thread(target=load.client, args=(i,), name=f"client-{i}")
            for i in range(CLIENTS)
        ]
        sampler = threading.Thread(target=load.sample, name="sampler")
        for t in [*threads, sampler]:
            t.start()
        takeover: dict[str, float] = {}
        at_kill: dict[str, int] = {}
        checkins_at_kill = 0
        try:
            # the kill comes once a third of the work is done (a give-up bound only)
            give_up = time.monotonic() + GIVE_UP
            while load.done < KILL_AT and time.monotonic() < give_up:
                time.sleep(0.05)
            kill_at = time.monotonic() - load.t0
            victim.proc.kill()  # SIGKILL: no goodbye, leases left to expire
            t_kill = time.monotonic()
            victim.proc.wait(timeout=10)
            ops_at_kill = sum(load.ops.values())
            checkins_at_kill = load.ops["checkin"]
            with engine.connect() as conn:
                at_kill = dict(
                    conn.execute(
                        select(VmRow.state, func.count())
                        .where(VmRow.state.in_(UNSETTLED))
                        .group_by(VmRow.state)
                    ).all()
                )
            while any(t.is_alive() for t in threads) and time.monotonic() < give_up:
                if "leases" not in takeover:
                    try:
                        view = get_json(survivor.url, "/cluster")
                        if took_over(view, survivor_id, dead_id):
                            takeover["leases"] = time.monotonic() - t_kill
                    except (requests.RequestException, AssertionError) as e:
                        load.error(f"/cluster during load: {type(e).__name__}")
                time.sleep(0.1)
        finally:
            load.stop.set()
            for t in [*threads, sampler]:
                t.join(timeout=90)
        assert not any(t.is_alive() for t in threads), "clients did not finish"
        assert load.gave_up == [], f"clients refused {MAX_REFUSALS_IN_A_ROW} times in a row"
        assert load.done == CLIENTS * OPS_PER_CLIENT
        load_time = time.monotonic() - load.t0
        ops_after_kill = sum(load.ops.values()) - ops_at_kill

        # the survivor settles everything: leases, half-done work, the pool (give_up:
        # only to end a run that would never settle)
        t_settle = time.monotonic()
        give_up = t_settle + GIVE_UP
        state: dict[str, Any] = {}
        while time.monotonic() < give_up:
            view = get_json(survivor.url, "/cluster")
            with engine.connect() as conn:
                states = dict(
                    conn.execute(select(VmRow.state, func.count()).group_by(VmRow.state)).all()
                )
                ready = conn.execute(
                    select(func.count()).where(VmRow.pool == POOL, VmRow.state == "ready")
                ).scalar_one()
            state = {"cluster": view, "states": states, "ready": ready}
            if (
                took_over(view, survivor_id, dead_id)
                and not any(states.get(s) for s in (*UNSETTLED, "failed", "vanished"))
                and ready >= POOL_SIZE
            ):
                break
            time.sleep(0.25)
        settled = time.monotonic() - t_settle
        takeover.setdefault("leases", float("nan"))

        pairs = load.ops["checkin"] + sum(
            n for k, n in load.ops.items() if k.startswith("checkin done")
        )
        print(
            f"\n{CLIENTS} clients on 2 servers over {HOSTS} libvirtd hosts, "
            f"{load_time:.1f} s of load, server {victim.name} SIGKILLed at "
            f"{kill_at:.0f} s"
        )
        print(f"operations: {dict(sorted(load.ops.items()))}")
        pairs_after_kill = load.ops["checkin"] - checkins_at_kill
        print(
            f"  check-out/check-in pairs: {pairs}; after the kill: {ops_after_kill} operations,"
            f" {pairs_after_kill} pairs"
        )
        print(f"errors: {dict(sorted(load.errors.items()))}")
        print(
            f"takeover: survivor held every lease {takeover['leases']:.2f} s after the kill; "
            f"all settled {settled:.1f} s after the load"
        )
        with engine.connect() as conn:
            finished = dict(
                conn.execute(
                    select(EventRow.kind, func.count())
                    .where(EventRow.kind.like("reconcile.%"))
                    .group_by(EventRow.kind)
                ).all()
            )
        print(f"half-done work at the kill (both servers): {at_kill}; reconcile events: {finished}")
        print(f"registry sampled {load.samples} times during the load")
        before = sum(1 for t, _ in load.refusals if t < kill_at)
        print(
            f"create refusals: {before} before the kill, {len(load.refusals) - before} after"
            + (f"; e.g. {load.refusals[len(load.refusals) // 2]}" if load.refusals else "")
        )
        print(f"end state: {state.get('states')}, pool ready {state.get('ready')}")

        assert took_over(state["cluster"], survivor_id, dead_id), state["cluster"]
        # the survivor served the two thirds of the work left at the kill
        assert ops_after_kill > 0 and pairs_after_kill > 0, "the survivor served nothing"
        assert load.samples >= 2, load.samples  # the sampler ran along
        assert not any(state["states"].get(s) for s in UNSETTLED), state["states"]
        assert not state["states"].get("failed") and not state["states"].get("vanished"), state
        assert state["ready"] >= POOL_SIZE, state

        domains = check_invariants(load, engine, pairs)
        # the survivor's API counts what libvirt runs, host by host
        for pmid, names in domains.items():
            pm = get_json(survivor.url, "/pm/query", pmid=pmid)
            assert pm["vms"] == len(names), (pm, sorted(names))
            assert all(pm["free"][k] >= 0 for k in ("cpu", "ram", "disk")), pm

        codes = cluster.stop_all()
        assert codes == {victim.name: -9, survivor.name: 0}, codes
        assert "Traceback" not in survivor.log.read_text()
    finally:
        engine.dispose()
