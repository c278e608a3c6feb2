"""The registry's schema comes from Alembic migrations and is checked at start."""

from __future__ import annotations

import subprocess

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

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
    with reg.engine.begin() as conn:
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
    assert "schema revision: 0001" in up.stdout
    cur = subprocess.run(
        [str(ROOT / "script"), "db", "current", "--db", url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cur.returncode == 0 and "0001" in cur.stdout


def test_the_server_refuses_an_outdated_registry(tmp_path):
    from tests.unit.test_served import Server

    srv = Server(tmp_path, [(4, 4096)])
    reg = Registry(srv.db)
    reg.create_schema()
    with reg.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    reg.close()
    proc = subprocess.run(
        [str(ROOT / "script"), str(srv.pm), str(srv.images), str(srv.types),
         "--config", str(srv.config), "--db", srv.db, "--port", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "./script db upgrade" in proc.stderr and "Traceback" not in proc.stderr
