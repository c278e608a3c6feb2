"""Requests that wait for capacity (orchestrator/ondemand.py): the fabric's /requests
and vmpooler's /api/v3/ondemandvm over one registry, on test:// hosts."""

from __future__ import annotations

import signal
import threading
from collections import Counter

import pytest
import requests

from orchestrator.auth import hash_password
from orchestrator.clock import as_utc, utcnow
from orchestrator.model import VmState
from tests.conftest import make_pool_rig, wait_for

HOSTS = [{"cpus": 64, "ram": 65536}, {"cpus": 64, "ram": 65536}]


def pool(size: int, most: int, **extra) -> dict:
    return {
        "name": "small",
        "instance_type": 1,
        "image": "debian-12",
        "ready_check": "none",
        "size": size,
        "max": most,
        "cleanup": "reset",
        **extra,
    }


def one_pass(pr) -> None:
    """One pass of the pool worker, and the builds and cleanups it started."""
    pr.worker.run_once()
    pr.worker.drain()


def counts(pr) -> dict:
    return pr.pools.status()["small"]


def test_a_request_larger_than_the_ready_set_is_met_as_vms_are_built(tmp_path):
    pr = make_pool_rig(tmp_path, HOSTS, [pool(1, 4)], start_worker=False)
    try:
        url = pr.served.url
        one_pass(pr)
        assert counts(pr)["ready"] == 1
        first = {vm.id for vm in pr.rig.registry.vms.list()}
        r = requests.post(f"{url}/requests", json={"pools": {"small": 3}}, timeout=30)
        assert r.status_code == 201, r.text
        body = r.json()
        rid = body["request_id"]
        assert body["state"] == "pending"
        assert body["progress"] == {"small": {"wanted": 3, "ready": 0, "pending": 3}}
        g = requests.get(f"{url}/requests/{rid}", timeout=30)
        assert g.status_code == 202 and g.json()["state"] == "pending"
        # the pass sets the ready VM aside and builds the two missing (within max 4)
        pr.worker.run_once()
        g = requests.get(f"{url}/requests/{rid}", timeout=30).json()
        assert g["progress"] == {"small": {"wanted": 3, "ready": 1, "pending": 2}}
        v3 = requests.get(f"{url}/api/v3/ondemandvm/{rid}", timeout=30)
        assert v3.status_code == 202
        assert v3.json() == {
            "ok": True,
            "request_id": rid,
            "ready": False,
            "small": {"ready": "1", "pending": "2"},
        }
        pr.worker.drain()
        one_pass(pr)
        g = requests.get(f"{url}/requests/{rid}", timeout=30)
        assert g.status_code == 200, g.text
        done = g.json()
        assert done["state"] == "ready"
        vms = done["vms"]
        assert len(vms) == 3 and len({v["vmid"] for v in vms}) == 3
        assert len({v["vmid"] for v in vms} - first) == 2  # two were built for it
        for v in vms:
            row = pr.rig.registry.vms.get(v["vmid"])
            assert row.state == VmState.IN_USE and row.request_id == rid
            assert row.reservation_hash is not None and row.expires_at is not None
            assert v["hostname"] == row.hostname
        v3 = requests.get(f"{url}/api/v3/ondemandvm/{rid}", timeout=30)
        assert v3.status_code == 200
        assert v3.json() == {
            "ok": True,
            "request_id": rid,
            "ready": True,
            "small": {"hostname": [v["hostname"] for v in vms]},
        }
        # the refill keeps the pool's size besides (4 = max)
        one_pass(pr)
        assert counts(pr)["ready"] == 1 and counts(pr)["in_use"] == 3
    finally:
        pr.stop()
