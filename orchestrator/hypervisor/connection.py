"""One reused libvirt connection per host, reopened when it breaks, every call time-limited.

A call that runs out of time goes on in its thread (libvirt cannot be interrupted).
Work that must not finish after its caller gave up carries a ``Fence``: the
connection abandons it when the caller stops waiting, and the work checks it
between its steps and undoes what it made (see the driver's ``create``).
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import libvirt

from ..errors import HostTimeout, HostUnreachable, HypervisorError

log = logging.getLogger(__name__)
T = TypeVar("T")

# libvirt errors that mean "the link to the host is broken", not "the host said no".
_LINK_ERRORS = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_AUTH_CANCELLED,
}

_event_loop_lock = threading.Lock()
_event_loop_started = False


def _start_event_loop() -> None:
    """libvirt keepalives need an event loop: one daemon thread runs the default one."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


# Silence libvirt's default handler, which prints every error to stderr.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class Abandoned(HypervisorError):
    """The work's caller gave up on it (e.g. its call timed out): it must not go on."""


class Fence:
    """Whether work handed to a host is still wanted. The caller ``abandon()``s it when
    it gives up; the work ``check()``s it before each step that makes something, and
    once abandoned raises ``Abandoned`` and undoes what it made."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._abandoned = threading.Event()

    def abandon(self) -> None:
        self._abandoned.set()

    @property
    def abandoned(self) -> bool:
        return self._abandoned.is_set()

    def check(self, step: str) -> None:
        if self._abandoned.is_set():
            raise Abandoned(f"{self.what} was given up before {step}")


@dataclass(frozen=True)
class SshOptions:
    """How libvirt's ssh transport reaches hosts: our key, our known_hosts, a timeout."""

    key: str | None = None
    known_hosts: str | None = None
    connect_timeout: int = 5

    def wrapper(self, state_dir: Path) -> Path:
        """Write the ssh wrapper libvirt runs as its ``command``; returns its path.

        The wrapper pins host-key checking on, batch mode (never a prompt), a connect
        timeout and keepalives. libvirt runs it with a scrubbed environment, so the
        settings are written into it, each quoted.
        """
        state_dir.mkdir(parents=True, exist_ok=True)
        args = [
            "ssh",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"ConnectTimeout={int(self.connect_timeout)}",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=2",
        ]  # fmt: skip
        if self.known_hosts:
            args += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
            args += ["-o", "GlobalKnownHostsFile=/dev/null"]
        if self.key:
            args += ["-o", "IdentitiesOnly=yes", "-i", self.key]
        body = "\n".join(
            [
                "#!/bin/sh",
                "# Written by the fabric: libvirt's qemu+ssh transport runs this as `ssh`.",
                f'exec {shlex.join(args)} "$@"',
                "",
            ]
        )
        digest = hashlib.sha256(body.encode()).hexdigest()[:12]
        path = state_dir / f"fabric-ssh-{digest}"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(body)
            tmp.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
            tmp.replace(path)
        return path


def transport_uri(uri: str, ssh_command: Path | None) -> str:
    """The URI libvirt opens: for ``+ssh`` transports, our ssh wrapper and no tty."""
    parts = urlsplit(uri)
    if not parts.scheme.endswith("+ssh") or ssh_command is None:
        return uri
    query = dict(parse_qsl(parts.query))
    query.setdefault("command", str(ssh_command))
    query.setdefault("no_tty", "1")
    return urlunsplit(parts._replace(query=urlencode(query)))


class HostConnection:
    """A libvirt connection to one host, shared by all threads.

    ``call(fn)`` runs ``fn(conn)`` on a worker thread and waits at most
    ``timeout`` seconds: a dead host yields HostTimeout, never a hung request.
    A broken link is dropped and reopened on the next call. Calls that find
    another one connecting wait for it at most ``connect_timeout``; if that
    attempt fails they fail with its reason instead of trying again one by one.
    """

    def __init__(
        self,
        label: str,
        uri: str,
        *,
        ssh_command: Path | None = None,
        connect_timeout: float = 10.0,
        call_timeout: float = 60.0,
        workers: int = 8,
    ) -> None:
        self.label = label
        self.uri = uri
        self.open_uri = transport_uri(uri, ssh_command)
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        self._failed: tuple[HostUnreachable, float] | None = None  # last open's failure, when
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"lv-{label}")

    @property
    def is_test(self) -> bool:
        return self.uri.startswith("test:")

    def _open(self) -> libvirt.virConnect:
        asked = time.monotonic()
        if not self._lock.acquire(timeout=self.connect_timeout):
            raise HostTimeout(
                self.label,
                f"no connection within {self.connect_timeout:g}s (another call is connecting)",
            )
        try:
            conn = self._conn
            if conn is not None:
                try:
                    if conn.isAlive():
                        return conn
                except libvirt.libvirtError:
                    pass
                self._conn = None
                _close_quietly(conn)
            if self._failed is not None and self._failed[1] >= asked:
                # The attempt this call waited for failed just now: its reason, at once.
                e = self._failed[0]
                raise type(e)(e.host, e.reason)
            try:
                conn = self._connect()
            except HostUnreachable as e:
                self._failed = (e, time.monotonic())
                raise
            self._failed = None
            self._conn = conn
            return conn
        finally:
            self._lock.release()

    def _connect(self) -> libvirt.virConnect:
        if not self.is_test:
            _start_event_loop()
        fut = self._pool.submit(libvirt.open, self.open_uri)
        try:
            conn = fut.result(timeout=self.connect_timeout)
        except FutureTimeout:
            if not fut.cancel():
                fut.add_done_callback(_close_late)  # a connection made too late is closed
            raise HostTimeout(
                self.label, f"no answer within {self.connect_timeout:g}s while connecting"
            ) from None
        except libvirt.libvirtError as e:
            raise HostUnreachable(self.label, _short(e)) from None
        if not self.is_test:
            try:
                conn.setKeepAlive(5, 3)
            except libvirt.libvirtError:
                pass  # local drivers have no keepalive; that is fine
        return conn

    def drop(self) -> None:
        """Forget the current connection (it will be reopened on the next call)."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.submit(_close_quietly, conn)

    def call(
        self,
        fn: Callable[[libvirt.virConnect], T],
        timeout: float | None = None,
        fence: Fence | None = None,
    ) -> T:
        """``fn(conn)`` on a worker thread, waited for at most ``timeout`` seconds. When
        the wait runs out, ``fn`` is not started if it has not yet, and ``fence`` (the
        work's own) is abandoned before HostTimeout is raised, so that the caller's
        rollback comes after it."""
        conn = self._open()
        fut = self._pool.submit(fn, conn)
        limit = timeout if timeout is not None else self.call_timeout
        try:
            return fut.result(timeout=limit)
        except FutureTimeout:
            fut.cancel()
            if fence is not None:
                fence.abandon()
            self.drop()
            raise HostTimeout(self.label, f"no answer within {limit:g}s") from None
        except libvirt.libvirtError as e:
            if e.get_error_code() in _LINK_ERRORS:
                self.drop()
                raise HostUnreachable(self.label, _short(e)) from None
            raise HypervisorError(f"host {self.label}: {_short(e)}") from e

    def close(self) -> None:
        self.drop()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _close_late(fut: Future) -> None:
    if not fut.cancelled() and fut.exception() is None:
        _close_quietly(fut.result())


def _close_quietly(conn: libvirt.virConnect) -> None:
    try:
        conn.close()
    except libvirt.libvirtError:
        pass


def _short(e: libvirt.libvirtError) -> str:
    msg = (e.get_error_message() or str(e)).strip()
    return " ".join(msg.split())[:300]
