"""The command-line client (`./script client ...`) against the app served on waitress."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from orchestrator import client
from tests.conftest import make_pool_rig, make_rig, serve, wait_for
from tests.lan import BRIDGE, FORWARD_HOST, LAN, LAN_HOST, make_lan_pool_rig
from tests.launch import ServedApp

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, url: str, *argv: str) -> tuple[int, str, str]:
    code = client.main(["--url", url, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.strip().splitlines()]


def assert_aligned(out: str) -> None:
    """Every column of a table starts at the same offset on every line."""
    lines = [line for line in out.splitlines() if line and not line.startswith("(")]
    header = lines[0]
    starts = [m.end() for m in re.finditer(r"  +", header)]  # columns are 2+ spaces apart
    for line in lines[1:]:
        for s in starts:
            assert line[s - 1] == " " and line[s] != " ", (header, line)


def test_hosts_types_images_as_tables_and_json(served, capsys):
    code, out, err = run(capsys, served.url, "hosts")
    assert code == 0 and err == ""
    assert_aligned(out)
    table = rows(out)
    assert table[0] == ["PMID", "NAME", "STATUS", "CPU", "RAM(MB)", "DISK(GB)", "VMS"]
    assert [r[0] for r in table[1:4]] == ["1", "2", "3"]
    assert all(r[2] == "up" and r[6] == "0" for r in table[1:4])
    assert all(r[3].count("/") == 1 and r[4].count("/") == 1 for r in table[1:4])  # free/total
    assert out.rstrip().endswith("(free/total)")

    code, out, _ = run(capsys, served.url, "--json", "hosts")
    hosts = json.loads(out)["hosts"]
    assert [h["pmid"] for h in hosts] == [1, 2, 3] and "capacity" in hosts[0]

    code, out, _ = run(capsys, served.url, "types")
    assert code == 0
    assert_aligned(out)
    assert rows(out) == [
        ["TID", "NAME", "CPU", "RAM(MB)", "DISK(GB)"],
        ["1", "small", "1", "512", "1"],
        ["2", "standard", "2", "1024", "2"],
        ["3", "large", "4", "2048", "3"],
    ]
    code, out, _ = run(capsys, served.url, "images")
    assert rows(out) == [["ID", "NAME"], ["1", "debian-12"], ["2", "alpine"]]
    code, out, _ = run(capsys, served.url, "--json", "images")
    assert json.loads(out) == {
        "images": [{"id": 1, "name": "debian-12"}, {"id": 2, "name": "alpine"}]
    }


def test_create_query_list_destroy(served, capsys):
    code, out, err = run(capsys, served.url, "create", "web1", "1", "1")
    assert (code, out.strip(), err) == (0, "created vmid 1", "")
    code, out, _ = run(capsys, served.url, "--json", "create", "web2", "2", "2")
    assert code == 0 and json.loads(out) == {"vmid": 2}

    code, out, _ = run(capsys, served.url, "query", "1")
    assert code == 0
    fields = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert fields["vmid"] == "1" and fields["name"] == "web1" and fields["status"] == "active"
    assert fields["instance_type"] == "1" and fields["pmid"] in ("1", "2", "3")

    code, out, _ = run(capsys, served.url, "vms")
    assert code == 0
    assert_aligned(out)
    table = rows(out)
    assert table[0][:6] == ["VMID", "NAME", "HOSTNAME", "TYPE", "PMID", "STATUS"]
    assert [[r[0], r[1], r[3]] for r in table[1:]] == [["1", "web1", "1"], ["2", "web2", "2"]]
    assert [r[2][:5] for r in table[1:]] == ["web1-", "web2-"]  # their hostnames

    code, out, _ = run(capsys, served.url, "hosts")
    assert sum(int(r[6]) for r in rows(out)[1:4]) == 2

    code, out, err = run(capsys, served.url, "destroy", "1")
    assert (code, out.strip(), err) == (0, "destroyed vmid 1", "")
    code, out, _ = run(capsys, served.url, "--json", "vms")
    assert [v["vmid"] for v in json.loads(out)["vms"]] == [2]


def test_server_errors_go_to_stderr_with_exit_1_for_4xx(served, capsys):
    code, out, err = run(capsys, served.url, "query", "999")
    assert code == 1 and out == ""
    assert err.strip() == "error: vmid 999 does not exist"
    code, out, err = run(capsys, served.url, "create", "bad name!", "1", "1")
    assert code == 1 and "name must be 1-64 characters" in err and "Traceback" not in err
    code, out, err = run(capsys, served.url, "create", "x", "1", "99")
    assert code == 1 and err.startswith("error: ") and out == ""
    code, _, err = run(capsys, served.url, "--json", "volume", "query", "5")
    assert code == 1 and err.strip() == "error: volumeid : 5 does not exist"


def test_no_capacity_is_a_5xx_exit_2_with_retry_after(tmp_path, capsys):
    rig = make_rig(tmp_path, [{"cpus": 1, "ram": 1024}])
    s = serve(rig.services)
    try:
        code, out, err = run(capsys, s.url, "create", "big", "3", "1")
        assert code == 2 and out == ""
        assert err.startswith("error: no host can fit instance_type 3")
        assert "(retry after 5 s)" in err
    finally:
        s.stop()
        rig.stop()


def test_unreachable_fabric_exits_2_without_a_traceback(capsys):
    code, out, err = run(capsys, "http://127.0.0.1:1", "hosts")
    assert code == 2 and out == ""
    assert err.startswith("error: cannot reach the fabric at http://127.0.0.1:1")
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_usage_errors_exit_2(capsys):
    assert client.main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert client.main(["query", "zero"]) == 2
    assert "not a positive integer" in capsys.readouterr().err
    assert client.main(["volume"]) == 2
    assert client.main(["--help"]) == 0
    assert "checkout" in capsys.readouterr().out


def test_secrets_that_start_with_a_dash_are_arguments(served, capsys):
    secret = "-" + "a" * 42  # token_urlsafe() may start with "-"
    assert client.protect_secrets(["--json", "--url", "u", "extend", "1", secret, "2"]) == [
        "--json", "--url=u", "extend", "1", "--", secret, "2",
    ]  # fmt: skip
    assert client.protect_secrets(["--token", secret, "vms"]) == [f"--token={secret}", "vms"]
    assert client.protect_secrets(["token", "show", "-x"]) == ["token", "show", "--", "-x"]
    assert client.protect_secrets(["query", "-1"]) == ["query", "-1"]
    assert client.protect_secrets(["checkin", "-h"]) == ["checkin", "-h"]
    code, _, err = run(capsys, served.url, "checkin", "1", secret)
    assert code == 1 and err == "error: check-out is not enabled: no pools are configured\n"
    code, _, err = run(capsys, served.url, "token", "revoke", secret)
    assert code == 1 and "authentication is not enabled" in err


def test_volumes(served, capsys):
    assert run(capsys, served.url, "create", "vm1", "1", "1")[0] == 0
    code, out, _ = run(capsys, served.url, "volume", "create", "data", "1")
    assert (code, out.strip()) == (0, "created volumeid 1")
    code, out, _ = run(capsys, served.url, "volume", "attach", "1", "1")
    assert (code, out.strip()) == (0, "attached volumeid 1 to vmid 1")
    code, out, _ = run(capsys, served.url, "volume", "list")
    assert_aligned(out)
    table = rows(out)
    assert table[0] == ["VOLUMEID", "NAME", "SIZE(GB)", "STATUS", "VMID", "PMID", "DEVICE"]
    assert table[1][:5] == ["1", "data", "1", "attached", "1"] and table[1][6] == "/dev/vdb"
    code, _, err = run(capsys, served.url, "volume", "destroy", "1")
    assert code == 1 and "detach it first" in err
    code, out, _ = run(capsys, served.url, "--json", "volume", "detach", "1")
    assert code == 0 and json.loads(out) == {"status": 1}
    code, out, _ = run(capsys, served.url, "volume", "query", "1")
    assert "status     available" in out or "available" in out
    code, out, _ = run(capsys, served.url, "volume", "destroy", "1")
    assert (code, out.strip()) == (0, "destroyed volumeid 1")


POOL = {
    "name": "small",
    "instance_type": 1,
    "image": "debian-12",
    "ready_check": "none",
    "size": 2,
    "max": 2,
    "cleanup": "reset",
    "lifetime": 1,
    "lifetime_max": 3,
}


def test_checkout_checkin_extend_pools(tmp_path, capsys):
    pr = make_pool_rig(tmp_path, [{"cpus": 4, "ram": 4096}], [POOL])
    url = pr.served.url
    try:
        wait_for(lambda: pr.pools.status()["small"]["ready"] == 2)
        code, out, _ = run(capsys, url, "pools")
        assert code == 0
        assert_aligned(out)
        table = rows(out)
        assert table[0][:6] == ["NAME", "TYPE", "IMAGE_ID", "SIZE", "MAX", "READY"]
        assert table[1][:6] == ["small", "1", "1", "2", "2", "2"]

        code, out, _ = run(capsys, url, "--json", "checkout", "--pool", "small", "--hours", "1")
        assert code == 0
        got = json.loads(out)
        vmid, secret = got["vmid"], got["reservation_id"]

        code, out, _ = run(capsys, url, "checkout", "--type", "1")
        assert code == 0
        table = rows(out)
        assert table[0] == [
            "VMID", "IP", "MAC", "NETWORK", "POOL", "EXPIRES", "RESERVATION", "SSH",
        ]  # fmt: skip
        assert table[1][3:5] == ["user", "small"] and len(table[1][6]) == 43
        assert table[1][7] == "-"  # user networking: nothing reaches the guest
        assert "shown once" in out

        code, _, err = run(capsys, url, "checkout", "--pool", "small")
        assert code == 2 and "retry after" in err  # 503: nothing is ready

        code, _, err = run(capsys, url, "extend", str(vmid), "x" * 43, "1")
        assert code == 1 and err.startswith("error: ")  # 403: not the holder
        code, out, err = run(capsys, url, "extend", str(vmid), secret, "1")
        assert code == 0 and f"vmid {vmid} is reserved until 20" in out, err
        code, _, err = run(capsys, url, "extend", str(vmid), secret, "10")
        assert code == 1  # past the pool's cap

        code, out, _ = run(capsys, url, "checkin", str(vmid), secret)
        assert (code, out.strip()) == (0, f"checked in vmid {vmid}")
        code, _, err = run(capsys, url, "checkin", str(vmid), secret)
        assert code == 1 and "not checked out" in err
    finally:
        pr.stop()


def columns(out: str) -> list[list[str]]:
    """A table's lines split into cells (two spaces or more apart: a cell may hold one)."""
    return [re.split(r"\s{2,}", line) for line in out.strip().splitlines()]


def test_checkout_on_a_lan_shows_ssh_root_at_its_address(tmp_path, capsys):
    pr = make_lan_pool_rig(tmp_path)
    try:
        code, out, err = run(capsys, pr.served.url, "checkout", "--pool", "lan")
        assert code == 0, err
        assert_aligned(out)
        header, row = columns(out)[:2]
        got = dict(zip(header, row, strict=True))
        vm = pr.rig.registry.vms.get(int(got["VMID"]))
        assert got["IP"] == vm.ip and vm.ip.startswith("10.251.1.")
        assert (got["MAC"], got["NETWORK"]) == (vm.mac, BRIDGE)
        assert got["SSH"] == f"ssh root@{vm.ip}"  # port 22: no -p
    finally:
        pr.stop()


def test_vms_query_and_networks_show_addresses_macs_and_networks(tmp_path, capsys):
    rig = make_rig(tmp_path, [LAN_HOST, FORWARD_HOST], config={"networks": LAN})
    served = serve(rig.services)
    try:
        url = served.url
        assert run(capsys, url, "create", "onlan", "1", "1")[0] == 0  # the bigger host
        rig.registry.vms.record_address(1, "10.251.1.23", "lease")
        lan_vm = rig.registry.vms.get(1)
        code, out, _ = run(capsys, url, "query", "1")
        assert code == 0
        fields = dict(line.split(None, 1) for line in out.strip().splitlines())
        assert fields["ip"] == "10.251.1.23" and fields["address_source"] == "lease"
        assert fields["mac"] == lan_vm.mac and fields["network"] == BRIDGE
        assert fields["ssh.port"] == "22"

        code, out, _ = run(capsys, url, "vms")
        assert_aligned(out)
        table = rows(out)
        assert table[0] == [
            "VMID", "NAME", "HOSTNAME", "TYPE", "PMID", "STATUS", "IP", "MAC", "NETWORK", "POOL",
            "EXPIRES", "TAGS",
        ]  # fmt: skip
        assert table[1][6:9] == ["10.251.1.23", lan_vm.mac, BRIDGE]

        code, out, _ = run(capsys, url, "networks")
        assert code == 0
        assert_aligned(out)
        table = columns(out)
        assert table[0] == [
            "HOST",
            "NETWORK",
            "KIND",
            "SUBNET",
            "PLAN",
            "NEW VMS",
            "ADDRESSES IN USE",
        ]
        labels = [h.label for h in rig.registry.hosts.list()]
        assert table[1] == [
            labels[0],
            BRIDGE,
            "bridge",
            "10.251.1.0/24",
            "10.251.1.20-10.251.1.29",
            "yes",
            "10.251.1.23 (vm 1)",
        ]
        assert table[2] == [labels[1], "forward", "forward", "-", "-", "yes", "-"]
        assert out.rstrip().endswith("(NEW VMS: the network the host gives the VMs it makes)")

        code, out, _ = run(capsys, url, "networks", "--pmid", "2")
        assert [r[:2] for r in columns(out)[1:-1]] == [[labels[1], "forward"]]
        code, out, _ = run(capsys, url, "--json", "networks", "--pmid", "1")
        assert [n["name"] for n in json.loads(out)["networks"]] == [BRIDGE]
        code, out, err = run(capsys, url, "networks", "--pmid", "9")
        assert (code, out, err.strip()) == (1, "", "error: pmid 9 does not exist")
    finally:
        served.stop()
        rig.stop()


def test_token_create_show_revoke(tmp_path, capsys, monkeypatch):
    from orchestrator.auth import hash_password

    config = {"auth": {"enabled": True, "users": {"alice": hash_password("s3cret")}}}
    rig = make_rig(tmp_path, [{"cpus": 2, "ram": 2048}], config=config)
    s = serve(rig.services)
    try:
        code, _, err = run(capsys, s.url, "create", "web", "1", "1")
        assert code == 1 and err.startswith("error: ")  # 401: no token

        prompts = []
        monkeypatch.setattr("getpass.getpass", lambda p: prompts.append(p) or "s3cret")
        code, out, _ = run(capsys, s.url, "token", "create", "alice")
        assert code == 0 and prompts == ["password for alice: "]
        token = out.strip()
        assert len(token) >= 32

        code, out, err = run(capsys, s.url, "--token", token, "create", "web", "1", "1")
        assert (code, out.strip()) == (0, "created vmid 1"), err
        monkeypatch.setenv("FABRIC_TOKEN", token)
        code, out, _ = run(capsys, s.url, "token", "show", token)
        assert code == 0 and "alice" in out
        code, out, _ = run(capsys, s.url, "token", "revoke", token)
        assert (code, out.strip()) == (0, "revoked")
        code, _, err = run(capsys, s.url, "destroy", "1")
        assert code == 1 and err.startswith("error: ")  # 403: revoked at once

        monkeypatch.setattr("getpass.getpass", lambda p: "wrong")
        code, _, err = run(capsys, s.url, "token", "create", "alice")
        assert code == 1 and err.startswith("error: ")
    finally:
        s.stop()
        rig.stop()


def test_schedules_create_list_show_delete(tmp_path, capsys):
    from datetime import UTC, datetime, timedelta

    from orchestrator.api import create_app

    rig = make_rig(tmp_path, [{"cpus": 4, "ram": 4096}])
    schedules = rig.services.schedules  # not started: the test runs its passes
    served = ServedApp(create_app(rig.services))
    url = served.url
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        code, out, _ = run(capsys, url, "schedules", "list")
        assert (code, out.strip()) == (0, "no schedules")
        start, end = (
            (now - timedelta(minutes=1)).isoformat(),
            (now + timedelta(hours=1)).isoformat(),
        )
        code, out, err = run(
            capsys, url, "schedules", "create", "--name", "peak", "--type", "1", "--image", "1",
            "--count", "2", "--start", start, "--end", end,
        )  # fmt: skip
        assert (code, out.strip(), err) == (0, "created schedule 1", "")
        code, out, err = run(
            capsys, url, "schedules", "create", "--type", "1", "--image", "1", "--count", "1",
            "--cron", "0 8 * * 1-5", "--duration", "60",
        )  # fmt: skip
        assert (code, out.strip()) == (0, "created schedule 2"), err
        code, _, err = run(capsys, url, "schedules", "create", "--count", "1", "--cron", "0 8 * *")
        assert code == 1 and err.startswith("error: ")

        schedules.tick()  # the first window is open: its VMs are made
        code, out, _ = run(capsys, url, "schedules", "list")
        assert code == 0
        assert_aligned(out)
        lines = out.strip().splitlines()
        assert lines[0].split()[:4] == ["ID", "NAME", "WHAT", "COUNT"]
        assert "peak" in lines[1] and "type 1 image 1" in lines[1] and "active" in lines[1]
        assert lines[1].rstrip().endswith("2/2")
        assert "cron '0 8 * * 1-5' for 60 min" in lines[2] and "pending" in lines[2]
        code, out, _ = run(capsys, url, "--json", "schedules", "show", "1")
        assert code == 0 and json.loads(out)["state"] == "active"

        code, _, err = run(capsys, url, "schedules", "delete", "1")
        assert code == 1 and err.startswith("error: ")  # 409: active
        code, out, _ = run(capsys, url, "schedules", "delete", "1", "--force")
        assert (code, out.strip()) == (0, "deleted schedule 1")
        code, out, _ = run(capsys, url, "schedules", "delete", "2")
        assert (code, out.strip()) == (0, "deleted schedule 2")
        code, _, err = run(capsys, url, "schedules", "show", "2")
        assert code == 1 and "does not exist" in err
    finally:
        served.stop()
        rig.stop()


def test_script_client_runs_the_client(served):
    got = subprocess.run(
        [str(ROOT / "script"), "client", "--url", served.url, "--json", "types"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["types"][0]["tid"] == 1


def test_quota_and_keys(tmp_path, capsys):
    from orchestrator.auth import hash_password
    from tests.unit.test_ownership import KEY

    users = {"alice": {"password": hash_password("s3cret"), "quota": {"vms": 2}}}
    config = {"auth": {"enabled": True, "users": users}}
    rig = make_rig(tmp_path, [{"cpus": 2, "ram": 2048}], config=config)
    s = serve(rig.services)
    try:
        token = rig.services.auth.login("alice", "s3cret")
        code, out, err = run(capsys, s.url, "--token", token, "create", "web", "1", "1")
        assert code == 0, err
        code, out, err = run(capsys, s.url, "--token", token, "quota")
        assert code == 0, err
        assert_aligned(out.split("\n", 1)[1])
        assert out.splitlines()[0] == "alice (user)"
        assert ["vms", "1", "2"] in rows(out) and ["vcpu", "1", "no", "limit"] in rows(out)
        pub = tmp_path / "k.pub"
        pub.write_text(KEY + "\n")
        code, out, err = run(
            capsys, s.url, "--token", token, "keys", "add", str(pub), "--name", "lap"
        )
        assert code == 0 and out.startswith("added key 1 (SHA256:"), err
        code, out, _ = run(capsys, s.url, "--token", token, "keys", "list")
        assert rows(out)[0] == ["ID", "NAME", "FINGERPRINT", "ADDED"] and rows(out)[1][:2] == [
            "1",
            "lap",
        ]
        code, out, _ = run(capsys, s.url, "--token", token, "keys", "remove", "1")
        assert (code, out.strip()) == (0, "removed key 1")
        code, out, err = run(
            capsys, s.url, "--token", token, "checkout", "--ssh-key", str(tmp_path / "nope")
        )
        assert code == 1 and "cannot read the key file" in err
    finally:
        s.stop()
        rig.stop()


def test_stop_start_reboot_resize_console(served, capsys):
    assert run(capsys, served.url, "create", "web1", "1", "1")[0] == 0
    code, out, err = run(capsys, served.url, "stop", "1", "--timeout-s", "5")
    assert (code, out.strip(), err) == (0, "stopped vmid 1 (graceful)", "")
    code, out, err = run(capsys, served.url, "stop", "1")
    assert (code, out, err.strip()) == (1, "", "error: vmid 1 is already stopped")
    code, out, _ = run(capsys, served.url, "query", "1")
    assert dict(line.split(None, 1) for line in out.strip().splitlines())["status"] == "stopped"
    code, out, _ = run(capsys, served.url, "resize", "1", "2")
    assert (code, out.strip()) == (
        0,
        "resized vmid 1 to instance_type 2 (2 vCPUs, 1024 MB RAM, 2 GB disk)",
    )
    assert run(capsys, served.url, "start", "1")[1].strip() == "started vmid 1"
    code, out, _ = run(capsys, served.url, "reboot", "1", "--force")
    assert (code, out.strip()) == (0, "rebooted vmid 1 (went off: forced)")
    code, out, _ = run(capsys, served.url, "console", "1", "--kb", "2")
    assert (code, out.strip()) == (0, "(no console output: a test:// host keeps no console log)")
    code, out, _ = run(capsys, served.url, "--json", "console", "1")
    assert json.loads(out)["kb"] == 16


def test_request_requests_and_request_cancel(tmp_path, capsys):
    pr = make_pool_rig(tmp_path, [{"cpus": 4, "ram": 4096}], [POOL])
    url = pr.served.url
    try:
        wait_for(lambda: pr.pools.status()["small"]["ready"] == 2)
        code, out, err = run(capsys, url, "request", "small=2", "--id", "first", "--wait")
        assert code == 0, err
        table = columns(out)
        assert table[0] == ["REQUEST", "REQUESTER", "POOLS", "PROGRESS", "STATE", "AGE(S)",
                            "MESSAGE"]  # fmt: skip
        assert table[1][:5] == ["first", "-", "2 small", "small: 2/2", "ready"]
        assert table[2][:3] == ["VMID", "POOL", "HOSTNAME"] and len(table) == 5
        # the pool (max 2) is all taken: the next one waits
        code, out, _ = run(capsys, url, "--json", "request", "small", "--id", "second")
        assert code == 0 and json.loads(out)["state"] == "pending"
        code, out, _ = run(capsys, url, "requests", "--state", "pending")
        assert code == 0 and [r[0] for r in columns(out)[1:]] == ["second"]
        code, out, _ = run(capsys, url, "requests", "second")
        assert code == 0 and columns(out)[1][3] == "small: 0/1"
        code, out, _ = run(capsys, url, "request-cancel", "second")
        assert (code, out.strip()) == (0, "request second is cancelled")
        code, out, _ = run(capsys, url, "requests")
        assert code == 0 and [r[0] for r in columns(out)[1:]] == ["second", "first"]
        code, _, err = run(capsys, url, "request-cancel", "nope")
        assert code == 1 and "no request 'nope'" in err
        code, _, err = run(capsys, url, "request", "small=x")
        assert code == 2 and "POOL=COUNT" in err
        code, _, err = run(capsys, url, "request", "small=3")
        assert code == 1 and "never holds more than 2" in err
    finally:
        pr.stop()


def test_tag_vms_and_query_show_hostnames_and_tags(tmp_path, capsys):
    rig = make_rig(tmp_path, [{"cpus": 8, "ram": 8192}], config={"hostnames": {"domain": "t.test"}})
    served = serve(rig.services)
    try:
        url = served.url
        for name in ("web", "db"):
            assert run(capsys, url, "create", name, "1", "1")[0] == 0
        web, db = rig.registry.vms.get(1), rig.registry.vms.get(2)
        code, out, err = run(capsys, url, "tag", "1", "team=infra", "ci=1")
        assert (code, out.strip(), err) == (0, "vmid 1 tags: ci=1,team=infra", "")
        code, out, _ = run(capsys, url, "--json", "tag", "2", "team=db")
        assert json.loads(out) == {"status": 1, "vmid": 2, "tags": {"team": "db"}}

        code, out, _ = run(capsys, url, "query", "1")
        fields = dict(line.split(None, 1) for line in out.strip().splitlines())
        assert fields["hostname"] == web.hostname
        assert fields["fqdn"] == f"{web.hostname}.t.test"
        assert (fields["tags.team"], fields["tags.ci"]) == ("infra", "1")

        code, out, _ = run(capsys, url, "vms")
        assert_aligned(out)
        table = rows(out)
        assert table[0][2] == "HOSTNAME" and table[0][-1] == "TAGS"
        assert [(r[0], r[2], r[-1]) for r in table[1:]] == [
            ("1", web.hostname, "ci=1,team=infra"),
            ("2", db.hostname, "team=db"),
        ]
        code, out, _ = run(capsys, url, "vms", "--tag", "team:infra", "--tag", "ci:1")
        assert [r[0] for r in rows(out)[1:]] == ["1"]
        code, out, _ = run(capsys, url, "--json", "vms", "--tag", "team:db")
        assert [v["vmid"] for v in json.loads(out)["vms"]] == [2]

        code, out, _ = run(capsys, url, "tag", "1", "team=")  # KEY= removes it
        assert (code, out.strip()) == (0, "vmid 1 tags: ci=1")
        code, out, err = run(capsys, url, "tag", "1", "bad key=x")  # the server's 400
        assert (code, out) == (1, "") and "tag key 'bad key' must be" in err
        code, out, err = run(capsys, url, "tag", "1", "novalue")  # refused before any call
        assert code == 1 and "a tag is KEY=VALUE" in err
        assert rig.registry.vms.get(1).tags == {"ci": "1"}
    finally:
        served.stop()
        rig.stop()
