"""Quotas: each user's limits (from ``auth.users`` and ``auth.quota``) and their use.

The check itself is made by the registry in the transaction that takes what is
limited (registry/quotas.py); this service says which limits apply to a caller.
"""

from __future__ import annotations

from typing import Any

from .access import Principal
from .config import AuthSettings
from .errors import NotFound
from .registry.quotas import WHAT, Quota, QuotaStore


class Quotas:
    def __init__(self, store: QuotaStore, settings: AuthSettings) -> None:
        self.store = store
        self.settings = settings

    def of(self, by: Principal) -> Quota | None:
        """The quota a call by ``by`` counts against (None: none; the fabric's own
        work, and every call with authentication off)."""
        user = by.quota_user
        if user is None:
            return None
        return Quota(user, self.settings.quota_of(user).limits())

    def show(self, user: str) -> dict[str, Any]:
        """``{"user", "role", "limits": {...}, "usage": {...}}`` (a limit null is none)."""
        if user not in self.settings.users:
            raise NotFound(f"no user {user!r}")
        limits = self.settings.quota_of(user).limits()
        return {
            "user": user,
            "role": str(self.settings.role_of(user)),
            "limits": limits,
            "usage": self.store.show(user).as_dict(),
            "units": {"ram": "MB", "disk": "GB"},
        }


__all__ = ["WHAT", "Quotas"]
