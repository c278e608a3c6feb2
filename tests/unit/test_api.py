"""Every endpoint of the original API, exactly its shapes, and bad input."""

from __future__ import annotations

import pytest


def test_vm_types_matches_the_file(client):
    body = client.get("/vm/types").get_json()
    assert body["types"][0] == {"tid": 1, "cpu": 1, "ram": 512, "disk": 1, "name": "small"}
    assert [t["tid"] for t in body["types"]] == [1, 2, 3]


def test_image_list(client):
    assert client.get("/image/list").get_json() == {
        "images": [{"id": 1, "name": "debian-12"}, {"id": 2, "name": "alpine"}]
    }


def test_pm_list_and_query(client):
    assert client.get("/pm/list").get_json() == {"pmids": [1, 2, 3]}
    body = client.get("/pm/query?pmid=2").get_json()
    assert body["pmid"] == 2
    assert body["capacity"] == {"cpu": 16, "ram": 4096, "disk": 100}
    assert body["free"] == {"cpu": 16, "ram": 4096, "disk": 100}
    assert body["vms"] == 0
    assert list(body)[:4] == ["pmid", "capacity", "free", "vms"]


def test_create_query_listvms_destroy_round_trip(client):
    r = client.get("/vm/create?name=test_vm&instance_type=3&image_id=1")
    assert r.status_code == 200
    vmid = r.get_json()["vmid"]
    assert isinstance(vmid, int) and vmid > 0
    q = client.get(f"/vm/query?vmid={vmid}").get_json()
    assert {k: q[k] for k in ("vmid", "name", "instance_type", "pmid")} == {
        "vmid": vmid,
        "name": "test_vm",
        "instance_type": 3,
        "pmid": 3,
    }
    assert q["status"] == "active" and q["image_id"] == 1
    assert client.get("/pm/listvms?pmid=3").get_json() == {"vmids": [vmid]}
    pm = client.get("/pm/query?pmid=3").get_json()
    assert pm["free"] == {"cpu": 28, "ram": 6144, "disk": 97} and pm["vms"] == 1
    assert client.get(f"/vm/destroy?vmid={vmid}").get_json() == {"status": 1}
    gone = client.get(f"/vm/query?vmid={vmid}")
    assert gone.status_code == 404 and gone.get_json()["vmid"] == 0
    assert client.get("/pm/listvms?pmid=3").get_json() == {"vmids": []}


def test_state_changing_calls_accept_post_form_and_json(client):
    r = client.post("/vm/create", data={"name": "f", "instance_type": "1", "image_id": "1"})
    vmid = r.get_json()["vmid"]
    assert vmid > 0
    r = client.post("/vm/destroy", json={"vmid": vmid})
    assert r.get_json() == {"status": 1}


def test_create_without_capacity_is_503_with_retry_after_and_reasons(client):
    for _ in range(7):
        assert client.get("/vm/create?name=x&instance_type=3&image_id=1").status_code == 200
    r = client.get("/vm/create?name=x&instance_type=3&image_id=1")
    assert r.status_code == 503
    assert int(r.headers["Retry-After"]) > 0
    body = r.get_json()
    assert body["vmid"] == 0
    assert "ram filter removed 3 of 3 hosts" in body["error"]
    assert {f["filter"] for f in body["filters"]} >= {"status", "cpu", "ram"}


@pytest.mark.parametrize(
    ("url", "status", "zero", "words"),
    [
        ("/vm/create?instance_type=1&image_id=1", 400, {"vmid": 0}, "name is required"),
        ("/vm/create?name=a&image_id=1", 400, {"vmid": 0}, "instance_type is required"),
        ("/vm/create?name=a&instance_type=1", 400, {"vmid": 0}, "image_id is required"),
        ("/vm/create?name=a&instance_type=9&image_id=1", 404, {"vmid": 0}, "instance_type 9"),
        ("/vm/create?name=a&instance_type=1&image_id=99", 404, {"vmid": 0}, "image_id 99"),
        ("/vm/create?name=a&instance_type=-1&image_id=1", 400, {"vmid": 0}, "positive integer"),
        ("/vm/create?name=a&instance_type=0&image_id=1", 400, {"vmid": 0}, "positive integer"),
        ("/vm/create?name=a&instance_type=abc&image_id=1", 400, {"vmid": 0}, "positive integer"),
        ("/vm/create?name=a&instance_type=1.5&image_id=1", 400, {"vmid": 0}, "positive integer"),
        ("/vm/create?name=&instance_type=1&image_id=1", 400, {"vmid": 0}, "name is required"),
        ("/vm/create?name=%3Cb%3E&instance_type=1&image_id=1", 400, {"vmid": 0}, "name must"),
        ("/vm/create?name=caf%C3%A9&instance_type=1&image_id=1", 400, {"vmid": 0}, "name must"),
        ("/vm/create?name=" + "a" * 65 + "&instance_type=1&image_id=1", 400, {"vmid": 0}, "1-64"),
        ("/vm/create?name=a%27%3B--&instance_type=1&image_id=1", 400, {"vmid": 0}, "name must"),
        ("/vm/query", 400, {"vmid": 0}, "vmid is required"),
        ("/vm/query?vmid=12345", 404, {"vmid": 0}, "vmid 12345 does not exist"),
        ("/vm/query?vmid=99999999999999999999999", 400, {"vmid": 0}, "positive integer"),
        ("/vm/query?vmid=9007199254740993", 400, {"vmid": 0}, "too large"),
        ("/vm/query?vmid=%00", 400, {"vmid": 0}, "positive integer"),
        ("/vm/destroy?vmid=777", 404, {"status": 0}, "vmid 777 does not exist"),
        ("/vm/destroy?vmid=x", 400, {"status": 0}, "positive integer"),
        ("/pm/query?pmid=9", 404, {"pmid": 0}, "pmid 9 does not exist"),
        ("/pm/query?pmid=", 400, {"pmid": 0}, "pmid is required"),
        ("/pm/listvms?pmid=9", 404, {"vmids": 0}, "pmid 9 does not exist"),
        ("/pm/listvms?pmid=-2", 400, {"vmids": 0}, "positive integer"),
    ],
)
def test_bad_input_gets_json_4xx_with_the_zero_value(client, url, status, zero, words):
    r = client.get(url)
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.is_json
    body = r.get_json()
    for k, v in zero.items():
        assert body[k] == v
    assert words in body["error"]


def test_unknown_url_and_method_answer_json(client):
    r = client.get("/nope")
    assert r.status_code == 404 and r.is_json and "error" in r.get_json()
    r = client.delete("/vm/types")
    assert r.status_code == 405 and r.is_json


def test_bad_json_body_is_400(client):
    r = client.post("/vm/create", data="{not json", content_type="application/json")
    assert r.status_code == 400 and "JSON" in r.get_json()["error"]
    r = client.post("/vm/create", json=[1, 2])
    assert r.status_code == 400
    r = client.post("/vm/create", json={"name": "a", "instance_type": True, "image_id": 1})
    assert r.status_code == 400


def test_a_failed_create_answers_502_and_leaves_nothing(client, rig, tmp_path):
    (tmp_path / "images" / "alpine.qcow2").unlink()
    r = client.get("/vm/create?name=a&instance_type=1&image_id=2")
    assert r.status_code == 502
    assert r.get_json()["vmid"] == 0 and "does not exist" in r.get_json()["error"]
    assert rig.registry.vms.list() == []


def test_every_host_failing_a_create_is_a_502_with_each_reason(client, rig, monkeypatch):
    from orchestrator.errors import HypervisorError

    def refuse(host, plan, image, fence=None):  # noqa: ANN001, ANN202, ARG001
        raise HypervisorError(f"host {host.label}: cannot open directory '/p': No such file")

    monkeypatch.setattr(rig.driver, "create", refuse)
    r = client.get("/vm/create?name=a&instance_type=1&image_id=1")
    assert r.status_code == 502, r.get_json()  # the hosts' fault, not the fabric's (was 500)
    body = r.get_json()
    assert body["vmid"] == 0 and body["error"].startswith("could not create the VM: ")
    assert body["error"].count("cannot open directory '/p'") == 3  # create.max_attempts
    assert rig.registry.vms.list() == []


# -- bounded input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", "/vm/create"),  # reads the body
        ("post", "/schedules"),  # reads it with get_json of its own
        ("get", "/vm/types"),  # never reads it
    ],
)
def test_a_body_over_a_megabyte_is_413_with_a_json_error(client, method, url):
    big = {"name": "x" * 2**20, "instance_type": 1, "image_id": 1}
    r = getattr(client, method)(url, json=big)
    assert r.status_code == 413 and r.is_json, r.data[:200]
    assert r.get_json() == {"error": "the request body is too large (at most 1048576 bytes)"}
    r = getattr(client, method)(url, data={"name": "x" * 2**20})
    assert r.status_code == 413 and r.is_json


def test_a_body_of_almost_a_megabyte_is_read(client):
    body = {"name": "ok", "instance_type": 1, "image_id": 1, "pad": "x" * (2**20 - 100)}
    r = client.post("/vm/create", json=body)
    assert r.status_code == 200, r.get_json()


@pytest.mark.parametrize(
    "body",
    ["[" * 100_000, '{"a":' * 50_000, "[" * 33 + "]" * 33, '{"name": ' + "[" * 40 + "]" * 40 + "}"],
    ids=["brackets", "objects", "33-deep", "a-deep-value"],
)
@pytest.mark.parametrize("url", ["/vm/create", "/schedules", "/volume/create"])
def test_json_nested_too_deep_is_a_400_that_says_so(client, body, url):
    r = client.post(url, data=body, content_type="application/json")
    assert r.status_code == 400 and r.is_json, r.data[:200]
    assert "the JSON body is nested deeper than 32 levels" in r.get_json()["error"]


def test_json_within_the_nesting_limit_is_read_as_before(client):
    body = '{"name": ' + "[" * 31 + "]" * 31 + ', "instance_type": 1, "image_id": 1}'
    r = client.post("/vm/create", data=body, content_type="application/json")
    assert r.status_code == 400 and "name must be" in r.get_json()["error"]


def test_the_limits_hold_on_the_production_server(rig):
    import requests

    from tests.conftest import serve

    served = serve(rig.services, threads=4)
    try:
        r = requests.post(f"{served.url}/vm/create", data="x" * (2 * 2**20), timeout=30)
        assert r.status_code == 413 and "too large" in r.json()["error"]
        r = requests.post(
            f"{served.url}/vm/create",
            data="[" * 100_000,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert r.status_code == 400 and "nested deeper" in r.json()["error"]
    finally:
        served.stop()
