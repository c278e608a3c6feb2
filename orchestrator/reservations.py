"""Check-out, check-in and extension of pool VMs.

A reservation id is a random 256-bit secret, shown once to the caller and
stored only as its SHA-256 (a fast hash is right for a random secret of this
size; slow password hashes are for secrets people choose). Only its holder can
check the VM in or extend it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .access import SYSTEM, Principal
from .errors import (
    BadRequest,
    Conflict,
    FabricError,
    Forbidden,
    GuestError,
    NotFound,
    Unavailable,
)
from .model import VmState
from .pools import PoolConfig, PoolService
from .registry import Registry, VmRow
from .registry.reservations import HasKeys
from .sshkeys import PublicKey, parse_key

if TYPE_CHECKING:
    from .guests import Guests
    from .quotas import Quotas
    from .sshkeys import Keys
    from .worker import Worker

log = logging.getLogger(__name__)

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
    keys: tuple[str, ...] = ()  # fingerprints of the SSH keys put into its guest


class Reservations:
    def __init__(
        self,
        registry: Registry,
        pools: PoolService,
        worker: Worker,
        retry_after: int = 5,
        *,
        guests: Guests | None = None,
        keys: Keys | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self.registry = registry
        self.pools = pools
        self.worker = worker  # woken when a pool runs dry; cleans a returned VM at once
        self.retry_after = retry_after  # seconds a caller is told to wait when nothing is ready
        self.guests = guests  # puts borrowers' keys into guests (None: keys refused)
        self.keys = keys  # the keys users registered
        self.quotas = quotas  # None: no user has a quota (tests of the mechanics)

    def _candidates(
        self, pool: str | None, tid: int | None, image_id: int | None, by: Principal
    ) -> list[PoolConfig]:
        if pool is not None:
            p = self.pools.pool(pool)
            if not _may_use(p, by):
                raise Forbidden(f"pool {pool} is not open to {by.label}")
            return [p]
        matches = [
            p
            for p in self.pools.pools.values()
            if (tid is None or p.tid == tid)
            and (image_id is None or p.image_id == image_id)
            and _may_use(p, by)
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
        by: Principal = SYSTEM,
        ssh_key: str | None = None,
    ) -> list[Checkout]:
        """Hand ``count`` ready VMs of one pool to ``by`` (within their quota), all or
        nothing. Their registered SSH keys and ``ssh_key`` are put into each guest
        (a 502 if that fails: the VMs go back to be cleaned)."""
        by.require_writer("check VMs out")
        quota = self.quotas.of(by) if self.quotas is not None else None
        # One VM, no quota, no key given, a fabric that puts keys into guests (so
        # that looking the user's keys up cannot refuse the call): the fast path.
        fast = (
            count == 1
            and ssh_key is None
            and self.guests is not None
            and (quota is None or not quota.limited)
        )
        keys = [] if fast else self._keys_for(by, ssh_key)
        candidates = self._candidates(pool, tid, image_id, by)
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
        if fast:
            # the common case: one statement per pool tried, the user's keys looked
            # for in its transaction (nothing ready anywhere, or keys to put into the
            # guest: the full check-out below, which also counts what each pool had)
            keyless = (by.name or "") if self.keys is not None else None
            for p in candidates:
                expires = now + timedelta(hours=hours if hours is not None else p.lifetime)
                vm = self.registry.reservations.checkout_one(
                    p.name, digest(tokens[0]), expires, holder=by.name, keyless=keyless
                )
                if isinstance(vm, HasKeys):
                    keys = self._keys_for(by, ssh_key)
                    break
                if vm is not None:
                    return self._handed([vm], tokens, p.name, keys)
        for p in candidates:
            expires = now + timedelta(hours=hours if hours is not None else p.lifetime)
            got = self.registry.reservations.checkout(
                [p.name], [digest(t) for t in tokens], expires, seen, holder=by.name, quota=quota
            )
            if got is not None:
                name, vms = got
                return self._handed(vms, tokens, name, keys)
        self.worker.wake()  # a pool ran dry: refill soon
        if count == 1:
            err = PoolEmpty("No VM is available right now, retry later")
        else:
            names = ", ".join(p.name for p in candidates)
            err = PoolEmpty(f"{count} VMs are not available right now in pool {names}, retry later")
        err.retry_after = self.retry_after
        err.ready_seen = seen
        raise err

    def _handed(
        self, vms: list[VmRow], tokens: list[str], pool: str, keys: list[PublicKey]
    ) -> list[Checkout]:
        if keys:
            self._give_keys(vms, tokens, keys)
        prints = tuple(k.fingerprint for k in keys)
        return [Checkout(vm, tok, pool, prints) for vm, tok in zip(vms, tokens, strict=True)]

    def _keys_for(self, by: Principal, ssh_key: str | None) -> list[PublicKey]:
        keys = self.keys.for_user(by.name) if self.keys is not None else []
        if ssh_key is not None:
            given = parse_key(ssh_key)
            if given not in keys:
                keys.append(given)
        if keys and self.guests is None:
            raise BadRequest("this fabric cannot put SSH keys into guests")
        return keys

    def _give_keys(self, vms: list[VmRow], tokens: list[str], keys: list[PublicKey]) -> None:
        """Put the borrower's keys into each guest; on failure, give every VM back."""
        assert self.guests is not None
        try:
            for vm in vms:
                self.guests.add_keys(vm, keys)
        except FabricError as e:
            for vm, tok in zip(vms, tokens, strict=True):
                with contextlib.suppress(FabricError):
                    self.registry.reservations.end(vm.id, digest(tok), event_kind="vm.checkin")
                self.worker.clean_now(vm.id)
            raise GuestError(
                f"could not put your SSH keys into vmid {', '.join(str(v.id) for v in vms)} "
                f"({e.message}); they go back to their pool: retry"
            ) from None
        self.registry.reservations.keys_given([vm.id for vm in vms], len(keys))

    def checkin(
        self, *, vm_id: int | None, ip: str | None, token: str | None, by: Principal = SYSTEM
    ) -> int:
        """End a reservation: its secret, from its holder (or an admin); or, without
        the secret (``token`` None), from the authenticated holder themselves or an
        admin. The borrower's keys leave the guest now; the pool's cleanup follows.
        Returns the VM's id."""
        if token is None:
            if vm_id is None:
                raise BadRequest("vmid is required to check in without the reservation_id")
            vm = self.registry.vms.get(vm_id)
            if not _holds(by, vm):
                raise BadRequest(
                    "reservation_id is required (only the VM's holder, with their own "
                    "token, or an admin may leave it out)"
                )
            _require_holder(by, vm, "check in")
            done = self.registry.reservations.end(
                vm.id, None, event_kind="vm.checkin", held_by=vm.held_by
            )
            if vm.borrower_keys and self.guests is not None:
                self._remove_keys(done)
            self.worker.clean_now(done.id)  # a VM came back: clean it now
            return done.id
        d = check_token(token)

        def may(vm_id: int, state: str, held_by: str | None) -> None:
            _require_holder_of(by, vm_id, state, held_by, "check in")

        back = self.registry.reservations.end_held(vm_id, ip, d, may, take=not self.worker.stopping)
        if back.borrower_keys and self.guests is not None:
            self._remove_keys(self.registry.vms.get(back.vm_id))
        if back.taken:
            self.worker.clean_taken(back.vm_id)  # queued: a cleaner picks it up
        return back.vm_id

    def _remove_keys(self, vm: VmRow) -> None:
        assert self.guests is not None
        try:
            self.guests.remove_keys(vm)
        except FabricError as e:  # the cleanup tries again, or rebuilds the VM
            log.warning("vmid %d: the borrower's keys stay until cleanup: %s", vm.id, e)

    def extend(self, vm_id: int, token: str, hours: float, *, by: Principal = SYSTEM) -> datetime:
        d = check_token(token)
        vm = self.registry.vms.get(vm_id)
        _require_holder(by, vm, "extend")
        pool = self.pools.pools.get(vm.pool or "")
        cap = pool.lifetime_max if pool else 0.0
        return self.registry.reservations.extend(vm_id, d, hours, cap)

    def checkout_pools(self, wanted: dict[str, int], *, by: Principal = SYSTEM) -> list[Checkout]:
        """Check ``wanted`` VMs (pool -> count) out for ``by``, all or nothing across
        pools (vmpooler's multi-pool check-out): if one pool cannot give its VMs,
        those already taken go back and nothing is handed out (503 naming the pool
        and how many it had ready). Each pool's VMs are one check-out (quotas, pool
        users and keys apply)."""
        if not self.pools.configured:
            raise BadRequest("check-out is not enabled: no pools are configured")
        taken: list[Checkout] = []
        try:
            for pool, n in wanted.items():
                taken.extend(self.checkout(pool=pool, count=n, by=by))
        except Unavailable as e:
            self.give_back(taken)
            got = list(dict.fromkeys(c.pool for c in taken))
            pool = next(p for p in wanted if p not in got)
            have = (getattr(e, "ready_seen", None) or {}).get(pool, 0)
            err = Unavailable(
                f"pool {pool} has {have} ready VM{'s' if have != 1 else ''}, "
                f"{wanted[pool]} wanted; nothing was checked out"
                + (f" (also given back: {', '.join(got)})" if got else "")
            )
            err.retry_after = getattr(e, "retry_after", None)
            raise err from None
        except BaseException:
            self.give_back(taken)
            raise
        return taken

    def give_back(self, got: list[Checkout]) -> None:
        """Undo check-outs nobody was shown (a multi-pool check-out that could not be
        completed): VMs whose guests got no keys go straight back to ready, the others
        to be cleaned."""
        for c in got:
            clean = bool(c.keys)
            try:
                self.registry.reservations.end(
                    c.vm.id,
                    digest(c.reservation_id),
                    event_kind="vm.checkout_undone",
                    state=VmState.CLEANING if clean else VmState.READY,
                )
            except FabricError as e:  # the reaper ends it at its expiry
                log.warning("vmid %d: could not give it back: %s", c.vm.id, e)
                continue
            if clean:
                self.worker.clean_now(c.vm.id)

    def set_lifetime(self, vm: VmRow, hours: float, *, by: Principal = SYSTEM) -> datetime:
        """The reservation of ``vm`` ends ``hours`` after its check-out (vmpooler's
        lifetime): its holder or an admin, within the pool's ``lifetime_max``."""
        _require_holder(by, vm, "change the lifetime of")
        if not _holds(by, vm):
            raise Forbidden(f"{by.label} does not hold vmid {vm.id}")
        pool = self.pools.pools.get(vm.pool or "")
        cap = pool.lifetime_max if pool else 0.0
        return self.registry.reservations.set_lifetime(vm.id, hours, cap, held_by=vm.held_by)

    def end_and_destroy(self, vm: VmRow, *, by: Principal = SYSTEM) -> None:
        """vmpooler's delete: the holder (or an admin) ends the reservation and the VM
        is destroyed; its pool builds a new one. Its hostname is never given again.
        A VM that is not checked out is not deleted so (409): its reservation has
        ended already (the fabric's /vm/destroy is an admin's way to destroy it)."""
        by.require_writer(f"delete vmid {vm.id}")
        if vm.state != VmState.IN_USE:
            raise Conflict(f"{vm.hostname or vm.id} is not checked out (it is {vm.state})")
        _require_holder(by, vm, "delete")
        if not _holds(by, vm):
            raise Forbidden(f"{by.label} does not hold vmid {vm.id}")
        self.registry.reservations.end(
            vm.id,
            None,
            event_kind="vm.checkin",
            held_by=vm.held_by,
            state=VmState.FAILED,
            error=f"deleted by {by.label}",
        )
        # Failed: never served again. If the pool worker is retiring it already,
        # or its host is away, the worker destroys it.
        try:
            self.pools.fabric.destroy_vm(vm.id, force=True, by=SYSTEM)
        except FabricError as e:
            log.warning("vmid %d: deleted; the pool worker destroys it: %s", vm.id, e)


def _may_use(pool: PoolConfig, by: Principal) -> bool:
    """A pool with ``users`` is open to those users (and admins) only."""
    return pool.users is None or by.admin or (by.name is not None and by.name in pool.users)


def _holds(by: Principal, vm: VmRow) -> bool:
    """Whether ``by`` holds ``vm``'s reservation themselves, or is an admin."""
    return by.admin or (by.authenticated and by.name is not None and vm.held_by == by.name)


def _require_holder(by: Principal, vm: VmRow, what: str) -> None:
    _require_holder_of(by, vm.id, vm.state, vm.held_by, what)


def _require_holder_of(
    by: Principal, vm_id: int, state: str, held_by: str | None, what: str
) -> None:
    by.require_writer(f"{what} VMs")
    if state != VmState.IN_USE:
        return  # not checked out: the registry says so (409)
    if by.admin or (by.name is not None and held_by == by.name):
        return
    raise Forbidden(f"{by.label} may not {what} vmid {vm_id}: another user holds it")
