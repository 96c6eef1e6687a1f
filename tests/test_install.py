"""`pip install .` into a fresh virtualenv gives everything the entry points need.

As a deploy does it: no editable install, no Makefile, every command run from a directory
outside the clone. The wheel carries the CLI's herald_client, the migrations and the JS
client that /portal imports (copied from the clone at build time by setup.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from testkit import install, portalmodules
from testkit.eventually import eventually
from testkit.processes import ROOT, free_port

# The module fixture waits for a fresh venv with the wheel installed: minutes on a busy
# machine when the file runs alone.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@dataclass
class Install:
    bin: Path
    cwd: Path  # outside the clone
    env: dict[str, str]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.bin / args[0]), *args[1:]], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=120)
        if check:
            assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """A fresh venv with `pip install <clone>`, dependencies from the package index
    (testkit/install.py: started in the background when the session starts)."""
    venv = install.ready("server", tmp_path_factory)
    where = tmp_path_factory.mktemp("installed")
    cwd = where / "elsewhere"
    cwd.mkdir()
    env = {**install.clean_env(), "DATABASE_URL": f"sqlite:///{where / 'herald.db'}"}
    return Install(venv / "bin", cwd, env)


def test_the_install_is_not_the_clone(installed: Install) -> None:
    done = installed.run("python", "-c", "import app; print(app.__file__)")
    assert not Path(done.stdout.strip()).is_relative_to(ROOT)
    # the CLI's client is the wheel's own copy: no herald_client distribution is installed
    assert installed.run("python", "-c", "import herald_client", check=False).returncode == 1


def test_the_install_parses_redis_replies_in_c(installed: Install) -> None:
    """`pip install .` brings hiredis, which redis-py then uses for every reply (the relay's
    PUBLISH replies, the connects' pipelines)."""
    done = installed.run("python", "-c",
                         "from redis.utils import HIREDIS_AVAILABLE; print(HIREDIS_AVAILABLE)")
    assert done.stdout.strip() == "True"


def test_every_command_answers_help_outside_the_clone(installed: Install) -> None:
    done = installed.run("herald", "--help")
    for command in ("migrate", "user", "token", "seed", "emit", "tail", "outbox"):
        assert command in done.stdout
        installed.run("herald", *command.split(), "--help")


def test_migrate_user_add_and_token_work_from_the_install(installed: Install) -> None:
    done = installed.run("herald", "migrate")
    assert "database at head: sqlite" in done.stderr
    user = installed.run("herald", "user", "add", "--email", "ops@example.com", "--role",
                         "admin").stdout.strip()
    assert user.isdigit()
    token = installed.run("herald", "token", "--user", user).stdout.strip()
    assert token.count(".") == 2
    assert installed.run("herald", "outbox", "status", "--json").stdout.startswith("{")


def test_the_procfile_release_line_still_migrates_from_the_clone(installed: Install,
                                                                 tmp_path: Path) -> None:
    env = {**installed.env, "DATABASE_URL": f"sqlite:///{tmp_path / 'release.db'}"}
    done = subprocess.run([str(installed.bin / "alembic"), "upgrade", "head"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_every_static_file_is_in_the_install(installed: Install) -> None:
    site = Path(installed.run("python", "-c", "import app; print(app.__file__)").stdout.strip())
    static = ROOT / "app" / "static"
    missing = [str(f.relative_to(static)) for f in static.rglob("*")
               if f.is_file() and not (site.parent / "static" / f.relative_to(static)).is_file()]
    assert missing == []


@pytest.fixture(scope="module")
def web(installed: Install, redis_url: str) -> Iterator[str]:
    """A web node run from the install (`python -m app.web`, as the Procfile does)."""
    installed.run("herald", "migrate")
    port = free_port()
    log = (installed.cwd / "web.log").open("wb")
    proc = subprocess.Popen([str(installed.bin / "python"), "-m", "app.web", "--host",
                             "127.0.0.1", "--port", str(port)], cwd=installed.cwd,
                            env=installed.env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert proc.poll() is None, (installed.cwd / "web.log").read_text()[-3000:]
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200

        eventually(up, "the installed web node did not come up", 60, interval=0.2,
                   ignoring=(httpx.HTTPError,))
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()


@pytest.mark.parametrize("path", [
    "/portal/",
    "/portal/portal.js",
    "/portal/lib/herald-client/index.js",  # the JS client the page imports
    "/portal/lib/herald-client/connection.js",
    "/portal/vendor/socket.io-client-4.8.1/socket.io.esm.min.js",
    "/ops/",  # the operators' console
    "/ops/ops.js",
    "/docs",
    "/portal/vendor/swagger-ui-5.36.0/swagger-ui-bundle.js",  # /docs works offline
])
def test_the_installed_web_node_serves_its_pages_and_what_they_import(web: str,
                                                                     path: str) -> None:
    assert httpx.get(f"{web}{path}", timeout=10).status_code == 200


def test_the_installed_web_node_serves_every_module_the_portal_loads(web: str) -> None:
    """The wheel's copy of the JS client and the vendored files: every import from
    portal.js on (the client's `#socket.io-client` through the import map) is served."""
    modules = portalmodules.walk(lambda path: httpx.get(f"{web}{path}", timeout=10))
    assert (modules.unmapped, modules.failed) == ([], [])
    assert "/portal/lib/herald-client/connection.js" in modules.served


def test_herald_tail_from_the_install_prints_events_and_stops_quietly(installed: Install,
                                                                      web: str) -> None:
    user = installed.run("herald", "user", "add", "--email", "tail@example.com", "--role",
                         "client").stdout.strip()
    installed.run("herald", "emit", "--stream", f"user-{user}", "--type", "hello",
                  "--data", '{"n": 1}')
    tail = subprocess.Popen([str(installed.bin / "herald"), "tail", f"user-{user}", "--from",
                             "0", "--user", user, "--url", web], cwd=installed.cwd,
                            env=installed.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert tail.stdout is not None
        line = tail.stdout.readline()  # the event, replayed from offset 0
        assert json.loads(line)["type"] == "hello", line
        tail.send_signal(signal.SIGINT)
        _, err = tail.communicate(timeout=30)
        assert tail.returncode == 0, err
        assert "connected to" in err
        assert "connection lost" not in err
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.communicate()


def test_the_python_client_installs_beside_the_server(installed: Install) -> None:
    """`pip install ./clients/python` into the same venv: both work, neither shadows the
    other (the server's copy lives inside its own package)."""
    done = subprocess.run([str(installed.bin / "pip"), "install", "-q", "./clients/python"],
                          cwd=ROOT, env=installed.env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    installed.run("python", "-c", "import herald_client; herald_client.Subscriber")
    installed.run("herald", "tail", "--help")
    installed.run("python", "-c", "import app.cli.follow")
