"""Hostnames: every VM has one, unique and never given again; the FQDN of the
configured domain; tags stored with the VM; VMs already in a registry get theirs
when it is upgraded."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import create_engine, select, text

from orchestrator.errors import NotFound
from orchestrator.hostnames import fqdn, new_hostname, prefix, short
from orchestrator.registry import HostnameRow, migrate
from tests.conftest import THREE_HOSTS, make_rig

LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def test_a_hostname_is_a_dns_label_made_from_the_name():
    assert prefix("CI_Debian.12") == "ci-debian-12"
    assert prefix("___") == "vm" and prefix(None) == "vm"
    assert len(prefix("x" * 200)) == 40
    names = {new_hostname("Pool_A") for _ in range(200)}
    assert len(names) == 200
    for n in names:
        assert n.startswith("pool-a-") and LABEL.fullmatch(n)


def test_short_and_fqdn():
    assert fqdn("web-abc", "vm.example.test") == "web-abc.vm.example.test"
    assert fqdn("web-abc", None) == "web-abc"
    assert short("web-abc.vm.example.test", "vm.example.test") == "web-abc"
    assert short("WEB-abc.other.test.", "vm.example.test") == "web-abc"
    assert short("web-abc", None) == "web-abc"


def test_every_vm_gets_a_hostname_never_given_again(tmp_path):
    rig = make_rig(tmp_path, THREE_HOSTS, config={"hostnames": {"domain": "vm.fabric.test"}})
    try:
        fab, reg = rig.services.fabric, rig.registry
        made = [fab.create_vm("web", 1, 1) for _ in range(3)]
        names = [vm.hostname for vm in made]
        assert len(set(names)) == 3 and all(n.startswith("web-") for n in names)
        assert reg.vms.by_hostname(names[0]).id == made[0].id
        fab.destroy_vm(made[0].id)
        with pytest.raises(NotFound):
            reg.vms.by_hostname(names[0])
        with reg.db.read() as s:  # the name is kept: no later VM can get it
            kept = {r.name: r.vm_id for r in s.scalars(select(HostnameRow))}
        assert kept == {vm.hostname: vm.id for vm in made}
        # a colliding hostname is refused by the registry, whichever server gives it
        with pytest.raises(Exception, match="(?i)unique|duplicate"), reg.db.tx() as s:
            s.add(HostnameRow(name=names[0], vm_id=999))
    finally:
        rig.stop()


def test_query_shows_hostname_fqdn_and_tags(tmp_path):
    from orchestrator.api import create_app

    rig = make_rig(tmp_path, THREE_HOSTS, config={"hostnames": {"domain": "vm.fabric.test"}})
    try:
        client = create_app(rig.services).test_client()
        vmid = client.post("/vm/create", json={"name": "db", "instance_type": 1, "image_id": 1})
        vmid = vmid.get_json()["vmid"]
        rig.registry.vms.set_tags(vmid, {"team": "qa", "ci": "yes"})
        assert rig.registry.vms.set_tags(vmid, {"ci": ""}) == {"team": "qa"}
        q = client.get(f"/vm/query?vmid={vmid}").get_json()
        assert q["hostname"].startswith("db-")
        assert q["fqdn"] == q["hostname"] + ".vm.fabric.test"
        assert q["tags"] == {"team": "qa"}
    finally:
        rig.stop()


def test_a_bad_domain_names_the_key(tmp_path):
    from orchestrator.config import config_from_dict
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError, match=r"hostnames\.domain"):
        config_from_dict({"hostnames": {"domain": "Not_A Domain"}})


def test_upgrading_gives_existing_vms_hostnames(tmp_path):
    from alembic import command

    url = f"sqlite:///{tmp_path / 'r.db'}"
    engine = create_engine(url)
    cfg = migrate.alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0008")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO images (id, location, name, spec, in_inventory) "
                "VALUES (1, '/i', 'i', '{}', 1)"
            )
        )
        for i, pool in ((1, "ci"), (2, None)):
            conn.execute(text(
                "INSERT INTO vms (id, name, tid, image_id, state, uuid, domain_name, mac, "
                "cpu, ram, disk, pool, borrower_keys, failures, created_at, updated_at) "
                f"VALUES ({i}, 'n{i}', 1, 1, 'ready', 'u{i}', 'd{i}', 'm{i}', 1, 1, 1, "
                ":pool, 0, 0, '2026-01-01', '2026-01-01')"), {"pool": pool})  # fmt: skip
    migrate.upgrade(engine)
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT id, hostname FROM vms")).all())
        kept = dict(conn.execute(text("SELECT vm_id, name FROM hostnames")).all())
    assert rows[1].startswith("ci-") and rows[2].startswith("n2-")
    assert kept == rows
