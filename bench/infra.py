"""What a bench run stands on: its own PostgreSQL database and real child processes
(testkit's, shared with the tests; the bench never imports tests/)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

from bench.env import PG_ADMIN_URL, REDIS_URL, RUN
from testkit import pg, processes
from testkit.processes import BIN, ROOT, Process, free_port


class Unavailable(RuntimeError):
    """A service the bench needs does not answer."""


def check_services() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except (redis.RedisError, OSError) as exc:
        raise Unavailable(f"Redis does not answer at {REDIS_URL}: {exc}") from None
    try:
        engine = create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        raise Unavailable(f"PostgreSQL does not answer at {PG_ADMIN_URL}: "
                          f"{type(exc).__name__}") from None


def create_database(part: str = "") -> str:
    """A fresh, empty PostgreSQL database for this run (for one of its parts, given a name
    of its own: the name is made anew, dropping any database that held it); its URL."""
    return pg.create_database(PG_ADMIN_URL, f"herald_bench_{RUN}{'_' + part if part else ''}")


def drop_database(url: str) -> None:
    pg.drop_database(PG_ADMIN_URL, url)


def server_versions(url: str) -> str:
    engine = create_engine(url)
    with engine.connect() as conn:
        pg = str(conn.execute(text("SHOW server_version")).scalar()).split()[0]
    engine.dispose()
    info = redis.Redis.from_url(REDIS_URL).info("server")
    return f"PostgreSQL {pg}, Redis {info.get('redis_version')}"


LOG_DIR = Path(tempfile.gettempdir()) / f"herald-bench-{RUN}"


class WebNode(processes.WebNode):
    """testkit's web node, its log under LOG_DIR."""

    def __init__(self, env: dict[str, str], port: int | None = None) -> None:
        super().__init__(env, LOG_DIR, port)


class Worker(processes.Worker):
    """testkit's worker on a queue of this run (no beat: only nudges drive it)."""

    def __init__(self, env: dict[str, str], queue: str, concurrency: int = 1) -> None:
        super().__init__(env, LOG_DIR, concurrency=concurrency, queue=queue)


def start_all(*procs: Process, meanwhile: Callable[[], None] | None = None) -> None:
    """Spawn every process, run `meanwhile`, then wait for each (they start in parallel)."""
    for proc in procs:
        proc.spawn()
    try:
        if meanwhile is not None:
            meanwhile()
        for proc in procs:
            proc.wait_ready()
    except Exception:
        stop_all(*procs)
        raise


def stop_all(*procs: Process) -> None:
    """SIGTERM every process at once, then wait for each (SIGKILL after 10 s)."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait_stopped()


__all__ = ["BIN", "LOG_DIR", "ROOT", "Process", "Unavailable", "WebNode", "Worker",
           "check_services", "create_database", "drop_database", "free_port", "server_versions",
           "start_all", "stop_all"]
