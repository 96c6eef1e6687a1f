"""The code blocks of README.md and the clients' READMEs run as written.

Every ```js and ```python block there is marked `runnable` and runs verbatim against a real
Herald (web node + Celery worker on PostgreSQL) holding `make dev`'s demo data (`herald
seed`: admin 1, client 3, project 1, ticket 1), with the tokens a reader would export
(HERALD_TOKEN: the demo client; HERALD_SERVICE_TOKEN: a service) and HERALD_URL. JavaScript
runs in a Node project elsewhere that installed the client as its README says; Python with
herald_client installed. Snippets that wait for a change of project 1 get one: the test
PATCHes it until the snippet ends.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from app.portal.auth import mint
from app.portal.models import User
from app.portal.seed import seed
from testkit.clients import token
from testkit.databases import truncate_all
from testkit.eventually import eventually
from testkit.jsproject import clean_copy, empty_node_project, npm_install
from testkit.processes import ROOT
from testkit.system import System
from testkit.testrun import SECRET

pytestmark = pytest.mark.slow

READMES = ["README.md", "clients/js/README.md", "clients/python/README.md"]
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.S | re.M)
RUN_FOR = 60.0  # a bound, not a timing assertion


@dataclass(frozen=True)
class Snippet:
    where: str  # README.md:87
    lang: str
    code: str


def blocks() -> list[tuple[str, str, str, int]]:
    """(readme, language, info string, line) of every fenced block."""
    out = []
    for name in READMES:
        text = (ROOT / name).read_text()
        for m in FENCE.finditer(text):
            out.append((name, m.group(1), m.group(2).strip(), text.count("\n", 0, m.start()) + 1))
    return out


def snippets() -> list[Snippet]:
    out = []
    for name in READMES:
        text = (ROOT / name).read_text()
        for m in FENCE.finditer(text):
            if m.group(2).strip() == "runnable":
                line = text.count("\n", 0, m.start()) + 1
                out.append(Snippet(f"{name}:{line}", m.group(1), m.group(3)))
    return out


def test_every_js_and_python_block_is_marked_runnable() -> None:
    unmarked = [f"{name}:{line}" for name, lang, info, line in blocks()
                if lang in {"js", "python"} and info != "runnable"]
    assert unmarked == []
    assert {s.lang for s in snippets()} == {"js", "python"}


@pytest.fixture(scope="module")
def node_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Node project in another folder with the client installed as its README says (plain
    `npm install <path>`), from clients/js as a fresh clone has it (no node_modules)."""
    where = tmp_path_factory.mktemp("readme")
    project = empty_node_project(where / "project", name="readme")
    npm_install(project, str(clean_copy(where / "herald" / "clients" / "js")))
    return project


@pytest.fixture
def demo(pg_system: System) -> dict[str, str]:
    """`make dev`'s demo data on an empty database; the environment a reader would set."""
    truncate_all(pg_system.factory.kw["bind"])
    ids = seed(pg_system.factory)
    assert (ids["client"], ids["project"], ids["ticket"]) == (3, 1, 1)  # as the READMEs say
    with pg_system.factory() as session:
        client, admin = session.get(User, 3), session.get(User, ids["admin"])
        assert client is not None and admin is not None
        client_email, admin_email = client.email, admin.email
    return {
        "HERALD_URL": pg_system.url,
        "HERALD_TOKEN": token(3, "client", client_email),
        "HERALD_SERVICE_TOKEN": mint(secret=SECRET, sub="billing", email="billing@services",
                                     role="service", ttl=timedelta(hours=1)),
        "ADMIN": token(ids["admin"], "admin", admin_email),
    }


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a snippet; while it runs, change project 1 now and then (what some wait for)."""
    reader_env = {**os.environ, **{k: v for k, v in env.items() if k.startswith("HERALD_")}}
    proc = subprocess.Popen(argv, cwd=cwd, env=reader_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    progress = [0]

    def ended() -> bool:
        try:
            proc.wait(1)
            return True
        except subprocess.TimeoutExpired:
            progress[0] = (progress[0] + 7) % 100
            httpx.patch(f"{env['HERALD_URL']}/api/projects/1", json={"progress": progress[0]},
                        headers={"Authorization": f"Bearer {env['ADMIN']}"}, timeout=10)
            return False

    try:
        eventually(ended, f"the snippet still ran after {RUN_FOR} s", RUN_FOR, interval=0)
    except AssertionError as late:
        proc.kill()
        out, err = proc.communicate(timeout=30)
        raise AssertionError(f"{late}\n{out}\n{err}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.mark.parametrize("snippet", snippets(), ids=lambda s: s.where)
def test_the_snippet_runs_as_written(snippet: Snippet, demo: dict[str, str],
                                     node_project: Path, tmp_path: Path) -> None:
    if snippet.lang == "js":
        (node_project / "snippet.mjs").write_text(snippet.code)
        for leftover in ("herald-state.json",):
            (node_project / leftover).unlink(missing_ok=True)
        done = _run(["node", "snippet.mjs"], node_project, demo)
    else:
        (tmp_path / "snippet.py").write_text(snippet.code)
        done = _run([sys.executable, "snippet.py"], tmp_path, demo)
    assert done.returncode == 0, f"{snippet.where}:\n{done.stdout}\n{done.stderr}"
    assert "ok: false" not in done.stdout and "'ok': False" not in done.stdout, done.stdout
    print(f"{snippet.where}:\n{done.stdout}{done.stderr}")
