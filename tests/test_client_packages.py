"""The clients install as their READMEs say, into a project in another folder.

JavaScript: plain `npm install <path>` (npm links a folder outside the project and installs
none of its dependencies), `npm install --install-links <path>` and `npm install <npm pack
tarball>` into a fresh Node project outside the clone, from a copy of clients/js without
node_modules; then a client connects to a real Herald and receives an event a service
publishes (web node, Celery relay, Redis). Python: `pip install ./clients/python` into a
fresh virtualenv, then `import herald_client` from outside the clone.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from testkit import install
from testkit.clients import token, user_token
from testkit.jsproject import JS, NPM_QUIET, clean_copy, empty_node_project, npm, npm_install
from testkit.processes import ROOT
from testkit.system import System

pytestmark = pytest.mark.slow

# Connects, publishes a notification to its own user stream as a service (POST /api/events),
# and prints what its handler received.
RECEIVE = """
import { createHerald } from '@herald-notify/client';
import { fileStorage } from '@herald-notify/client/file-storage';

const url = process.env.HERALD_URL;
const herald = await createHerald({
  url,
  getToken: () => process.env.HERALD_TOKEN,
  storage: fileStorage('./state.json'),
});
const heard = new Promise((resolve) => herald.onNotification((payload) => resolve(payload)));
await herald.whenOnline();
const sent = await fetch(`${url}/api/events`, {
  method: 'POST',
  headers: { Authorization: `Bearer ${process.env.HERALD_SERVICE_TOKEN}`,
             'Content-Type': 'application/json' },
  body: JSON.stringify({ stream: `user-${herald.user.userId}`, type: 'notification',
                         data: { type: 'info', title: 'Installed', message: 'by path' } }),
});
if (!sent.ok) throw new Error(`POST /api/events: ${sent.status} ${await sent.text()}`);
const notification = await heard;
console.log(JSON.stringify({ state: herald.state, user: herald.user, notification }));
await herald.close();
"""


def _receives_an_event(project: Path, system: System) -> None:
    """Against `system`'s own web node (the tests only read from it)."""
    (project / "receive.mjs").write_text(RECEIVE)
    env = {**os.environ, "HERALD_URL": system.url,
           "HERALD_TOKEN": user_token(system.factory, "client", "pkg@example.com"),
           "HERALD_SERVICE_TOKEN": token("packages", "service", "packages@services")}
    done = subprocess.run(["node", "receive.mjs"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["state"] == "online"
    assert seen["user"]["email"] == "pkg@example.com"
    assert seen["notification"] == {"type": "info", "title": "Installed", "message": "by path"}


def test_a_plain_npm_install_by_path_works_with_nothing_installed_beside_the_client(
    pg_system: System, tmp_path: Path,
) -> None:
    source = clean_copy(tmp_path / "herald" / "clients" / "js")
    project = empty_node_project(tmp_path / "app")
    npm_install(project, str(source))
    modules = project / "node_modules"
    assert (modules / "@herald-notify" / "client").is_symlink()  # npm links the folder...
    assert sorted(p.name for p in modules.iterdir()) == [".package-lock.json", "@herald-notify"]
    assert not (source / "node_modules").exists()  # ...and installs nothing for it, anywhere
    _receives_an_event(project, pg_system)


def test_the_js_client_installs_by_path_as_a_copy_with_install_links(
    pg_system: System, tmp_path: Path,
) -> None:
    source = clean_copy(tmp_path / "herald" / "clients" / "js")
    project = empty_node_project(tmp_path / "app")
    npm_install(project, "--install-links", str(source))
    installed = project / "node_modules" / "@herald-notify" / "client"
    assert installed.is_dir() and not installed.is_symlink()  # a copy, not a link
    _receives_an_event(project, pg_system)


def test_the_js_client_installs_from_an_npm_pack_tarball(
    pg_system: System, tmp_path: Path,
) -> None:
    packed = subprocess.run([npm(), "pack", "--json", "--pack-destination", str(tmp_path),
                             *NPM_QUIET], cwd=JS, capture_output=True, text=True, timeout=120)
    assert packed.returncode == 0, packed.stderr
    [meta] = json.loads(packed.stdout)
    assert meta["name"] == "@herald-notify/client"
    files = {f["path"] for f in meta["files"]}
    assert {"src/index.js", "index.d.ts", "vendor/socket.io-client.node.js",
            "vendor/LICENSES.txt"} <= files
    assert not any(f.startswith(("test/", "scripts/")) for f in files)  # what a user needs
    project = empty_node_project(tmp_path / "app")
    npm_install(project, str(tmp_path / meta["filename"]))
    _receives_an_event(project, pg_system)


@pytest.mark.timeout(700)  # a fresh venv and its installs: minutes on a busy machine
def test_the_python_client_installs_with_pip_into_a_fresh_venv(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # the venv's `pip install ./clients/python` (testkit/install.py: started in the
    # background when the session starts)
    venv = install.ready("client", tmp_path_factory)
    env = install.clean_env()
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import herald_client; print(herald_client.__file__); "
         "herald_client.Subscriber; herald_client.AsyncPublisher"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert not Path(where.stdout.strip()).is_relative_to(ROOT)
