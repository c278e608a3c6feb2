"""The registry: every fact the fabric knows, one store per aggregate.

All stores share one ``Database`` (engine and transactions). Nothing outside
this package writes SQL; rows come back detached, with named fields.

    registry.hosts         hosts: reads, discovery, the scheduler's view    hosts.py
    registry.inventory     the three files synced: hosts, images, types     inventory.py
    registry.claims        capacity taken on hosts by VMs and volumes        claims.py
    registry.vms           VMs: claims, state transitions, who works on one  vms.py
    registry.reservations  check-out, check-in, extension, expiry            reservations.py
    registry.requests      on-demand requests and the VMs set aside         ondemand.py
    registry.moves         maintenance, VMs moving between hosts, drains    moves.py
    registry.volumes       volumes: claims, state transitions                volumes.py
    registry.addresses     the address plans' allocations                   addresses.py
    registry.staging       images copied onto hosts                          staging.py
    registry.cluster       servers, leases, liveness of owners               cluster.py
    registry.schedules     schedules, their windows and VMs                  schedules.py
    registry.auth          tokens and failed logins                          auth.py
    registry.quotas        each user's use, checked against their limits     quotas.py
    registry.keys          users' SSH public keys                           keys.py
    registry.events        what happened                                     events.py
    registry.meta          schema and installation id                        meta.py
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from . import tables_access, tables_auth, tables_schedules  # noqa: F401 - tables join Base
from .addresses import AddressStore
from .auth import AuthStore
from .claims import Claims
from .cluster import ClusterStore
from .database import Database, make_engine
from .events import EventStore
from .hosts import HostStore
from .inventory import InventoryStore, image_spec_from_row, image_spec_to_dict
from .keys import KeyStore
from .meta import MetaStore
from .moves import MoveStore
from .ondemand import RequestStore
from .quotas import QuotaStore
from .reservations import ReservationStore
from .schedules import ScheduleStore
from .staging import StagingStore
from .tables import (
    ClaimRow,
    DrainRow,
    EventRow,
    HostnameRow,
    HostRow,
    ImageRow,
    MigrationRow,
    RequestRow,
    StagedImageRow,
    TypeRow,
    VmRow,
    VolumeRow,
)
from .vms import VmStore
from .volumes import VolumeStore


class Registry:
    """The stores of one registry database, wired together."""

    def __init__(self, url: str, *, dead_after: float = 10.0) -> None:
        self.url = url
        self.db = Database(url)
        self.meta = MetaStore(self.db)
        self.cluster = ClusterStore(self.db, dead_after)
        self.hosts = HostStore(self.db)
        self.inventory = InventoryStore(self.db, self.hosts.changes)
        self.claims = Claims(self.db, self.hosts.changes)
        self.quotas = QuotaStore(self.db)
        self.volumes = VolumeStore(
            self.db, self.cluster, self.claims, self.quotas, self.meta.installation_id
        )
        self.addresses = AddressStore(self.db)
        self.vms = VmStore(
            self.db,
            self.cluster,
            self.claims,
            self.volumes,
            self.addresses,
            self.quotas,
            self.meta.installation_id,
        )
        self.moves = MoveStore(self.db, self.cluster, self.claims, self.hosts.changes)
        self.reservations = ReservationStore(self.db, self.quotas, self.cluster)
        self.requests = RequestStore(self.db, self.quotas)
        self.keys = KeyStore(self.db)
        self.staging = StagingStore(self.db)
        self.schedules = ScheduleStore(self.db)
        self.auth = AuthStore(self.db)
        self.events = EventStore(self.db)

    def create_schema(self) -> None:
        self.meta.create_schema()

    @property
    def installation_id(self) -> str:
        return self.meta.installation_id()

    @contextmanager
    def startup_lock(self) -> Iterator[None]:
        with self.db.startup_lock():
            yield

    def close(self) -> None:
        self.db.close()


__all__ = [
    "ClaimRow",
    "DrainRow",
    "EventRow",
    "HostnameRow",
    "HostRow",
    "MigrationRow",
    "ImageRow",
    "Registry",
    "RequestRow",
    "StagedImageRow",
    "TypeRow",
    "VmRow",
    "VolumeRow",
    "image_spec_from_row",
    "image_spec_to_dict",
    "make_engine",
]
