"""Start `./script` as its own process for tests, and wait until it serves."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], log: Path, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    """Run ``./script ARGS --port P`` with output to ``log``; return (process, base URL)."""
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(ROOT / "script"), *args, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the fabric exited {proc.returncode}:\n{log.read_text()}")
        try:
            requests.get(url + "/healthz", timeout=1)
            return proc, url
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the fabric did not start:\n{log.read_text()}")


class ServedApp:
    """A WSGI app on waitress (the production server) in a thread, on a free loopback
    port. ``stop()`` ends the loop first and closes sockets after, so the server
    thread never polls a closed descriptor."""

    def __init__(self, app, threads: int = 16) -> None:  # noqa: ANN001
        import threading

        from waitress import create_server

        self.sockets: dict = {}  # waitress's socket map, polled by _run
        self.server = create_server(
            app, map=self.sockets, host="127.0.0.1", port=0, threads=threads
        )
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from waitress import wasyncore

        while not self._stop.is_set():
            wasyncore.loop(timeout=0.1, map=self.sockets, count=1)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        self.server.close()
