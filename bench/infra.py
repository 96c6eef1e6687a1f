"""What a bench run stands on: its own PostgreSQL database and real child processes.

(Kept apart from tests/support on purpose: the bench must not import the tests.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.env import PG_ADMIN_URL, REDIS_URL, RUN

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


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


def create_database() -> str:
    """A fresh, empty PostgreSQL database for this run; returns its URL."""
    name = f"herald_bench_{RUN}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    name = make_url(url).database
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def server_versions(url: str) -> str:
    engine = create_engine(url)
    with engine.connect() as conn:
        pg = str(conn.execute(text("SHOW server_version")).scalar()).split()[0]
    engine.dispose()
    info = redis.Redis.from_url(REDIS_URL).info("server")
    return f"PostgreSQL {pg}, Redis {info.get('redis_version')}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


LOG_DIR = Path(tempfile.gettempdir()) / f"herald-bench-{RUN}"


class Process:
    """A child process (its own process group), output in a log file under LOG_DIR."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.argv = argv
        self.env = {**os.environ, **env}
        self.log_path = LOG_DIR / f"{name}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        raise NotImplementedError

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log()[-3000:]}")
            if self.ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start:\n{self.log()[-3000:]}")

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)

    def wait_stopped(self, timeout: float = 10) -> None:
        """Wait for the process to end (after terminate); SIGKILL it after `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


class WebNode(Process):
    """`uvicorn app.main:app` on a free port, as the Procfile runs it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        super().__init__("web", [str(BIN / "uvicorn"), "app.main:app", "--host", "127.0.0.1",
                                 "--port", str(self.port), "--no-access-log",
                                 "--ws-per-message-deflate", "false"], env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


class Worker(Process):
    """`celery -A workers worker` on a queue of this run (no beat: only nudges drive it)."""

    def __init__(self, env: dict[str, str], queue: str, concurrency: int = 1) -> None:
        super().__init__("worker", [
            str(BIN / "celery"), "-A", "workers", "worker", "--loglevel", "INFO",
            "-Q", queue, "-c", str(concurrency), "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-n", f"herald-bench-{time.monotonic_ns()}@%h"], env)

    def ready(self) -> bool:
        return " ready." in self.log()


class RelayLoop(Process):
    """`python -m bench.relay_loop`: the coalesced-nudge relay prototype."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__("relay-loop", [sys.executable, "-m", "bench.relay_loop"], env)

    def ready(self) -> bool:
        return "relay loop ready." in self.log()


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
