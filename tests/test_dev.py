"""`make dev` (scripts/dev.py): a busy port refused, the banner once the web node answers,
and `make stop` stopping everything it started."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from testkit.processes import ROOT, free_port

DEV = [sys.executable, str(ROOT / "scripts" / "dev.py")]


def test_a_busy_port_is_refused_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(DEV, env={**os.environ, "PORT": str(port),
                                        "DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}"},
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"make dev: port {port} on 127.0.0.1 is in use (stop what uses it, or set PORT)"]
    assert not (tmp_path / "dev.db").exists()  # refused before touching anything


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_the_banner_comes_once_the_web_node_answers_and_make_stop_stops_everything(
    tmp_path: Path, redis_url: str,
) -> None:
    port = free_port()
    pidfile = tmp_path / "dev.pid"
    env = {**os.environ, "PORT": str(port), "HERALD_DEV_PIDFILE": str(pidfile),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}"}
    env.pop("HOST", None)
    dev = subprocess.Popen(DEV, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True)
    try:
        assert dev.stdout is not None
        deadline = time.monotonic() + 90
        for line in dev.stdout:
            if line.startswith("Herald is running on"):
                break
            assert time.monotonic() < deadline, "no banner"
        assert line.split()[4] == f"http://127.0.0.1:{port}"  # loopback unless HOST says
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        pgid = int(pidfile.read_text())
        stopped = subprocess.run([*DEV, "stop"], env=env, capture_output=True, text=True,
                                 timeout=60)
        assert stopped.returncode == 0, stopped.stdout
        assert dev.wait(30) == 0
        assert not _group_alive(pgid)
        assert not pidfile.exists()
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait(10)
        if dev.stdout is not None:
            dev.stdout.close()
