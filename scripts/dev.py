"""`make dev`: demo data, then web + worker + beat; the banner once the web node answers.

Binds 127.0.0.1 unless HOST says otherwise; refuses a port in use with one line. Uses the
Redis at REDIS_URL, or starts a local redis-server (scripts/services.py). Ctrl-C, or `make
stop` from another terminal (`python scripts/dev.py stop`), stops everything it started:
honcho and its processes run in one process group, whose id is in var/dev.pid, and a Redis
it started has its pid in var/dev.redis.pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PIDFILE = Path(os.environ.get("HERALD_DEV_PIDFILE", ROOT / "var" / "dev.pid"))
REDIS_PIDFILE = PIDFILE.with_suffix(".redis.pid")  # only a Redis that `make dev` started


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def herald(*args: str) -> str:
    return subprocess.run([BIN / "herald", *args], check=True, capture_output=True,
                          text=True).stdout


def banner(host: str, port: str, seeded: dict[str, int]) -> str:
    def token(user: int) -> str:
        return herald("token", "--user", str(user), "--ttl", "12h").strip()

    admin, client = token(seeded["admin"]), token(seeded["client"])
    base = f"http://{host}:{port}"
    return f"""
Herald is running on {base}   (stop: Ctrl-C here, or `make stop`)
  Socket.IO  ws://{host}:{port}/socket.io/   (auth: {{"token": "<token>"}})
  HTTP API   {base}/api        OpenAPI: {base}/docs
  demo project {seeded['project']}, ticket {seeded['ticket']}
  Portal     {base}/portal/   (pick a demo user; two windows to chat)

  admin token  (user {seeded['admin']}):  {admin}
  client token (user {seeded['client']}): {client}

Try it (in another terminal):
  .venv/bin/herald tail project-{seeded['project']} user-{seeded['client']} --token {client}
  curl -X PATCH {base}/api/projects/{seeded['project']} \\
       -H "Authorization: Bearer {admin}" -H 'Content-Type: application/json' \\
       -d '{{"progress": 60, "status": "active"}}'
"""


def stop_group(pgid: int, timeout: float = 15) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pgid, signal.SIGKILL)


def stop_child(honcho: subprocess.Popen[bytes]) -> None:
    """SIGTERM honcho's group (honcho then stops its processes); SIGKILL after 15 s."""
    try:
        os.killpg(honcho.pid, signal.SIGTERM)
        honcho.wait(15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(honcho.pid, signal.SIGKILL)
        honcho.wait(5)


def start_redis() -> bool:
    """The Redis at REDIS_URL answers (started here, with its pid in REDIS_PIDFILE, if not)."""
    REDIS_PIDFILE.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "services.py"), "redis",
                           "--redis-pidfile", str(REDIS_PIDFILE)], cwd=ROOT, check=False)
    return done.returncode == 0


def _is_redis(pid: int) -> bool:
    try:
        return b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop_redis(timeout: float = 10) -> bool:
    """Stop the Redis `make dev` started, if any (its pid file; never another Redis)."""
    try:
        pid = int(REDIS_PIDFILE.read_text())
    except (OSError, ValueError):
        return False
    stopped = False
    if _is_redis(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _is_redis(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        stopped = True
    REDIS_PIDFILE.unlink(missing_ok=True)
    return stopped


def stop() -> int:
    """`make stop`: the processes `make dev` started, wherever it runs."""
    try:
        pgid = int(PIDFILE.read_text())
    except (OSError, ValueError):
        pgid = None
    if pgid is not None:
        stop_group(pgid)
        PIDFILE.unlink(missing_ok=True)
    redis = stop_redis()
    if pgid is None and not redis:
        print("make stop: nothing to stop (no var/dev.pid)")
        return 0
    print("make stop: stopped " + " and ".join(
        ([f"process group {pgid}"] if pgid is not None else []) + (["Redis"] if redis else [])))
    return 0


def _interrupted(*_args: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends `make dev` as Ctrl-C does


def run() -> int:
    host = os.environ.setdefault("HOST", "127.0.0.1")
    port = os.environ.setdefault("PORT", "8000")
    if port_in_use(host, int(port)):
        print(f"make dev: port {port} on {host} is in use (stop what uses it, or set PORT)")
        return 1
    signal.signal(signal.SIGTERM, _interrupted)
    if not start_redis():
        print("make dev: Redis is needed (see above)")
        return 1
    try:
        return serve(host, port)
    except KeyboardInterrupt:
        return 0
    finally:
        stop_redis()


def serve(host: str, port: str) -> int:
    """Migrate, run honcho (seeding meanwhile) until it ends, Ctrl-C or SIGTERM; stop what it
    started."""
    herald("migrate")
    # The Procfile names uvicorn, celery and alembic: find them in this virtualenv.
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    # honcho hands each process its own PORT from a base port; the web, listed first, gets ours.
    honcho = subprocess.Popen([BIN / "honcho", "start", "-f", "Procfile", "-p", port,
                               "web", "worker", "beat"], cwd=ROOT, start_new_session=True)
    PIDFILE.parent.mkdir(exist_ok=True)
    PIDFILE.write_text(str(honcho.pid))
    try:
        # demo data and the banner's tokens while the processes start
        text = banner(host, port, json.loads(herald("seed", "--json")))
        deadline = time.monotonic() + 60
        while not answers(f"http://{host}:{port}/healthz"):
            if honcho.poll() is not None or time.monotonic() > deadline:
                print("make dev: the web node did not come up (see the lines above)")
                return 1
            time.sleep(0.2)
        print(text, flush=True)
        code = honcho.wait()
        return 0 if code in (0, 128 + signal.SIGTERM) else code  # 143: `make stop`
    except KeyboardInterrupt:
        return 0
    finally:
        stop_child(honcho)
        PIDFILE.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(stop() if sys.argv[1:] == ["stop"] else run())
