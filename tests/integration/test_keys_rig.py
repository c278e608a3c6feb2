"""Borrowers' own SSH keys on real guests (the LAN, authentication on): a key a user
registered and a key passed at check-out both open the guest during the
reservation and are refused from check-in on; another user's key never opens it;
nothing a borrower is given opens a shell on a host; and a pool with ``cleanup:
reset`` gives the next borrower the image afresh, even after a borrower changed
what only root can."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from orchestrator.auth import hash_password
from orchestrator.errors import FabricError
from orchestrator.remote import Remote, SshSettings
from tests.integration.conftest import (
    GUEST_KEY,
    HOST_KEY,
    HOSTS,
    RIG,
    FabricProcess,
    Guest,
    _require_rig,
)

pytestmark = pytest.mark.integration

PW = {"alice": "alice's password", "bob": "bob's password"}


def new_key(tmp: Path, name: str) -> Path:
    """A borrower's own key pair, made as a user would (ssh-keygen)."""
    path = tmp / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True
    )
    return path


def config() -> str:
    users = {u: hash_password(pw) for u, pw in PW.items()}
    return (
        "auth:\n  enabled: true\n  users:\n"
        + "".join(f"    {u}: '{h}'\n" for u, h in users.items())
        + "pools:\n"
        "  - {name: tmpkeys, instance_type: 1, image: guest, size: 1, max: 1, cleanup: tmp}\n"
        "  - {name: fresh, instance_type: 1, image: guest, size: 1, max: 1, cleanup: reset}\n"
        "workers: {interval: 1}\n"
        "guest: {address_timeout: 90}\n"
    )


class Borrower:
    def __init__(self, fp: FabricProcess, user: str) -> None:
        self.fp = fp
        self.user = user
        r = requests.post(f"{fp.url}/token", auth=(user, PW[user]), timeout=30)
        assert r.status_code == 200, r.text
        self.headers = {"X-Auth-Token": r.json()["token"]}

    def post(self, path: str, **data) -> requests.Response:
        return requests.post(self.fp.url + path, json=data, headers=self.headers, timeout=120)


@pytest.fixture(scope="module")
def fp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FabricProcess]:
    _require_rig()
    fp = FabricProcess(tmp_path_factory.mktemp("rig-keys"), lan=True)
    fp.set_config(config())
    fp.start()
    yield fp
    fp.destroy_everything()


def login(ip: str, key: Path) -> Guest:
    return Guest(Path("/"), ip, 22, key_file=key)


def refused(ip: str, key: Path) -> str:
    with pytest.raises(FabricError) as e:
        login(ip, key).run(["true"])
    assert "Authentication failed" in e.value.message, e.value.message
    return e.value.message


def test_a_borrowers_keys_open_the_guest_during_the_reservation_only(fp, tmp_path):
    alice, bob = Borrower(fp, "alice"), Borrower(fp, "bob")
    registered, given, bobs = (new_key(tmp_path, n) for n in ("alice-reg", "alice-co", "bob"))
    r = alice.post("/keys", name="laptop", key=registered.with_suffix(".pub").read_text())
    assert r.status_code == 201, r.text
    fp.wait_pool("tmpkeys", 1)
    r = alice.post("/vm/checkout", pool="tmpkeys", ssh_key=given.with_suffix(".pub").read_text())
    assert r.status_code == 200, r.text
    got = r.json()
    assert len(got["ssh_keys"]) == 2 and all(k.startswith("SHA256:") for k in got["ssh_keys"])
    ip = got["ip"]
    # both of alice's keys log in as root at the address she was given
    for key in (registered, given):
        assert login(ip, key).run(["id", "-u"]).strip() == "0"
    refused(ip, bobs)  # bob's key does not
    # the fabric's hypervisor key is not among the guest's keys: a borrower who is root
    # there finds nothing that opens a host
    held = login(ip, given).run(["cat", "/root/.ssh/authorized_keys"])
    host_pub = (RIG / HOST_KEY).with_suffix(".pub").read_text().split()[1]
    assert host_pub not in held
    r = alice.post("/vm/checkin", vmid=got["vmid"], reservation_id=got["reservation_id"])
    assert r.status_code == 200, r.text
    # refused from the moment check-in answers
    for key in (registered, given):
        refused(ip, key)
    # the VM serves again, cleaned; bob's key opens it for bob, alice's do not
    fp.wait_pool("tmpkeys", 1)
    r = bob.post("/vm/checkout", pool="tmpkeys", ssh_key=bobs.with_suffix(".pub").read_text())
    assert r.status_code == 200, r.text
    again = r.json()
    assert again["vmid"] == got["vmid"]  # the same VM, cleaned (not rebuilt)
    assert login(ip, bobs).run(["ls", "-A", "/tmp"]).split() == []
    for key in (registered, given):
        refused(ip, key)
    bob.post("/vm/checkin", vmid=again["vmid"], reservation_id=again["reservation_id"])


def test_nothing_a_borrower_is_given_opens_a_shell_on_a_host(fp, tmp_path):
    alice = Borrower(fp, "alice")
    own = new_key(tmp_path, "alice-own")
    fp.wait_pool("tmpkeys", 1)
    r = alice.post("/vm/checkout", pool="tmpkeys", ssh_key=own.with_suffix(".pub").read_text())
    assert r.status_code == 200, r.text
    got = r.json()
    try:
        # what she was given: an address, a port, a user name, a secret; no key material
        assert set(got) >= {"vmid", "ip", "ssh", "reservation_id"}
        assert "PRIVATE KEY" not in r.text
        # her key, and the fabric's guest key (which she never sees), open no host
        for key in (own, RIG / GUEST_KEY):
            for user, addr in HOSTS.values():
                host = Remote(
                    user,
                    addr,
                    2222,
                    SshSettings(key=str(key), known_hosts=str(RIG / "known_hosts")),
                )
                with pytest.raises(FabricError, match="Authentication failed"):
                    host.run(["true"], timeout=15)
    finally:
        alice.post("/vm/checkin", vmid=got["vmid"], reservation_id=got["reservation_id"])


def test_reset_cleanup_undoes_what_a_root_borrower_changed(fp, tmp_path):
    alice, bob = Borrower(fp, "alice"), Borrower(fp, "bob")
    mine, lingering, bobs = (new_key(tmp_path, n) for n in ("a", "a-planted", "b"))
    fp.wait_pool("fresh", 1)
    r = alice.post("/vm/checkout", pool="fresh", ssh_key=mine.with_suffix(".pub").read_text())
    assert r.status_code == 200, r.text
    got = r.json()
    ip = got["ip"]
    # as root she plants a key of her own (without the fabric's marker) and a file
    planted = lingering.with_suffix(".pub").read_text().strip()
    login(ip, mine).run(
        ["sh", "-c", f"echo '{planted}' >> /root/.ssh/authorized_keys; touch /root/was-here"]
    )
    assert login(ip, lingering).run(["true"]) == ""
    r = alice.post("/vm/checkin", vmid=got["vmid"], reservation_id=got["reservation_id"])
    assert r.status_code == 200, r.text
    fp.wait_pool("fresh", 1)
    r = bob.post("/vm/checkout", pool="fresh", ssh_key=bobs.with_suffix(".pub").read_text())
    assert r.status_code == 200, r.text
    again = r.json()
    assert again["vmid"] == got["vmid"] and again["ip"] == ip
    # the image afresh: her planted key is gone with everything else she did
    refused(ip, lingering)
    refused(ip, mine)
    assert login(ip, bobs).run(["ls", "/root"]).split() == []
    bob.post("/vm/checkin", vmid=again["vmid"], reservation_id=again["reservation_id"])
