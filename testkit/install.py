"""`pip install <clone>` into a fresh virtualenv, for tests/test_install.py, started early.

The install is a new venv, then pip resolving and fetching every dependency from the
package index: a minute or two, mostly spent waiting on the network. So that this wait
overlaps the other test files, the session's first process (`make test`'s xdist controller,
or the one process of a run without workers) starts it in the background when the session
starts and the run covers tests/test_install.py (`begin`, from tests/conftest.py), and names
its directory to the workers in HERALD_TEST_INSTALL; the file's fixture waits for it
(`ready`). Without that (the file run with `-k`, or by a pytest that did not start it), the
fixture runs the same install itself. `end` stops a background install still running and
removes its directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from testkit.eventually import eventually
from testkit.processes import ROOT

ENV = "HERALD_TEST_INSTALL"
TEST_FILE = ROOT / "tests" / "test_install.py"
TIMEOUT = 900.0  # a busy machine, a slow index
_started: subprocess.Popen[bytes] | None = None


def clean_env() -> dict[str, str]:
    """This process's environment without what would make the venv see the clone's."""
    return {k: v for k, v in os.environ.items()
            if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", ENV}}


def _script(where: Path) -> list[str]:
    """venv, then `pip install <clone>` (no byte-compiling of every dependency: the
    commands compile what they import), its output in `log`, its exit status in `rc`."""
    venv = where / "venv"
    return ["/bin/sh", "-c",
            '"$1" -m venv "$2" && "$2/bin/pip" install -q --no-compile "$3"; echo $? > "$4"',
            "sh", sys.executable, str(venv), str(ROOT), str(where / "rc")]


def _covers(config: pytest.Config) -> bool:
    """Whether this run collects tests/test_install.py, by its arguments (runs with -k or
    -m, and --collect-only, leave the install to the fixture, if it is reached)."""
    option = config.option
    if option.collectonly or option.keyword or option.markexpr:
        return False
    for arg in config.args:
        name = arg.split("::")[0]
        path = Path(config.invocation_params.dir, name)
        path = (path if path.exists() else config.rootpath / name).resolve()
        if path == TEST_FILE or (path.is_dir() and TEST_FILE.is_relative_to(path)):
            return True
    return False


def begin(config: pytest.Config) -> None:
    """In the session's first process: start the install in the background if the run
    covers the install tests."""
    global _started
    if hasattr(config, "workerinput") or ENV in os.environ or not _covers(config):
        return
    where = Path(tempfile.mkdtemp(prefix="herald-install-"))
    with (where / "log").open("wb") as log:
        _started = subprocess.Popen(_script(where), env=clean_env(), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    os.environ[ENV] = str(where)


def end() -> None:
    """Stop the background install if it still runs; remove its directory."""
    if _started is None:
        return
    if _started.poll() is None:
        os.killpg(_started.pid, signal.SIGKILL)
    _started.wait()
    shutil.rmtree(os.environ.pop(ENV), ignore_errors=True)


def ready(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of a finished install (its venv in `venv/`): the background one,
    waited for, or one made now."""
    if ENV in os.environ:
        where = Path(os.environ[ENV])
        eventually(lambda: (where / "rc").is_file() and (where / "rc").read_text().strip(),
                   "the background install did not finish", TIMEOUT, interval=0.5)
    else:
        where = tmp_path_factory.mktemp("install")
        with (where / "log").open("wb") as log:
            subprocess.run(_script(where), env=clean_env(), stdout=log,
                           stderr=subprocess.STDOUT, timeout=TIMEOUT)
    rc = (where / "rc").read_text().strip()
    assert rc == "0", f"install failed ({rc}):\n{(where / 'log').read_text()[-3000:]}"
    return where
