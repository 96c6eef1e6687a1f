"""`make dev` (scripts/dev.py): the runtime only, a busy port refused, the banner once the
web node answers, and `make stop` or Ctrl-C stopping everything it started, a Redis too."""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from testkit.eventually import eventually
from testkit.processes import ROOT, free_port

# What scripts/dev.py itself allows its stop (stop_child, stop_redis): 15 s for honcho's
# processes, 5 more after a SIGKILL, 10 for its Redis. Waiting only 30 s failed once on a
# loaded machine (the first minutes of `make test`), inside those bounds.
STOPS_WITHIN = 45
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


# What `make dev` (and honcho, its processes) wrote after the banner, per dev pid: read on
# as a terminal would, so that a full pipe never blocks them, and kept for the failures.
_OUTPUT: dict[int, collections.deque[str]] = {}


def _banner(dev: subprocess.Popen[str]) -> str:
    """`make dev`'s "Herald is running on ..." line, read from its output; the rest of its
    output is read on by a thread (its last lines in `_OUTPUT`)."""
    assert dev.stdout is not None
    stdout = dev.stdout

    def banner() -> str | None:
        line = stdout.readline()
        assert line, "make dev ended before its banner"
        return line if line.startswith("Herald is running on") else None

    line = eventually(banner, "no banner", 90, interval=0)
    tail = _OUTPUT[dev.pid] = collections.deque(maxlen=200)

    def read_on() -> None:
        with contextlib.suppress(ValueError, OSError):
            for more in stdout:
                tail.append(more)
            stdout.close()  # at the end of the output: here, not under a blocked read

    threading.Thread(target=read_on, daemon=True).start()
    return line


def _stops(dev: subprocess.Popen[str]) -> int:
    """`make dev`'s exit code, once it stopped within STOPS_WITHIN seconds."""
    try:
        return dev.wait(STOPS_WITHIN)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"make dev still running after {STOPS_WITHIN} s; its last "
                             "lines:\n" + "".join(_OUTPUT.get(dev.pid, []))) from None


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
        line = _banner(dev)
        assert line.split()[4] == f"http://127.0.0.1:{port}"  # loopback unless HOST says
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        pgid = int(pidfile.read_text())
        stopped = subprocess.run([*DEV, "stop"], env=env, capture_output=True, text=True,
                                 timeout=60)
        assert stopped.returncode == 0, stopped.stdout
        assert _stops(dev) == 0
        assert not _group_alive(pgid)
        assert not pidfile.exists()
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait(10)
        _close(dev)


def _close(dev: subprocess.Popen[str]) -> None:
    """Close `make dev`'s output, unless the thread reading it on closes it at its end."""
    if dev.stdout is not None and dev.pid not in _OUTPUT:
        dev.stdout.close()


def test_make_dev_installs_the_runtime_only() -> None:
    """No test or bench toolchain: no `[dev]` extra, no npm trees, no browser."""
    done = subprocess.run(["make", "-n", "-B", "dev"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "-e '.[local]'" in done.stdout and "requirements.lock" in done.stdout
    for toolchain in ("[dev]", "npm", "playwright", "chromium", "apt-get"):
        assert toolchain not in done.stdout, toolchain


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _dev_with_its_own_redis(tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, str], int]:
    """`scripts/dev.py` where no Redis answers at REDIS_URL: it starts one. Once the banner."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port, redis_port = free_port(), free_port()
    env = {**os.environ, "PORT": str(port), "HERALD_DEV_PIDFILE": str(tmp_path / "dev.pid"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}",
           "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
    dev = subprocess.Popen(DEV, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True)
    _banner(dev)
    assert _redis_answers(redis_port)
    return dev, env, redis_port


@pytest.mark.slow
def test_make_stop_also_stops_the_redis_make_dev_started(tmp_path: Path) -> None:
    dev, env, redis_port = _dev_with_its_own_redis(tmp_path)
    try:
        pgid = int((tmp_path / "dev.pid").read_text())
        stopped = subprocess.run([*DEV, "stop"], env=env, capture_output=True, text=True,
                                 timeout=60)
        assert stopped.returncode == 0, stopped.stdout
        assert _stops(dev) == 0
        assert not _group_alive(pgid)
        assert not _redis_answers(redis_port)
        assert not (tmp_path / "dev.redis.pid").exists()
    finally:
        _end(dev, env)


@pytest.mark.slow
def test_ctrl_c_stops_everything_make_dev_started_redis_included(tmp_path: Path) -> None:
    dev, env, redis_port = _dev_with_its_own_redis(tmp_path)
    try:
        pgid = int((tmp_path / "dev.pid").read_text())
        dev.send_signal(signal.SIGINT)
        assert _stops(dev) == 0
        assert not _group_alive(pgid)
        assert not _redis_answers(redis_port)
    finally:
        _end(dev, env)


def _end(dev: subprocess.Popen[str], env: dict[str, str]) -> None:
    if dev.poll() is None:
        dev.kill()
        dev.wait(10)
    subprocess.run([*DEV, "stop"], env=env, capture_output=True, timeout=60)  # whatever is left
    _close(dev)
