"""Who is acting: the actor of the events recorded while a piece of work runs.

The API sets it for the request it serves (the token's user, or ``anonymous``
with authentication off or before a caller is known); anything else — the
pool worker, schedules, reconciliation, discovery — is the fabric's own
background work, recorded as ``system``. ``EventStore.record`` and every
``EventRow`` a store adds read it when no actor is given, so a service never
passes it along.

A thread started for part of a request's work does not inherit it (threads get
a fresh context): its events are ``system``'s unless its function is wrapped with
``carry`` (``threading.Thread(target=audit.carry(fn))``), which runs it as the
actor of the code that wrapped it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

SYSTEM = "system"
ANONYMOUS = "anonymous"
MAX_ACTOR = 128  # a user's name is at most this long (the users table's)

_actor: ContextVar[str | None] = ContextVar("fabric_actor", default=None)
# The objects the events of the current request were about, in order (None: not in
# a request): how a request whose answer does not say learns what it made.
_touched: ContextVar[list[tuple[str, str, str | None]] | None] = ContextVar(
    "fabric_touched", default=None
)
MAX_TOUCHED = 64

# What an event's outcome is: done, refused (the caller's fault: 4xx) or failed.
OK, REFUSED, FAILED = "ok", "refused", "failed"
OUTCOMES = (OK, REFUSED, FAILED)


def current_actor() -> str:
    """Who the current work is done for: a user, ``anonymous`` or ``system``."""
    return _actor.get() or SYSTEM


def set_actor(name: str | None) -> None:
    """Set the actor of the current context (None: back to ``system``)."""
    _actor.set(name[:MAX_ACTOR] if name else None)


def begin_request(actor: str) -> None:
    """A request starts: its actor, and an empty list of the objects it touched."""
    set_actor(actor)
    _touched.set([])


def end_request() -> None:
    set_actor(None)
    _touched.set(None)


def touched(object_type: str | None, object_id: str | None, owner: str | None) -> None:
    """An event about this object (whose it was) was recorded: kept while a request
    runs."""
    seen = _touched.get()
    if seen is not None and object_type and object_id and len(seen) < MAX_TOUCHED:
        seen.append((object_type, object_id, owner))


def touched_objects() -> list[tuple[str, str, str | None]]:
    return list(_touched.get() or ())


@contextmanager
def acting_as(name: str) -> Iterator[None]:
    """Events recorded inside the block are ``name``'s."""
    token = _actor.set(name[:MAX_ACTOR])
    try:
        yield
    finally:
        _actor.reset(token)


P = ParamSpec("P")
R = TypeVar("R")


def carry(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn``, run as the current actor wherever (whichever thread) it runs."""
    actor = _actor.get()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        token = _actor.set(actor)
        try:
            return fn(*args, **kwargs)
        finally:
            _actor.reset(token)

    return run


def outcome_of(status: int) -> str:
    """An HTTP status as an outcome: below 400 ok, 4xx refused, 5xx failed."""
    if status >= 500:
        return FAILED
    if status >= 400:
        return REFUSED
    return OK
