"""The libvirt driver: discovery, image staging, domain create/destroy, listing.

Contract (after nova's virt driver):
- ``create`` either leaves a running domain with its disk, or raises after
  removing whatever it made (domain, definition, disk). Never half of one.
- ``destroy`` of a domain the host does not have succeeds: the goal is absence.
- Every call is time-limited; a dead host raises HostUnreachable/HostTimeout.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import libvirt

from ..errors import FabricError
from .base import CHUNK, GIB, MIB, POOL_NAME
from .connection import Fence
from .domains import DomainsMixin
from .moving import MovingMixin
from .networks import NetworkInfo, NetworksMixin
from .power import ConsoleTail, PowerMixin
from .records import DomainRecord, HostFacts, HostTarget, StagedImage, VmPlan, is_test_uri
from .snapshots import SnapshotsMixin
from .storage import Opener, StorageMixin

__all__ = [
    "CHUNK",
    "ConsoleTail",
    "GIB",
    "MIB",
    "POOL_NAME",
    "DomainRecord",
    "Fence",
    "HostFacts",
    "HostTarget",
    "LibvirtDriver",
    "NetworkInfo",
    "Opener",
    "StagedImage",
    "VmPlan",
    "is_test_uri",
    "no_errors",
]

log = logging.getLogger(__name__)


class LibvirtDriver(
    DomainsMixin, StorageMixin, NetworksMixin, PowerMixin, MovingMixin, SnapshotsMixin
):
    """The one object the fabric holds: domains (domains.py), storage (storage.py),
    networks (networks.py), power, size and console (power.py), moves between
    hosts (moving.py) and snapshots (snapshots.py) on the connections and pools of
    base.py."""


@contextlib.contextmanager
def no_errors() -> Iterator[None]:
    try:
        yield
    except (FabricError, libvirt.libvirtError) as e:
        log.warning("ignored: %s", e)
