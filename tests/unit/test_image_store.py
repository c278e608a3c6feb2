"""Creates whose image store accepts connections and never answers (a real TCP
listener on 127.0.0.1, as the images file's store), on test:// hosts, through the
API on waitress: each create fails with a clear error after at most one wait for
the store, leaves nothing behind, and health and reads are answered meanwhile."""

from __future__ import annotations

import queue
import threading

import pytest
import requests

from orchestrator.hosts import host_target
from tests.conftest import make_rig, serve
from tests.fake_ssh import SilentListener

WAIT = 60  # seconds a test waits for an answer it expects long before; never reached


@pytest.fixture
def silent():
    s = SilentListener()
    yield s
    s.close()


def store_rig(tmp_path, store: SilentListener, config: dict | None = None):  # noqa: ANN201
    """One test:// host; two images (ids 1 and 2) on the silent store."""
    images = [
        f"root@127.0.0.1:/x.qcow2 port={store.port}",
        f"root@127.0.0.1:/y.qcow2 port={store.port}",
    ]
    cfg = {"ssh": {"connect_timeout": 1}, **(config or {})}
    return make_rig(tmp_path, [{"cpus": 8, "ram": 8192}], config=cfg, images=images)


class Creates:
    """Creates sent at once from their own threads; answers arrive on ``answers``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: queue.Queue[tuple[str, requests.Response]] = queue.Queue()

    def send(self, name: str, image_id: int = 1) -> None:
        def go() -> None:
            params = {"name": name, "instance_type": 1, "image_id": image_id}
            r = requests.get(f"{self.url}/vm/create", params=params, timeout=WAIT)
            self.answers.put((name, r))

        threading.Thread(target=go, daemon=True).start()

    def next(self) -> tuple[str, requests.Response]:
        try:
            return self.answers.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError("a create was never answered") from None


def assert_nothing_left(rig, failed: int) -> None:
    assert rig.registry.vms.list() == []
    assert rig.registry.claims.consistent() == []
    for h in rig.registry.hosts.list():
        assert (h.cpu_used, h.ram_used, h.disk_used) == (0, 0, 0)
        conn = rig.driver.connection(host_target(h)).call(lambda c: c)
        assert [d.name() for d in conn.listAllDomains(0)] == []
        pool = conn.storagePoolLookupByName("fabric")
        pool.refresh(0)
        assert pool.listVolumes() == []  # no disk, and no half-copied image
    assert len(rig.registry.events.list(kind="vm.create_failed")) == failed


def test_parallel_creates_wait_for_a_silent_store_once_then_fail_fast_with_its_reason(
    tmp_path, silent
):
    rig = store_rig(tmp_path, silent)
    served = serve(rig.services, threads=8)
    try:
        creates = Creates(served.url)
        n = 6
        for i in range(n):
            creates.send(f"v{i}")
        answers = [creates.next()[1] for _ in range(n)]
        reason = f"image host root@127.0.0.1:{silent.port}: SSH handshake: no answer within 1s"
        for r in answers:
            assert r.status_code == 502, r.text
            assert r.json()["vmid"] == 0
            assert reason in r.json()["error"]
        # One create waited for the store; every other one was told what it found.
        assert silent.accepted == 1
        assert_nothing_left(rig, failed=n)

        # A later create fails at once with the same reason, without trying the store.
        r = requests.get(
            f"{served.url}/vm/create",
            params={"name": "later", "instance_type": 1, "image_id": 2},
            timeout=WAIT,
        )
        assert r.status_code == 502 and reason in r.json()["error"]
        assert "not tried again for another" in r.json()["error"]
        assert silent.accepted == 1
        assert_nothing_left(rig, failed=n + 1)
    finally:
        served.stop()
        rig.stop()


def test_health_and_reads_answer_while_creates_wait_and_extra_creates_are_refused(tmp_path, silent):
    # The store is held silent until the test lets go; the SSH deadline is never reached.
    rig = store_rig(tmp_path, silent, {"ssh": {"connect_timeout": 60}, "create": {"concurrent": 2}})
    served = serve(rig.services, threads=4)
    try:
        creates = Creates(served.url)
        for i in range(4):
            creates.send(f"v{i}")
        # Two creates are refused at once: two are running, the most allowed.
        refused = [creates.next()[1] for _ in range(2)]
        for r in refused:
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] == "5"
            assert "2 creates are in progress" in r.json()["error"]
        assert silent.first.wait(WAIT)
        # While the two wait on the store, the server still answers reads.
        assert requests.get(f"{served.url}/healthz", timeout=WAIT).json() == {"ok": True}
        listed = requests.get(f"{served.url}/vm/list", timeout=WAIT)
        assert listed.status_code == 200
        assert silent.open_connections() == 1  # ... still in flight, nothing answered
        assert creates.answers.empty()

        silent.release()  # the store hangs up: both creates fail, with its reason
        for _ in range(2):
            _, r = creates.next()
            assert r.status_code == 502, r.text
            assert f"image host root@127.0.0.1:{silent.port}: SSH: " in r.json()["error"]
        assert silent.accepted == 1  # the second create was told what the first found
        assert_nothing_left(rig, failed=2)
    finally:
        served.stop()
        rig.stop()


def test_a_create_waits_for_another_copy_of_its_image_only_so_long(tmp_path, silent):
    rig = store_rig(
        tmp_path, silent, {"ssh": {"connect_timeout": 60}, "create": {"stage_wait": 0.2}}
    )
    served = serve(rig.services, threads=8)
    try:
        creates = Creates(served.url)
        creates.send("first")
        assert silent.first.wait(WAIT)  # the first holds the copy of image 1 to the host
        creates.send("second")
        name, r = creates.next()
        assert name == "second"
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "5"
        assert "is still being copied to" in r.json()["error"]
        assert silent.open_connections() == 1  # the first is still waiting on the store
        silent.release()
        name, r = creates.next()
        assert (name, r.status_code) == ("first", 502)
        assert_nothing_left(rig, failed=2)
    finally:
        served.stop()
        rig.stop()
