"""The registry's database: one engine, the two transaction helpers every store
uses, and the clock every server agrees on.

Every state change is one short transaction; no libvirt or SSH call ever runs
inside one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, make_url, select, text
from sqlalchemy.orm import Session, sessionmaker

from ..clock import as_utc, utcnow

_STARTUP_LOCK = 0x66616272  # "fabr": the advisory lock key for start-up


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None: another database, or SQLite in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    name = parsed.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (0600), if it is missing:
    SQLite creates its -wal and -shm files with the database file's mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        pass  # it exists (its mode is the operator's), or SQLite will say why not


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and write-locking
    transactions, and a new database file is created 0600."""
    if url.startswith("sqlite"):
        path = sqlite_file(url)
        if path is not None:
            _create_private(path)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 60},
            pool_size=20,
            max_overflow=20,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy (not the sqlite3 module) decide when transactions begin.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Writers take the write lock up front: a read-then-write transaction can
            # then never fail half-way with "database is locked" nor interleave.
            # Readers (WAL) see a consistent snapshot without blocking anyone.
            if conn.get_execution_options().get("fabric_readonly"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)


class Database:
    """The engine and its transactions. Rows come back detached (no lazy loads)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(
            self.engine.execution_options(fabric_readonly=True), expire_on_commit=False
        )
        # SQLite lets one writer in at a time and makes the others poll with sleeps
        # that grow to 100 ms; queueing writers on a lock instead keeps them in order
        # without the sleeps. The gate is a lock file beside the database, so the
        # writers of every process on this machine (``--workers N``) queue on it
        # alike. Correctness does not rest on it: the database's own locking and the
        # conditional UPDATEs do that, across processes and machines too.
        path = sqlite_file(url)
        self._writer_gate: contextlib.AbstractContextManager[Any] = (
            WriterGate(path.with_name(f".{path.name}.writers"))
            if path is not None
            else threading.Lock()
            if url.startswith("sqlite")
            else contextlib.nullcontext()
        )

    @property
    def postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """A read-write transaction."""
        with self._writer_gate, self._sessions.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction (a snapshot; it never holds the write lock)."""
        with self._readers.begin() as session:
            yield session

    def now(self, s: Session) -> datetime:
        """The time every server agrees on: the database server's clock on
        PostgreSQL (servers' own clocks may drift), this machine's on SQLite."""
        if self.postgres:
            return as_utc(s.scalar(select(func.now())))
        return utcnow()

    @contextmanager
    def startup_lock(self) -> Iterator[None]:
        """Servers starting together set up the schema and sync the files one at a
        time (a PostgreSQL advisory lock; SQLite's write lock already does that)."""
        if not self.postgres:
            yield
            return
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _STARTUP_LOCK})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _STARTUP_LOCK})
                conn.commit()

    def close(self) -> None:
        self.engine.dispose()
        if isinstance(self._writer_gate, WriterGate):
            self._writer_gate.close()


class WriterGate:
    """One SQLite writer at a time across threads and processes: a thread lock (one
    thread of this process holds the file lock at a time) around ``flock`` on a lock
    file (one process at a time). The file lock goes with its holder: a process that
    dies holding it frees it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread = threading.Lock()
        self._fd: int | None = None
        self._pid = -1

    def _file(self) -> int:
        # Opened lazily, once per process: a descriptor inherited across fork()
        # shares its lock with the parent, which would let both in.
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> None:
        self._thread.acquire()
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX)
        except BaseException:
            self._thread.release()
            raise

    def __exit__(self, *_exc: object) -> None:
        try:
            fcntl.flock(self._file(), fcntl.LOCK_UN)
        finally:
            self._thread.release()

    def close(self) -> None:
        with self._thread:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None
