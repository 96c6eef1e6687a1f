"""Herald running for real in tests: web node(s) and Celery worker(s) on one database."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from app.core.db import make_engine, make_session_factory
from app.core.migrate import upgrade
from app.core.settings import Settings
from app.outbox.nudge import RelayNudger
from app.outbox.nudge import relay_nudger as make_relay_nudger
from testkit.clients import Api, token
from testkit.databases import drop_pg_database, migrated_pg_database, require_pg, truncate_all
from testkit.processes import Process, WebNode, Worker, start_all, stop_all


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
        stop_all([*self.webs, *self.workers])


def make_admin(factory: sessionmaker[Session]) -> str:
    from app.portal import projects

    with factory() as session, session.begin():
        user = projects.create_user(session, email="root@test", role="admin", name="root")
        return token(user.id, "admin", "root@test")


def run_system(kind: str, tmp: Path) -> Iterator[System]:
    if kind == "postgres":
        require_pg()
        url = migrated_pg_database("_sys")
    else:
        url = f"sqlite:///{tmp / 'system.db'}"
        upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    system = System(url, kind, factory, tmp)
    try:
        system.webs.append(WebNode(system.env, tmp))
        system.workers.append(Worker(system.env, tmp))
        start_all([*system.webs, *system.workers])
        yield system
    finally:
        system.stop()
        engine.dispose()
        if kind == "postgres":
            drop_pg_database(url)


def fresh(system: System) -> System:
    truncate_all(system.factory.kw["bind"])
    system.admin_token = make_admin(system.factory)
    kept = next((w for w in system.workers if w.alive()), None)  # the first live worker
    extra = [*system.webs[1:], *(w for w in system.workers if w is not kept)]
    stop_all(extra)  # side by side: a worker's warm shutdown takes seconds
    del system.webs[1:]
    system.workers[:] = [kept] if kept is not None else []
    starting: list[Process] = []
    if not system.workers:
        system.workers.append(Worker(system.env, system.log_dir))
        starting.append(system.workers[0])
    if not system.webs[0].alive():
        system.webs[0] = WebNode(system.env, system.log_dir)
        starting.append(system.webs[0])
    start_all(starting)
    return system


@functools.cache
def relay_nudger() -> RelayNudger:
    """The relay nudger of this test run's settings (its queue), made once per process.

    Test sessions nudge nobody unless a test passes this (`append(..., nudge=...)`)."""
    return make_relay_nudger(Settings())
