"""Shared fixtures: hosts on libvirt's test:// driver (a fresh node XML per test),
a real SQLite registry file, the services (built as the server builds them), the
Flask app, and a served app."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from orchestrator.api import create_app
from orchestrator.config import config_from_dict
from orchestrator.fabric import Fabric
from orchestrator.hypervisor.driver import LibvirtDriver
from orchestrator.inventory import load_inventory
from orchestrator.model import Inventory
from orchestrator.pools import PoolService
from orchestrator.registry import Registry
from orchestrator.reservations import Reservations
from orchestrator.schedules import now_utc
from orchestrator.services import Services, StartUpReport, build_services
from orchestrator.worker import Worker
from tests.launch import ServedApp

NODE_XML = """<node>
  <cpu>
    <mhz>2000</mhz><model>x86_64</model><active>{cpus}</active>
    <nodes>1</nodes><sockets>1</sockets><cores>{cpus}</cores><threads>1</threads>
  </cpu>
  <memory>{kib}</memory>
  <pool type='dir'>
    <name>fabric</name>
    <target><path>/fabric-pool</path></target>
  </pool>{extra}
</node>
"""

# A libvirt network named default, as a system daemon usually has (for node XML).
DEFAULT_NETWORK_XML = """
  <network>
    <name>default</name>
    <bridge name='virbr0'/>
    <forward mode='nat'/>
    <ip address='192.168.122.1' netmask='255.255.255.0'>
      <dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp>
    </ip>
  </network>"""

DEFAULT_TYPES = {
    "types": [
        {"tid": 1, "cpu": 1, "ram": 512, "disk": 1, "name": "small"},
        {"tid": 2, "cpu": 2, "ram": 1024, "disk": 2, "name": "standard"},
        {"tid": 3, "cpu": 4, "ram": 2048, "disk": 3, "name": "large"},
    ]
}


THREE_HOSTS = [{"cpus": 2, "ram": 2048}, {"cpus": 4, "ram": 4096}, {"cpus": 8, "ram": 8192}]


@dataclass
class Rig:
    """A fabric over test:// hosts, built from real input files in tmp_path."""

    dir: Path
    pm_file: Path
    image_file: Path
    types_file: Path
    db_url: str
    registry: Registry
    services: Services
    driver: LibvirtDriver
    report: StartUpReport  # what the start-up reconciliation found
    clock: Callable[[], datetime] = now_utc  # the schedules' clock

    @property
    def fabric(self) -> Fabric:
        return self.services.fabric

    def inventory(self) -> Inventory:
        """The three input files, read again."""
        return load_inventory(self.pm_file, self.image_file, self.types_file)

    def restart(
        self, config: dict | None = None, clock: Callable[[], datetime] | None = None
    ) -> Services:
        """New services and Registry on the same database and the same hosts.

        The test:// driver keeps a host's domains in its connection, so the
        driver (the "hosts") survives; everything the fabric holds is rebuilt.
        """
        self.services.stopping.set()
        self.registry.close()
        self.registry = Registry(self.db_url)
        cfg = config_from_dict(config or {"state_dir": str(self.dir / "state")})
        inv = self.inventory()
        self.clock = clock or self.clock
        self.services = build_services(
            cfg, self.registry, inv, driver=self.driver, clock=self.clock, pm_file=self.pm_file
        )
        self.report = self.services.start_up()
        return self.services

    def stop(self) -> None:
        """Stop what the services run (but keep the driver's hosts) and close."""
        self.services.stopping.set()
        self.services.schedules.stop()
        self.services.worker.stop()
        self.services.maintenance.stop()
        self.services.watcher.stop()
        self.driver.close()
        self.registry.close()


_PG: list = []


def fresh_db_url(tmp_path: Path) -> str:
    """A fresh registry database: a SQLite file, or with FABRIC_TEST_DB=postgresql a
    new database on the session's PostgreSQL server."""
    from tests import pg

    if not pg.wanted():
        return f"sqlite:///{tmp_path / 'registry.db'}"
    if not _PG:
        _PG.append(pg.PgServer())
    return _PG[0].new_database()


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ANN001, ARG001
    while _PG:
        _PG.pop().stop()


def write_node(path: Path, cpus: int, ram_mb: int, extra: str = "") -> Path:
    path.write_text(NODE_XML.format(cpus=cpus, kib=ram_mb * 1024, extra=extra))
    return path


def make_rig(
    tmp_path: Path,
    hosts: list[dict],
    config: dict | None = None,
    types: dict | None = None,
    images: list[str] | None = None,
    clock: Callable[[], datetime] = now_utc,
    driver: LibvirtDriver | None = None,
) -> Rig:
    """``hosts``: dicts with ``cpus``, ``ram``, ``node`` (more node XML) and pm-file
    settings in ``extra``; ``driver``: the driver to use (default: a plain one)."""
    lines = []
    for i, h in enumerate(hosts, start=1):
        node = write_node(
            tmp_path / f"node{i}.xml", h.get("cpus", 4), h.get("ram", 4096), h.get("node", "")
        )
        extra = " ".join(f"{k}={v}" for k, v in h.get("extra", {}).items())
        target = f"{h['target']} " if "target" in h else ""
        lines.append(f"{target}uri=test://{node} {extra}".rstrip())
    pm = tmp_path / "physical_machines"
    pm.write_text("\n".join(lines) + "\n")
    img_dir = tmp_path / "images"
    img_dir.mkdir(exist_ok=True)
    if images is None:
        (img_dir / "debian-12.qcow2").write_bytes(b"QFI\xfb" + b"\0" * 60)
        (img_dir / "alpine.qcow2").write_bytes(b"QFI\xfb" + b"\0" * 60)
        images = [str(img_dir / "debian-12.qcow2"), str(img_dir / "alpine.qcow2")]
    image_file = tmp_path / "images.txt"
    image_file.write_text("\n".join(images) + "\n")
    types_file = tmp_path / "vm_types.json"
    types_file.write_text(json.dumps(types or DEFAULT_TYPES))
    db_url = fresh_db_url(tmp_path)
    registry = Registry(db_url)
    cfg = config_from_dict({"state_dir": str(tmp_path / "state"), **(config or {})})
    driver = driver or LibvirtDriver(connect_timeout=5, call_timeout=20)
    inventory = load_inventory(pm, image_file, types_file)
    services = build_services(cfg, registry, inventory, driver=driver, clock=clock, pm_file=pm)
    report = services.start_up()
    return Rig(
        tmp_path, pm, image_file, types_file, db_url, registry, services, driver, report, clock
    )


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Three test:// hosts of different sizes."""
    r = make_rig(tmp_path, THREE_HOSTS)
    yield r
    r.stop()


@pytest.fixture
def client(rig: Rig):  # noqa: ANN201
    app = create_app(rig.services)
    app.testing = True
    return app.test_client()


Served = ServedApp


def serve(services: Services, threads: int = 32) -> ServedApp:
    """Run the app on waitress (the production server) on a free loopback port."""
    return ServedApp(create_app(services), threads=threads)


@pytest.fixture
def served(rig: Rig) -> Iterator[Served]:
    s = serve(rig.services)
    yield s
    s.stop()


@dataclass
class PoolRig:
    rig: Rig
    served: Served

    @property
    def pools(self) -> PoolService:
        return self.rig.services.pools

    @property
    def worker(self) -> Worker:
        return self.rig.services.worker

    @property
    def reservations(self) -> Reservations:
        return self.rig.services.reservations

    def stop(self) -> None:
        self.served.stop()
        self.rig.stop()


def pool_spec(name: str = "small", **settings: object) -> dict:
    """A pool's settings for a test: a test:// pool that needs no guest (no SSH
    readiness check, reset cleanup) and ``settings`` on top."""
    spec: dict = {
        "name": name,
        "instance_type": 1,
        "image": "debian-12",
        "ready_check": "none",
        "cleanup": "reset",
    }
    spec.update(settings)
    return spec


def make_pool_rig(
    tmp_path: Path,
    hosts: list[dict],
    pools: list[dict],
    config: dict | None = None,
    start_worker: bool = True,
    clock: Callable[[], datetime] = now_utc,
) -> PoolRig:
    """A rig with pools, its background worker and the app served on waitress."""
    cfg = {"workers": {"interval": 0.2, "retry_after": 1}, **(config or {}), "pools": pools}
    rig = make_rig(tmp_path, hosts, config=cfg, clock=clock)
    if start_worker:
        rig.services.worker.start()
    served = ServedApp(create_app(rig.services), threads=48)
    return PoolRig(rig, served)


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.05):  # noqa: ANN001, ANN201
    """Poll until ``predicate()`` is truthy; return its value or fail with the last one.

    ``timeout`` only says when to give up on a condition that will never come (a
    busy CI machine is slow); no test asserts how fast anything happens."""
    import time

    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    assert value, "condition not reached in time"
    return value
