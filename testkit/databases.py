"""Per-run databases: fresh PostgreSQL databases and a migrated SQLite template.

Alembic runs once per test process on PostgreSQL: `migrated_pg_database()` copies a
template migrated on first use (CREATE DATABASE ... TEMPLATE, a fraction of a migration
run), dropped when the process exits. tests/test_migrations.py still migrates for real.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import Base, make_engine, make_session_factory
from app.core.migrate import upgrade
from testkit import pg
from testkit.eventually import eventually
from testkit.testrun import CI, PG_ADMIN_URL, RUN


@dataclass
class Database:
    """A migrated database for one test: its URL, engine and session factory."""

    url: str
    engine: Engine
    factory: sessionmaker[Session]
    kind: str

    @property
    def is_postgres(self) -> bool:
        return self.kind == "postgres"

    def analyse(self, table: str = "") -> None:
        """ANALYZE `table` (every table if none), outside a transaction: the statistics
        autovacuum would have taken by now, for a test of a plan."""
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                text(f"ANALYZE {table}"))


def pg_available() -> bool:
    return pg.pg_available(PG_ADMIN_URL)


def require_pg() -> None:
    if not pg_available():
        message = f"PostgreSQL does not answer at {PG_ADMIN_URL}"
        if CI:
            pytest.fail(message)
        pytest.skip(message)


def create_pg_database(suffix: str = "") -> str:
    return pg.create_database(PG_ADMIN_URL, f"herald_t_{RUN}{suffix}")


@functools.cache
def _pg_template() -> str:
    """This run's migrated template database (its name), made once, dropped at exit."""
    url = create_pg_database("_template")
    upgrade(url)  # the migration's engine is disposed: nobody stays connected to it
    atexit.register(drop_pg_database, url)
    return str(make_url(url).database)


def migrated_pg_database(suffix: str = "") -> str:
    """A fresh PostgreSQL database at the migrations' head (a copy of the run's template)."""
    return pg.clone_database(PG_ADMIN_URL, _pg_template(), f"herald_t_{RUN}{suffix}")


def drop_pg_database(url: str) -> None:
    pg.drop_database(PG_ADMIN_URL, url)


def wait_for_a_lock_wait(database: Database) -> None:
    """Until a session of the database waits for a lock (PostgreSQL)."""
    def waiting() -> bool:
        with database.engine.connect() as conn:
            return bool(conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")).scalar())
    eventually(waiting, timeout=20)


def truncate_all(engine: Engine, attempts: int = 5) -> None:
    """Empty every table. On PostgreSQL one TRUNCATE, which takes its tables' exclusive
    locks one after another while the system's own processes (relay, sweeper, web node)
    may be reading them in another order: a deadlock PostgreSQL breaks by rolling the
    TRUNCATE back (nothing done), so it is tried again."""
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
                else:
                    for table in tables:
                        conn.execute(text(f"DELETE FROM {table}"))
            return
        except OperationalError as exc:
            if not isinstance(exc.orig, psycopg.errors.DeadlockDetected) \
                    or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    require_pg()
    url = migrated_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[Database]:
    engine = make_engine(pg_url, pool_size=20, max_overflow=20)
    truncate_all(engine)
    yield Database(pg_url, engine, make_session_factory(engine), "postgres")
    engine.dispose()


@pytest.fixture
def own_pg_db() -> Iterator[Database]:
    """A fresh PostgreSQL database of the test's own, dropped after it. Unlike `pg_db`
    (the process's database, emptied by a TRUNCATE), its statistics count its rows only:
    an earlier test's connection may report its counts of `pg_db`'s rows a moment after
    the TRUNCATE zeroed them (a backend sends them at most once a second, and when it
    exits)."""
    require_pg()
    url = migrated_pg_database(f"_own_{uuid.uuid4().hex[:8]}")
    engine = make_engine(url)
    try:
        yield Database(url, engine, make_session_factory(engine), "postgres")
    finally:
        engine.dispose()
        drop_pg_database(url)


@pytest.fixture
def sqlite_db(sqlite_template: Path, tmp_path: Path) -> Iterator[Database]:
    path = tmp_path / "herald.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    yield Database(url, engine, make_session_factory(engine), "sqlite")
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest) -> Database:
    """The same test on SQLite and on PostgreSQL."""
    fixture = "sqlite_db" if request.param == "sqlite" else "pg_db"
    database: Database = request.getfixturevalue(fixture)
    return database
