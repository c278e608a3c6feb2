"""The address plans' allocations (table ``addresses``): which address of a
network's plan each VM was given. An address is given at most once per network
(a unique constraint decides between servers) and freed with its VM.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .database import Database
from .tables import AddressRow


class AddressStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def allocate(self, network: str, vm_id: int, candidates: Iterable[str]) -> str | None:
        """Give ``vm_id`` the first of ``candidates`` that no VM holds on ``network``
        (its own address again if it has one); None when every one is taken."""
        held = self.of(vm_id)
        if held is not None:
            return held
        for address in candidates:
            if self._taken(network, address):
                continue
            try:
                with self.db.tx() as s:
                    s.add(AddressRow(network=network, address=address, vm_id=vm_id))
                return address
            except IntegrityError:
                held = self.of(vm_id)
                if held is not None:  # a retry of ours got there first
                    return held
                continue  # another server took it meanwhile: the next one
        return None

    def _taken(self, network: str, address: str) -> bool:
        with self.db.read() as s:
            q = select(AddressRow.id).where(
                AddressRow.network == network, AddressRow.address == address
            )
            return s.scalar(q) is not None

    def of(self, vm_id: int) -> str | None:
        with self.db.read() as s:
            return s.scalar(select(AddressRow.address).where(AddressRow.vm_id == vm_id))

    def in_use(self, network: str | None = None) -> dict[str, dict[str, int]]:
        """Per network, address -> the VM holding it."""
        out: dict[str, dict[str, int]] = {}
        with self.db.read() as s:
            q = select(AddressRow.network, AddressRow.address, AddressRow.vm_id)
            if network is not None:
                q = q.where(AddressRow.network == network)
            for net, address, vm_id in s.execute(q):
                out.setdefault(net, {})[address] = vm_id
        return out

    def release(self, s: Session, vm_id: int) -> None:
        """In the caller's transaction: the VM is gone, its address is free again."""
        s.execute(delete(AddressRow).where(AddressRow.vm_id == vm_id))
