"""Every Procfile process starts from a fresh clone, with nothing prepared by hand.

Each line of the Procfile runs as written (through a shell, as honcho and Heroku-style
runners do) in a fresh `git clone` of this repository's HEAD, with a PostgreSQL
DATABASE_URL and this run's Redis, and must come up: release migrates and exits 0, web
answers /readyz, worker relays an event that was pending before it started (its own
sweep: no beat runs), beat starts and writes its schedule under the clone's var/.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect

from app.core.db import make_engine, make_session_factory
from app.core.migrate import upgrade
from app.outbox.tables import RelayCursor
from app.outbox.writer import append
from testkit.databases import create_pg_database, drop_pg_database, require_pg
from testkit.eventually import eventually
from testkit.processes import BIN, ROOT, free_port

pytestmark = pytest.mark.slow


def procfile(root: Path) -> dict[str, str]:
    lines = (root / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and ":" in line)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone of HEAD: no var/, no virtualenv, nothing made by `make`."""
    where = tmp_path_factory.mktemp("fresh") / "herald"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(where)], check=True)
    subprocess.run(["git", "checkout", "-q", head], cwd=where, check=True)
    assert not (where / "var").exists()
    return where


@pytest.fixture
def database(redis_url: str) -> Iterator[str]:
    require_pg()
    url = create_pg_database("_procfile")
    try:
        yield url
    finally:
        drop_pg_database(url)


def run(clone: Path, name: str, database_url: str, log: Path,
        port: int = 0) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": database_url, "PORT": str(port or free_port()),
           "HERALD_CELERY_QUEUE": f"{os.environ['HERALD_CELERY_QUEUE']}-procfile",
           "HERALD_SOCKETIO_CHANNEL": f"{os.environ['HERALD_SOCKETIO_CHANNEL']}-procfile",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(clone)}
    with log.open("wb") as out:
        return subprocess.Popen(["bash", "-c", f"exec {procfile(clone)[name]}"], cwd=clone,
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)


def until(check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], log: Path,
          timeout: float = 45) -> None:
    def done() -> bool:
        if check():
            return True
        assert proc.poll() is None, f"{what}: exited {proc.returncode}\n{log.read_text()[-3000:]}"
        return False

    eventually(done, lambda: f"{what}: not within {timeout}s\n{log.read_text()[-3000:]}",
               timeout, interval=0.2)


def test_release_migrates_a_fresh_database_from_a_fresh_clone(
    clone: Path, database: str, tmp_path: Path
) -> None:
    proc = run(clone, "release", database, tmp_path / "release.log")
    assert proc.wait(60) == 0, (tmp_path / "release.log").read_text()[-3000:]
    engine = make_engine(database)
    try:
        assert {"streams", "events", "relay_cursors"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_web_comes_up_ready_from_a_fresh_clone(
    clone: Path, database: str, tmp_path: Path
) -> None:
    upgrade(database)
    log = tmp_path / "web.log"
    env_port = free_port()
    proc = run(clone, "web", database, log, port=env_port)
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{env_port}/readyz",
                                 timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        until(ready, "web /readyz", proc, log)
    finally:
        stop(proc)


def test_worker_relays_what_was_pending_before_it_started_without_beat(
    clone: Path, database: str, tmp_path: Path
) -> None:
    upgrade(database)
    engine = make_engine(database)
    factory = make_session_factory(engine)
    with factory() as session, session.begin():  # committed, never nudged
        append(session, "project-1", "notification",
               {"type": "info", "title": "t", "message": "m"}, nudge=None)
    log = tmp_path / "worker.log"
    proc = run(clone, "worker", database, log)
    try:
        def relayed() -> bool:
            with factory() as session:
                cursor = session.get(RelayCursor, "project-1")
                return cursor is not None and cursor.dispatched == 1
        until(relayed, "worker relays the pending event", proc, log)
    finally:
        stop(proc)
        engine.dispose()


def test_beat_starts_from_a_fresh_clone_and_keeps_its_schedule_under_var(
    clone: Path, database: str, tmp_path: Path
) -> None:
    log = tmp_path / "beat.log"
    proc = run(clone, "beat", database, log)
    try:
        until(lambda: any((clone / "var").glob("celerybeat-schedule*")),
              "beat writes its schedule", proc, log)
        time.sleep(2)
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        stop(proc)
