"""Stand-ins for SSH servers on 127.0.0.1, for tests that need one to misbehave:

- ``SilentListener``: accepts TCP connections and never sends a byte (no banner).
- ``FakeSshServer``: a real SSH server (paramiko's server side) that lets anyone
  log in, then answers commands with output of a given size, or never answers a
  command or the SFTP subsystem.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

import paramiko

from orchestrator.remote import key_line


class SilentListener:
    """Accepts connections, holds them open and says nothing until ``close()``.

    ``accepted`` counts connections; ``first`` is set at the first one.
    ``release()`` closes every held connection (and any later one at once)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.accepted = 0
        self.first = threading.Event()
        self._released = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                if self._released:
                    conn.close()
                else:
                    self.held.append(conn)
            self.first.set()

    def open_connections(self) -> int:
        """How many held connections the other side has not closed yet (what it
        sent, e.g. its own banner, is read and ignored)."""
        n = 0
        with self._lock:
            for conn in self.held:
                conn.setblocking(False)
                try:
                    while conn.recv(4096):
                        pass
                except BlockingIOError:
                    n += 1  # not closed: still waiting on us
                except OSError:
                    pass
        return n

    def release(self) -> None:
        with self._lock:
            self._released = True
            held, self.held = self.held, []
        for conn in held:
            conn.close()

    def close(self) -> None:
        self.release()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class _Server(paramiko.ServerInterface):
    def __init__(self, owner: FakeSshServer) -> None:
        self.owner = owner

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        owner = self.owner
        owner.commands.append(command.decode())
        if owner.mode == "exec-hang":
            owner.stalled.set()
            owner.gate.wait()
            return False
        threading.Thread(target=owner.spew, args=(channel,), daemon=True).start()
        return True

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        if self.owner.mode == "sftp-read-hang":
            return super().check_channel_subsystem_request(channel, name)
        # The subsystem is granted and then nothing more is said on the channel.
        self.owner.stalled.set()
        return True


class _StalledHandle(paramiko.SFTPHandle):
    def __init__(self, owner: FakeSshServer) -> None:
        super().__init__()
        self.owner = owner

    def read(self, offset: int, length: int) -> bytes:
        self.owner.stalled.set()
        self.owner.gate.wait()
        return b""


class _StallingSftp(paramiko.SFTPServerInterface):
    """Any file exists, is 1 MiB long, and its reads are never answered."""

    def __init__(self, server: _Server, *args: object, **kwargs: object) -> None:
        super().__init__(server)
        self.owner = server.owner

    def stat(self, path: str) -> paramiko.SFTPAttributes:
        attrs = paramiko.SFTPAttributes()
        attrs.st_size = 1024 * 1024
        attrs.st_mode = 0o100644
        return attrs

    lstat = stat

    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> paramiko.SFTPHandle:
        return _StalledHandle(self.owner)


class FakeSshServer:
    """An SSH server on 127.0.0.1 that lets any key in.

    ``mode``: "output" (a command writes ``stdout_bytes`` and ``stderr_bytes``, then
    exits ``status``), "exec-hang" (a command request is never answered),
    "sftp-hang" (the SFTP subsystem is granted and never speaks) or "sftp-read-hang"
    (SFTP opens any file, and never answers a read). ``stalled`` is set
    when a request is being left unanswered; ``sent`` when a command's output has all
    gone out and its exit status was sent."""

    def __init__(
        self,
        tmp: Path,
        mode: str = "output",
        stdout_bytes: int = 0,
        stderr_bytes: int = 0,
        status: int = 0,
    ) -> None:
        self.mode = mode
        self.stdout_bytes = stdout_bytes
        self.stderr_bytes = stderr_bytes
        self.status = status
        self.host_key = paramiko.ECDSAKey.generate()
        client_key = paramiko.ECDSAKey.generate()
        self.client_key_file = str(tmp / "client_key")
        client_key.write_private_key_file(self.client_key_file)
        self.commands: list[str] = []
        self.stalled = threading.Event()
        self.sent = threading.Event()
        self.gate = threading.Event()  # set by close(): let stalled handlers go
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.transports: list[paramiko.Transport] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def key_line(self) -> str:
        return key_line(self.host_key)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = paramiko.Transport(conn)
            t.add_server_key(self.host_key)
            t.set_subsystem_handler("sftp", paramiko.SFTPServer, _StallingSftp)
            self.transports.append(t)
            t.start_server(server=_Server(self))

    def spew(self, channel: paramiko.Channel) -> None:
        # As sshd, answer the exec request before the command's output goes out: wait
        # for the client's end of input (sent once it has the answer), or a second.
        channel.settimeout(1.0)
        with contextlib.suppress(TimeoutError):
            channel.recv(1)
        channel.settimeout(None)
        block = b"x" * 8192
        for size, send in ((self.stdout_bytes, channel.sendall), (self.stderr_bytes, None)):
            send = send or channel.sendall_stderr
            left = size
            while left > 0:
                n = min(left, len(block))
                send(block[:n])
                left -= n
        channel.send_exit_status(self.status)
        self.sent.set()
        channel.close()

    def close(self) -> None:
        self.gate.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for t in self.transports:
            t.close()
