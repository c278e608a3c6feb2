"""Hosts shared by several processes: libvirt's test driver inside session libvirtd daemons.

A plain ``test:///...`` host lives inside the process that opened it, so two fabric
servers would each see a private fake host. A ``libvirtd`` daemon keeps one
``test:///default`` for every client that connects to it, so each daemon started
here is one fake physical machine that every fabric server (and the test itself)
sees alike, at ``test+unix:///default?socket=DIR/libvirt/libvirt-sock``.

The daemons run as an unprivileged user (``fabtest``, created when missing) in
session mode, each with its own runtime directory. :class:`TestDaemons` stops
exactly the processes it started (SIGTERM, then SIGKILL) and removes its
directories.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import libvirt

LIBVIRTD = "/usr/sbin/libvirtd"
USER = "fabtest"


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt's default error handler prints every failed connect attempt."""


def ensure_user(name: str = USER) -> pwd.struct_passwd:
    """The unprivileged user the daemons run as (created when missing; needs root)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    subprocess.run(
        ["useradd", "-m", "-s", "/bin/bash", name], check=True, capture_output=True, timeout=60
    )
    return pwd.getpwnam(name)


class TestDaemons:
    """``n`` session libvirtd daemons, each one test-driver host.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    ``base_dir`` must be a directory the daemons' user may enter (not the 0700
    pytest temporary directory of root): each daemon gets a 0700 directory of
    its own under a fresh directory made there.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, n: int, base_dir: str | Path = "/tmp", timeout: float = 120.0) -> None:  # noqa: S108
        if not os.path.exists(LIBVIRTD):
            raise RuntimeError(
                f"{LIBVIRTD} is missing: install the Debian package libvirt-daemon-system "
                "(the cluster tests need libvirt daemons as shared hosts)"
            )
        self.n = n
        self.base_dir = Path(base_dir)
        self.timeout = timeout
        self.root: Path | None = None
        self.dirs: list[Path] = []
        self.procs: list[subprocess.Popen] = []
        self.uris: list[str] = []

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> TestDaemons:
        as_root = os.geteuid() == 0
        pw = ensure_user() if as_root else pwd.getpwuid(os.geteuid())
        self.root = Path(tempfile.mkdtemp(prefix="fabric-hosts-", dir=self.base_dir))
        self.root.chmod(0o755)
        try:
            for i in range(1, self.n + 1):
                d = self.root / f"h{i}"
                d.mkdir(mode=0o700)
                if as_root:
                    os.chown(d, pw.pw_uid, pw.pw_gid)
                self.dirs.append(d)
                env = {
                    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME": pw.pw_dir,
                    "USER": pw.pw_name,
                    "LOGNAME": pw.pw_name,
                    "XDG_RUNTIME_DIR": str(d),
                    "XDG_CONFIG_HOME": str(d / "cfg"),
                    "XDG_CACHE_HOME": str(d / "cache"),
                    "XDG_DATA_HOME": str(d / "data"),
                }
                with self.log(i).open("ab") as out:
                    proc = subprocess.Popen(
                        [LIBVIRTD, "--timeout=0"],
                        env=env,
                        cwd=d,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its own process group: ours alone
                        **(
                            {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
                            if as_root
                            else {}
                        ),
                    )
                self.procs.append(proc)
                sock = d / "libvirt" / "libvirt-sock"
                self.uris.append(f"test+unix:///default?socket={sock}")
            self._wait_up()
        except BaseException:
            self.stop()
            raise
        return self

    def log(self, i: int) -> Path:
        """Daemon ``i``'s (1-based) log file."""
        assert self.root is not None
        return self.root / f"h{i}.log"

    def _wait_up(self) -> None:
        libvirt.registerErrorHandler(_quiet, None)
        deadline = time.monotonic() + self.timeout
        pending = dict(enumerate(self.uris, start=1))
        while pending:
            for i, uri in list(pending.items()):
                proc = self.procs[i - 1]
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"libvirtd {i} exited {proc.returncode}:\n{self.log(i).read_text()}"
                    )
                try:
                    conn = libvirt.open(uri)
                except libvirt.libvirtError:
                    continue
                try:
                    conn.getInfo()
                finally:
                    conn.close()
                del pending[i]
            if not pending:
                break
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- h{i}\n{self.log(i).read_text()}" for i in pending)
                raise RuntimeError(f"libvirtd did not come up in {self.timeout} s:\n{logs}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM the daemons started here, SIGKILL what is left after 10 s, wait for
        every one of them, then remove their directories."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.procs = []
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        self.dirs = []
        self.uris = []

    def __enter__(self) -> TestDaemons:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
