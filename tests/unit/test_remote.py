"""remote.py against servers on 127.0.0.1 that misbehave: every SSH step has a
deadline, and a command's output is capped (the rest read and dropped)."""

from __future__ import annotations

import threading

import pytest

from orchestrator.errors import HostTimeout
from orchestrator.remote import Remote, SshSettings
from tests.fake_ssh import FakeSshServer, SilentListener

CAP = 64 * 1024  # bytes of each of a command's streams kept
WAIT = 60  # seconds a test waits for a call it expects to end long before; never reached


def finish(fn):  # noqa: ANN001, ANN201
    """Run ``fn`` in a thread; its result or exception, or a failure if it never ends."""
    out: dict = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(WAIT)
    assert not t.is_alive(), "the call never ended: a step has no deadline"
    return out


@pytest.fixture
def silent():
    s = SilentListener()
    yield s
    s.close()


def fake(tmp_path, **kw) -> FakeSshServer:
    return FakeSshServer(tmp_path, **kw)


def remote_to(server: FakeSshServer, **settings) -> Remote:
    return Remote(
        "root",
        "127.0.0.1",
        server.port,
        SshSettings(key=server.client_key_file, **settings),
        pinned_keys=[server.key_line],
    )


def test_a_server_that_accepts_and_never_sends_a_banner_times_out_at_connect_timeout(silent):
    remote = Remote("root", "127.0.0.1", silent.port, SshSettings(connect_timeout=1))
    out = finish(lambda: remote.run(["true"]))
    e = out.get("error")
    assert isinstance(e, HostTimeout), e
    assert e.reason == "SSH handshake: no answer within 1s"
    assert silent.accepted == 1
    assert silent.open_connections() == 0  # the fabric hung up; nothing is left waiting


def test_an_sftp_subsystem_that_never_answers_is_cut_off(tmp_path):
    server = fake(tmp_path, mode="sftp-hang")
    try:
        remote = remote_to(server, command_timeout=0.5)

        def read() -> bytes:
            with remote.open_file("/x.qcow2") as (fh, _size):
                return fh.read()

        out = finish(read)
        assert server.stalled.is_set()
        e = out.get("error")
        assert isinstance(e, HostTimeout), e
        assert e.reason == "SFTP: no answer within 0.5s"
    finally:
        server.close()


def test_an_sftp_read_never_answered_is_cut_off(tmp_path):
    server = fake(tmp_path, mode="sftp-read-hang")
    try:
        remote = remote_to(server, command_timeout=0.5)

        def read() -> bytes:
            with remote.open_file("/x.qcow2") as (fh, size):
                assert size == 1024 * 1024
                return fh.read(65536)

        out = finish(read)
        assert server.stalled.is_set()
        e = out.get("error")
        assert isinstance(e, HostTimeout), e
        assert e.reason == "SSH: no answer within 0.5s"
    finally:
        server.close()


def test_a_command_request_never_answered_is_cut_off(tmp_path):
    server = fake(tmp_path, mode="exec-hang")
    try:
        remote = remote_to(server)
        out = finish(lambda: remote.run(["rm", "-rf", "/tmp/x"], timeout=0.5))
        assert server.commands == ["rm -rf /tmp/x"]
        e = out.get("error")
        assert isinstance(e, HostTimeout), e
        assert e.reason == "command rm: no answer within 0.5s"
    finally:
        server.close()


def test_run_keeps_at_most_the_cap_of_each_stream_and_the_command_still_ends(tmp_path):
    server = fake(tmp_path, stdout_bytes=1024 * 1024, stderr_bytes=300 * 1024, status=3)
    try:
        out = finish(lambda: remote_to(server).run(["find", "/tmp"]))
        assert "error" not in out, out
        res = out["value"]
        assert res.status == 3
        assert len(res.stdout) == CAP
        assert len(res.stderr) == CAP
        assert res.truncated
        assert server.sent.is_set()  # all of it was read: the command was never stalled
    finally:
        server.close()


def test_run_keeps_small_output_whole(tmp_path):
    server = fake(tmp_path, stdout_bytes=100, stderr_bytes=7, status=0)
    try:
        out = finish(lambda: remote_to(server).run(["true"]))
        assert "error" not in out, out
        res = out["value"]
        assert (res.status, len(res.stdout), len(res.stderr)) == (0, 100, 7)
        assert not res.truncated
    finally:
        server.close()


class FakeChannel:
    """What read_output uses of a paramiko channel: stdout and stderr chunks that
    arrive interleaved, then the end of file."""

    def __init__(self, chunks: list[tuple[str, bytes]]) -> None:
        self.chunks = chunks
        self.eof_received = False
        self.closed = False
        self.waits = 0

    def _ready(self, stream: str) -> bool:
        return bool(self.chunks) and self.chunks[0][0] == stream

    def recv_ready(self) -> bool:
        return self._ready("out")

    def recv_stderr_ready(self) -> bool:
        return self._ready("err")

    def recv(self, n: int) -> bytes:
        assert self._ready("out")
        return self.chunks.pop(0)[1]

    def recv_stderr(self, n: int) -> bytes:
        assert self._ready("err")
        return self.chunks.pop(0)[1]

    def arrive(self) -> None:
        """The wait: nothing is ready now; the end of file comes."""
        self.waits += 1
        self.eof_received = True


def test_read_output_reads_everything_keeps_the_cap_and_drops_the_rest():
    from orchestrator.remote import read_output

    chunk = b"y" * 30000
    chunks = [("out" if i % 3 else "err", chunk) for i in range(400)]  # ~12 MB in all
    chan = FakeChannel(list(chunks))
    out, err, truncated = read_output(chan, cap=50000, wait=chan.arrive)
    assert chan.chunks == []  # every chunk was read
    assert (len(out), len(err), truncated) == (50000, 50000, True)
    assert chan.waits == 1  # it waited only once nothing was ready


def test_read_output_of_nothing():
    from orchestrator.remote import read_output

    chan = FakeChannel([])
    assert read_output(chan, cap=10, wait=chan.arrive) == (b"", b"", False)
