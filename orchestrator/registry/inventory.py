"""What the three input files list (tables ``hosts``, ``images``, ``vm_types``),
kept in step with the files, and reads of images and VM types.

Ids stay stable across restarts: a record is matched to its row by its key
(a host's URI, an image's location, a type's tid). A record that left its file
is kept, marked ``in_inventory = False``, because VMs may still refer to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import Conflict, NotFound
from ..model import HostSpec, HostStatus, ImageSpec, Inventory
from .database import Database
from .hosts import HostChanges
from .tables import HostRow, ImageRow, TypeRow, VmRow, VolumeRow


class InventoryStore:
    def __init__(self, db: Database, changes: HostChanges) -> None:
        self.db = db
        self.changes = changes
        self.generation = 0  # grows with every sync (types and images may be cached)

    def sync(self, inv: Inventory) -> None:
        """Make the registry's hosts, images and types match the files."""
        self.changes.mark_all()
        self.generation += 1
        with self.db.tx() as s:
            _sync_hosts(s, inv.hosts)
            _upsert_and_retire(
                s,
                ImageRow,
                "location",
                inv.images,
                lambda i: i.location,
                lambda row, i: _fill(row, name=i.name, spec=image_spec_to_dict(i)),
            )
            _upsert_and_retire(
                s,
                TypeRow,
                "tid",
                inv.types,
                lambda t: t.tid,
                lambda row, t: _fill(row, name=t.name, cpu=t.cpu, ram=t.ram, disk=t.disk),
            )

    def reload_hosts(self, hosts: tuple[HostSpec, ...]) -> HostReload:
        """Make the registry's hosts match a physical machines file read again, in one
        transaction: added, changed (its line's settings), retired. A host that would
        leave must be empty: Conflict, naming each such host and what is on it, and
        nothing changes. The leaving hosts' rows are locked first, so no claim lands
        on them between the check and the change."""
        self.changes.mark_all()
        with self.db.tx() as s:
            before = {row.key: row for row in s.scalars(select(HostRow))}
            keys = {h.key for h in hosts}
            leaving = [r.id for k, r in before.items() if r.in_inventory and k not in keys]
            problems = []
            if leaving:
                rows = s.scalars(
                    select(HostRow).where(HostRow.id.in_(leaving)).with_for_update()
                ).all()
                for row in rows:
                    vms = list(s.scalars(select(VmRow.id).where(VmRow.host_id == row.id)))
                    vols = list(s.scalars(select(VolumeRow.id).where(VolumeRow.host_id == row.id)))
                    if vms or vols:
                        what = []
                        if vms:
                            what.append(f"vms {', '.join(map(str, sorted(vms)))}")
                        if vols:
                            what.append(f"volumes {', '.join(map(str, sorted(vols)))}")
                        problems.append(
                            f"pmid {row.id} ({row.label}) is not empty: it has {' and '.join(what)}"
                        )
            if problems:
                raise Conflict(
                    "the physical machines file removes hosts that are not empty; nothing "
                    f"was changed: {'; '.join(problems)}"
                )
            listed = {k: r for k, r in before.items() if r.in_inventory}
            changed = [k for k, r in listed.items() if k in keys and _differs(r, hosts, k)]
            _sync_hosts(s, hosts)
            s.flush()
            after = {row.key: row for row in s.scalars(select(HostRow))}
            report = HostReload(
                added=[after[h.key].id for h in hosts if h.key not in listed],
                changed=[after[k].id for k in changed],
                removed=sorted(leaving),
            )
            report.unchanged = len(hosts) - len(report.added) - len(report.changed)
            return report

    def images(self) -> list[ImageRow]:
        return self._listed(ImageRow, ImageRow.id)

    def image(self, image_id: int) -> ImageRow:
        return self._one(ImageRow, image_id, f"image_id {image_id}")

    def image_spec(self, image_id: int) -> ImageSpec:
        return image_spec_from_row(self.image(image_id))

    def types(self) -> list[TypeRow]:
        return self._listed(TypeRow, TypeRow.tid)

    def vm_type(self, tid: int) -> TypeRow:
        return self._one(TypeRow, tid, f"instance_type {tid}")

    def _listed(self, model: Any, order: Any) -> list[Any]:
        with self.db.read() as s:
            return list(
                s.scalars(select(model).where(model.in_inventory.is_(True)).order_by(order))
            )

    def _one(self, model: Any, key: int, what: str) -> Any:
        with self.db.read() as s:
            row = s.get(model, key)
        if row is None or not row.in_inventory:
            raise NotFound(f"{what} does not exist")
        return row


@dataclass
class HostReload:
    """What a reload of the physical machines file changed (pmids)."""

    added: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    unchanged: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "unchanged": self.unchanged,
        }


def _differs(row: HostRow, hosts: Iterable[HostSpec], key: str) -> bool:
    """Whether the file's line for ``key`` says something else than the row."""
    h = next(h for h in hosts if h.key == key)
    declared = (h.label, h.uri, h.address, h.domain_type, h.network, h.pool_path)
    declared += (h.cpu, h.ram, h.disk)
    have = (row.label, row.uri, row.address, row.domain_type, row.network_setting)
    have += (row.pool_path, row.cpu_override, row.ram_override, row.disk_override)
    return declared != have or (h.arch is not None and h.arch != row.arch)


def _sync_hosts(s: Session, hosts: Iterable[HostSpec]) -> None:
    _upsert_and_retire(
        s,
        HostRow,
        "key",
        hosts,
        lambda h: h.key,
        lambda row, h: _fill(
            row,
            label=h.label,
            uri=h.uri,
            address=h.address,
            domain_type=h.domain_type,
            network_setting=h.network,
            # a declared network is what VMs get; none: discovery decides
            **({"network": h.network} if h.network else {}),
            pool_path=h.pool_path,
            migrate_address=h.migrate_address,
            # declared, else what discovery found (kept: a reload must not forget it)
            arch=h.arch or row.arch,
            cpu_override=h.cpu,
            ram_override=h.ram,
            disk_override=h.disk,
        ),
        new={"status": HostStatus.UNKNOWN},
    )


def _upsert_and_retire(
    s: Session,
    model: Any,
    key: str,
    specs: Iterable[Any],
    key_of: Callable[[Any], Any],
    fill: Callable[[Any, Any], None],
    new: dict[str, Any] | None = None,
) -> None:
    """Rows of ``model`` for ``specs`` (matched on column ``key``): updated, or
    added; rows whose key no spec has any more are retired, not deleted."""
    known = {getattr(row, key): row for row in s.scalars(select(model))}
    seen = set()
    for spec in specs:
        k = key_of(spec)
        seen.add(k)
        row = known.get(k)
        if row is None:
            row = model(**{key: k, **(new or {})})
            s.add(row)
        fill(row, spec)
        row.in_inventory = True
    for k, row in known.items():
        if k not in seen:
            row.in_inventory = False


def _fill(row: Any, **values: Any) -> None:
    for name, value in values.items():
        setattr(row, name, value)


def image_spec_to_dict(spec: ImageSpec) -> dict:
    return {
        "name": spec.name,
        "path": spec.path,
        "user": spec.user,
        "host": spec.host,
        "port": spec.port,
        "format": spec.format,
        "arch": spec.arch,
        "kernel": spec.kernel,
        "initrd": spec.initrd,
        "cmdline": spec.cmdline,
    }


def image_spec_from_row(row: ImageRow) -> ImageSpec:
    return ImageSpec(**dict(row.spec))
