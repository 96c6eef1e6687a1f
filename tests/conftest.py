"""Shared fixtures: real PostgreSQL and SQLite databases, Redis, web nodes, Celery workers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis as redis_lib
from sqlalchemy.orm import Session, sessionmaker

import tests.support.env  # noqa: F401  (must come first: sets this run's channels)
from app.db import make_engine, make_session_factory
from app.migrate import upgrade
from app.outbox import writer
from tests.support.clients import Api, token
from tests.support.databases import (  # noqa: F401  (fixtures)
    Database,
    create_pg_database,
    db,
    drop_pg_database,
    pg_db,
    pg_url,
    require_pg,
    sqlite_db,
    sqlite_template,
    truncate_all,
)
from tests.support.env import CI, REDIS_URL
from tests.support.postgres import private_pg  # noqa: F401  (fixture)
from tests.support.processes import WebNode, Worker


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


@pytest.fixture(autouse=True)
def no_celery_nudges() -> Iterator[None]:
    """In-process appends nudge nothing unless a test asks; the processes nudge for real."""
    writer.set_default_nudger(lambda streams: None)
    yield
    writer.set_default_nudger(None)


@dataclass
class System:
    """Herald running for real: web node(s) and a Celery worker on one database.

    No beat: workers sweep the outbox themselves (workers/sweeper.py), so every test that
    uses a System also shows that nothing waits on beat."""

    database_url: str
    kind: str
    factory: sessionmaker[Session]
    log_dir: Path
    webs: list[WebNode] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    admin_token: str = ""

    @property
    def env(self) -> dict[str, str]:
        env = {"DATABASE_URL": self.database_url}
        if self.kind != "postgres":
            # Only the PostgreSQL system shares this process's channel and queue (tests nudge
            # and publish to it in-process); any other system must not hear its events.
            env["HERALD_SOCKETIO_CHANNEL"] = f"{os.environ['HERALD_SOCKETIO_CHANNEL']}-{self.kind}"
            env["HERALD_CELERY_QUEUE"] = f"{os.environ['HERALD_CELERY_QUEUE']}-{self.kind}"
        return env

    @property
    def url(self) -> str:
        return self.webs[0].url

    def api(self, node: int = 0) -> Api:
        return Api(self.webs[node].url, self.admin_token)

    def add_web(self) -> WebNode:
        node = WebNode(self.env, self.log_dir)
        node.start()
        self.webs.append(node)
        return node

    def add_worker(self, concurrency: int = 1, beat: bool = False) -> Worker:
        worker = Worker(self.env, self.log_dir, concurrency=concurrency, beat=beat)
        worker.start()
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for proc in [*self.webs, *self.workers]:
            proc.stop()


def _admin(factory: sessionmaker[Session]) -> str:
    from app import portal

    with factory() as session, session.begin():
        user = portal.create_user(session, email="root@test", role="admin", name="root")
        return token(user.id, "admin", "root@test")


def _system(kind: str, tmp: Path) -> Iterator[System]:
    if kind == "postgres":
        require_pg()
        url = create_pg_database("_sys")
    else:
        url = f"sqlite:///{tmp / 'system.db'}"
    upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    system = System(url, kind, factory, tmp)
    try:
        system.add_web()
        system.add_worker()
        yield system
    finally:
        system.stop()
        engine.dispose()
        if kind == "postgres":
            drop_pg_database(url)


@pytest.fixture(scope="session")
def pg_system_session(redis_url: str, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[System]:
    yield from _system("postgres", tmp_path_factory.mktemp("pg-system"))


@pytest.fixture(scope="session")
def sqlite_system_session(redis_url: str, tmp_path_factory: pytest.TempPathFactory
                          ) -> Iterator[System]:
    yield from _system("sqlite", tmp_path_factory.mktemp("sqlite-system"))


def _fresh(system: System) -> System:
    truncate_all(system.factory.kw["bind"])
    system.admin_token = _admin(system.factory)
    for node in list(system.webs[1:]):
        node.stop()
        system.webs.remove(node)
    for worker in list(system.workers):
        if not worker.alive() or worker is not system.workers[0]:
            worker.stop()
            system.workers.remove(worker)
    if not system.workers:
        system.add_worker()
    if not system.webs[0].alive():
        system.webs[0] = WebNode(system.env, system.log_dir)
        system.webs[0].start()
    return system


@pytest.fixture
def pg_system(pg_system_session: System) -> System:
    """Herald on PostgreSQL, with empty tables."""
    return _fresh(pg_system_session)


@pytest.fixture(params=["sqlite", "postgres"])
def system(request: pytest.FixtureRequest) -> System:
    """Herald on SQLite and on PostgreSQL, with empty tables."""
    name = "sqlite_system_session" if request.param == "sqlite" else "pg_system_session"
    return _fresh(request.getfixturevalue(name))
