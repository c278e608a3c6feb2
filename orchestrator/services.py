"""The one place the fabric's services are built and wired: the launcher
(cli.py), the tests and the benchmarks all call ``build_services``.

Each service is given the collaborators it uses when it is made; none looks
another up later.
"""

from __future__ import annotations

import getpass
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .addresses import Addresses, AddressWatcher
from .auth import AuthService
from .cluster import Cluster
from .config import Config, reach_warnings, resolve_pools, sharing_warnings
from .evacuate import Evacuator
from .fabric import Fabric
from .guests import Guests
from .hostcache import HostCache
from .hosts import Discovery
from .hypervisor.connection import SshOptions
from .hypervisor.driver import LibvirtDriver
from .images import ImageStager
from .maintenance import Maintenance
from .model import Inventory
from .moves import Mover
from .ondemand import OnDemand
from .pools import PoolService
from .power import PowerService
from .quotas import Quotas
from .reconcile import Reconciler, ReconcileReport
from .registry import Registry
from .reload import HostReloader
from .remote import SshSettings
from .reservations import Reservations
from .scheduler import Scheduler
from .schedules import ScheduleService, now_utc
from .sshkeys import Keys
from .volumes import Volumes
from .worker import Worker

log = logging.getLogger(__name__)


@dataclass
class StartUpReport:
    vms: ReconcileReport
    volumes: dict[str, list[int]]


@dataclass
class Services:
    """Everything one fabric server runs, built by ``build_services``."""

    config: Config
    registry: Registry
    driver: LibvirtDriver
    scheduler: Scheduler
    hosts: HostCache
    cluster: Cluster
    discovery: Discovery
    reconciler: Reconciler
    fabric: Fabric
    addresses: Addresses
    watcher: AddressWatcher
    guests: Guests
    volumes: Volumes
    pools: PoolService
    worker: Worker
    reservations: Reservations
    ondemand: OnDemand
    schedules: ScheduleService
    auth: AuthService
    quotas: Quotas
    keys: Keys
    maintenance: Maintenance
    evacuator: Evacuator
    reloader: HostReloader
    mover: Mover
    stopping: threading.Event
    power: PowerService

    def start_up(self) -> StartUpReport:
        """Discover every host and reconcile the registry with them (at start, by
        the server that holds the discovery lease)."""
        self.discovery.discover_all()
        report = StartUpReport(self.reconciler.reconcile(), self.volumes.reconcile())
        if report.vms.unknown_domains:
            log.warning(
                "domains with fabric metadata unknown to the registry: %s",
                report.vms.unknown_domains,
            )
        if report.volumes["missing"]:
            log.warning("volumes whose storage is gone: %s", report.volumes["missing"])
        hosts = self.registry.hosts.list()
        reach = reach_warnings(self.config, ((h.label, h.network, h.uri) for h in hosts))
        for warning in [*reach, *sharing_warnings(self.config)]:
            log.warning("%s", warning)
        return report

    def start_background(self) -> None:
        """The periodic work: maintenance, the pools' worker (when there are pools)
        and schedules. The cluster's heartbeat is started by the launcher, earlier."""
        self.maintenance.start()
        self.watcher.start()
        if self.pools.configured:
            self.worker.start()
        self.schedules.start()

    def stop(self) -> None:
        """Stop the background work, then leave the cluster (its leases go only once
        this server's work has stopped)."""
        self.stopping.set()
        self.schedules.stop(timeout=10)
        self.worker.stop()
        self.maintenance.stop()
        self.watcher.stop()
        self.driver.close()
        self.cluster.stop()


def make_driver(config: Config) -> LibvirtDriver:
    ssh = config.ssh
    return LibvirtDriver(
        ssh=SshOptions(ssh.key, ssh.known_hosts, ssh.connect_timeout),
        state_dir=Path(config.state_dir),
        connect_timeout=config.libvirt.connect_timeout,
        call_timeout=config.libvirt.call_timeout,
        upload_timeout=config.libvirt.upload_timeout,
    )


def build_services(
    config: Config,
    registry: Registry,
    inventory: Inventory,
    *,
    driver: LibvirtDriver | None = None,
    clock: Callable[[], datetime] = now_utc,
    pm_file: str | os.PathLike[str] | None = None,
) -> Services:
    """Bring the registry's schema up, sync the three files into it, and build every
    service over it. ``driver``: a driver to share (tests keep test:// hosts alive
    across a restart); ``clock``: the schedules' clock; ``pm_file``: the physical
    machines file a reload reads again."""
    with registry.startup_lock():
        registry.create_schema()
        registry.inventory.sync(inventory)
    pool_configs = resolve_pools(config, registry.inventory)  # image names -> registry ids
    driver = driver or make_driver(config)
    # The names of the files the driver makes for a VM carry the installation: two
    # registries whose VMs share a host's pool never touch each other's files.
    driver.installation = registry.installation_id
    stopping = threading.Event()
    scheduler = Scheduler(config.scheduler)
    hosts = HostCache(registry.hosts, config.cluster.host_cache)
    cluster = Cluster(registry.cluster, config.cluster)
    ssh = config.ssh
    # How the fabric reaches hosts, image stores and DHCP servers over SSH.
    to_hosts = SshSettings(
        key=ssh.key, known_hosts=ssh.known_hosts, connect_timeout=ssh.connect_timeout
    )
    images = ImageStager(
        registry.staging,
        driver,
        to_hosts,
        config.guest.user,
        stage_wait=config.create.stage_wait,
        store_retry=config.create.image_store_retry,
    )
    addresses = Addresses(
        registry,
        driver,
        config.networks,
        to_hosts,
        getpass.getuser(),
        domain=config.hostnames.domain,
    )
    watcher = AddressWatcher(registry, addresses, config.guest.address_timeout)
    guests = Guests(
        registry.vms,
        config.guest,
        SshSettings(
            key=config.guest.key or ssh.key,
            connect_timeout=ssh.connect_timeout,
            command_timeout=config.guest.command_timeout,
        ),
    )
    quotas = Quotas(registry.quotas, config.auth)
    keys = Keys(registry.keys)
    fabric = Fabric(
        registry, driver, scheduler, hosts, images, addresses, watcher, config.create, quotas
    )
    volumes = Volumes(
        registry, driver, scheduler, hosts, config.storage, config.create.max_attempts, quotas
    )
    discovery = Discovery(registry.hosts, driver, config.capacity, stopping)
    reconciler = Reconciler(
        registry,
        driver,
        watcher,
        stopping,
        remove_unknown=config.reconcile.remove_unknown,
        grace=config.reconcile.grace,
    )
    evacuator = Evacuator(registry, driver, fabric, volumes, config.evacuate)
    evacuator.discovery = discovery
    discovery.fence = evacuator.fence_host  # a host that comes back: stale domains go first
    mover = Mover(
        registry, driver, scheduler, hosts, images, stopping, timeout=config.libvirt.upload_timeout
    )
    reconciler.recover_moves = mover.recover
    pools = PoolService(registry, fabric, guests, watcher, pool_configs, config.max_vms)
    worker = Worker(registry, pools, config.workers, cluster)
    ondemand = OnDemand(
        registry,
        pools,
        config.ondemand,
        quotas,
        config.max_vms,
        guests=guests,
        keys=keys,
        clock=clock,
    )
    ondemand.wake = worker.wake
    ondemand.clean = worker.clean_now
    worker.ondemand = ondemand
    pools.on_ready = worker.wake
    return Services(
        config=config,
        registry=registry,
        driver=driver,
        scheduler=scheduler,
        hosts=hosts,
        cluster=cluster,
        discovery=discovery,
        reconciler=reconciler,
        fabric=fabric,
        addresses=addresses,
        watcher=watcher,
        guests=guests,
        volumes=volumes,
        pools=pools,
        worker=worker,
        reservations=Reservations(
            registry,
            pools,
            worker,
            config.workers.retry_after,
            guests=guests,
            keys=keys,
            quotas=quotas,
        ),
        ondemand=ondemand,
        schedules=ScheduleService(
            registry,
            fabric,
            pools,
            worker,
            interval=config.schedules.interval,
            clock=clock,
            cluster=cluster,
        ),
        auth=AuthService(registry.auth, config.auth),
        quotas=quotas,
        keys=keys,
        maintenance=Maintenance(
            discovery, reconciler, volumes, addresses, config, cluster, evacuator=evacuator
        ),
        evacuator=evacuator,
        mover=mover,
        reloader=HostReloader(registry, discovery, hosts, pm_file),
        stopping=stopping,
        power=PowerService(registry, driver, quotas, auth_on=config.auth.enabled),
    )
