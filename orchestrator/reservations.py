"""Check-out, check-in and extension of pool VMs.

A reservation id is a random 256-bit secret, shown once to the caller and
stored only as its SHA-256 (a fast hash is right for a random secret of this
size; slow password hashes are for secrets people choose). Only its holder can
check the VM in or extend it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import BadRequest, NotFound, Unavailable
from .fabric import Fabric
from .pools import PoolConfig, PoolService
from .registry import VmRow

TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_token(token: Any) -> str:
    """The digest of a well-formed reservation id; 400 for anything else."""
    if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
        raise BadRequest("reservation_id is malformed (43 URL-safe base64 characters expected)")
    return digest(token)


class PoolEmpty(Unavailable):
    """Nothing ready; ``ready_seen`` is what the check-out transaction found per pool."""

    ready_seen: dict[str, int]


@dataclass(frozen=True)
class Checkout:
    vm: VmRow
    reservation_id: str
    pool: str


class Reservations:
    def __init__(
        self,
        fabric: Fabric,
        pools: PoolService,
        refill: Callable[[], None] | None = None,
        clean: Callable[[int], None] | None = None,
    ) -> None:
        self.fabric = fabric
        self.pools = pools
        self.registry = fabric.registry
        self._refill_cb = refill  # a pool ran dry: refill soon
        self._clean = clean  # a VM came back: clean it now

    def _candidates(
        self, pool: str | None, tid: int | None, image_id: int | None
    ) -> list[PoolConfig]:
        if pool is not None:
            return [self.pools.pool(pool)]
        matches = [
            p
            for p in self.pools.pools.values()
            if (tid is None or p.tid == tid) and (image_id is None or p.image_id == image_id)
        ]
        if not matches:
            if not self.pools.pools:
                raise NotFound("no pools are configured")
            want = []
            if tid is not None:
                want.append(f"instance_type {tid}")
            if image_id is not None:
                want.append(f"image_id {image_id}")
            raise NotFound(f"no pool serves {' and '.join(want)}")
        return matches

    def checkout(
        self,
        *,
        pool: str | None = None,
        tid: int | None = None,
        image_id: int | None = None,
        count: int = 1,
        hours: float | None = None,
    ) -> list[Checkout]:
        candidates = self._candidates(pool, tid, image_id)
        if hours is not None:
            too_long = [p.name for p in candidates if hours > p.lifetime_max]
            if len(too_long) == len(candidates):
                cap = max(p.lifetime_max for p in candidates)
                raise BadRequest(f"lifetime {hours:g} h is past the pool's cap of {cap:g} h")
            candidates = [p for p in candidates if p.name not in too_long]
        big_enough = [p for p in candidates if self.pools.max_of(p.name) >= count]
        if not big_enough:
            most = max(self.pools.max_of(p.name) for p in candidates)
            raise BadRequest(f"count {count} is more than the pool can ever hold ({most})")
        candidates = big_enough
        tokens = [new_token() for _ in range(count)]
        now = datetime.now(UTC)
        seen: dict[str, int] = {}
        for p in candidates:
            expires = now + timedelta(hours=hours if hours is not None else p.lifetime)
            got = self.registry.checkout([p.name], [digest(t) for t in tokens], expires, seen)
            if got is not None:
                name, vms = got
                return [Checkout(vm, tok, name) for vm, tok in zip(vms, tokens, strict=True)]
        self._refill()
        if count == 1:
            err = PoolEmpty("No VM is available right now, retry later")
        else:
            names = ", ".join(p.name for p in candidates)
            err = PoolEmpty(f"{count} VMs are not available right now in pool {names}, retry later")
        err.retry_after = self.pools.config.workers.retry_after
        err.ready_seen = seen
        raise err

    def checkin(self, *, vm_id: int | None, ip: str | None, token: str) -> VmRow:
        d = check_token(token)
        if vm_id is None:
            vm_id = self.registry.reserved_vm(vm_id=None, ip=ip, digest=d).id
        done = self.registry.end_reservation(vm_id, d, event_kind="vm.checkin")
        if self._clean is not None:
            self._clean(done.id)
        return done

    def extend(self, vm_id: int, token: str, hours: float) -> datetime:
        d = check_token(token)
        vm = self.registry.vm(vm_id)
        pool = self.pools.pools.get(vm.pool or "")
        cap = pool.lifetime_max if pool else 0.0
        return self.registry.extend_reservation(vm_id, d, hours, cap)

    def _refill(self) -> None:
        if self._refill_cb is not None:
            self._refill_cb()
