"""Make sure Redis and PostgreSQL answer; start local ones when they don't.

`python scripts/services.py redis postgres` exits 0 when each answers (after starting it
if needed) and prints one line per service. `--redis-pidfile PATH`: a Redis started here
writes its pid there (`make dev` stops the Redis it started, and only that one). Outside
CI a service that cannot be had is reported and tests that need it skip; under CI=true it
fails the run.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _answers(host: str, port: int, probe: bytes | None = None, expect: bytes = b"") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            if probe is None:
                return True
            sock.sendall(probe)
            return sock.recv(64).startswith(expect)
    except OSError:
        return False


def _wait(check, seconds: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def ensure_redis(pidfile: str | None = None) -> str | None:
    url = urlparse(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    host, port = url.hostname or "127.0.0.1", url.port or 6379

    def ping() -> bool:
        return _answers(host, port, b"PING\r\n", b"+PONG")

    if ping():
        return None
    server = shutil.which("redis-server")
    if server is None:
        return f"redis: nothing answers at {host}:{port} and redis-server is not installed"
    if host not in {"127.0.0.1", "localhost", "::1"}:
        return f"redis: nothing answers at {host}:{port} (not local, so not started here)"
    os.makedirs("var", exist_ok=True)
    extra = ["--pidfile", os.path.abspath(pidfile)] if pidfile else []
    subprocess.run([server, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port),
                    "--save", "", "--appendonly", "no", "--dir", os.path.abspath("var"),
                    "--logfile", os.path.abspath("var/redis.log"), *extra], check=False)
    if _wait(ping):
        print(f"redis: started redis-server on {host}:{port}")
        return None
    return f"redis: started redis-server on port {port} but it does not answer (see var/redis.log)"


def ensure_postgres() -> str | None:
    url = urlparse(os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    host, port = url.hostname or "127.0.0.1", url.port or 5432

    def up() -> bool:
        return _answers(host, port)

    if up():
        return None
    ctl = shutil.which("pg_ctlcluster")
    versions = sorted(os.path.basename(p) for p in glob.glob("/etc/postgresql/*"))
    if ctl is None or not versions:
        return f"postgres: nothing answers at {host}:{port} and no local cluster to start"
    subprocess.run([ctl, "--skip-systemctl-redirect", versions[-1], "main", "start"],
                   check=False, capture_output=True)
    if _wait(up, 30):
        print(f"postgres: started cluster {versions[-1]}/main")
        return None
    return f"postgres: could not start cluster {versions[-1]}/main"


def main(args: list[str]) -> int:
    pidfile = None
    if "--redis-pidfile" in args:
        at = args.index("--redis-pidfile")
        pidfile = args[at + 1]
        args = args[:at] + args[at + 2:]
    names = args
    checks = {"redis": lambda: ensure_redis(pidfile), "postgres": ensure_postgres}
    failed = False
    for name in names or list(checks):
        problem = checks[name]()
        if problem is None:
            print(f"{name}: ok")
        else:
            print(problem, file=sys.stderr)
            failed = True
    if failed and CI:
        print("CI=true: a missing service fails the run", file=sys.stderr)
        return 1
    return 0 if not failed or not CI else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
