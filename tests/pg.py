"""A throwaway PostgreSQL server for the tests (Debian's postgresql, on loopback).

``FABRIC_TEST_DB=postgresql`` makes the registry tests run on it: one server for
the whole session (started here, stopped by PID at the end), a fresh database
per test.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


def wanted() -> bool:
    return os.environ.get("FABRIC_TEST_DB", "sqlite") == "postgresql"


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (Debian package postgresql)")
    return found[-1]


class PgServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fabric-pg-"))
        pw = pwd.getpwnam("postgres")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        data = self.dir / "data"
        self._as_postgres([_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "fabric"])
        self._as_postgres(
            [
                _bin("pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-w",
                "-o", f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=300"
                " -c fsync=off -c synchronous_commit=off",
                "start",
            ]
        )  # fmt: skip
        self.data = data
        self.pid = int((data / "postmaster.pid").read_text().split()[0])

    def _as_postgres(self, argv: list[str]) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://fabric@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._as_postgres(
            [_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "fabric", name]
        )
        return self.url(name)

    def stop(self) -> None:
        self._as_postgres([_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)
