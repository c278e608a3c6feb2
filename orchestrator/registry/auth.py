"""Tokens and failed logins (tables ``auth_tokens``, ``auth_failures``).

A token is stored only as its SHA-256: the registry (or a copy of its file)
never holds a usable token. Failed logins are counted per account (user name,
known or not) whatever address they come from, so a guesser is slowed down
whichever server and address it uses: after ``free`` failures each further
attempt waits 1 s, then 2, 4, ... up to a short ``longest`` wait.

The count is an ``auth_failures`` row whose ``remote`` is ``ACCOUNT``; rows of
earlier versions (one per user and address) are no longer read and are deleted
as they go stale.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError

from ..clock import as_utc, utcnow
from .database import Database
from .tables_auth import LoginFailureRow, TokenRow

KEEP_EXPIRED = timedelta(days=7)  # expired or revoked tokens are deleted after this
FORGET_AFTER = timedelta(minutes=15)  # an account's failures this old are forgotten
ACCOUNT = "*"  # the ``remote`` of an account's row: every address counts together


def backoff(failures: int, free: int, longest: timedelta) -> timedelta:
    """The wait after ``failures`` counted attempts: none below ``free``, then 1 s,
    doubling with each further one, never more than ``longest``."""
    if failures < free or longest <= timedelta(0):
        return timedelta(0)
    return min(longest, timedelta(seconds=2 ** min(failures - free, 30)))


class AuthStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- failed logins -------------------------------------------------------------

    def count_attempt(self, user: str, *, free: int, longest: timedelta) -> datetime | None:
        """Count a login attempt on ``user`` before its (slow) check, as a failure
        until ``clear_failures`` says it succeeded (so parallel guesses cannot slip
        past the count).

        Returns when the account may try again if it must wait now (the attempt is
        then not counted); else None.
        """
        try:
            return self._count_attempt(user, free, longest)
        except IntegrityError:  # a parallel first attempt made the row: count on it
            return self._count_attempt(user, free, longest)

    def _count_attempt(self, user: str, free: int, longest: timedelta) -> datetime | None:
        now = utcnow()
        with self.db.tx() as s:
            row = s.scalar(
                select(LoginFailureRow)
                .where(LoginFailureRow.user == user, LoginFailureRow.remote == ACCOUNT)
                .with_for_update()
            )
            until = as_utc(row.locked_until) if row is not None else None
            if until is not None and until > now:
                return until
            # Forget accounts nobody has tried lately (the table stays small).
            stale = delete(LoginFailureRow).where(
                LoginFailureRow.last_at < now - FORGET_AFTER,
                or_(LoginFailureRow.locked_until.is_(None), LoginFailureRow.locked_until < now),
            )
            if row is not None:
                stale = stale.where(LoginFailureRow.id != row.id)
            s.execute(stale.execution_options(synchronize_session=False))
            if row is None:
                row = LoginFailureRow(user=user, remote=ACCOUNT, failures=0)
                s.add(row)
            elif as_utc(row.last_at) < now - FORGET_AFTER:
                row.failures = 0  # old failures
            row.failures += 1
            row.last_at = now
            wait = backoff(row.failures, free, longest)
            row.locked_until = now + wait if wait else None
        return None

    def clear_failures(self, user: str) -> None:
        """A successful login: the account starts afresh."""
        with self.db.tx() as s:
            s.execute(delete(LoginFailureRow).where(LoginFailureRow.user == user))

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

    def tokens_of(self, user: str) -> list[TokenRow]:
        """The user's tokens that are neither revoked nor expired, oldest first."""
        with self.db.read() as s:
            q = (
                select(TokenRow)
                .where(
                    TokenRow.user == user,
                    TokenRow.revoked.is_(False),
                    TokenRow.expires_at > utcnow(),
                )
                .order_by(TokenRow.id)
            )
            return list(s.scalars(q))

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
