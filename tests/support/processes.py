"""Real processes for integration tests: uvicorn web nodes and Celery workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A child process with its output in a log file; stopped (or killed) at teardown."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = {**os.environ, **env}
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash, not a shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 10) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


class WebNode(Process):
    """`uvicorn app.main:app` on a free port."""

    def __init__(self, env: dict[str, str], log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        super().__init__("web", [str(BIN / "uvicorn"), "app.main:app", "--host", "127.0.0.1",
                                 "--port", str(self.port), "--no-access-log",
                                 "--ws-per-message-deflate", "false",
                                 "--timeout-graceful-shutdown", "3"],  # as in the Procfile
                         env, log_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"web node exited:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"web node did not start:\n{self.log()[-3000:]}")


class Worker(Process):
    """`celery -A workers worker` on this run's queue."""

    def __init__(self, env: dict[str, str], log_dir: Path, concurrency: int = 1,
                 beat: bool = False) -> None:
        argv = [str(BIN / "celery"), "-A", "workers", "worker", "--loglevel", "INFO",
                "-Q", env.get("HERALD_CELERY_QUEUE", os.environ["HERALD_CELERY_QUEUE"]),
                "-c", str(concurrency),
                "--without-gossip", "--without-mingle", "--without-heartbeat",
                "-n", f"herald-test-{time.monotonic_ns()}@%h"]
        if beat:
            argv += ["-B", "-s", str(log_dir / f"beat-{time.monotonic_ns()}")]
        super().__init__("worker", argv, env, log_dir)

    def start(self) -> None:
        super().start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"worker exited:\n{self.log()[-3000:]}")
            if " ready." in self.log():
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker did not start:\n{self.log()[-3000:]}")
