"""Alembic: upgrade from empty to head and downgrade back to base, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, inspect

from app.core.migrate import downgrade, upgrade
from testkit.databases import create_pg_database, drop_pg_database, require_pg

TABLES = {"users", "projects", "project_technicians", "tickets", "messages", "documents",
          "interventions", "quotes", "streams", "relay_cursors", "events", "idempotency_keys"}


def roundtrip(url: str) -> None:
    upgrade(url)
    engine = create_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert tables >= TABLES
        uniques = inspect(engine).get_unique_constraints("events")
        assert any(set(u["column_names"]) == {"stream", "offset"} for u in uniques)
        downgrade(url)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(url)  # and up again
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_sqlite_upgrades_from_empty_and_downgrades_to_base(tmp_path: Path) -> None:
    roundtrip(f"sqlite:///{tmp_path / 'm.db'}")


def test_postgres_upgrades_from_empty_and_downgrades_to_base() -> None:
    require_pg()
    url = create_pg_database("_mig")
    try:
        roundtrip(url)
    finally:
        drop_pg_database(url)


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    from sqlalchemy import text

    from app.core.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    finally:
        engine.dispose()
