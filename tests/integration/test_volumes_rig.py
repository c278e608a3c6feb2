"""Volumes on real guests: hot-plug, write, detach, move to a VM on another host
(a real copy through libvirt streams), read the data back."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import host_pool_files

pytestmark = pytest.mark.integration

DATA = "fabric-volume-data-42"


def wait_for_block(guest, dev: str, present: bool, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = guest.run(["ls", "/sys/block"]).split()
        if (dev in listing) == present:
            return
        time.sleep(0.5)
    raise AssertionError(f"/sys/block/{dev} {'never appeared' if present else 'stayed'}")


def test_volume_hotplug_write_detach_move_and_read_back(fabric):
    a = fabric.create("vol-a")
    b = fabric.create("vol-b")
    assert a["pmid"] != b["pmid"]  # spread: two hosts
    r = fabric.get("/volume/create", name="shared_data", size=1)
    assert r.status_code == 200, r.text
    vid = r.json()["volumeid"]
    fabric.wait_booted(a)
    fabric.wait_booted(b)
    ga, gb = fabric.ssh(a), fabric.ssh(b)
    assert "vdb" not in ga.run(["ls", "/sys/block"]).split()

    assert fabric.get("/volume/attach", vmid=a["vmid"], volumeid=vid).json() == {"status": 1}
    q = fabric.get("/volume/query", volumeid=vid).json()
    assert (q["status"], q["vmid"], q["pmid"]) == ("attached", a["vmid"], a["pmid"])
    wait_for_block(ga, "vdb", True)
    size = int(ga.run(["cat", "/sys/block/vdb/size"]).strip())
    assert size * 512 == 1024**3  # the guest sees exactly 1 GB
    ga.run(["sh", "-c", f"echo {DATA} > /dev/vdb && sync"])

    assert fabric.get("/volume/detach", volumeid=vid).json() == {"status": 1}
    wait_for_block(ga, "vdb", False)
    assert fabric.get("/volume/query", volumeid=vid).json()["status"] == "available"

    # attach to the VM on the other host: the volume moves there, data and all
    vol_name = f"volume-{a['domain'].split('-')[1]}-{vid}"
    assert vol_name in host_pool_files(a["pmid"])
    assert fabric.get("/volume/attach", vmid=b["vmid"], volumeid=vid).json() == {"status": 1}
    q = fabric.get("/volume/query", volumeid=vid).json()
    assert (q["status"], q["vmid"], q["pmid"]) == ("attached", b["vmid"], b["pmid"])
    assert vol_name in host_pool_files(b["pmid"])
    assert vol_name not in host_pool_files(a["pmid"])
    wait_for_block(gb, "vdb", True)
    assert gb.run(["head", "-c", str(len(DATA)), "/dev/vdb"]) == DATA

    # destroying the VM leaves the volume, available, with its data
    assert fabric.get("/vm/destroy", vmid=b["vmid"]).json() == {"status": 1}
    q = fabric.get("/volume/query", volumeid=vid).json()
    assert q["status"] == "available" and "vmid" not in q
    assert vol_name in host_pool_files(b["pmid"])
    assert fabric.get("/volume/destroy", volumeid=vid).json() == {"status": 1}
    assert vol_name not in host_pool_files(b["pmid"])
    assert fabric.get("/volume/query", volumeid=vid).status_code == 404
    assert fabric.get("/vm/destroy", vmid=a["vmid"]).json() == {"status": 1}
