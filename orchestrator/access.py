"""Who may do what: roles, the principal of a call, and the ownership rules.

Three roles, the ones a small datacenter needs (nova's admin and member, LXD's
restricted projects and duffy's tenants are the anchors):

- ``admin`` acts on everything, and alone manages hosts, pools and schedules;
- ``user`` creates VMs and volumes, checks VMs out of the pools open to them, and
  acts on what they created or hold;
- ``reader`` sees what anyone may see and changes nothing (monitoring, auditors).

With authentication off (the default) every caller is the same anonymous
``admin``: a single-operator lab, as before. Internal work (the pool worker,
schedules, reconciliation) runs as ``SYSTEM``, which is an admin too.

The rules live here and the services apply them (every caller, the API and the
dashboard alike, goes through a service): a check-in needs the reservation's
secret *and* to come from its holder (or an admin); a destroy, attach or detach
needs the caller to own the thing, or to be an admin. Something made while
authentication was off belongs to no one: only an admin acts on it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import Forbidden


class Role(enum.StrEnum):
    ADMIN = "admin"  # everything; hosts, pools, schedules
    USER = "user"  # their own VMs, volumes and check-outs
    READER = "reader"  # reads only


@dataclass(frozen=True)
class Principal:
    """Who makes a call: a user name (None: nobody in particular) and a role."""

    name: str | None
    role: Role
    authenticated: bool = True
    system: bool = False  # the fabric's own background work

    @property
    def admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return "the fabric" if self.system else "anonymous"

    def require_writer(self, what: str) -> None:
        """Users and admins change things; readers do not."""
        if self.role == Role.READER:
            raise Forbidden(f"{self.label} has the reader role and may not {what}")

    def require_admin(self, what: str) -> None:
        if not self.admin:
            raise Forbidden(f"only an admin may {what} ({self.label} is a {self.role})")

    def owns(self, owner: str | None) -> bool:
        """Whether the caller may act on something ``owner`` made: it is theirs, or they
        are an admin. Nothing owned by no one is anyone's but the admins'."""
        if self.admin:
            return True
        return owner is not None and self.name is not None and owner == self.name

    def require_owner(self, owner: str | None, what: str) -> None:
        self.require_writer(what)
        if not self.owns(owner):
            who = f"{owner}'s" if owner else "not yours (it belongs to no user)"
            raise Forbidden(f"{self.label} may not {what}: it is {who}")

    @property
    def quota_user(self) -> str | None:
        """The user whose quota a call counts against (None: no quota applies)."""
        return self.name if self.authenticated and self.name else None


# Internal work: the pool worker, schedules, start-up, reconciliation.
SYSTEM = Principal(name=None, role=Role.ADMIN, authenticated=False, system=True)
# Every caller when authentication is off.
ANONYMOUS = Principal(name=None, role=Role.ADMIN, authenticated=False)
