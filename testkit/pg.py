"""Throw-away PostgreSQL databases on a server reached through an admin URL."""

from __future__ import annotations

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def pg_available(admin_url: str) -> bool:
    try:
        engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


def create_database(admin_url: str, name: str) -> str:
    """A fresh, empty database `name` (dropped first if it exists); returns its URL."""
    _execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
             f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def clone_database(admin_url: str, template: str, name: str) -> str:
    """A fresh database `name`, a copy of the database `template` (which nobody may be
    connected to): CREATE DATABASE ... TEMPLATE, a file copy instead of a migration run."""
    _execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
             f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    drop_databases(admin_url, [str(make_url(url).database)])


def drop_databases(admin_url: str, names: list[str]) -> None:
    """Drop the databases `names` (their connections closed first), on one connection."""
    quoted = [name.replace('"', '""') for name in names]
    _execute(admin_url, *(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in quoted))


def _execute(admin_url: str, *statements: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        admin.dispose()
