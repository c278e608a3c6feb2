"""Tags in the fabric's own API: POST /vm/tags (merge, "" removes, bad keys and values
a 400 that names them) and GET /vm/list?tag=k:v (repeatable: all of them)."""

from __future__ import annotations

import pytest

from orchestrator.tags import check_tags, parse_filter


def tag(client, vmid, tags):  # noqa: ANN001, ANN201
    return client.post("/vm/tags", json={"vmid": vmid, "tags": tags})


def ids(client, *filters: str) -> list[int]:  # noqa: ANN001
    r = client.get("/vm/list", query_string=[("tag", f) for f in filters])
    assert r.status_code == 200, r.get_json()
    return r.get_json()["vmids"]


def test_tags_are_merged_removed_with_empty_and_shown_by_query(rig, client):
    vm = rig.fabric.create_vm("web", 1, 1)
    r = tag(client, vm.id, {"team": "infra", "ci.job-id_2": "1234"})
    assert r.status_code == 200
    assert r.get_json() == {
        "status": 1,
        "vmid": vm.id,
        "tags": {"team": "infra", "ci.job-id_2": "1234"},
    }
    r = tag(client, vm.id, {"team": "", "owner": "x" * 255})  # "" removes
    assert r.get_json()["tags"] == {"ci.job-id_2": "1234", "owner": "x" * 255}
    assert client.get("/vm/query", query_string={"vmid": vm.id}).get_json()["tags"] == {
        "ci.job-id_2": "1234",
        "owner": "x" * 255,
    }
    events = [e for e in rig.registry.events.list(kind="vm.tagged") if e.vm_id == vm.id]
    assert [e.detail for e in events] == [  # newest first: what each call asked
        {"tags": {"team": "", "owner": "x" * 255}},
        {"tags": {"team": "infra", "ci.job-id_2": "1234"}},
    ]


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"bad key": "v"}, "tag key 'bad key' must be 1-50 characters of A-Z a-z 0-9 _ . -"),
        ({"ok": "v", "k" * 51: "v"}, f"tag key '{'k' * 51}' must be"),
        ({"": "v"}, "tag key '' must be"),
        ({"é": "v"}, "tag key 'é' must be"),
        ({"n": 5}, "tag 'n': the value must be a string, got 5"),
        ({"n": None}, "tag 'n': the value must be a string, got null"),
        ({"long": "v" * 256}, "tag 'long': the value is longer than 255 characters"),
        ({}, "tags must be a non-empty object"),
        (["a"], "tags must be a non-empty object"),
        ("a=b", "tags must be a non-empty object"),
    ],
)
def test_bad_tags_are_a_400_naming_the_problem_and_change_nothing(rig, client, tags, message):
    vm = rig.fabric.create_vm("web", 1, 1)
    tag(client, vm.id, {"keep": "me"})
    r = tag(client, vm.id, tags)
    assert r.status_code == 400
    body = r.get_json()
    assert body["status"] == 0 and body["error"].startswith(message), body
    assert rig.registry.vms.get(vm.id).tags == {"keep": "me"}


def test_tags_of_a_missing_vm_or_without_vmid(client):
    r = tag(client, 999, {"a": "b"})
    assert r.status_code == 404 and "vmid 999 does not exist" in r.get_json()["error"]
    r = client.post("/vm/tags", json={"tags": {"a": "b"}})
    assert r.status_code == 400 and r.get_json()["error"] == "vmid is required"
    r = client.post("/vm/tags", json={"vmid": 1})
    assert r.status_code == 400 and r.get_json()["error"] == "tags is required"


def test_list_filters_by_all_given_tags(rig, client):
    a = rig.fabric.create_vm("a", 1, 1)
    b = rig.fabric.create_vm("b", 1, 1)
    c = rig.fabric.create_vm("c", 1, 1)
    tag(client, a.id, {"team": "infra", "env": "ci"})
    tag(client, b.id, {"team": "infra", "env": "prod"})
    tag(client, c.id, {"url": "http://x:8080/y"})
    assert ids(client) == [a.id, b.id, c.id]  # no filter: every VM, as before
    assert ids(client, "team:infra") == [a.id, b.id]
    assert ids(client, "team:infra", "env:ci") == [a.id]
    assert ids(client, "env:ci", "env:prod") == []  # one key, two values: none has both
    assert ids(client, "team:web") == []
    assert ids(client, "url:http://x:8080/y") == [c.id]  # the value may hold ':'
    assert ids(client, "team:") == []  # an empty value is no tag


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("team", "tag must be KEY:VALUE, got 'team'"),
        ("bad key:v", "tag key 'bad key' must be"),
        (":v", "tag key '' must be"),
    ],
)
def test_a_bad_filter_is_a_400(client, given, message):
    r = client.get("/vm/list", query_string={"tag": given})
    assert r.status_code == 400 and r.get_json()["error"].startswith(message), r.get_json()


def test_the_checks_themselves():
    assert check_tags({"a": "1", "b.c-d_e": ""}) == {"a": "1", "b.c-d_e": ""}
    assert parse_filter(["a:1", "b:x:y"]) == [("a", "1"), ("b", "x:y")]
