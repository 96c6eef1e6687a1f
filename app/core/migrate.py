"""Run Alembic migrations from code (the CLI, tests and `make dev` use this)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from app.core import bundle


def alembic_config(url: str) -> Config:
    """The clone's alembic.ini and migrations/, or the copies an installed wheel carries."""
    config = Config(str(bundle.alembic_ini()))
    config.set_main_option("script_location", str(bundle.migrations()))
    config.attributes["url"] = url
    config.attributes["skip_logging"] = True
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)
