"""The API's audit events are written by a group commit (registry/events.py,
``GroupCommit``): callers at the same time share one transaction, each returns only
once its own event is committed, and one bad event loses no other. On a real
registry (SQLite, or PostgreSQL with FABRIC_TEST_DB=postgresql), with real threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import event, select, text

from orchestrator.registry import Registry
from orchestrator.registry.tables import EventRow
from tests.conftest import fresh_db_url, wait_for

CALLERS = 16


@pytest.fixture
def registry(tmp_path) -> Iterator[Registry]:  # noqa: ANN001
    reg = Registry(fresh_db_url(tmp_path))
    reg.create_schema()
    yield reg
    reg.close()


def commits(reg: Registry) -> list[int]:
    """A list that grows by one at each commit of ``reg``'s engine that wrote events
    (not the reads', which end with a commit on PostgreSQL)."""
    seen: list[int] = []

    def executed(conn, _cursor, statement, *_args) -> None:  # noqa: ANN001
        if statement.lstrip().upper().startswith("INSERT INTO EVENTS"):
            conn.info["wrote_events"] = True

    def committed(conn) -> None:  # noqa: ANN001
        if conn.info.pop("wrote_events", False):
            seen.append(1)

    event.listen(reg.db.engine, "before_cursor_execute", executed)
    event.listen(reg.db.engine, "commit", committed)
    return seen


def audit_events(reg: Registry) -> list[EventRow]:
    with reg.db.read() as s:
        return list(s.scalars(select(EventRow).where(EventRow.kind == "api.request")))


def hold_the_writer(reg: Registry):  # noqa: ANN201
    """A write transaction that keeps every other writer of events waiting: SQLite's
    writer gate, and on PostgreSQL a lock on the events table."""
    tx = reg.db.tx()
    s = tx.__enter__()
    if reg.db.postgres:
        s.execute(text("LOCK TABLE events IN EXCLUSIVE MODE"))
    return tx


def caller(reg: Registry, n: int, out: dict[int, object], **fields: object) -> threading.Thread:
    def run() -> None:
        try:
            reg.events.grouped.add("api.request", object_type="pool", object_id=f"p{n}", **fields)
            out[n] = "ok"
        except Exception as e:  # noqa: BLE001 - the test reads it
            out[n] = e

    t = threading.Thread(target=run)
    t.start()
    return t


def test_callers_at_the_same_time_share_one_commit_and_each_waits_for_it(registry):
    grouped = registry.events.grouped
    seen = commits(registry)
    held = hold_the_writer(registry)
    out: dict[int, object] = {}
    first = caller(registry, 0, out)
    # the first caller leads: it took its own event and waits for the writer
    wait_for(lambda: grouped._writing and not grouped._queue)
    rest = [caller(registry, n, out) for n in range(1, CALLERS)]
    wait_for(lambda: len(grouped._queue) == CALLERS - 1)
    assert out == {}  # no one returned before its event was written
    held.__exit__(None, None, None)
    for t in (first, *rest):
        t.join()
    assert out == dict.fromkeys(range(CALLERS), "ok")
    ids = sorted(e.object_id for e in audit_events(registry))
    assert ids == sorted(f"p{n}" for n in range(CALLERS))  # each once
    assert len(seen) == 2  # the first caller's, then one for the other 15
    assert not grouped._writing and not grouped._queue


def test_a_bad_event_fails_its_own_caller_and_loses_no_other(registry):
    grouped = registry.events.grouped
    held = hold_the_writer(registry)
    out: dict[int, object] = {}
    first = caller(registry, 0, out)
    wait_for(lambda: grouped._writing and not grouped._queue)
    rest = [caller(registry, n, out) for n in range(1, 6)]
    # a detail that is not JSON: the batch's insert fails, then each is written alone
    rest.append(caller(registry, 6, out, detail={"x": object()}))
    rest.extend(caller(registry, n, out) for n in range(7, 9))
    wait_for(lambda: len(grouped._queue) == 8)
    held.__exit__(None, None, None)
    for t in (first, *rest):
        t.join()
    assert isinstance(out.pop(6), Exception)
    assert out == {n: "ok" for n in range(9) if n != 6}
    ids = sorted(e.object_id for e in audit_events(registry))
    assert ids == sorted(f"p{n}" for n in range(9) if n != 6)
    # and the next caller leads again
    registry.events.grouped.add("api.request", object_type="pool", object_id="after")
    assert "after" in {e.object_id for e in audit_events(registry)}


def test_many_callers_many_times_each_event_once(registry):
    """Count-bounded, truly parallel: 8 threads x 50 events, no writer held."""
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def run(k: int) -> None:
        barrier.wait()
        try:
            for i in range(50):
                registry.events.grouped.add("api.request", object_type="t", object_id=f"{k}-{i}")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ids = [e.object_id for e in audit_events(registry)]
    assert sorted(ids) == sorted(f"{k}-{i}" for k in range(8) for i in range(50))
    assert not registry.events.grouped._writing
