"""Fixtures for the cluster tests: one real PostgreSQL server for the session (whatever
FABRIC_TEST_DB says), libvirt daemons as hosts every server shares, and fabric servers
started as processes (`./script`) on the same files, config and database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.daemons import TestDaemons
from tests.launch import ROOT, launch
from tests.pg import PgServer

TYPES = {
    "types": [
        {"tid": 1, "cpu": 1, "ram": 512, "disk": 1, "name": "small"},
        {"tid": 2, "cpu": 2, "ram": 1024, "disk": 2, "name": "standard"},
    ]
}


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:  # noqa: ARG001
    """Keep each phase's report on the test item, so fixtures can tell a failure."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    srv = PgServer()
    yield srv
    srv.stop()


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    url: str
    log: Path


@dataclass
class Cluster:
    """The input files of a fabric over ``hosts``, one database, and its servers."""

    dir: Path
    hosts: TestDaemons
    db_url: str
    config_text: str
    host_capacity: tuple[int, int, int]  # cpu, ram MB, disk GB per host (pm file)
    servers: list[Server] = field(default_factory=list)

    def __post_init__(self) -> None:
        cpu, ram, disk = self.host_capacity
        self.pm = self.dir / "physical_machines"
        # network=user: libvirt's test daemons have a default network, but no DHCP
        # server to tell an address (this test is about servers, not addresses).
        self.pm.write_text(
            "".join(
                f"uri={uri} cpu={cpu} ram={ram} disk={disk} network=user\n"
                for uri in self.hosts.uris
            )
        )
        image = self.dir / "base.qcow2"
        image.write_bytes(b"QFI\xfb" + b"\0" * 60)
        self.images = self.dir / "images"
        self.images.write_text(f"{image} name=base\n")
        self.types = self.dir / "vm_types.json"
        self.types.write_text(json.dumps(TYPES))
        self.config = self.dir / "fabric.yaml"
        self.config.write_text(f"state_dir: {self.dir / 'state'}\n{self.config_text}")

    def upgrade_db(self) -> None:
        out = subprocess.run(
            [str(ROOT / "script"), "db", "upgrade", "--db", self.db_url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, f"db upgrade failed:\n{out.stdout}\n{out.stderr}"

    def start(self, name: str, threads: int = 32, workers: int = 1) -> Server:
        log = self.dir / f"server-{name}.log"
        args = [
            str(self.pm), str(self.images), str(self.types),
            "--config", str(self.config), "--db", self.db_url, "--threads", str(threads),
            *(["--workers", str(workers)] if workers != 1 else []),
        ]  # fmt: skip
        proc, url = launch(args, log)
        server = Server(name, proc, url, log)
        self.servers.append(server)
        return server

    def stop_all(self) -> dict[str, int | None]:
        """SIGTERM every server still running (SIGKILL after 20 s); their exit codes."""
        codes: dict[str, int | None] = {}
        for s in self.servers:
            if s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
        for s in self.servers:
            try:
                codes[s.name] = s.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait(timeout=10)
                codes[s.name] = None
        return codes

    def tails(self, lines: int = 80) -> str:
        out = []
        for s in self.servers:
            text = s.log.read_text(errors="replace").splitlines() if s.log.exists() else []
            text = [ln for ln in text if "Task queue depth" not in ln]  # waitress's chatter
            out.append(f"----- server {s.name} ({s.log}), last {lines} lines -----")
            out.extend(text[-lines:])
        for i in range(1, len(self.hosts.uris) + 1):
            log = self.hosts.log(i)
            text = log.read_text(errors="replace").splitlines() if log.exists() else []
            out.append(f"----- libvirtd h{i}, last 5 lines -----")
            out.extend(text[-5:])
        return "\n".join(out)


@pytest.fixture
def make_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator:
    """``make_cluster(n_hosts, config_text, host_capacity, db="postgresql")``: daemons
    up, files written, a fresh database at the current schema (``db="sqlite"``: a
    SQLite file, no PostgreSQL started). Everything is stopped afterwards; on a
    failure the tail of every server's log is printed."""
    made: list[Cluster] = []
    daemons: list[TestDaemons] = []

    def make(
        n_hosts: int, config_text: str, host_capacity: tuple[int, int, int], db: str = "postgresql"
    ) -> Cluster:
        # The daemons run as an unprivileged user, which cannot enter pytest's 0700
        # temporary directory: they get theirs under /tmp.
        hosts = TestDaemons(n_hosts, os.environ.get("FABRIC_TEST_HOSTS_DIR", "/tmp"))  # noqa: S108
        daemons.append(hosts.start())
        if db == "sqlite":
            url = f"sqlite:///{tmp_path / 'registry.db'}"
        else:
            url = request.getfixturevalue("pg_server").new_database()
        cluster = Cluster(tmp_path, hosts, url, config_text, host_capacity)
        made.append(cluster)
        cluster.upgrade_db()
        return cluster

    yield make
    failed = any(
        getattr(request.node, f"rep_{when}", None) is not None
        and getattr(request.node, f"rep_{when}").failed
        for when in ("setup", "call")
    )
    try:
        for cluster in made:
            codes = cluster.stop_all()
            if failed:
                print(f"server exit codes: {codes}")
                print(cluster.tails())
    finally:
        for hosts in daemons:
            hosts.stop()
