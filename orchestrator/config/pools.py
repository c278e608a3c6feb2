"""What pools refer to: ``instance_type`` a tid of the VM types file, ``image`` an
image of the images file (by name, or by its registry id)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..model import Inventory, NetworkMode
from .base import show
from .schema import Config

if TYPE_CHECKING:
    from ..registry.inventory import InventoryStore


@dataclass(frozen=True)
class PoolConfig:
    """A pool as the pool service runs it: its type and image resolved."""

    name: str
    tid: int
    image_id: int
    size: int  # ready VMs to keep
    max: int  # VMs in all (any state)
    lifetime: float  # hours a checkout lasts by default
    lifetime_max: float  # hours a checkout may last in all, extensions included
    cleanup: str  # "tmp": empty /tmp over SSH; "reset": the disk back to the image
    ready_check: str = "ssh"  # "ssh": ready once the guest answers SSH; "none": at once
    users: tuple[str, ...] | None = None  # who may check out (and admins); None: anyone

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "instance_type": self.tid,
            "image_id": self.image_id,
            "size": self.size,
            "max": self.max,
            "lifetime": self.lifetime,
            "lifetime_max": self.lifetime_max,
            "cleanup": self.cleanup,
            "ready_check": self.ready_check,
            "users": list(self.users) if self.users is not None else None,
        }


def _some(values: Iterable[Any], most: int = 12) -> str:
    items = [str(v) for v in values]
    return ", ".join(items[:most]) + (", ..." if len(items) > most else "") or "none"


def _resolve(
    config: Config,
    tids: set[int],
    images: Mapping[str, int | None],
    image_ids: set[int] | None,
) -> list[PoolConfig]:
    """PoolConfigs, or ConfigError naming every reference that is not there.
    ``image_ids`` None: integer images are not checked (nor resolved)."""
    problems = []
    pools = []
    for i, p in enumerate(config.pools):
        if p.instance_type not in tids:
            problems.append(
                f"{config.locate('pools', i, 'instance_type')}: {p.instance_type} is not a tid "
                f"of the VM types file (tids: {_some(sorted(tids))})"
            )
        image_id: int | None = None
        if isinstance(p.image, str):
            if p.image not in images:
                problems.append(
                    f"{config.locate('pools', i, 'image')}: {show(p.image)} is not in the "
                    f"images file (names: {_some(images)})"
                )
            image_id = images.get(p.image)
        elif image_ids is not None:
            if p.image not in image_ids:
                problems.append(
                    f"{config.locate('pools', i, 'image')}: {p.image} is not the id of an "
                    f"image of the images file (ids: {_some(sorted(image_ids))})"
                )
            image_id = p.image
        pools.append(
            PoolConfig(
                p.name,
                p.instance_type,
                image_id if image_id is not None else 0,
                p.size,
                p.most,
                p.lifetime,
                p.lifetime_max,
                p.cleanup,
                p.ready_check,
                tuple(p.users) if p.users is not None else None,
            )
        )
    if problems:
        raise ConfigError("\n".join(problems))
    return pools


def check_pools(config: Config, inventory: Inventory) -> None:
    """Check the pools against the input files before anything starts: each
    ``instance_type`` a tid of the VM types file, each image name in the images
    file. (An integer image is a registry id: resolve_pools checks it.)"""
    _resolve(
        config,
        tids={t.tid for t in inventory.types},
        images=dict.fromkeys(i.name for i in inventory.images),
        image_ids=None,
    )


def resolve_pools(config: Config, inventory: InventoryStore) -> list[PoolConfig]:
    """The pools as the pool service runs them, once the files are synced into the
    registry: image names (or ids) -> registry image ids. ConfigError names each
    pool key whose type or image the registry does not list."""
    listed = inventory.images()
    return _resolve(
        config,
        tids={t.tid for t in inventory.types()},
        images={i.name: i.id for i in listed},
        image_ids={i.id for i in listed},
    )


def reach_warnings(config: Config, hosts: Iterable[tuple[str, str | None, str]]) -> list[str]:
    """Pools whose VMs the fabric could never reach (to check they are up, to empty
    their /tmp): hosts on user networking. ``hosts``: (label, network, uri) each, the
    network None when the pm file sets none (a session daemon then has user
    networking; another host gets libvirt's default network if it has one)."""
    unreachable = []
    for label, network, uri in hosts:
        if network is None:
            network = "user" if uri.rstrip("/").endswith("/session") else None
        if network is not None and not NetworkMode.parse(network).reachable:
            unreachable.append(label)
    if not unreachable:
        return []
    out = []
    for i, p in enumerate(config.pools):
        if p.ready_check != "ssh" and p.cleanup != "tmp":
            continue  # it never logs into its guests
        out.append(
            f"{config.locate('pools', i)}: warning: pool {p.name}'s VMs on "
            f"{', '.join(unreachable)} (network=user) can never be reached, so they fail "
            "their readiness check or cleanup: set network= to bridge:NAME, network:NAME "
            "or forward for those hosts"
        )
    return out


def sharing_warnings(config: Config) -> list[str]:
    """Pools whose guests pass from one user to another with only ``/tmp`` emptied: a
    borrower is root on the guest (``guest.user``), and ``cleanup: tmp`` undoes
    nothing else they did but the keys the fabric gave them; ``reset`` gives every
    borrower the image afresh. And ``users:`` that mean nothing with auth off."""
    out = []
    for i, p in enumerate(config.pools):
        if not config.auth.enabled:
            if p.users is not None:
                out.append(
                    f"{config.locate('pools', i, 'users')}: warning: pool {p.name}'s users "
                    "have no effect while authentication is off (auth.enabled)"
                )
            continue
        shared = p.users is None or len(p.users) > 1
        if shared and p.cleanup == "tmp":
            who = "every user" if p.users is None else f"{len(p.users)} users"
            out.append(
                f"{config.locate('pools', i, 'cleanup')}: warning: pool {p.name} serves {who} "
                f"with cleanup tmp: a borrower is {config.guest.user} on its guests, and "
                "emptying /tmp (and removing their keys) does not undo what else they "
                "changed; set cleanup: reset to give each borrower the image afresh"
            )
    return out
