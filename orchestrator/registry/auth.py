"""Tokens and failed logins (tables ``auth_tokens``, ``auth_failures``).

A token is stored only as its SHA-256: the registry (or a copy of its file)
never holds a usable token. Failed logins are counted per user and remote
address, so a guesser is slowed down whichever server it reaches.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError

from ..clock import as_utc, utcnow
from .database import Database
from .tables_auth import LoginFailureRow, TokenRow

KEEP_EXPIRED = timedelta(days=7)  # expired or revoked tokens are deleted after this


class AuthStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- failed logins -------------------------------------------------------------

    def count_attempt(
        self, user: str, remote: str, *, max_failures: int, lockout: timedelta
    ) -> datetime | None:
        """Count a login attempt of ``user`` from ``remote`` before its (slow) check.

        Returns when the lockout ends if the pair is locked out now (the attempt is
        then not counted). The ``max_failures``-th attempt within ``lockout`` of the
        previous one locks the pair out for ``lockout``.
        """
        try:
            return self._count_attempt(user, remote, max_failures, lockout)
        except IntegrityError:  # a parallel first attempt made the row: count on it
            return self._count_attempt(user, remote, max_failures, lockout)

    def _count_attempt(
        self, user: str, remote: str, max_failures: int, lockout: timedelta
    ) -> datetime | None:
        now = utcnow()
        with self.db.tx() as s:
            row = s.scalar(
                select(LoginFailureRow).where(
                    LoginFailureRow.user == user, LoginFailureRow.remote == remote
                )
            )
            locked = as_utc(row.locked_until) if row is not None else None
            if locked is not None and locked > now:
                return locked
            # Forget other pairs nobody has tried lately (the table stays small).
            stale = delete(LoginFailureRow).where(
                LoginFailureRow.last_at < now - lockout,
                or_(LoginFailureRow.locked_until.is_(None), LoginFailureRow.locked_until < now),
            )
            if row is not None:
                stale = stale.where(LoginFailureRow.id != row.id)
            s.execute(stale.execution_options(synchronize_session=False))
            if row is None:
                row = LoginFailureRow(user=user, remote=remote, failures=0)
                s.add(row)
            elif locked is not None or as_utc(row.last_at) < now - lockout:
                row.failures, row.locked_until = 0, None  # a lockout served, or old failures
            row.failures += 1
            row.last_at = now
            if row.failures >= max_failures and lockout:
                row.locked_until = now + lockout
        return None

    def clear_failures(self, user: str, remote: str) -> None:
        """A successful login: the pair starts afresh."""
        with self.db.tx() as s:
            s.execute(
                delete(LoginFailureRow).where(
                    LoginFailureRow.user == user, LoginFailureRow.remote == remote
                )
            )

    # -- tokens --------------------------------------------------------------------

    def add_token(self, digest: str, user: str, ttl: timedelta) -> None:
        """Store a new token's digest; tokens long expired are deleted meanwhile."""
        now = utcnow()
        with self.db.tx() as s:
            s.execute(delete(TokenRow).where(TokenRow.expires_at < now - KEEP_EXPIRED))
            s.add(
                TokenRow(
                    digest=digest, user=user, created_at=now, expires_at=now + ttl, revoked=False
                )
            )

    def token(self, digest: str) -> TokenRow | None:
        with self.db.read() as s:
            return s.scalar(select(TokenRow).where(TokenRow.digest == digest))

    def touch(self, token_id: int, when: datetime) -> None:
        """Record a token's use."""
        with self.db.tx() as s:
            row = s.get(TokenRow, token_id)
            if row is not None:
                row.last_used = when

    def revoke(self, token_id: int) -> None:
        with self.db.tx() as s:
            row = s.get(TokenRow, token_id)
            if row is not None:
                row.revoked = True
