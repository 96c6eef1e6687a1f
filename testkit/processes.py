"""Real processes for tests and benches: uvicorn web nodes and Celery workers.

Each runs in its own process group with its output in a log file. `start()` spawns and
waits until ready; benches `spawn()` several first and then `wait_ready()` each, so that
they start in parallel (`start_all()`). `stop()` is SIGTERM then SIGKILL after a timeout,
`stop_all()` the same for several at once (their shutdowns overlap); `kill()` a crash.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import httpx

from testkit.eventually import eventually

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A child process with its output in a log file; stopped (or killed) at teardown."""

    ready_timeout = 60.0

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.argv = argv
        self.env = {**os.environ, **env}
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def ready(self) -> bool:
        raise NotImplementedError

    def wait_ready(self, timeout: float | None = None) -> None:
        def up() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log()[-3000:]}")
            return self.ready()

        try:
            eventually(up, lambda: f"{self.name} did not start:\n{self.log()[-3000:]}",
                       timeout=timeout or self.ready_timeout, interval=0.1)
        except AssertionError as failed:  # callers that restart it catch RuntimeError
            raise RuntimeError(str(failed)) from None

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash, not a shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM the process group, without waiting."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)

    def wait_stopped(self, timeout: float = 10) -> None:
        """Wait for the process to end (after terminate); SIGKILL it after `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def stop(self, timeout: float = 10) -> None:
        self.terminate()
        self.wait_stopped(timeout)


def start_all(procs: Iterable[Process]) -> None:
    """Spawn every process, then wait until each is ready: they start side by side."""
    procs = list(procs)
    for proc in procs:
        proc.spawn()
    for proc in procs:
        proc.wait_ready()


def stop_all(procs: Iterable[Process], timeout: float = 10) -> None:
    """SIGTERM every process, then wait for each (SIGKILL after `timeout`)."""
    procs = list(procs)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait_stopped(timeout)


class WebNode(Process):
    """`python -m app.web` on a free port, as the Procfile runs it."""

    ready_timeout = 30.0

    def __init__(self, env: dict[str, str], log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        super().__init__("web", [str(BIN / "python"), "-m", "app.web", "--host", "127.0.0.1",
                                 "--port", str(self.port)], env, log_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


class Worker(Process):
    """`celery -A workers worker` on the queue of `env` (or this process's), `-B` for beat."""

    def __init__(self, env: dict[str, str], log_dir: Path, concurrency: int = 1,
                 beat: bool = False, queue: str | None = None) -> None:
        queue = queue or env.get("HERALD_CELERY_QUEUE", os.environ["HERALD_CELERY_QUEUE"])
        argv = [str(BIN / "celery"), "-A", "workers", "worker", "--loglevel", "INFO",
                "-Q", queue, "-c", str(concurrency),
                "--without-gossip", "--without-mingle", "--without-heartbeat",
                "-n", f"herald-{time.monotonic_ns()}@%h"]
        if beat:
            argv += ["-B", "-s", str(log_dir / f"beat-{time.monotonic_ns()}")]
        super().__init__("worker", argv, env, log_dir)

    def ready(self) -> bool:
        return " ready." in self.log()
