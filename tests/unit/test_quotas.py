"""Per-user quotas through the served API: limits hold under truly parallel clients
(a barrier releases them together; the work is bounded by count), use is counted
from what the user really holds, and ``GET /quota`` shows both. Run on SQLite and,
with FABRIC_TEST_DB=postgresql, on PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest
import requests

from orchestrator.auth import hash_password
from tests.conftest import make_pool_rig, wait_for

CLIENTS = 16
PW = {"alice": "alice pw", "bob": "bob pw", "root": "root pw"}
HOSTS = [{"cpus": 64, "ram": 65536}, {"cpus": 64, "ram": 65536}]
POOL = {
    "name": "small",
    "instance_type": 1,  # 1 vCPU, 512 MB, 1 GB
    "image": "debian-12",
    "ready_check": "none",
    "size": 20,
    "max": 24,
    "cleanup": "reset",
}


def make(tmp_path, quota: dict, own: dict | None = None, pools: list | None = None):
    users = {
        "alice": {"password": hash_password(PW["alice"]), "quota": own or {}},
        "bob": hash_password(PW["bob"]),
        "root": {"password": hash_password(PW["root"]), "role": "admin"},
    }
    pr = make_pool_rig(
        tmp_path,
        HOSTS,
        pools if pools is not None else [POOL],
        # every client let in at once (create.concurrent), so they race for the quota
        config={
            "auth": {"enabled": True, "users": users, "quota": quota},
            "create": {"concurrent": 64},
        },
    )
    tokens = {
        u: requests.post(f"{pr.served.url}/token", auth=(u, pw), timeout=30).json()["token"]
        for u, pw in PW.items()
    }
    return pr, tokens


def all_at_once(n: int, call: Callable[[int], requests.Response]) -> list[requests.Response]:
    """``n`` clients in their own threads, released together by a barrier."""
    barrier = threading.Barrier(n)
    out: list[requests.Response | None] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=60)
            out[i] = call(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return [r for r in out if r is not None]


def codes(responses: list[requests.Response]) -> Counter:
    return Counter(r.status_code for r in responses)


def quota_refusals(responses: list[requests.Response]) -> list[str]:
    return [r.json()["error"] for r in responses if r.status_code == 403]


def test_parallel_creates_never_exceed_the_vm_quota(tmp_path):
    pr, tok = make(tmp_path, quota={"vms": 3})
    try:
        url, h = pr.served.url, {"X-Auth-Token": tok["alice"]}
        got = all_at_once(
            CLIENTS,
            lambda i: requests.post(
                f"{url}/vm/create",
                json={"name": f"v{i}", "instance_type": 1, "image_id": 1},
                headers=h,
                timeout=120,
            ),
        )
        assert codes(got) == {200: 3, 403: CLIENTS - 3}
        assert all("quota exceeded for user alice (VMs: 3 in use + 1 > 3)" in e
                   for e in quota_refusals(got))  # fmt: skip
        mine = [vm for vm in pr.rig.registry.vms.list() if vm.created_by == "alice"]
        assert len(mine) == 3
        # another user's quota is their own
        r = requests.post(
            f"{url}/vm/create",
            json={"name": "b", "instance_type": 1, "image_id": 1},
            headers={"X-Auth-Token": tok["bob"]},
            timeout=60,
        )
        assert r.status_code == 200
        # destroying one frees room for one more
        requests.post(f"{url}/vm/destroy", json={"vmid": mine[0].id}, headers=h, timeout=60)
        again = lambda: requests.post(  # noqa: E731
            f"{url}/vm/create",
            json={"name": "again", "instance_type": 1, "image_id": 1},
            headers=h,
            timeout=60,
        )
        assert again().status_code == 200
        assert again().status_code == 403
    finally:
        pr.stop()


def test_parallel_checkouts_never_exceed_the_checked_out_quota(tmp_path):
    pr, tok = make(tmp_path, quota={"checked_out": 2})
    try:
        wait_for(lambda: pr.pools.status()["small"]["ready"] >= CLIENTS + 2)
        url, h = pr.served.url, {"X-Auth-Token": tok["alice"]}
        got = all_at_once(
            CLIENTS,
            lambda i: requests.post(
                f"{url}/vm/checkout", json={"pool": "small"}, headers=h, timeout=120
            ),
        )
        assert codes(got) == {200: 2, 403: CLIENTS - 2}
        held = [vm for vm in pr.rig.registry.vms.list() if vm.held_by == "alice"]
        assert len(held) == 2
        # a count that does not fit is refused whole
        r = requests.post(
            f"{url}/vm/checkout",
            json={"pool": "small", "count": 2},
            headers={"X-Auth-Token": tok["bob"]},
            timeout=60,
        )
        assert r.status_code == 200  # bob: 2 of 2
        # checking one in frees room for one more
        ok = next(r for r in got if r.status_code == 200).json()
        requests.post(
            f"{url}/vm/checkin",
            json={"vmid": ok["vmid"], "reservation_id": ok["reservation_id"]},
            headers=h,
            timeout=60,
        ).raise_for_status()
        r = requests.post(f"{url}/vm/checkout", json={"pool": "small"}, headers=h, timeout=60)
        assert r.status_code == 200
    finally:
        pr.stop()


def test_a_count_past_the_quota_takes_nothing(tmp_path):
    pr, tok = make(tmp_path, quota={"checked_out": 3})
    try:
        wait_for(lambda: pr.pools.status()["small"]["ready"] >= 5)
        url, h = pr.served.url, {"X-Auth-Token": tok["alice"]}
        r = requests.post(
            f"{url}/vm/checkout", json={"pool": "small", "count": 4}, headers=h, timeout=60
        )
        assert r.status_code == 403 and "checked-out VMs: 0 in use + 4 > 3" in r.json()["error"]
        assert not [vm for vm in pr.rig.registry.vms.list() if vm.held_by == "alice"]
    finally:
        pr.stop()


def test_vcpu_ram_and_disk_count_created_and_held_vms_and_volumes_together(tmp_path):
    # alice's own entry: 4 vCPUs, 3 GB of disk; creates and check-outs race for them
    pr, tok = make(tmp_path, quota={"vcpu": 100}, own={"vcpu": 4, "disk": 6})
    try:
        wait_for(lambda: pr.pools.status()["small"]["ready"] >= CLIENTS)
        url, h = pr.served.url, {"X-Auth-Token": tok["alice"]}

        def call(i: int) -> requests.Response:
            if i % 2:
                body = {"name": f"v{i}", "instance_type": 1, "image_id": 1}
                return requests.post(f"{url}/vm/create", json=body, headers=h, timeout=120)
            return requests.post(
                f"{url}/vm/checkout", json={"pool": "small"}, headers=h, timeout=120
            )

        got = all_at_once(CLIENTS, call)
        assert codes(got) == {200: 4, 403: CLIENTS - 4}
        q = requests.get(f"{url}/quota", headers=h, timeout=30).json()
        assert q["usage"]["vcpu"] == 4 and q["usage"]["ram"] == 4 * 512
        assert q["usage"]["disk"] == 4
        assert q["usage"]["vms"] + q["usage"]["checked_out"] == 4
        # volumes share the disk limit: 2 GB left
        vols = all_at_once(
            CLIENTS,
            lambda i: requests.post(
                f"{url}/volume/create", json={"name": f"d{i}", "size": 1}, headers=h, timeout=120
            ),
        )
        assert codes(vols) == {200: 2, 403: CLIENTS - 2}
        q = requests.get(f"{url}/quota", headers=h, timeout=30).json()
        assert q["usage"]["disk"] == 6 and q["usage"]["volumes"] == 2
    finally:
        pr.stop()


def test_the_volume_quota(tmp_path):
    pr, tok = make(tmp_path, quota={"volumes": 2})
    try:
        url, h = pr.served.url, {"X-Auth-Token": tok["alice"]}
        got = all_at_once(
            CLIENTS,
            lambda i: requests.post(
                f"{url}/volume/create", json={"name": f"d{i}", "size": 1}, headers=h, timeout=120
            ),
        )
        assert codes(got) == {200: 2, 403: CLIENTS - 2}
        assert len([v for v in pr.rig.registry.volumes.list() if v.created_by == "alice"]) == 2
    finally:
        pr.stop()


def test_get_quota_shows_limits_and_use_to_its_user_and_admins(tmp_path):
    pr, tok = make(tmp_path, quota={"vms": 5, "ram": 4096}, own={"vms": 2}, pools=[])
    try:
        url = pr.served.url

        def get(who: str | None, **params) -> requests.Response:
            h = {"X-Auth-Token": tok[who]} if who else {}
            return requests.get(f"{url}/quota", params=params, headers=h, timeout=30)

        body = {"name": "a", "instance_type": 2, "image_id": 1}
        requests.post(
            f"{url}/vm/create", json=body, headers={"X-Auth-Token": tok["alice"]}, timeout=60
        ).raise_for_status()
        q = get("alice").json()
        assert q == {
            "user": "alice",
            "role": "user",
            "limits": {"vms": 2, "checked_out": None, "vcpu": None, "ram": 4096,
                       "disk": None, "volumes": None},
            "usage": {"vms": 1, "checked_out": 0, "vcpu": 2, "ram": 1024, "disk": 2,
                      "volumes": 0},
            "units": {"ram": "MB", "disk": "GB"},
        }  # fmt: skip
        assert get("bob").json()["limits"]["vms"] == 5  # the default
        # admins: no limits but their own; they may look at anyone's
        assert set(get("root").json()["limits"].values()) == {None}
        assert get("root", user="alice").json()["usage"]["vms"] == 1
        r = get("bob", user="alice")
        assert r.status_code == 403 and "only their own" in r.json()["error"]
        assert get("root", user="nobody").status_code == 404
        assert get(None).status_code == 401  # whose?
    finally:
        pr.stop()


def test_with_auth_off_no_one_has_a_quota(tmp_path):
    pr = make_pool_rig(tmp_path, HOSTS, [])
    try:
        q = requests.get(f"{pr.served.url}/quota", timeout=30).json()
        assert q["user"] is None and q["role"] == "admin" and q["usage"] is None
        assert set(q["limits"].values()) == {None}
    finally:
        pr.stop()


@pytest.mark.parametrize("bad", [{"vms": -1}, {"vcpu": "lots"}, {"ram": 2**40}, {"cores": 4}])
def test_a_bad_quota_is_refused_before_start(bad):
    from orchestrator.config import config_from_dict
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^config: auth\.quota\.") as e:
        config_from_dict({"auth": {"quota": bad}})
    assert len(str(e.value).splitlines()) == 1
