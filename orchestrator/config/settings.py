"""The sections services consume: each pool's shape, ``storage:`` (which builds
``Storage``, cephx keys read) and ``auth:``."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..access import Role
from ..hypervisor.xml import RbdBackend
from ..model import NAME, NAME_RULE
from .base import Name, Section, fail, names_of, none_is_empty_dict, problem, show
from .yamlmap import Loc

# -- pools: their shape -----------------------------------------------------------


def _image(value: Any) -> str | int:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise problem(f"must be an image name or id from the images file, got {show(value)}")


def _pool_user(value: Any) -> str:
    if not isinstance(value, str) or not value or ":" in value or len(value) > 128:
        raise problem(f"must be a user name of auth.users, got {show(str(value)[:40])}")
    return value


MAX_HOURS = 24 * 3660  # ten years: a reservation's or a token's longest life
_HOURS = f"a positive number of hours (at most {MAX_HOURS})"


class PoolSettings(Section):
    """One ``pools:`` entry as written; ``.pools.resolve_pools`` makes it a PoolConfig."""

    name: Name = Field(description=NAME_RULE)
    instance_type: int = Field(ge=1, description="an integer tid from the VM types file")
    image: Annotated[str | int, PlainValidator(_image)] = Field(
        description="an image name or id from the images file"
    )
    size: int = Field(1, ge=0)  # ready VMs to keep
    max: int | None = Field(None, ge=0)  # VMs in all (any state); default: size
    lifetime: float = Field(2.0, gt=0, le=MAX_HOURS, description=_HOURS)
    lifetime_max: float = Field(24.0, gt=0, le=MAX_HOURS, description=_HOURS)
    cleanup: Literal["tmp", "reset"] = "tmp"
    ready_check: Literal["ssh", "none"] = "ssh"
    # who may check VMs out of it (with auth on); absent: every user
    users: list[Annotated[str, PlainValidator(_pool_user)]] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> PoolSettings:
        problems: list[tuple[Loc, str, Any]] = []
        if self.max is not None and self.max < self.size:
            problems.append(
                (("max",), f"must be an integer >= size ({self.size}), got {self.max}", self.max)
            )
        if self.lifetime > self.lifetime_max:
            if "lifetime" in self.model_fields_set:
                problems.append(
                    (
                        ("lifetime",),
                        f"{self.lifetime:g} h exceeds lifetime_max ({self.lifetime_max:g} h)",
                        self.lifetime,
                    )
                )
            else:
                problems.append(
                    (
                        ("lifetime_max",),
                        f"{self.lifetime_max:g} h is less than lifetime "
                        f"(default {self.lifetime:g} h)",
                        self.lifetime_max,
                    )
                )
        if problems:
            raise fail(*problems)
        return self

    @property
    def most(self) -> int:
        """``max``, or ``size`` when not given."""
        return self.size if self.max is None else self.max


# -- storage: builds Storage ------------------------------------------------------


@dataclass(frozen=True)
class Storage:
    """The ``storage:`` section as Volumes uses it: RBD backends by name, host label ->
    backend (``dir``, the default, or ``rbd:NAME``), and each backend's cephx key."""

    backends: Mapping[str, RbdBackend] = field(default_factory=dict)
    hosts: Mapping[str, str] = field(default_factory=dict)
    keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)


def _monitor(value: Any) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise problem(f"must be host:port, got {show(value)}")
    return value


def _backend_ref(value: Any) -> str:
    if value == "dir":
        return value
    if isinstance(value, str) and value.startswith("rbd:") and NAME.fullmatch(value[4:]):
        return value
    raise problem(f"must be dir or rbd:NAME, got {show(value)}")


class RbdSettings(Section):
    """One ``storage.rbd.NAME``: a Ceph RBD pool and how libvirt logs into it."""

    pool: str = Field(min_length=1, description="the name of the RBD pool in Ceph")
    monitors: list[Annotated[str, PlainValidator(_monitor)]] = Field(
        min_length=1, description="a non-empty list of host:port"
    )
    user: str = Field(min_length=1, description="a cephx user name")
    secret_uuid: str = Field(description="the UUID of the libvirt secret for the key")
    key_file: str = Field(description="the path of a file holding the cephx key")
    _key: bytes = PrivateAttr(b"")

    @field_validator("secret_uuid")
    @classmethod
    def _uuid(cls, value: str) -> str:
        try:
            uuid.UUID(value)
        except ValueError:
            raise problem(f"must be a UUID, got {show(value)}") from None
        return value

    @field_validator("key_file")
    @classmethod
    def _key_file_exists(cls, value: str) -> str:
        if not Path(value).is_file():
            raise problem(f"{value} does not exist")
        return value

    @model_validator(mode="after")
    def _read_key(self) -> RbdSettings:
        # The key is a secret: never put it (or a part of it) in a message.
        try:
            key = Path(self.key_file).read_bytes().strip()
        except OSError as e:
            raise fail(
                (("key_file",), f"{self.key_file} cannot be read ({e.strerror})", self.key_file)
            ) from None
        if not key:
            raise fail((("key_file",), f"{self.key_file} is empty", self.key_file))
        self._key = key
        return self

    @property
    def key(self) -> bytes:
        return self._key

    def backend(self, name: str) -> RbdBackend:
        return RbdBackend(
            name=name,
            pool=self.pool,
            monitors=tuple(self.monitors),
            user=self.user,
            secret_uuid=self.secret_uuid,
        )


class StorageSettings(Section):
    """``storage:`` as written."""

    rbd: Annotated[dict[Name, RbdSettings], BeforeValidator(none_is_empty_dict)] = Field(
        default_factory=dict
    )
    hosts: Annotated[
        dict[str, Annotated[str, PlainValidator(_backend_ref)]], BeforeValidator(none_is_empty_dict)
    ] = Field(default_factory=dict, description="a mapping of host label to dir or rbd:NAME")

    @field_validator("hosts")
    @classmethod
    def _backends_defined(cls, hosts: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        rbd = info.data.get("rbd")  # absent when storage.rbd itself is wrong
        if rbd is None:
            return hosts
        defined = names_of(rbd) or "none"
        problems = [
            ((label,), f"{show(ref)} names no storage.rbd backend (defined: {defined})", ref)
            for label, ref in hosts.items()
            if ref != "dir" and ref[4:] not in rbd
        ]
        if problems:
            raise fail(*problems)
        return hosts

    def build(self) -> Storage:
        return Storage(
            backends={name: item.backend(name) for name, item in self.rbd.items()},
            hosts=dict(self.hosts),
            keys={name: item.key for name, item in self.rbd.items()},
        )


def build_storage(value: Any) -> Storage:
    """A ``storage:`` section (or a Storage) -> the Storage."""
    if isinstance(value, Storage):
        return value
    return StorageSettings.model_validate(value).build()


# -- auth -------------------------------------------------------------------------


def _user_name(value: Any) -> str:
    if not isinstance(value, str) or not value or ":" in value or len(value) > 128:
        raise problem(
            f"{show(str(value)[:40])} is not a valid user name (1-128 characters, no ':')"
        )
    return value


def _password_hash(value: Any) -> str:
    from ..auth import is_password_hash  # the hash format is the auth domain's

    if not isinstance(value, str) or not is_password_hash(value):
        # Never echo the value: it may be a password typed in by mistake.
        raise problem("not a password hash (make one with `./script hash-password`)")
    return value


# The largest count or size a quota may name (well inside the registry's integers).
_QUOTA_MAX = 2**31 - 1


class QuotaSettings(Section):
    """Limits on what one user may hold at once; a limit left out is no limit."""

    vms: int | None = Field(None, ge=0, le=_QUOTA_MAX)  # VMs they created (/vm/create)
    checked_out: int | None = Field(None, ge=0, le=_QUOTA_MAX)  # pool VMs they hold
    vcpu: int | None = Field(None, ge=0, le=_QUOTA_MAX)  # of both together
    ram: int | None = Field(None, ge=0, le=_QUOTA_MAX)  # MB, of both together
    disk: int | None = Field(None, ge=0, le=_QUOTA_MAX)  # GB: VM disks and volumes
    volumes: int | None = Field(None, ge=0, le=_QUOTA_MAX)  # volumes they created

    def over(self, base: QuotaSettings) -> QuotaSettings:
        """These limits, each one not given here taken from ``base``."""
        given = {k: getattr(self, k) for k in self.model_fields_set}
        return base.model_copy(update=given)

    def limits(self) -> dict[str, int | None]:
        return {k: getattr(self, k) for k in QuotaSettings.model_fields}


def _role(value: Any) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise problem(
            f"must be one of {', '.join(r.value for r in Role)}, got {show(str(value)[:40])}"
        ) from None


def _user_entry(value: Any) -> Any:
    # A bare hash is a user with the role ``user`` (the form before roles existed).
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        return {"password": _password_hash(value)}
    raise problem(
        "not a password hash (make one with `./script hash-password`) nor a mapping "
        "{password: HASH, role: ROLE, quota: {...}}"
    )


class UserSettings(Section):
    """One ``auth.users`` entry: a hash, or ``{password: HASH, role: ROLE, quota: {...}}``."""

    password: Annotated[str, PlainValidator(_password_hash)]
    role: Annotated[Role, PlainValidator(_role)] = Role.USER
    quota: QuotaSettings = Field(default_factory=QuotaSettings)


class AuthSettings(Section):
    """``auth:`` (orchestrator.auth): off by default, then every call is allowed."""

    enabled: bool = False
    users: Annotated[
        dict[
            Annotated[str, PlainValidator(_user_name)],
            Annotated[UserSettings, BeforeValidator(_user_entry)],
        ],
        BeforeValidator(none_is_empty_dict),
    ] = Field(
        default_factory=dict,
        description="a mapping of user name to a password hash or {password, role, quota}",
    )
    # Every ``user``'s limits, unless their own entry says otherwise (admins have none
    # but their own).
    quota: QuotaSettings = Field(default_factory=QuotaSettings)
    open_reads: bool = True  # GETs that change nothing need no token
    token_ttl_hours: float = Field(24.0, gt=0, le=MAX_HOURS, description=_HOURS)
    # Failed logins of one account (from anywhere) before each further attempt waits:
    # 1 s, then 2, 4, ... up to lockout_seconds (a short wait, never a long lockout).
    max_failures: int = Field(5, ge=1)
    lockout_seconds: int = Field(30, ge=0, le=300)
    # Password checks (scrypt) one server runs per second, all users together.
    login_rate: float = Field(5.0, gt=0, le=1000)

    @model_validator(mode="after")
    def _someone_can_log_in(self) -> AuthSettings:
        if self.enabled and not self.users:
            raise fail((("users",), "auth is enabled but no user is configured", None))
        return self

    def role_of(self, user: str) -> Role | None:
        entry = self.users.get(user)
        return entry.role if entry is not None else None

    def quota_of(self, user: str) -> QuotaSettings:
        """A user's limits: their own over the default (admins: their own only)."""
        entry = self.users.get(user)
        if entry is None:
            return QuotaSettings()
        if entry.role == Role.ADMIN:
            return entry.quota
        return entry.quota.over(self.quota)

    @property
    def admins(self) -> list[str]:
        return [name for name, u in self.users.items() if u.role == Role.ADMIN]
