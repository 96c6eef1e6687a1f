"""What every `herald` command shares: its two errors, the database it opens, stream args."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.errors import InvalidInput

if TYPE_CHECKING:  # imported when a command runs: `herald --help` stays quick
    from sqlalchemy.orm import Session, sessionmaker

    from app.core.settings import Settings

MIGRATE_HINT = "run `herald migrate`"


class UsageError(Exception):
    """Bad command-line usage (exit 2)."""


class Failure(Exception):
    """The command could not do its job (exit 1)."""


def database_label(url: str) -> str:
    """The database URL as the user should see it (no password)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases or an in-memory one)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def open_database(settings: Settings, *, nudge: bool = False) -> sessionmaker[Session]:
    """Sessions on the configured database, which must exist and have Herald's schema.

    Creates nothing: a missing SQLite file or a database without the tables is a Failure
    that says to run `herald migrate`. `nudge`: commits nudge the relay (a Celery task).
    """
    from sqlalchemy import inspect

    from app.core.db import make_engine, make_session_factory

    path = sqlite_path(settings.database_url)
    if path is not None and not path.is_file():
        raise Failure(f"no database at {path}: {MIGRATE_HINT}")
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        if not inspect(conn).has_table("streams"):
            engine.dispose()
            raise Failure(f"{database_label(settings.database_url)} has no Herald tables: "
                          f"{MIGRATE_HINT}")
    if not nudge:
        return make_session_factory(engine)
    from app.outbox.nudge import relay_nudger

    return make_session_factory(engine, nudge=relay_nudger(settings))


def stream_name(value: str) -> str:
    """argparse `type=` for a stream name: a bad one is a usage error (exit 2)."""
    from app.outbox.streams import parse_stream

    try:
        parse_stream(value)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return value
