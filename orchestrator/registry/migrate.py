"""Schema versions: Alembic migrations applied by ``./script db upgrade``, checked at start.

A brand-new, empty database is brought to the current schema at once (so the
default SQLite file just works); a database at an older (or unknown) revision
is refused with a message that says what to run.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from ..errors import ConfigError

HERE = Path(__file__).resolve().parent / "migrations"


def alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def head(engine: Engine) -> str:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head() or ""


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def ensure_schema(engine: Engine) -> None:
    """Create the schema in an empty database; refuse one that is not at head."""
    if not inspect(engine).get_table_names():
        upgrade(engine)
        return
    have, want = current(engine), head(engine)
    if have != want:
        url = engine.url.render_as_string(hide_password=True)
        raise ConfigError(
            f"the registry's schema is at revision {have or 'none'} and this fabric needs "
            f"{want}: run `./script db upgrade --db {url}` (back the database up first)"
        )
