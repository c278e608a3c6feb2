"""The plain sections of the configuration, and ``scheduler:`` (which builds the
scheduler's Policy)."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainValidator, field_validator, model_validator

from ..hostnames import DOMAIN, DOMAIN_RULE
from ..scheduler.policy import FIRST_FIT, POLICY_WEIGHTS, Policy
from ..scheduler.weighers import WEIGHERS
from .base import Section, fail, names_of, none_is_empty_dict, problem, show

# -- the plain sections -----------------------------------------------------------

# The longest timeout, interval or wait: a week. Past it a setting is a mistake, and far
# past it the clock's own types overflow (a traceback, not a message).
A_WEEK = 7 * 24 * 3600


class CapacityConfig(Section):
    """How much of a host VMs may claim: ``physical * ratio - reserved``."""

    cpu_allocation_ratio: float = Field(4.0, ge=0)
    ram_allocation_ratio: float = Field(1.0, ge=0)
    disk_allocation_ratio: float = Field(1.0, ge=0)
    reserved_host_cpus: int = Field(0, ge=0)
    reserved_host_ram: int = Field(0, ge=0)  # MB
    reserved_host_disk: int = Field(0, ge=0)  # GB


MAX_CAPACITY = 2**31 - 1  # the registry's capacity columns are 32-bit


def effective_capacity(phys: tuple[int, int, int], cap: CapacityConfig) -> tuple[int, int, int]:
    """What VMs may claim on a host with ``phys`` = (cpus, ram MB, disk GB), at most
    ``MAX_CAPACITY`` of each (a large ratio must not overflow the registry)."""
    cpu, ram, disk = phys

    def fit(value: float, reserved: int) -> int:
        if value >= MAX_CAPACITY + reserved:  # also a product past float's range (inf)
            return MAX_CAPACITY
        return max(0, int(value) - reserved)

    return (
        fit(cpu * cap.cpu_allocation_ratio, cap.reserved_host_cpus),
        fit(ram * cap.ram_allocation_ratio, cap.reserved_host_ram),
        fit(disk * cap.disk_allocation_ratio, cap.reserved_host_disk),
    )


class SshConfig(Section):
    key: str | None = None
    known_hosts: str | None = None
    connect_timeout: int = Field(5, gt=0, le=A_WEEK)


class LibvirtConfig(Section):
    # 0 would fail every call at once: there is no "no timeout"
    connect_timeout: float = Field(10.0, gt=0, le=A_WEEK)
    call_timeout: float = Field(60.0, gt=0, le=A_WEEK)
    upload_timeout: float = Field(900.0, gt=0, le=A_WEEK)


_PORTS = re.compile(r"([0-9]{1,5})-([0-9]{1,5})")


class CreateConfig(Section):
    max_attempts: int = Field(3, ge=1)  # hosts tried before a create gives up
    # creates the API runs at once; more are refused (503, Retry-After). Keep it below
    # the server's request threads (serve --threads, 16) so reads always find one.
    concurrent: int = Field(8, ge=1)
    # seconds a create waits while another copies the same image to the same host
    stage_wait: float = Field(60.0, ge=0)
    # seconds an image store that could not be reached is remembered: creates that
    # need it fail at once with the same reason until then (0: always try again)
    image_store_retry: float = Field(30.0, ge=0)
    # per-host range for network=forward guests
    forward_ports: str = Field("22000-22999", description="a port range like 22000-22999")

    @field_validator("forward_ports")
    @classmethod
    def _port_range(cls, value: str) -> str:
        m = _PORTS.fullmatch(value)
        if m is None or not 1 <= int(m[1]) <= int(m[2]) <= 65535:
            raise problem(
                f"must look like 22000-22999 (ports 1-65535, the first <= the last), "
                f"got {show(value)}"
            )
        return value

    @property
    def port_range(self) -> range:
        lo, _, hi = self.forward_ports.partition("-")
        return range(int(lo), int(hi) + 1)


class GuestConfig(Section):
    """How the fabric logs into guests (readiness checks, cleanup)."""

    user: str = "root"
    key: str | None = None  # default: ssh.key
    host_keys: str | None = None  # file of keys every guest may present; default: TOFU
    ready_timeout: float = Field(300.0, gt=0, le=A_WEEK)  # for a guest to answer SSH
    # seconds a guest on a LAN has to take an address the fabric can see (else failed)
    address_timeout: float = Field(120.0, gt=0, le=A_WEEK)
    command_timeout: float = Field(60.0, gt=0, le=A_WEEK)


class WorkerConfig(Section):
    """Background work: pool refill, cleanup, the lifetime reaper."""

    interval: float = Field(2.0, gt=0, le=A_WEEK)  # seconds between passes
    build_workers: int = Field(2, ge=1)  # pool VMs built at once
    cleanup_workers: int = Field(4, ge=1)  # returned VMs cleaned at once
    retry_after: int = Field(
        5, ge=0, le=A_WEEK
    )  # seconds a caller is told to wait when a pool is empty


class DiscoveryConfig(Section):
    interval: float = Field(60.0, gt=0, le=A_WEEK)  # seconds between re-reads of every host


class ReconcileConfig(Section):
    """What reconciliation does with domains carrying this installation's metadata
    that the registry does not know."""

    remove_unknown: bool = True  # remove them (else only report them)
    # seconds between the first pass that saw one unknown and the pass that removes it
    grace: float = Field(300.0, ge=0)


class EvacuateConfig(Section):
    """Rebuilding the VMs of a host that stays down (see evacuate.py)."""

    # seconds a host must have been down (since it last answered) before its VMs are
    # rebuilt elsewhere by themselves; None: only on an admin's word (POST /pm/evacuate).
    # Off by default: a host that is only cut off from the fabric still runs its VMs
    # until it returns and is fenced.
    after: float | None = Field(None, gt=0, le=A_WEEK)


class ClusterConfig(Section):
    """Several fabric servers on one registry (PostgreSQL): each heartbeats, and
    background work runs on whichever server holds its lease."""

    heartbeat: float = Field(2.0, gt=0, le=A_WEEK)  # seconds between heartbeats and renewals
    dead_after: float = Field(10.0, ge=0, le=A_WEEK)  # a server silent this long is dead
    host_cache: float = Field(2.0, ge=0, le=A_WEEK)  # seconds the host state may be old (0: none)

    @model_validator(mode="after")
    def _twice_the_heartbeat(self) -> ClusterConfig:
        if self.dead_after < 2 * self.heartbeat:
            raise fail(
                (
                    ("dead_after",),
                    f"must be at least twice cluster.heartbeat ({2 * self.heartbeat:g}), "
                    f"got {self.dead_after:g}",
                    self.dead_after,
                )
            )
        return self


class HostnamesConfig(Section):
    """VMs' hostnames (orchestrator/hostnames.py): ``domain`` makes their FQDN."""

    domain: str | None = Field(None, description=DOMAIN_RULE)

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.rstrip(".")
        if len(value) > 190 or not DOMAIN.fullmatch(value):
            raise problem(f"must be {DOMAIN_RULE} (at most 190 characters), got {show(value)}")
        return value


class OnDemandConfig(Section):
    """Requests that wait for capacity (orchestrator/ondemand.py)."""

    # seconds a request may wait; then it fails, saying what was short
    timeout: float = Field(900.0, gt=0, le=A_WEEK)
    max_per_request: int = Field(10, ge=1, le=1000)  # VMs one request may ask for, all pools


class LimitsConfig(Section):
    max_vms: int | None = Field(None, ge=0)  # VMs the fabric runs in all (None: no limit)


class SchedulesSettings(Section):
    """Scheduled capacity (orchestrator.schedules)."""

    interval: float = Field(
        30.0, gt=0, le=A_WEEK, description=f"a positive number of seconds (at most {A_WEEK})"
    )


# -- scheduler: builds the Policy -------------------------------------------------


def _weigher(name: Any) -> str:
    if not isinstance(name, str) or name not in WEIGHERS:
        raise problem(f"unknown weigher (valid: {names_of(WEIGHERS)})")
    return name


def _multiplier(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise problem(f"must be a finite number, got {show(value)}")
    return float(value)


class SchedulerSettings(Section):
    """``scheduler:``; custom weights override the policy's defaults one by one."""

    policy: str = Field("spread", description=f"one of {names_of(POLICY_WEIGHTS)}")
    host_subset_size: int = Field(1, ge=1)
    weights: Annotated[
        dict[
            Annotated[str, PlainValidator(_weigher)],
            Annotated[float, PlainValidator(_multiplier)],
        ],
        BeforeValidator(none_is_empty_dict),
    ] = Field(
        default_factory=dict,
        description=f"a mapping of weigher name to number (weighers: {names_of(WEIGHERS)})",
    )

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        name = value.strip().lower().replace("_", "-")
        if name not in POLICY_WEIGHTS:
            raise problem(f"unknown policy {show(value)} (valid: {names_of(POLICY_WEIGHTS)})")
        return name

    @model_validator(mode="after")
    def _first_fit_has_no_weights(self) -> SchedulerSettings:
        if self.policy == FIRST_FIT and any(v != 0 for v in self.weights.values()):
            others = names_of(set(POLICY_WEIGHTS) - {FIRST_FIT})
            raise fail(
                (
                    ("weights",),
                    f"policy {FIRST_FIT} takes no weights (use one of: {others})",
                    self.weights,
                )
            )
        return self

    def build(self) -> Policy:
        return Policy.named(
            self.policy, weights=self.weights, host_subset_size=self.host_subset_size
        )


def build_policy(value: Any) -> Policy:
    """A ``scheduler:`` section (or a Policy) -> the Policy."""
    if isinstance(value, Policy):
        return value
    return SchedulerSettings.model_validate(value).build()
