"""A host that accepts the fabric's SSH connection and never answers (the worst kind
of dead host: a refused connection fails at once, this one hangs) holds up no other
request. Checked by order, never by a wall clock: the other requests are answered
while the silent host still holds the fabric's connection open, waiting (the
fabric's connect timeout here is an hour, so it cannot have given up meanwhile)."""

from __future__ import annotations

import threading

import requests

from orchestrator.api import create_app
from orchestrator.hypervisor.driver import LibvirtDriver
from tests.conftest import make_rig, wait_for
from tests.fake_ssh import SilentListener
from tests.launch import ServedApp

WAIT = 120  # seconds: only ends a wait for something that never comes (a hang)


def test_a_host_that_hangs_holds_up_no_other_request(tmp_path):
    silent = SilentListener()
    driver = LibvirtDriver(connect_timeout=3600, call_timeout=3600)
    rig = make_rig(tmp_path, [{"cpus": 8, "ram": 8192}], driver=driver)
    served = ServedApp(create_app(rig.services), threads=4)
    url = served.url
    reload: dict[str, requests.Response] = {}
    # a second host, on the silent listener, joins by a reload (which discovers it)
    with rig.pm_file.open("a") as f:
        f.write(f"uri=qemu+ssh://nobody@127.0.0.1:{silent.port}/system\n")

    def reloading() -> None:
        reload["r"] = requests.post(f"{url}/pm/reload", timeout=WAIT)

    t = threading.Thread(target=reloading)
    t.start()
    try:
        # the fabric is connecting to the silent host and waits on it ...
        wait_for(lambda: silent.open_connections() >= 1, timeout=WAIT)
        # ... and meanwhile everything that does not need that host is answered
        assert (
            requests.get(f"{url}/pm/query", params={"pmid": 1}, timeout=WAIT).json()["status"]
            == "up"
        )
        assert 1 in requests.get(f"{url}/pm/list", timeout=WAIT).json()["pmids"]
        r = requests.post(
            f"{url}/vm/create",
            json={"name": "meanwhile", "instance_type": 1, "image_id": 1},
            timeout=WAIT,
        )
        assert r.status_code == 200, r.text
        vmid = r.json()["vmid"]
        q = requests.get(f"{url}/vm/query", params={"vmid": vmid}, timeout=WAIT).json()
        assert q["pmid"] == 1 and q["status"] == "active", q
        d = requests.get(f"{url}/vm/destroy", params={"vmid": vmid}, timeout=WAIT)
        assert d.json() == {"status": 1}
        # all of that while the silent host still held the fabric's connection
        assert t.is_alive() and silent.open_connections() >= 1
    finally:
        silent.release()  # the connection ends: the reload's discovery fails now
        t.join(WAIT)
        served.stop()
        rig.stop()
        silent.close()
    assert not t.is_alive()
    body = reload["r"].json()
    assert body["added"] == [2] and body["discovered"] == [{"pmid": 2, "up": False}], body
    host = rig.registry.hosts.get(2)
    assert host.status == "down" and "Connection closed" in (host.reason or ""), host.reason
