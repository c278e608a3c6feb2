"""``--workers N``: N serving processes on one listening socket, and their parent.

The parent binds the socket, brings the registry's schema up, then forks the
workers; it serves nothing itself and starts no thread. Each worker is a whole
fabric server of its own (registry engine, services, cluster membership, waitress
on the inherited socket; the kernel hands each connection to one of them), so
everything that already holds between several servers on one registry holds
between the workers: leases share the background work out, conditional UPDATEs
decide every claim and check-out, ``vms.owner`` keeps two processes off one VM.

Start: every worker builds its services and joins the cluster; the one that takes
the discovery lease discovers the hosts. Only when every worker is ready does any
of them accept (as a single server accepts only after its start-up), and then the
parent prints ``fabric listening on ...``.

Signals: SIGTERM or SIGINT to the parent stops every worker (each finishes its
requests in flight and leaves the cluster) and the parent exits 0 once they all
have. SIGHUP is passed to one worker (the reload is written to the registry; the
others' host caches read it at their next refresh). A worker that ends while the
server is not stopping (a crash, a kill, a failed start) stops the others and the
parent exits non-zero: a service manager restarts the server whole, rather than
this process hiding a crash behind a restart.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger(__name__)

# /metrics over N workers (api/status.py): prometheus_client's directory of files,
# one per worker, and in it the id of the last event whose duration was observed.
SHARED_METRICS = "PROMETHEUS_MULTIPROC_DIR"
CURSOR_FILE = "events.cursor"

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
KILL_AFTER = 120.0  # seconds after SIGTERM: a worker that has not stopped is killed


@dataclass
class WorkerLink:
    """One worker's side of the start-up handshake with the parent."""

    index: int
    count: int
    ready_fd: int
    go_fd: int
    # Set by SIGTERM/SIGINT from the moment the worker exists: one that arrives
    # during start-up ends it cleanly once started (the server's own handler sets
    # this same event later).
    stopping: threading.Event = field(default_factory=threading.Event)

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        self.stopping.set()

    def ready_and_wait(self) -> bool:
        """Tell the parent this worker is ready; wait until every worker is. False:
        the server is stopping instead (the parent closed the pipe)."""
        os.write(self.ready_fd, b"r")
        os.close(self.ready_fd)
        try:
            return os.read(self.go_fd, 1) == b"g"
        finally:
            os.close(self.go_fd)


class Supervisor:
    """Fork ``count`` workers running ``target(link)`` (its exit code); watch them."""

    def __init__(
        self,
        count: int,
        target: Callable[[WorkerLink], int],
        *,
        url: str,
        after_fork: Callable[[], None] | None = None,
    ) -> None:
        self.count = count
        self.target = target
        self.url = url
        self.after_fork = after_fork
        self.children: dict[int, int] = {}  # pid -> worker index
        self.code = 0
        self.stopping = False
        self.started = False
        self._kill_at: float | None = None

    def _fork(self, index: int, ready: tuple[int, int], go: tuple[int, int]) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            os.close(ready[0])
            os.close(go[1])
            link = WorkerLink(index, self.count, ready[1], go[0])
            signal.signal(signal.SIGTERM, link.on_signal)
            signal.signal(signal.SIGINT, link.on_signal)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until it serves
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            fmt = f"%(asctime)s %(levelname)s [worker {index}] %(name)s: %(message)s"
            for handler in logging.getLogger().handlers:
                handler.setFormatter(logging.Formatter(fmt))
            code = self.target(link)
        except BaseException:  # noqa: BLE001 - a worker's end is reported, never raised
            log.exception("worker %d failed", index)
        finally:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # not the parent's atexit handlers nor its finally blocks
        return 0  # not reached

    def run(self) -> int:
        ready, go = os.pipe(), os.pipe()
        # Blocked before forking (a signal then waits for sigtimedwait below); each
        # worker unblocks them at once and sets its own handlers.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        self._go_fd: int | None = go[1]
        try:
            try:
                for i in range(self.count):
                    self.children[self._fork(i, ready, go)] = i
            except OSError:  # fork failed: the workers made so far stop
                log.exception("could not start %d workers", self.count)
                self.code = 1
                self._stop()
            os.close(ready[1])
            os.close(go[0])
            if self.after_fork is not None:
                self.after_fork()
            os.set_blocking(ready[0], False)
            log.info("%d workers started: pids %s", self.count, sorted(self.children))
            self._watch(ready[0])
        finally:
            os.close(ready[0])
            self._close_go()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        log.info("all workers stopped")
        return self.code

    def _watch(self, ready_fd: int) -> None:
        readies = 0
        while self.children:
            info = signal.sigtimedwait(_SIGNALS, 0.5)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                if not self.stopping:
                    log.info("signal %d: stopping %d workers", info.si_signo, len(self.children))
                    self._stop()
            elif info is not None and info.si_signo == signal.SIGHUP:
                self._hangup()
            if not self.started and not self.stopping:
                try:
                    readies += len(os.read(ready_fd, 64))
                except BlockingIOError:
                    pass
                if readies >= self.count:
                    assert self._go_fd is not None
                    os.write(self._go_fd, b"g" * self.count)
                    self.started = True
                    log.info("serving on %s with %d workers", self.url, self.count)
                    print(f"fabric listening on {self.url}", flush=True)
            self._reap()
            if self._kill_at is not None and time.monotonic() > self._kill_at:
                for pid in self.children:
                    log.error("worker pid %d did not stop; killing it", pid)
                    _signal(pid, signal.SIGKILL)
                self._kill_at = None
                self.code = self.code or 1

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            index = self.children.pop(pid, None)
            rc = os.waitstatus_to_exitcode(status)
            if not self.stopping:
                how = f"was killed by signal {-rc}" if rc < 0 else f"exited {rc}"
                log.error("worker %s (pid %d) %s: stopping the server", index, pid, how)
                self.code = rc if rc > 0 else 1
                self._stop()
            elif rc != 0:
                log.warning("worker %s (pid %d) exited %d while stopping", index, pid, rc)
                self.code = self.code or (rc if rc > 0 else 1)

    def _stop(self) -> None:
        self.stopping = True
        self._close_go()  # workers still waiting to start see the pipe end: they stop
        for pid in self.children:
            _signal(pid, signal.SIGTERM)
        self._kill_at = time.monotonic() + KILL_AFTER

    def _hangup(self) -> None:
        if not self.started or self.stopping or not self.children:
            return
        pid = min(self.children, key=self.children.__getitem__)
        log.info("SIGHUP: passed to worker %d (pid %d)", self.children[pid], pid)
        _signal(pid, signal.SIGHUP)

    def _close_go(self) -> None:
        fd = getattr(self, "_go_fd", None)
        if fd is not None:
            os.close(fd)
            self._go_fd = None


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # it has just ended: the next reap sees it
