"""Authentication: users with password hashes in the config, tokens stored hashed.

The ``auth:`` section of the configuration (checked by orchestrator.config)::

    auth:
      enabled: true            # default false: every call is allowed
      users: {alice: "scrypt$16384$8$1$<salt>$<hash>"}   # from hash_password()
      open_reads: true         # GETs that change nothing need no token
      token_ttl_hours: 24
      max_failures: 5          # failed logins of one account before attempts wait ...
      lockout_seconds: 30      # ... 1 s, 2, 4, ... at most this long (429, Retry-After)
      login_rate: 5            # password checks per second on one server, all users

A token is 256 random bits shown once; the registry keeps its SHA-256 only.

Password guessing is slowed in two ways, and neither can lock the right password
out for long:

- per account: failed checks are counted per user name (known or not) in the
  registry, whatever address or server they come from; after ``max_failures``
  the account's next attempt must wait 1 s, then 2, 4, ... at most
  ``lockout_seconds`` (429 with Retry-After meanwhile; the attempt is not
  counted). A success clears the count; tokens already issued keep working.
- per server: at most ``login_rate`` password checks a second (a burst of twice
  that), all users together, answered 429 beyond. scrypt's cost is paid by the
  CPU of the process that runs it, so each process limits its own (no registry
  round trip on the path a flood takes); N servers admit N times as many, as
  their N machines can bear. An unknown user name is checked against a dummy
  hash (as long as a known one, so names cannot be told apart by time), and the
  same limit bounds what those checks cost.

Neither passwords nor tokens are ever logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from functools import cached_property
from typing import Any

from .access import ANONYMOUS, Principal, Role
from .clock import as_utc as _aware
from .clock import iso as _iso
from .clock import utcnow as _now
from .config import AuthSettings
from .errors import Forbidden, NotFound, TooManyRequests, Unauthorized
from .registry.auth import AuthStore
from .registry.tables_auth import TokenRow

log = logging.getLogger(__name__)

# scrypt's cost: 16 MiB of memory and ~50 ms per check on a small machine.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 16384, 8, 1
_SALT_BYTES, _KEY_BYTES = 16, 32
# Bounds on what a configured hash may ask for (a typo must not cost gigabytes).
_MAX_N, _MAX_R, _MAX_P = 2**20, 32, 16
_MAX_TOKEN = 256  # characters; ours are 43
_TOUCH_EVERY = timedelta(seconds=60)  # last_used is written at most this often


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen,
        maxmem=128 * r * (n + p + 2) + 1024 * 1024,
    )  # fmt: skip


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes] | None:
    """``scrypt$N$r$p$salt$hash`` -> its parts, or None if it is not one of ours."""
    if not isinstance(encoded, str):
        return None
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        return None
    if n < 2 or n & (n - 1) or n > _MAX_N or not (1 <= r <= _MAX_R) or not (1 <= p <= _MAX_P):
        return None
    if len(salt) < 8 or not (16 <= len(key) <= 64):
        return None
    return n, r, p, salt, key


def is_password_hash(encoded: str) -> bool:
    """Whether ``encoded`` is a hash as hash_password makes them (the config's
    schema checks ``auth.users`` with it)."""
    return _parse_hash(encoded) is not None


def hash_password(password: str) -> str:
    """A salted scrypt hash for the config: ``scrypt$16384$8$1$<salt b64>$<hash b64>``."""
    if not isinstance(password, str) or password == "":
        raise ValueError("the password must not be empty")
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, _KEY_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (from hash_password); constant-time compare."""
    parsed = _parse_hash(encoded)
    if parsed is None or not isinstance(password, str):
        return False
    n, r, p, salt, key = parsed
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(key)), key)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class RateLimit:
    """A token bucket, in this process: ``rate`` a second on average, ``burst`` at once."""

    def __init__(
        self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else 2 * rate)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self) -> float:
        """Take one: 0 if taken, else the seconds until one is there (none taken)."""
        with self._lock:
            self._refill()
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate

    def give_back(self) -> None:
        """Return one taken for work that was not done."""
        with self._lock:
            self._tokens = min(self.burst, self._tokens + 1)


def _too_many(message: str, seconds: float) -> TooManyRequests:
    e = TooManyRequests(message)
    e.retry_after = max(1, math.ceil(seconds))
    return e


class AuthService:
    """``enabled`` False (the default): every call is allowed."""

    def __init__(self, store: AuthStore, settings: AuthSettings | None = None) -> None:
        self.store = store
        cfg = settings or AuthSettings()
        self.enabled: bool = cfg.enabled
        self.open_reads: bool = cfg.open_reads
        self.settings = cfg
        self.users: dict[str, str] = {name: u.password for name, u in cfg.users.items()}
        self.token_ttl = timedelta(hours=cfg.token_ttl_hours)
        self.max_failures: int = cfg.max_failures
        self.lockout = timedelta(seconds=cfg.lockout_seconds)  # the longest wait
        self.limit = RateLimit(cfg.login_rate)

    def share_login_rate(self, workers: int) -> None:
        """One of ``workers`` processes of one server (``--workers N``): the token
        bucket is per process, so each takes ``1/workers`` of ``login_rate`` and
        the server as a whole checks no more passwords a second than configured."""
        self.limit = RateLimit(self.settings.login_rate / workers)

    @cached_property
    def _dummy_hash(self) -> str:
        # Checked for unknown users, so that they take as long as known ones.
        return hash_password(secrets.token_urlsafe(16))

    # -- passwords -----------------------------------------------------------

    def authenticate(self, user: str, password: str, remote: str | None = None) -> str:
        """Check a user's password; return the user. Raises Unauthorized, TooManyRequests.

        ``remote`` is the client's address, for the log. The attempt is counted
        before the (slow) check, so parallel guesses cannot slip past the count; a
        success clears it.
        """
        if not self.enabled:
            raise NotFound("authentication is not enabled on this fabric")
        user = (user or "")[:128]
        remote = (remote or "-")[:64]
        wait = self.limit.take()
        if wait:
            raise _too_many(
                f"too many login attempts on this server; retry in {math.ceil(wait)} seconds",
                wait,
            )
        until = self.store.count_attempt(user, free=self.max_failures, longest=self.lockout)
        if until is not None:
            self.limit.give_back()  # no password was checked
            seconds = (until - _now()).total_seconds()
            raise _too_many(
                f"too many failed logins for {user!r}; retry in "
                f"{max(1, math.ceil(seconds))} seconds",
                seconds,
            )
        known = self.users.get(user)
        ok = verify_password(password or "", known or self._dummy_hash) and known is not None
        if not ok:
            # An unknown name may be a password typed in the wrong field: never log it.
            log.info(
                "failed login for %s from %s", repr(user) if known else "an unknown user", remote
            )
            raise Unauthorized("wrong user name or password")
        self.store.clear_failures(user)
        return user

    # -- tokens --------------------------------------------------------------

    def login(self, user: str, password: str, remote: str | None = None) -> str:
        """Check the password; return a new token (shown once). Raises Unauthorized,
        TooManyRequests."""
        user = self.authenticate(user, password, remote)
        token = secrets.token_urlsafe(32)
        self.store.add_token(token_digest(token), user, self.token_ttl)
        log.info("issued a token to user %r", user)
        return token

    def _row(self, token: str | None) -> TokenRow | None:
        if not token or not isinstance(token, str) or len(token) > _MAX_TOKEN:
            return None
        return self.store.token(token_digest(token))

    def check(self, token: str | None) -> str:
        """The user a token belongs to. Raises Unauthorized (None) or Forbidden (bad)."""
        if not token:
            raise Unauthorized("a token is required: send it in the X-Auth-Token header")
        row = self._row(token)
        now = _now()
        if row is None:
            raise Forbidden("the token is not valid")
        if row.revoked:
            raise Forbidden("the token has been revoked")
        if _aware(row.expires_at) <= now:
            raise Forbidden("the token has expired")
        if row.user not in self.users:
            raise Forbidden("the token's user no longer exists")
        last = _aware(row.last_used)
        if last is None or now - last > _TOUCH_EVERY:
            self.store.touch(row.id, now)
        return row.user

    # -- who --------------------------------------------------------------------

    def principal(self, user: str | None) -> Principal:
        """Who a checked user is (their role); with auth off, the anonymous admin.
        ``user`` None with auth on: a caller without a token (reads only)."""
        if not self.enabled:
            return ANONYMOUS
        if user is None:
            return Principal(name=None, role=Role.READER, authenticated=False)
        role = self.settings.role_of(user)
        if role is None:
            raise Forbidden("the token's user no longer exists")
        return Principal(name=user, role=role)

    def info(self, token: str) -> dict[str, Any]:
        """``{"user", "created", "expires", "last_used"}``; NotFound if unknown or revoked."""
        row = self._row(token)
        if row is None or row.revoked:
            raise NotFound("no such token")
        return {
            "user": row.user,
            "created": _iso(row.created_at),
            "expires": _iso(row.expires_at),
            "last_used": _iso(row.last_used) if row.last_used else None,
        }

    def revoke(self, token: str) -> None:
        """Revoke a token at once (every process sees it on its next check)."""
        row = self._row(token)
        if row is None or row.revoked:
            raise NotFound("no such token")
        self.store.revoke(row.id)
        log.info("revoked a token of user %r", row.user)
