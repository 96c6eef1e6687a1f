"""Herald on a PostgreSQL database and a redis-server of its own, for fault tests.

A test that stops Redis, refuses its PUBLISHes or restarts it must not disturb anyone
else's run: `private_system` gives it its own database (created and dropped), its own
redis-server for Socket.IO messages (and, with `broker=True`, for Celery too), one web
node and one worker (no beat), and an admin over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from app.core.db import make_engine, make_session_factory
from app.portal import projects
from testkit.clients import Api, token
from testkit.databases import drop_pg_database, migrated_pg_database, require_pg
from testkit.processes import WebNode, Worker, start_all, stop_all
from testkit.redis import PrivateRedis


@dataclass
class PrivateSystem:
    redis: PrivateRedis
    factory: sessionmaker[Session]
    web: WebNode
    worker: Worker
    api: Api
    env: dict[str, str]
    log_dir: Path


@contextmanager
def private_system(log_dir: Path, name: str, *, broker: bool = False,
                   env: dict[str, str] | None = None) -> Iterator[PrivateSystem]:
    """Start it all; at exit stop the processes (a worker a test put in its place too),
    the redis-server, and drop the database."""
    require_pg()
    redis = PrivateRedis(log_dir)
    redis.start()
    url = migrated_pg_database(name)
    engine = make_engine(url)
    try:
        factory = make_session_factory(engine)
        full = {"DATABASE_URL": url, "SOCKETIO_REDIS_URL": redis.url,
                **({"REDIS_URL": redis.url} if broker else {}), **(env or {})}
        web, worker = WebNode(full, log_dir), Worker(full, log_dir)
        system: PrivateSystem | None = None
        try:
            start_all([web, worker])
            with factory() as session, session.begin():
                admin = projects.create_user(session, email="root@test", role="admin",
                                             name="root")
            system = PrivateSystem(redis, factory, web, worker,
                                   Api(web.url, token(admin.id, "admin", "root@test")),
                                   full, log_dir)
            yield system
        finally:
            if system is not None:
                system.api.close()
            stop_all({web, worker, *((system.web, system.worker) if system else ())})
    finally:
        redis.stop()
        engine.dispose()
        drop_pg_database(url)


__all__ = ["PrivateSystem", "private_system"]
