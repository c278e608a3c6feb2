"""The registry's schema comes from Alembic migrations and is checked at start."""

from __future__ import annotations

import subprocess

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from orchestrator.errors import ConfigError
from orchestrator.registry import Registry, make_engine, migrate
from orchestrator.registry.tables import Base
from tests.launch import ROOT


def test_migrations_build_exactly_the_models_schema(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    assert migrate.current(engine) == migrate.head(engine)
    engine.dispose()


def test_an_outdated_schema_is_refused_with_what_to_do(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    reg = Registry(url)
    reg.create_schema()
    with reg.db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    reg.close()
    with pytest.raises(ConfigError, match=r"revision 0000 .* run `./script db upgrade --db"):
        Registry(url).create_schema()


def test_the_db_command_upgrades_and_reports(tmp_path):
    url = f"sqlite:///{tmp_path / 'new' / 'r.db'}"
    up = subprocess.run(
        [str(ROOT / "script"), "db", "upgrade", "--db", url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    assert "schema revision: 0010" in up.stdout
    cur = subprocess.run(
        [str(ROOT / "script"), "db", "current", "--db", url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cur.returncode == 0 and "0010" in cur.stdout


def test_the_server_refuses_an_outdated_registry(tmp_path):
    from tests.unit.test_served import Server

    srv = Server(tmp_path, [(4, 4096)])
    reg = Registry(srv.db)
    reg.create_schema()
    with reg.db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    reg.close()
    proc = subprocess.run(
        [str(ROOT / "script"), str(srv.pm), str(srv.images), str(srv.types),
         "--config", str(srv.config), "--db", srv.db, "--port", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "./script db upgrade" in proc.stderr and "Traceback" not in proc.stderr


def test_upgrading_from_0001_keeps_the_rows(tmp_path):
    """A registry made by the first schema gets servers, leases, the owners and the
    addresses; its hosts are still there."""
    from alembic import command

    url = f"sqlite:///{tmp_path / 'r.db'}"
    engine = create_engine(url)
    cfg = migrate.alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO hosts (key, label, uri, domain_type, network, in_inventory, "
                 "enabled, status, phys_cpu, phys_ram, phys_disk, cpu_total, ram_total, "
                 "disk_total, cpu_used, ram_used, disk_used) VALUES ('k', 'pm1', 'test:///x', "
                 "'kvm', 'user', 1, 1, 'up', 1, 1, 1, 1, 1, 1, 0, 0, 0)")
        )  # fmt: skip
    assert migrate.current(engine) == "0001"
    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head(engine) == "0010"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT label FROM hosts")).scalar() == "pm1"
        # what a host had was declared (the old default included)
        assert conn.execute(text("SELECT network_setting FROM hosts")).scalar() == "user"
        assert conn.execute(text("SELECT count(*) FROM addresses")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM leases")).scalar() == 0
        assert conn.execute(text("SELECT count(owner) FROM vms")).scalar() == 0
        assert conn.execute(text("SELECT count(owner) FROM volumes")).scalar() == 0
    engine.dispose()
