"""The one module that owns paramiko: open SSH sessions, read files, run commands.

Host keys are always checked against a known_hosts file (never auto-added);
every socket, SSH or SFTP failure becomes ``HostUnreachable(host, reason)``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import paramiko

from .errors import HostTimeout, HostUnreachable, ImageUnavailable


@dataclass(frozen=True)
class SshSettings:
    key: str | None = None
    known_hosts: str | None = None
    connect_timeout: float = 5.0
    command_timeout: float = 60.0


@dataclass(frozen=True)
class CommandResult:
    status: int
    stdout: str
    stderr: str


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
    def session(self) -> Iterator[paramiko.SSHClient]:
        client = paramiko.SSHClient()
        try:
            if self.pinned_keys is not None or self.on_new_key is not None:
                client.set_missing_host_key_policy(
                    _PinnedKeys(self.pinned_keys or [], self.on_new_key)
                )
            else:
                known = self.settings.known_hosts or os.path.expanduser("~/.ssh/known_hosts")
                if os.path.exists(known):
                    client.load_host_keys(known)
                client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                key_filename=self.settings.key,
                timeout=self.settings.connect_timeout,
                banner_timeout=self.settings.connect_timeout,
                auth_timeout=self.settings.connect_timeout,
                allow_agent=False,
                look_for_keys=self.settings.key is None,
            )
        except TimeoutError:
            client.close()
            raise HostTimeout(self.label, "SSH connection timed out") from None
        except paramiko.SSHException as e:
            client.close()
            raise HostUnreachable(self.label, f"SSH: {e}") from None
        except OSError as e:
            client.close()
            raise HostUnreachable(self.label, f"SSH: {e.strerror or e}") from None
        try:
            yield client
        except (paramiko.SSHException, OSError) as e:
            if isinstance(e, socket.timeout | TimeoutError):
                raise HostTimeout(self.label, "SSH operation timed out") from None
            raise HostUnreachable(self.label, f"SSH: {e}") from None
        finally:
            client.close()

    def run(self, argv: list[str], timeout: float | None = None) -> CommandResult:
        """Run a command given as an argument list (quoted here, never built from strings)."""
        command = shlex.join(argv)
        with self.session() as client:
            _, out, err = client.exec_command(
                command, timeout=timeout or self.settings.command_timeout
            )
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
            status = out.channel.recv_exit_status()
            return CommandResult(status, stdout, stderr)

    @contextlib.contextmanager
    def open_file(self, path: str) -> Iterator[tuple[IO[bytes], int]]:
        """Open a remote file for reading; yields (file, size)."""
        with self.session() as client:
            sftp = client.open_sftp()
            try:
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

    def write_file(self, path: str, data: bytes) -> None:
        """Write a whole file (through a temporary name, so readers never see half)."""
        with self.session() as client:
            sftp = client.open_sftp()
            try:
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
        with self.session() as client:
            sftp = client.open_sftp()
            try:
                with contextlib.suppress(FileNotFoundError):
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
