"""Requests that wait for capacity ("on demand", vmpooler's ``/ondemandvm``).

A request asks for VMs of some pools (``{"a": 2, "b": 1}``) and gets an id at once.
It lives in the registry (table ``requests``), so a restarted server, or another
one, carries on with it. The pool worker (worker.py), on the server holding the
pool-worker lease, fulfils pending requests in each pass:

- **fair order**: a request goes before another if its requester has fewer earlier
  pending requests, then by arrival; a request that already has VMs set aside goes
  before one that has none (it keeps its place: a newcomer cannot leave it holding
  VMs it can never complete);
- **whole request first**: the first request short of a pool's VMs takes every
  ready VM of that pool it needs; later requests get none of that pool until it is
  complete (spreading VMs thinly could leave every request short forever);
- a VM is **set aside** by the registry's reservation (ready -> in-use, held by the
  requester, a reservation hash of a secret nobody is shown, ``request_id``), within
  the requester's quota; once a request holds all its VMs it is **ready** and their
  lifetimes start;
- the refill counts outstanding demand (VMs wanted beyond those held), within each
  pool's ``max`` and ``limits.max_vms`` (pools.py ``builds_wanted``);
- a request not met by its deadline (``ondemand.timeout``) **fails** with a message
  saying which pool was short and why; the VMs set aside go back to ready (they
  were never used). A cancel does the same; a ready request's cancel ends its VMs'
  reservations (they are cleaned, as at a check-in).
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .access import Principal, Role
from .clock import as_utc, utcnow
from .config import OnDemandConfig
from .errors import BadRequest, FabricError, Forbidden, NotFound
from .model import RequestState, is_name
from .registry import Registry, RequestRow, VmRow
from .registry.quotas import QuotaExceeded
from .reservations import _may_use, digest

if TYPE_CHECKING:
    from .guests import Guests
    from .pools import PoolService
    from .quotas import Quotas
    from .sshkeys import Keys

log = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
REQUEST_ID_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
MAX_POOLS = 50  # pools one request may name


class UnknownPools(NotFound):
    """Pools a request names that the fabric does not have (vmpooler's bad_templates)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"no such pool: {', '.join(names)}")
        self.names = names


class TooMany(Forbidden):
    """More VMs than one request may ask for (``ondemand.max_per_request``)."""


def fair_order(pending: list[RequestRow], started: set[str]) -> list[RequestRow]:
    """The order pending requests are served in: those already holding VMs first,
    then by how many earlier pending requests their requester has, then by arrival."""
    seen: Counter[str | None] = Counter()
    keyed = []
    for r in sorted(pending, key=lambda r: r.id):
        rank = seen[r.requested_by]
        seen[r.requested_by] += 1
        keyed.append(((0 if r.request_id in started else 1, rank, r.id), r))
    return [r for _, r in sorted(keyed, key=lambda kr: kr[0])]


class OnDemand:
    def __init__(
        self,
        registry: Registry,
        pools: PoolService,
        settings: OnDemandConfig,
        quotas: Quotas | None = None,
        max_vms: int | None = None,
        *,
        guests: Guests | None = None,
        keys: Keys | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.registry = registry
        self.store = registry.requests
        self.pools = pools
        self.settings = settings
        self.quotas = quotas
        self.max_vms = max_vms
        self.guests = guests  # puts the requester's SSH keys into its VMs' guests
        self.keys = keys  # the keys users registered
        self.clock = clock  # what deadlines are set and checked by (tests move it on)
        self.wake: Any = None  # the pool worker's wake (set when wired)
        self.clean: Any = None  # the pool worker's clean_now (set when wired)
        self._lock = threading.Lock()

    # -- the API's calls -----------------------------------------------------------

    def create(
        self,
        pools: Any,
        *,
        hours: float | None = None,
        request_id: str | None = None,
        by: Principal,
    ) -> RequestRow:
        """A new pending request of ``pools`` ({pool: count}); refused at once if it
        could never be met."""
        by.require_writer("request VMs")
        wanted = self.check(pools, by)
        if hours is not None:
            over = [n for n in wanted if hours > self.pools.pool(n).lifetime_max]
            if over:
                cap = min(self.pools.pool(n).lifetime_max for n in over)
                raise BadRequest(f"lifetime {hours:g} h is past pool {over[0]}'s cap of {cap:g} h")
        if request_id is None:
            request_id = uuid.uuid4().hex
        elif not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
            raise BadRequest(f"request_id must be {REQUEST_ID_RULE}")
        self._fits_quota(wanted, by)
        deadline = self.clock() + timedelta(seconds=self.settings.timeout)
        row = self.store.create(request_id, by.name, wanted, hours, deadline)
        log.info("request %s of %s by %s: pending", request_id, wanted, by.label)
        if self.wake is not None:
            self.wake()
        return row

    def check(self, pools: Any, by: Principal) -> dict[str, int]:
        """``{pool: count}`` checked: known pools open to ``by``, counts 1.. each, no
        more than ``max_per_request`` in all, none more than its pool can hold."""
        if not isinstance(pools, dict) or not pools:
            raise BadRequest('pools must be an object of pool names and counts, e.g. {"a": 2}')
        if len(pools) > MAX_POOLS:
            raise BadRequest(f"at most {MAX_POOLS} pools in one request")
        wanted: dict[str, int] = {}
        for name, count in pools.items():
            if not is_name(name):
                raise BadRequest(f"{str(name)[:64]!r} is not a pool name")
            n = _count(count)
            if n is None:
                raise BadRequest(
                    f"the count of pool {name} must be an integer from 1 (got {count!r:.40})"
                )
            wanted[name] = n
        unknown = [n for n in wanted if n not in self.pools.pools]
        if unknown:
            raise UnknownPools(unknown)
        total = sum(wanted.values())
        if total > self.settings.max_per_request:
            raise TooMany(
                f"{total} VMs asked for; one request may ask for at most "
                f"{self.settings.max_per_request} (ondemand.max_per_request)"
            )
        for name, n in wanted.items():
            p = self.pools.pool(name)
            if not _may_use(p, by):
                raise Forbidden(f"pool {name} is not open to {by.label}")
            most = self.pools.max_of(name)
            if n > most:
                raise BadRequest(
                    f"{n} VMs of pool {name} asked for; it never holds more than {most}"
                )
        return wanted

    def _fits_quota(self, wanted: dict[str, int], by: Principal) -> None:
        """A request for more checked-out VMs than the caller may ever hold is refused
        at once (what they hold now is counted when VMs are set aside)."""
        quota = self.quotas.of(by) if self.quotas is not None else None
        most = quota.limits.get("checked_out") if quota is not None else None
        total = sum(wanted.values())
        if most is not None and total > most:
            raise QuotaExceeded(
                f"quota exceeded for user {quota.user if quota else by.label} "
                f"(checked-out VMs: {total} asked for > {most})"
            )

    def get(self, request_id: str) -> RequestRow:
        return self.store.get(request_id)

    def list(self, by: Principal, states: Iterable[str] | None = None) -> list[RequestRow]:
        """The caller's requests (an admin's: everyone's), newest first."""
        if not by.admin and by.name is None:
            return []  # nobody in particular (an unauthenticated reader) has none
        return self.store.list(requested_by=by.name, everyone=by.admin, states=states)

    def cancel(self, request_id: str, by: Principal) -> RequestRow:
        """Cancel a request (its requester or an admin): the VMs set aside go back to
        ready at once; a ready request's VMs are checked in. A request already ended
        stays as it is."""
        row = self.store.get(request_id)
        by.require_owner(row.requested_by, f"cancel request {request_id}")
        done, to_clean = self.store.end(
            request_id, RequestState.CANCELLED, f"cancelled by {by.label}", actor=by.name
        )
        for vm_id in to_clean:
            if self.clean is not None:
                self.clean(vm_id)
        if self.wake is not None:
            self.wake()  # VMs went back: other requests may have them
        return done

    def progress(self, row: RequestRow) -> dict[str, dict[str, int]]:
        """Per pool: ``wanted``, ``ready`` (set aside for it) and ``pending``."""
        held = self.store.held([row.request_id])[row.request_id]
        if row.state == RequestState.READY:
            held = Counter(v.get("pool") for v in row.vms or [])  # type: ignore[assignment]
        out = {}
        for pool, want in row.pools.items():
            got = min(int(held.get(pool, 0)), want)
            out[pool] = {"wanted": want, "ready": got, "pending": want - got}
        return out

    def vms(self, row: RequestRow) -> list[VmRow]:
        """A ready request's VMs that it still holds."""
        return self.store.vms_of(row.request_id)

    # -- the pool worker's pass --------------------------------------------------------

    def fulfil(self) -> dict[str, int]:
        """Serve pending requests (see the module's description); returns the VMs still
        wanted per pool (the refill builds them)."""
        pending = self.store.pending()
        if not pending:
            return {}
        now = self.clock()
        live = []
        for r in pending:
            if as_utc(r.deadline) <= now:
                self._fail(r)
            else:
                live.append(r)
        held = self.store.held(r.request_id for r in live)
        started = {rid for rid, h in held.items() if sum(h.values())}
        short: set[str] = set()  # pools an earlier request is still short of
        demand: Counter[str] = Counter()
        for r in fair_order(live, started):
            have = held[r.request_id]
            blocked = []
            for pool, want in r.pools.items():
                need = want - have.get(pool, 0)
                if need <= 0:
                    continue
                if pool not in self.pools.pools:
                    continue  # no longer configured: it fails at its deadline, saying so
                if pool in short:
                    blocked.append(pool)
                else:
                    got = self._set_aside(r, pool, need)
                    if got is None:
                        continue  # over its requester's quota: it holds up no one else
                    have[pool] = have.get(pool, 0) + got
                    need -= got
                if need > 0:
                    short.add(pool)
                    demand[pool] += need
            if all(have.get(p, 0) >= n for p, n in r.pools.items()):
                hours = {
                    p: r.hours if r.hours is not None else self.pools.pool(p).lifetime
                    for p in r.pools
                    if p in self.pools.pools
                }
                if self.store.complete(r.request_id, hours) is not None:
                    log.info("request %s: ready", r.request_id)
                    self._give_keys(r)
            elif blocked:
                self.store.note(
                    r.request_id, f"waiting behind earlier requests for pool {', '.join(blocked)}"
                )
        return dict(demand)

    def _set_aside(self, r: RequestRow, pool: str, n: int) -> int | None:
        """Up to ``n`` ready VMs of ``pool`` set aside for ``r``: how many (None: none,
        its requester's quota would be exceeded; the request notes it)."""
        hashes = [digest(secrets.token_urlsafe(32)) for _ in range(n)]
        # the reaper's fallback only: the request ends (and sets lifetimes) first
        safety = as_utc(r.deadline) + timedelta(hours=max(self.pools.pool(pool).lifetime_max, 1))
        quota = None
        if self.quotas is not None and r.requested_by:
            quota = self.quotas.of(Principal(r.requested_by, Role.USER))
        try:
            got = self.store.set_aside(
                r.request_id, pool, n, hashes, safety, holder=r.requested_by, quota=quota
            )
        except QuotaExceeded as e:
            self.store.note(r.request_id, e.message)
            return None
        if got and r.message:
            self.store.note(r.request_id, None)
        return got

    def _give_keys(self, r: RequestRow) -> None:
        """The requester's registered SSH keys into each guest of a request now ready,
        as at a check-out; a guest that refuses is named in the request's message
        (its cleanup takes the keys out again when the VM comes back)."""
        if self.guests is None or self.keys is None or not r.requested_by:
            return
        keys = self.keys.for_user(r.requested_by)
        if not keys:
            return
        given, failed = [], []
        for vm in self.store.vms_of(r.request_id):
            try:
                self.guests.add_keys(vm, keys)
                given.append(vm.id)
            except FabricError as e:
                failed.append(f"vmid {vm.id} ({e.message})")
        if given:
            self.registry.reservations.keys_given(given, len(keys))
        if failed:
            self.store.note(
                r.request_id,
                f"your SSH keys could not be put into {'; '.join(failed)}",
                state=RequestState.READY,
            )

    def _fail(self, r: RequestRow) -> None:
        message = self.why(r)
        self.store.end(r.request_id, RequestState.FAILED, message)
        log.warning("request %s failed: %s", r.request_id, message)

    def why(self, r: RequestRow) -> str:
        """Why a request was not met: per pool short of VMs, what it got and what the
        fabric knows stood in the way."""
        held = self.store.held([r.request_id])[r.request_id]
        status = self.pools.status()
        total = self.registry.vms.count() if self.max_vms is not None else 0
        parts = []
        for pool, want in r.pools.items():
            got = held.get(pool, 0)
            if got >= want:
                continue
            st = status.get(pool)
            if st is None:
                parts.append(f"pool {pool}: {got} of {want} set aside; the pool is gone")
                continue
            most = self.pools.max_of(pool)
            reasons = []
            if st["total"] >= most:
                reasons.append(
                    f"the pool is at its max of {most} VMs ({st['in_use'] - got} in use by "
                    f"others, {st['cleaning']} cleaning, {st['building']} building, "
                    f"{st['ready']} ready)"
                )
            if self.max_vms is not None and total >= self.max_vms:
                reasons.append(f"the fabric runs its limit of {self.max_vms} VMs (limits.max_vms)")
            if st["unreachable"]:
                reasons.append(f"{st['unreachable']} ready VMs are on hosts that are down")
            err = self.store.last_failure(pool, as_utc(r.created_at))
            if err:
                reasons.append(f"builds failing, last error: {err}")
            if r.message and r.message.startswith(("quota", "waiting")):
                reasons.append(r.message)
            if not reasons:
                reasons.append(
                    f"{st['building']} building, {st['ready']} ready: no more VMs became "
                    "ready in time"
                )
            parts.append(f"pool {pool}: {got} of {want} set aside; " + "; ".join(reasons))
        return f"not met within {self.settings.timeout:g} s: " + " | ".join(parts)


def _count(value: Any) -> int | None:
    """A count from JSON (an integer, or vmpooler's string of digits), 1 or more."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 6:
        n = int(value)
    else:
        return None
    return n if n >= 1 else None
