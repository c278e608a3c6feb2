"""Pools on real guests: check out, use /tmp over SSH, check in, cleaned; SIGKILL
mid-cleanup and mid-refill, and the pool converges with no orphan domains."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import FabricProcess, _require_rig, fabric_domains

pytestmark = pytest.mark.integration

POOL = """
pools:
  - name: rig
    instance_type: 1
    image: guest
    size: {size}
    max: {max}
    cleanup: tmp
workers: {{interval: 1}}
"""


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory, fabric) -> Iterator[FabricProcess]:  # noqa: ARG001
    # `fabric` (the other suite's server) is up first so that its VMs and ours
    # live side by side on the hosts, told apart by their registries' ids.
    _require_rig()
    fp = FabricProcess(tmp_path_factory.mktemp("rig-pools"))
    fp.set_config(POOL.format(size=1, max=1))
    fp.start()
    yield fp
    # Tear down: without pools nothing refills, so every VM can be destroyed.
    fp.destroy_everything()


def registry_domains(fp: FabricProcess) -> set[str]:
    return {
        fp.get("/vm/query", vmid=v).json()["domain"] for v in fp.get("/vm/list").json()["vmids"]
    }


def checkout(fp: FabricProcess) -> dict:
    r = fp.post("/vm/checkout", pool="rig")
    assert r.status_code == 200, r.text
    return r.json()


def test_checked_in_vm_is_cleaned_over_ssh_and_served_again(pooled):
    pooled.wait_pool("rig", 1)
    first = checkout(pooled)
    guest = pooled.ssh({"ssh": first["ssh"]})
    guest.run(
        [
            "sh",
            "-c",
            "mkdir -p /tmp/work/deep && echo secret > /tmp/work/deep/f && touch /tmp/.hidden",
        ]
    )
    assert "work" in guest.run(["ls", "-A", "/tmp"])
    # nothing is free while it is out: the next caller is told to retry, at once
    empty = pooled.post("/vm/checkout", pool="rig")
    assert empty.status_code == 503 and "Retry-After" in empty.headers
    # only the holder can give it back
    assert (
        pooled.post("/vm/checkin", vmid=first["vmid"], reservation_id="x" * 43).status_code == 403
    )
    r = pooled.post("/vm/checkin", vmid=first["vmid"], reservation_id=first["reservation_id"])
    assert r.json() == {"status": 1}
    pooled.wait_pool("rig", 1, timeout=60)
    second = checkout(pooled)
    assert second["vmid"] == first["vmid"]  # the same VM, served again
    assert second["reservation_id"] != first["reservation_id"]
    leftover = pooled.ssh({"ssh": second["ssh"]}).run(["ls", "-A", "/tmp"])
    assert leftover.strip() == ""
    r = pooled.post("/vm/checkin", vmid=second["vmid"], reservation_id=second["reservation_id"])
    assert r.json() == {"status": 1}
    pooled.wait_pool("rig", 1, timeout=60)


def test_sigkill_mid_cleanup_then_mid_refill_converges_without_orphans(pooled):
    pooled.wait_pool("rig", 1)
    held = checkout(pooled)
    pooled.ssh({"ssh": held["ssh"]}).run(["touch", "/tmp/left-behind"])
    r = pooled.post("/vm/checkin", vmid=held["vmid"], reservation_id=held["reservation_id"])
    assert r.json() == {"status": 1}
    assert pooled.stop(signal.SIGKILL) == -signal.SIGKILL  # cleanup had no time to finish
    pooled.start()
    pooled.wait_pool("rig", 1, timeout=90)
    again = checkout(pooled)
    assert again["vmid"] == held["vmid"]
    assert pooled.ssh({"ssh": again["ssh"]}).run(["ls", "-A", "/tmp"]).strip() == ""
    pooled.post("/vm/checkin", vmid=again["vmid"], reservation_id=again["reservation_id"])
    pooled.wait_pool("rig", 1, timeout=60)

    # grow the pool and kill the fabric while it builds
    pooled.stop()
    pooled.set_config(POOL.format(size=3, max=3))
    pooled.start()
    deadline = time.monotonic() + 300  # only gives up on a pool that never builds
    while pooled.get("/pool/query", pool="rig").json()["building"] == 0:
        assert time.monotonic() < deadline, "the pool never started building"
        time.sleep(0.2)
    assert pooled.stop(signal.SIGKILL) == -signal.SIGKILL
    pooled.start()
    st = pooled.wait_pool("rig", 3, timeout=300)
    assert st["total"] == 3 and st["in_use"] == 0
    # no orphans: the hosts run exactly the domains this registry knows (other
    # fabrics' domains, told apart by the installation id in their names, aside)
    ours = registry_domains(pooled)
    assert len(ours) == 3
    prefix = next(iter(ours)).rsplit("-vm-", 1)[0] + "-vm-"
    assert {d for d in fabric_domains() if d.startswith(prefix)} == ours
