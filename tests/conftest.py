"""Shared fixtures: real PostgreSQL and SQLite databases, Redis, web nodes, Celery workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

import testkit.testrun  # noqa: F401  (must come first: sets this run's channels)
from testkit import install
from testkit.databases import (  # noqa: F401  (fixtures)
    Database,
    create_pg_database,
    db,
    drop_pg_database,
    own_pg_db,
    pg_db,
    pg_url,
    require_pg,
    sqlite_db,
    sqlite_template,
    truncate_all,
)
from testkit.leftovers import delete_run_keys
from testkit.postgres import private_pg  # noqa: F401  (fixture)
from testkit.processes import WebNode
from testkit.redis_cluster import redis_cluster, redis_sentinel  # noqa: F401  (fixtures)
from testkit.source import serialise_parses
from testkit.system import System, fresh, run_system
from testkit.testrun import CI, REDIS_URL, RUN
from testkit.world import World, build_world

# The longest test files (pytest --durations on a full run), in that order, run first: with
# pytest-xdist (`make test`: --dist loadfile, no reordering) each worker takes the next file
# as it frees up, so that no worker is left alone with a long file at the end of the run.
# Except the two whose pip installs start in the background with the session
# (testkit/install.py): they come a few minutes in, once their venvs are likely ready, so
# that no worker waits for one. Every other file keeps its place, after these; each file's
# tests keep their order.
LONGEST_FIRST = [
    "test_soak.py", "test_bench_smoke.py", "test_send_queue.py", "test_redis_topologies.py",
    "test_dev.py", "test_tail.py", "test_durability.py",
    "test_install.py",  # its venv: started with the session
    "test_hostile_transport.py", "test_js_client.py",
    "test_client_packages.py",  # its venv: started with the session
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank))
               if item.path.parent.name == "tests" else len(rank))


@pytest.hookimpl(tryfirst=True)  # before xdist's own starts the workers: they inherit its name
def pytest_sessionstart(session: pytest.Session) -> None:
    install.begin(session.config)  # tests/test_install.py's venv, in the background


@pytest.hookimpl(trylast=True)  # after the session's fixtures are torn down (pytest's runner)
def pytest_sessionfinish(session: pytest.Session) -> None:
    install.end()
    if _redis_ok():  # this process's keys (each xdist worker's own): testkit/leftovers.py
        delete_run_keys(REDIS_URL, RUN)


# Before any test starts a thread (CPython 3.11's ast.parse is not thread-safe):
# testkit.source.serialise_parses.
serialise_parses()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def _redis_ok() -> bool:
    try:
        return bool(redis_lib.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis_lib.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not _redis_ok():
        message = f"Redis does not answer at {REDIS_URL}"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    return REDIS_URL


@pytest.fixture(scope="session")
def pg_system_session(redis_url: str, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[System]:
    yield from run_system("postgres", tmp_path_factory.mktemp("pg-system"))


@pytest.fixture(scope="session")
def sqlite_system_session(redis_url: str, tmp_path_factory: pytest.TempPathFactory
                          ) -> Iterator[System]:
    yield from run_system("sqlite", tmp_path_factory.mktemp("sqlite-system"))


@pytest.fixture
def pg_system(pg_system_session: System) -> System:
    """Herald on PostgreSQL, with empty tables."""
    return fresh(pg_system_session)


@pytest.fixture
def node(pg_system: System, tmp_path: Path) -> Iterator[WebNode]:
    """A web node of our own on `pg_system`, that a test may kill and start again on the
    same port."""
    web = WebNode(pg_system.env, tmp_path)
    web.start()
    yield web
    web.stop()


@pytest.fixture(scope="module")
def world(pg_system_session: System) -> Iterator[World]:
    """A portal on PostgreSQL, built once per module: a project with its client and
    technician, outsiders of each role, an admin and a service (testkit/world.py)."""
    w = build_world(pg_system_session)
    yield w
    w.api.close()


@pytest.fixture(params=["sqlite", "postgres"])
def system(request: pytest.FixtureRequest) -> System:
    """Herald on SQLite and on PostgreSQL, with empty tables."""
    name = "sqlite_system_session" if request.param == "sqlite" else "pg_system_session"
    return fresh(request.getfixturevalue(name))
