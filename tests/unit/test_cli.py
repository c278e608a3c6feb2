"""The launcher as a new user meets it: every bad setting is one line on stderr naming
the file (and line and key) or the flag, a non-zero exit, and nothing started: no
state directory, no registry file, no server."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.auth import is_password_hash
from orchestrator.registry import Registry
from tests.conftest import DEFAULT_TYPES, write_node

ROOT = Path(__file__).resolve().parents[2]


class Files:
    """Good input files, a config and a registry URL, all in ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pm = tmp / "pm"
        self.pm.write_text(f"uri=test://{write_node(tmp / 'node.xml', 4, 4096)}\n")
        image = tmp / "base.qcow2"
        image.write_bytes(b"QFI\xfb")
        self.images = tmp / "images"
        self.images.write_text(f"{image}\n")
        self.types = tmp / "types"
        self.types.write_text(json.dumps(DEFAULT_TYPES))
        self.state = tmp / "state"
        self.config = tmp / "fabric.yaml"
        self.config.write_text(f"state_dir: {self.state}\n")
        self.db = tmp / "registry.db"

    def args(self) -> list[str]:
        return [str(self.pm), str(self.images), str(self.types), "--config", str(self.config)]


def script(*args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "script"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,  # no controlling terminal
    )


def refused(proc: subprocess.CompletedProcess) -> str:
    """The one line a refusal prints (and checks there was nothing else)."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "listening" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# Each case changes the good files; the line must start with what it gives.
Case = Callable[[Files], str]


def _types(text: str) -> Case:
    def change(f: Files) -> str:
        f.types.write_text(text)
        return f"error: {f.types}:"

    return change


def _pm(text: str) -> Case:
    def change(f: Files) -> str:
        f.pm.write_text(text)
        return f"error: {f.pm}:1: "

    return change


def _config(text: str, line: int = 2) -> Case:
    def change(f: Files) -> str:
        f.config.write_text(f"state_dir: {f.state}\n{text}")
        return f"error: {f.config}:{line}: "

    return change


def _config_is_a_directory(f: Files) -> str:
    f.config = f.tmp / "conf.d"
    f.config.mkdir()
    return f"error: {f.config}: is a directory, not a file"


def _config_not_utf8(f: Files) -> str:
    f.config.write_bytes(b"state_dir: /tmp/caf\xe9\n")
    return f"error: {f.config}: not UTF-8 text"


def _image_is_a_directory(f: Files) -> str:
    (f.tmp / "images.d").mkdir()
    f.images.write_text(f"{f.tmp / 'images.d'}\n")
    return f"error: {f.images}:1: image path '{f.tmp / 'images.d'}' names a directory"


CASES: dict[str, Case] = {
    "types-ram-2**63": _types('{"types": [{"cpu": 1, "ram": 9223372036854775808, "disk": 1}]}'),
    "types-tid-2**63": _types('[{"tid": 9223372036854775808, "cpu": 1, "ram": 1, "disk": 1}]'),
    "types-cpu-10**23": _types('[{"cpu": 99999999999999999999999, "ram": 1, "disk": 1}]'),
    "types-50000-deep": _types('{"types": [' + "[" * 50_000),
    "pm-ram-2**63": _pm("uri=test:///default ram=9223372036854775808\n"),
    "pm-uri-command": _pm("uri=qemu+ssh://root@h1/system?command=/usr/bin/ssh-anyway\n"),
    "pm-uri-no-verify": _pm("uri=qemu+ssh://root@h1/system?no_verify=1\n"),
    "pm-uri-libssh": _pm("uri=qemu+libssh2://root@h1/system\n"),
    "pm-uri-ext": _pm("uri=qemu+ext:///system?command=/opt/tunnel\n"),
    "image-directory": _image_is_a_directory,
    "config-directory": _config_is_a_directory,
    "config-not-utf8": _config_not_utf8,
    "build-workers-0": _config("workers: {build_workers: 0}\n"),
    "auth-no-users": _config("auth:\n  enabled: true\n"),
    "auth-malformed-hash": _config("auth:\n  users: {alice: not-a-hash}\n", 3),
    "call-timeout-0": _config("libvirt: {call_timeout: 0}\n"),
    "connect-timeout-0": _config("ssh: {connect_timeout: 0}\n"),
    "ready-timeout-0": _config("guest: {ready_timeout: 0}\n"),
    "interval-0": _config("workers: {interval: 0}\n"),
    "forward-ports": _config("create: {forward_ports: 0-99999999}\n"),
    "config-deep": _config("a: " + "[" * 50_000 + "\n"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_bad_setting_is_one_line_and_nothing_starts(tmp_path, case):
    f = Files(tmp_path)
    start = case(f)
    line = refused(script(*f.args(), "--db", f"sqlite:///{f.db}", "--port", "0"))
    assert line.startswith(start), line
    assert not f.state.exists() and not f.db.exists()
    # validate says the same (without the "error: " of a refusal to start)
    check = script("validate", *f.args())
    assert check.returncode == 1 and "Traceback" not in check.stderr
    assert start.removeprefix("error: ") in check.stderr


def _bogus_db(f: Files) -> list[str]:
    return ["--db", "bogus://x"]


def _memory_db(f: Files) -> list[str]:
    return ["--db", "sqlite://"]


def _db_in_a_missing_directory(f: Files) -> list[str]:
    return ["--db", f"sqlite:///{f.tmp / 'missing' / 'registry.db'}"]


def _state_dir_under_a_file(f: Files) -> list[str]:
    f.config.write_text(f"state_dir: {f.pm}/state\n")
    return []


def _port_out_of_range(f: Files) -> list[str]:
    return ["--port", "99999"]


def _threads_0(f: Files) -> list[str]:
    return ["--threads", "0"]


def _workers_0(f: Files) -> list[str]:
    return ["--workers", "0"]


def _workers_65(f: Files) -> list[str]:
    return ["--workers", "65"]


def _foreign_address(f: Files) -> list[str]:
    return ["--host", "192.0.2.1"]  # TEST-NET-1: never this machine's


FLAGS: dict[str, tuple[Callable[[Files], list[str]], str]] = {
    "db-unknown": (_bogus_db, "error: --db 'bogus://x': SQLAlchemy knows no database 'bogus'"),
    "db-memory": (_memory_db, "error: --db 'sqlite://': the registry needs a file"),
    "db-no-directory": (_db_in_a_missing_directory, "error: --db 'sqlite:///"),
    "state-dir-unwritable": (_state_dir_under_a_file, "error: "),
    "port-99999": (_port_out_of_range, "error: --port 99999: must be 0..65535"),
    "threads-0": (_threads_0, "error: --threads 0: must be 1..1024"),
    "workers-0": (_workers_0, "error: --workers 0: must be 1..64"),
    "workers-65": (_workers_65, "error: --workers 65: must be 1..64"),
    "host-not-here": (_foreign_address, "error: --host 192.0.2.1 --port 0: cannot listen"),
}


@pytest.mark.parametrize(("flags", "start"), FLAGS.values(), ids=FLAGS.keys())
def test_a_bad_flag_or_directory_is_one_line_and_nothing_starts(tmp_path, flags, start):
    f = Files(tmp_path)
    extra = flags(f)
    if "--db" not in extra:
        extra += ["--db", f"sqlite:///{f.db}"]
    if "--port" not in extra:
        extra += ["--port", "0"]
    line = refused(script(*f.args(), *extra))
    assert line.startswith(start), line
    assert not f.db.exists() and not f.state.exists()
    if flags is _state_dir_under_a_file:
        assert line == (
            f"error: {f.config}:1: state_dir: {f.pm}/state cannot be created (Not a directory)"
        )


def test_a_port_in_use_is_refused_before_the_registry_is_made(tmp_path):
    f = Files(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refused(script(*f.args(), "--db", f"sqlite:///{f.db}", "--port", str(port)))
    assert (
        line
        == f"error: --host 127.0.0.1 --port {port}: cannot listen there (Address already in use)"
    )
    assert not f.db.exists()


def test_a_database_server_that_is_down_is_one_line(tmp_path):
    f = Files(tmp_path)
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"postgresql+psycopg://fabric:s3cret@127.0.0.1:{port}/fabric"
    line = refused(script(*f.args(), "--db", url, "--port", "0"))
    assert line.startswith(
        f"error: the registry postgresql+psycopg://fabric:***@127.0.0.1:{port}/fabric "
        "cannot be opened: "
    ), line
    assert "s3cret" not in line


def test_db_command_refuses_an_unknown_url_in_one_line(tmp_path):
    line = refused(script("db", "current", "--db", "bogus://x"))
    assert line.startswith("error: --db 'bogus://x': SQLAlchemy knows no database 'bogus'")


# -- the registry's file ------------------------------------------------------------


def test_the_registry_file_and_its_wal_are_readable_by_the_owner_only(tmp_path):
    path = tmp_path / "registry.db"
    old = os.umask(0o022)
    try:
        registry = Registry(f"sqlite:///{path}")
        registry.create_schema()
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob("registry.db*")}
        registry.close()
    finally:
        os.umask(old)
    assert set(modes) == {"registry.db", "registry.db-wal", "registry.db-shm"}
    assert set(modes.values()) == {0o600}, {k: oct(v) for k, v in modes.items()}


# -- hash-password ------------------------------------------------------------------


def test_hash_password_help_prints_help_and_reads_nothing():
    proc = script("hash-password", "--help", timeout=30)
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: script hash-password")
    assert "password:" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("stdin", ["", "long-enough\n"], ids=["nothing", "one-line"])
def test_hash_password_at_the_end_of_its_input_is_one_line(stdin):
    proc = script("hash-password", stdin=stdin, timeout=30)
    assert refused(proc) == "error: no password given (the input ended)"
    assert proc.returncode == 2


def test_hash_password_reads_two_lines_from_a_pipe():
    proc = script("hash-password", stdin="long-enough\nlong-enough\n", timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert is_password_hash(proc.stdout.strip())
    differ = script("hash-password", stdin="long-enough\nother-one\n", timeout=30)
    assert refused(differ) == "error: the two passwords differ"


def test_hash_password_on_a_terminal_ends_cleanly_on_ctrl_d():
    main, tty = pty.openpty()
    proc = subprocess.Popen(
        [str(ROOT / "script"), "hash-password"],
        stdin=tty,
        stdout=tty,
        stderr=tty,
        start_new_session=True,
    )
    os.close(tty)
    out = b""
    try:
        deadline = time.monotonic() + 120  # only gives up on a prompt that never comes
        while b"password: " not in out and time.monotonic() < deadline:
            if select.select([main], [], [], 0.5)[0]:
                out += os.read(main, 1024)
        assert b"password: " in out
        os.write(main, b"\x04")  # Ctrl-D: the end of the input
        assert proc.wait(timeout=120) == 2
        while select.select([main], [], [], 0.5)[0]:
            try:
                chunk = os.read(main, 1024)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    text = out.decode()
    assert "error: no password given (the input ended)" in text
    assert "Traceback" not in text
