"""The one module that owns paramiko: open SSH sessions, read files, run commands.

Host keys are always checked against a known_hosts file (never auto-added);
every socket, SSH or SFTP failure becomes ``HostUnreachable(host, reason)``.

Every step has a deadline: the whole handshake (TCP connect, banner, key exchange,
authentication) ``connect_timeout``; opening a channel or an SFTP request, and each
read of a file, ``command_timeout``; a command, its ``timeout`` in all. A step that
runs out of time ends its session (the socket is shut down, which wakes every wait
on it) and raises ``HostTimeout``. A command's output is kept up to a cap; the rest
is read and dropped, so the command still ends.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import paramiko

from .errors import HostTimeout, HostUnreachable, ImageUnavailable

OUTPUT_CAP = 64 * 1024  # bytes of a command's stdout (and of its stderr) kept
_CHUNK = 32 * 1024


@dataclass(frozen=True)
class SshSettings:
    key: str | None = None
    known_hosts: str | None = None
    connect_timeout: float = 5.0  # the whole handshake: connect, banner, keys, login
    command_timeout: float = 60.0  # a command in all; an SFTP request or read, each


@dataclass(frozen=True)
class CommandResult:
    status: int
    stdout: str
    stderr: str
    truncated: bool = False  # more output came than was kept (OUTPUT_CAP each)


def key_line(key: paramiko.PKey) -> str:
    """``type base64`` of a host key, as known_hosts writes it."""
    return f"{key.get_name()} {key.get_base64()}"


class _PinnedKeys(paramiko.MissingHostKeyPolicy):
    """Accept a host key only if it is one of ``pinned``; with none pinned and
    ``on_new`` given, trust it on first use and hand it to ``on_new`` to record."""

    def __init__(self, pinned: list[str], on_new: Callable[[str], None] | None) -> None:
        self.pinned = {" ".join(k.split()[:2]) for k in pinned}
        self.on_new = on_new

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        line = key_line(key)
        if line in self.pinned:
            return
        if not self.pinned and self.on_new is not None:
            self.on_new(line)
            return
        raise paramiko.SSHException(f"host key for {hostname} does not match the recorded key")


class _Watchdog:
    """Ends a session whose step has waited too long: shuts its socket down and closes
    the client, which wakes every paramiko wait on them (a reader, a channel request,
    the handshake). ``expired`` then says which step ran out of time."""

    def __init__(self, client: paramiko.SSHClient, sock: socket.socket) -> None:
        self.client = client
        self.sock = sock
        self.expired: str | None = None

    @contextlib.contextmanager
    def limit(self, seconds: float, what: str) -> Iterator[None]:
        timer = threading.Timer(seconds, self._expire, (f"{what}: no answer within {seconds:g}s",))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _expire(self, why: str) -> None:
        self.expired = why
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.client.close()


@dataclass
class _Session:
    client: paramiko.SSHClient
    watchdog: _Watchdog

    def sftp(self, timeout: float) -> paramiko.SFTPClient:
        """An SFTP session whose every request and read waits at most ``timeout``."""
        with self.watchdog.limit(timeout, "SFTP"):
            sftp = self.client.open_sftp()
        sftp.get_channel().settimeout(timeout)
        return sftp


class _Capped:
    """Up to ``cap`` bytes of a stream; what comes after is counted and dropped."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = max(self.cap - len(self.data), 0)
        self.data += chunk[:room]
        self.dropped += max(len(chunk) - room, 0)


def read_output(
    chan: paramiko.Channel, cap: int = OUTPUT_CAP, wait: Callable[[], object] | None = None
) -> tuple[bytes, bytes, bool]:
    """A command's (stdout, stderr, truncated): both streams read as they come until
    the channel's end of file, at most ``cap`` bytes of each kept and the rest read and
    dropped, so that the command never stalls on a full window and always ends.
    ``wait`` blocks until there may be more (default: select on the channel)."""
    out, err = _Capped(cap), _Capped(cap)
    wait = wait or (lambda: select.select([chan], [], [], 1.0))
    while True:
        if chan.recv_ready():
            out.add(chan.recv(_CHUNK))
        elif chan.recv_stderr_ready():
            err.add(chan.recv_stderr(_CHUNK))
        elif chan.eof_received or chan.closed:
            # Nothing comes after the end of file; what came with it was read above.
            if not (chan.recv_ready() or chan.recv_stderr_ready()):
                break
        else:
            wait()
    return bytes(out.data), bytes(err.data), bool(out.dropped or err.dropped)


class Remote:
    """SSH access to one ``user@host:port``.

    Host keys come from ``settings.known_hosts``; or, for guests, from
    ``pinned_keys`` (keys recorded earlier) with ``on_new_key`` to record a
    first key (trust on first use). An unknown key is always refused.
    """

    def __init__(
        self,
        user: str,
        host: str,
        port: int,
        settings: SshSettings,
        *,
        pinned_keys: list[str] | None = None,
        on_new_key: Callable[[str], None] | None = None,
    ) -> None:
        self.user = user
        self.host = host
        self.port = port
        self.settings = settings
        self.pinned_keys = pinned_keys
        self.on_new_key = on_new_key
        self.label = f"{user}@{host}:{port}"

    @contextlib.contextmanager
    def session(self) -> Iterator[_Session]:
        limit = self.settings.connect_timeout
        client = paramiko.SSHClient()
        if self.pinned_keys is not None or self.on_new_key is not None:
            client.set_missing_host_key_policy(_PinnedKeys(self.pinned_keys or [], self.on_new_key))
        else:
            known = self.settings.known_hosts or os.path.expanduser("~/.ssh/known_hosts")
            if os.path.exists(known):
                client.load_host_keys(known)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            sock = socket.create_connection((self.host, self.port), timeout=limit)
        except TimeoutError:
            raise HostTimeout(self.label, f"SSH: no connection within {limit:g}s") from None
        except OSError as e:
            raise HostUnreachable(self.label, f"SSH: {e.strerror or e}") from None
        watchdog = _Watchdog(client, sock)
        try:
            # One deadline for the whole handshake: a server that accepts and then
            # says nothing (or trickles its banner) is cut off at ``limit``.
            with watchdog.limit(limit, "SSH handshake"):
                client.connect(
                    self.host,
                    port=self.port,
                    username=self.user,
                    key_filename=self.settings.key,
                    sock=sock,
                    timeout=limit,
                    banner_timeout=limit,
                    auth_timeout=limit,
                    channel_timeout=self.settings.command_timeout,
                    allow_agent=False,
                    look_for_keys=self.settings.key is None,
                )
        except (paramiko.SSHException, OSError, EOFError) as e:
            client.close()
            sock.close()
            raise self._failure(watchdog, e) from None
        try:
            yield _Session(client, watchdog)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise self._failure(watchdog, e) from None
        else:
            if watchdog.expired:  # cut off, and what was read may be partial
                raise HostTimeout(self.label, watchdog.expired)
        finally:
            client.close()
            sock.close()

    def _failure(self, watchdog: _Watchdog, e: BaseException) -> HostUnreachable:
        if watchdog.expired:
            return HostTimeout(self.label, watchdog.expired)
        if isinstance(e, TimeoutError):  # a read or request that waited command_timeout
            return HostTimeout(
                self.label, f"SSH: no answer within {self.settings.command_timeout:g}s"
            )
        return HostUnreachable(self.label, f"SSH: {e}")

    def run(
        self, argv: list[str], timeout: float | None = None, max_output: int = OUTPUT_CAP
    ) -> CommandResult:
        """Run a command given as an argument list (quoted here, never built from strings).

        It has ``timeout`` seconds in all (default ``command_timeout``); it gets no
        input; at most ``max_output`` bytes of its stdout and of its stderr are kept.
        """
        command = shlex.join(argv)
        limit = timeout or self.settings.command_timeout
        with self.session() as s, s.watchdog.limit(limit, f"command {argv[0]}"):
            transport = s.client.get_transport()
            if transport is None:
                raise HostUnreachable(self.label, "SSH: the session has ended")
            chan = transport.open_session(timeout=limit)
            try:
                chan.settimeout(limit)
                chan.exec_command(command)
                chan.shutdown_write()
                stdout, stderr, truncated = read_output(chan, max_output)
                status = chan.recv_exit_status()
            finally:
                chan.close()
        return CommandResult(
            status,
            stdout.decode(errors="replace"),
            stderr.decode(errors="replace"),
            truncated,
        )

    @contextlib.contextmanager
    def open_file(self, path: str) -> Iterator[tuple[IO[bytes], int]]:
        """Open a remote file for reading; yields (file, size). Each read waits at
        most ``command_timeout`` for the server."""
        io_limit = self.settings.command_timeout
        with self.session() as s:
            sftp = s.sftp(io_limit)
            try:
                with s.watchdog.limit(io_limit, "SFTP open"):
                    try:
                        size = sftp.stat(path).st_size or 0
                        fh = sftp.open(path, "rb")
                    except FileNotFoundError:
                        raise ImageUnavailable(f"{self.label}:{path} does not exist") from None
                    except PermissionError:
                        raise ImageUnavailable(f"{self.label}:{path} is not readable") from None
                fh.prefetch(size)
                try:
                    yield fh, size
                finally:
                    fh.close()
            finally:
                sftp.close()

    def read_dir(self, path: str, max_bytes: int = 1 << 20) -> dict[str, bytes]:
        """Name -> content of each regular file in a remote directory (at most
        ``max_bytes`` of each); {} when the directory does not exist."""
        io_limit = self.settings.command_timeout
        out: dict[str, bytes] = {}
        with self.session() as s:
            sftp = s.sftp(io_limit)
            try:
                with s.watchdog.limit(io_limit, "SFTP list"):
                    try:
                        entries = sftp.listdir_attr(path)
                    except FileNotFoundError:
                        return {}
                for entry in entries:
                    if not stat.S_ISREG(entry.st_mode or 0):
                        continue
                    with (
                        s.watchdog.limit(io_limit, "SFTP read"),
                        contextlib.suppress(FileNotFoundError, PermissionError),
                        sftp.open(f"{path.rstrip('/')}/{entry.filename}", "rb") as fh,
                    ):
                        out[entry.filename] = fh.read(max_bytes)
            finally:
                sftp.close()
        return out

    def write_file(self, path: str, data: bytes) -> None:
        """Write a whole file (through a temporary name, so readers never see half)."""
        io_limit = self.settings.command_timeout
        with self.session() as s:
            sftp = s.sftp(io_limit)
            try:
                with s.watchdog.limit(io_limit, "SFTP write"):
                    head, _, name = path.rpartition("/")
                    tmp = f"{head}/.{name}.tmp"  # a dot-file, renamed into place when whole
                    with sftp.open(tmp, "wb") as fh:
                        fh.write(data)
                    sftp.chmod(tmp, 0o644)
                    sftp.posix_rename(tmp, path)
            finally:
                sftp.close()

    def remove_file(self, path: str) -> None:
        """Remove a file; one that is not there is fine."""
        io_limit = self.settings.command_timeout
        with self.session() as s:
            sftp = s.sftp(io_limit)
            try:
                with (
                    s.watchdog.limit(io_limit, "SFTP remove"),
                    contextlib.suppress(FileNotFoundError),
                ):
                    sftp.remove(path)
            finally:
                sftp.close()


@contextlib.contextmanager
def open_local(path: str) -> Iterator[tuple[IO[bytes], int]]:
    p = Path(path)
    try:
        fh = p.open("rb")
    except FileNotFoundError:
        raise ImageUnavailable(f"{path} does not exist") from None
    except PermissionError:
        raise ImageUnavailable(f"{path} is not readable") from None
    with fh:
        yield fh, p.stat().st_size
