"""The clients install as their READMEs say, into a project in another folder.

JavaScript: `npm install --install-links <clients/js>` and `npm install <npm pack tarball>`
into a fresh Node project outside the clone (socket.io-client from the warm npm cache), then
a client connects to a real Herald. Python: `pip install ./clients/python` into a fresh
virtualenv, then `import herald_client` from outside the clone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.clients import user_token
from testkit.processes import ROOT, WebNode
from testkit.system import System
from testkit.testrun import CI

pytestmark = pytest.mark.slow

JS = ROOT / "clients" / "js"
NPM = ["--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"]

CONNECT = """
import { createHerald } from '@herald-notify/client';
import { fileStorage } from '@herald-notify/client/file-storage';

const herald = await createHerald({
  url: process.env.HERALD_URL,
  getToken: () => process.env.HERALD_TOKEN,
  storage: fileStorage('./state.json'),
});
await herald.whenOnline();
console.log(JSON.stringify({ state: herald.state, user: herald.user }));
await herald.close();
"""


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        if CI:
            pytest.fail("node and npm are needed")
        pytest.skip("node and npm are needed")
    return npm


def _project(where: Path) -> Path:
    where.mkdir(parents=True)
    (where / "package.json").write_text(json.dumps(
        {"name": "uses-herald", "version": "1.0.0", "private": True, "type": "module"}))
    (where / "connect.mjs").write_text(CONNECT)
    return where


def _connects(project: Path, system: System, node: WebNode) -> None:
    env = {**os.environ, "HERALD_URL": node.url,
           "HERALD_TOKEN": user_token(system.factory, "client", "pkg@example.com")}
    done = subprocess.run(["node", "connect.mjs"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["state"] == "online"
    assert seen["user"]["email"] == "pkg@example.com"


def test_the_js_client_installs_by_path_into_a_project_elsewhere(
    pg_system: System, node: WebNode, tmp_path: Path,
) -> None:
    npm = _npm()
    project = _project(tmp_path / "app")
    done = subprocess.run([npm, "install", "--install-links", *NPM, str(JS)], cwd=project,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    installed = project / "node_modules" / "@herald-notify" / "client"
    assert installed.is_dir() and not installed.is_symlink()  # a copy, not a link
    _connects(project, pg_system, node)


def test_the_js_client_installs_from_an_npm_pack_tarball(
    pg_system: System, node: WebNode, tmp_path: Path,
) -> None:
    npm = _npm()
    packed = subprocess.run([npm, "pack", "--json", "--pack-destination", str(tmp_path), *NPM],
                            cwd=JS, capture_output=True, text=True, timeout=120)
    assert packed.returncode == 0, packed.stderr
    [meta] = json.loads(packed.stdout)
    assert meta["name"] == "@herald-notify/client"
    files = {f["path"] for f in meta["files"]}
    assert "src/index.js" in files and "index.d.ts" in files
    assert not any(f.startswith("test/") for f in files)  # only what a user needs
    project = _project(tmp_path / "app")
    done = subprocess.run([npm, "install", *NPM, str(tmp_path / meta["filename"])],
                          cwd=project, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    _connects(project, pg_system, node)


def test_the_python_client_installs_with_pip_into_a_fresh_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "./clients/python"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import herald_client; print(herald_client.__file__); "
         "herald_client.Subscriber; herald_client.AsyncPublisher"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert not Path(where.stdout.strip()).is_relative_to(ROOT)
