"""Late work: a libvirt call that timed out goes on in its thread. A create given up
on must not leave a domain behind when its late call finishes; and calls that find
a host connecting wait for that one attempt, not one after another."""

from __future__ import annotations

import threading

import libvirt
import pytest

from orchestrator.errors import FabricError, HostTimeout
from orchestrator.hosts import host_target
from orchestrator.hypervisor.connection import HostConnection
from orchestrator.hypervisor.driver import LibvirtDriver
from tests.conftest import make_rig

WAIT = 60  # seconds a test waits for an event it expects long before; never reached


class _Gated:
    """A libvirt object whose ``method`` waits for ``gate`` (the host answers late),
    for the calls ``wanted(args)`` picks; every other attribute is the object's own."""

    def __init__(self, inner, method: str, wanted, driver: SlowDriver) -> None:  # noqa: ANN001
        self._inner = inner
        self._method = method
        self._wanted = wanted
        self._driver = driver

    def __getattr__(self, name: str):  # noqa: ANN204
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def late(*args, **kwargs):  # noqa: ANN202
            if self._wanted(args):
                d = self._driver
                d.late_thread = threading.current_thread()
                d.stuck.set()
                assert d.gate.wait(WAIT)
            return attr(*args, **kwargs)

        return late


class _SlowConn(_Gated):
    """The connection: ``defineXML`` is gated, or the fabric pool's ``createXML`` of
    a VM's disk (``storagePoolLookupByName`` hands out the gated pool)."""

    def storagePoolLookupByName(self, name: str):  # noqa: ANN201, N802 - libvirt's name
        pool = self._inner.storagePoolLookupByName(name)
        if self._driver.slow != "createXML":
            return pool
        return _Gated(pool, "createXML", lambda args: "-vm-" in args[0], self._driver)


class SlowConnection(HostConnection):
    """A test:// host whose chosen call answers only when the test opens the gate.

    A test:// host lives in its libvirt connection: ``drop`` keeps it (a real host
    keeps its domains when the fabric reconnects), so what a late call makes stays
    there to be seen."""

    driver: SlowDriver

    def call(self, fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        d = self.driver

        def slowed(conn):  # noqa: ANN001, ANN202
            try:
                return fn(_SlowConn(conn, "defineXML", lambda a: d.slow == "defineXML", d))
            finally:
                if d.late_thread is threading.current_thread():
                    d.late_done.set()

        return super().call(slowed, *args, **kwargs)

    def drop(self) -> None:
        pass


class SlowDriver(LibvirtDriver):
    def __init__(self, slow: str, **kwargs) -> None:  # noqa: ANN003
        super().__init__(**kwargs)
        self.slow = slow
        self.gate = threading.Event()  # the late call goes on once set
        self.stuck = threading.Event()  # a call is waiting for the gate
        self.late_done = threading.Event()  # the late call has finished
        self.late_thread: threading.Thread | None = None

    def connection(self, host):  # noqa: ANN001, ANN201
        with self._conns_lock:
            conn = self._conns.get(host.id)
            if conn is None:
                conn = SlowConnection(
                    host.label,
                    host.uri,
                    connect_timeout=self.connect_timeout,
                    call_timeout=self.call_timeout,
                )
                conn.driver = self
                self._conns[host.id] = conn
            return conn


@pytest.mark.parametrize("slow", ["createXML", "defineXML"])
def test_a_create_given_up_on_leaves_no_domain_when_its_late_call_finishes(tmp_path, slow):
    # call_timeout: the create's call stops being waited for once the host is this
    # late; test:// calls otherwise answer in milliseconds.
    driver = SlowDriver(slow, connect_timeout=5, call_timeout=2)
    rig = make_rig(tmp_path, [{"cpus": 4, "ram": 4096}], driver=driver)
    try:
        with pytest.raises(FabricError, match="no answer within 2s"):
            rig.fabric.create_vm("late", 1, 1)
        assert driver.stuck.is_set()  # the create's call is still running, held up
        # The fabric gave up: the VM and its claim are gone.
        assert rig.registry.vms.list() == []
        assert rig.registry.claims.consistent() == []

        driver.gate.set()  # the host answers now; the late call goes on
        assert driver.late_done.wait(WAIT)
        host = rig.registry.hosts.get_any(1)
        conn = driver.connection(host_target(host)).call(lambda c: c)
        assert [d.name() for d in conn.listAllDomains(0)] == []  # nothing defined or running
        pool = conn.storagePoolLookupByName("fabric")
        pool.refresh(0)
        assert [v for v in pool.listVolumes() if "-vm-" in v] == []
    finally:
        driver.gate.set()
        rig.stop()


def test_calls_that_find_a_host_connecting_wait_for_that_attempt_only(monkeypatch):
    gate = threading.Event()
    opened: list[libvirt.virConnect] = []
    attempts = []
    real_open = libvirt.open

    def slow_open(uri: str) -> libvirt.virConnect:
        attempts.append(uri)
        assert gate.wait(WAIT)
        conn = real_open("test:///default")
        opened.append(conn)
        return conn

    monkeypatch.setattr(libvirt, "open", slow_open)
    host = HostConnection("slow", "test:///default", connect_timeout=0.5, call_timeout=5)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            host.call(lambda c: c.getHostname())
        except BaseException as e:  # noqa: BLE001 - collected for the test
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    try:
        assert not any(t.is_alive() for t in threads)
        assert len(errors) == 4 and all(isinstance(e, HostTimeout) for e in errors), errors
        assert len(attempts) == 1  # one attempt to connect; the others got its answer
    finally:
        gate.set()
        host.close()
