"""`pip install <folder>` into a fresh virtualenv, for the install tests, started early.

Each install is a new venv, then pip resolving and fetching every dependency from the
package index: a minute or two, mostly spent waiting on the network. So that this wait
overlaps the other test files, the session's first process (`make test`'s xdist controller,
or the one process of a run without workers) starts each install in the background when
the session starts and the run covers the test file that uses it (`begin`, from
tests/conftest.py), and names its directory to the workers in an environment variable; the
file's test or fixture waits for it (`ready`). Without that (the file run with `-k`, or by
a pytest that did not start it), `ready` runs the same install itself. `end` stops a
background install still running and removes its directory.

INSTALLS: the server (`pip install <clone>`, tests/test_install.py) and the Python client
(`pip install ./clients/python`, tests/test_client_packages.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.eventually import eventually
from testkit.processes import ROOT

TIMEOUT = 600.0  # a busy machine, a slow index


@dataclass(frozen=True)
class Spec:
    folder: Path  # what pip installs
    test_file: Path  # the tests that use it
    env: str  # names the background install's directory


INSTALLS = {
    "server": Spec(ROOT, ROOT / "tests" / "test_install.py", "HERALD_TEST_INSTALL_SERVER"),
    "client": Spec(ROOT / "clients" / "python", ROOT / "tests" / "test_client_packages.py",
                   "HERALD_TEST_INSTALL_CLIENT"),
}
_started: dict[str, subprocess.Popen[bytes]] = {}


def clean_env() -> dict[str, str]:
    """This process's environment without what would make a venv see the clone's."""
    names = {spec.env for spec in INSTALLS.values()}
    return {k: v for k, v in os.environ.items()
            if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", *names}}


def _script(spec: Spec, where: Path) -> list[str]:
    """venv, then `pip install <folder>` (no byte-compiling of every dependency: the
    commands compile what they import), its output in `log`, its exit status in `rc`."""
    return ["/bin/sh", "-c",
            '"$1" -m venv "$2" && "$2/bin/pip" install -q --no-compile "$3"; echo $? > "$4"',
            "sh", sys.executable, str(where / "venv"), str(spec.folder), str(where / "rc")]


def _covers(config: pytest.Config, test_file: Path) -> bool:
    """Whether this run collects `test_file`, by its arguments (runs with -k or -m, and
    --collect-only, leave the install to `ready`, if it is reached)."""
    option = config.option
    if option.collectonly or option.keyword or option.markexpr:
        return False
    for arg in config.args:
        name = arg.split("::")[0]
        path = Path(config.invocation_params.dir, name)
        path = (path if path.exists() else config.rootpath / name).resolve()
        if path == test_file or (path.is_dir() and test_file.is_relative_to(path)):
            return True
    return False


def begin(config: pytest.Config) -> None:
    """In the session's first process: start in the background each install whose tests
    the run covers."""
    if hasattr(config, "workerinput"):
        return
    for name, spec in INSTALLS.items():
        if spec.env in os.environ or not _covers(config, spec.test_file):
            continue
        where = Path(tempfile.mkdtemp(prefix=f"herald-install-{name}-"))
        with (where / "log").open("wb") as log:
            _started[name] = subprocess.Popen(_script(spec, where), env=clean_env(),
                                              stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True)
        os.environ[spec.env] = str(where)


def end() -> None:
    """Stop the background installs still running; remove their directories."""
    for name, proc in _started.items():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(os.environ.pop(INSTALLS[name].env), ignore_errors=True)
    _started.clear()


def ready(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The venv of a finished install of INSTALLS[name]: the background one, waited for,
    or one made now. Whoever takes it may change it (one test file uses each)."""
    spec = INSTALLS[name]
    if spec.env in os.environ:
        where = Path(os.environ[spec.env])
        eventually(lambda: (where / "rc").is_file() and (where / "rc").read_text().strip(),
                   f"the background install of {spec.folder} did not finish", TIMEOUT,
                   interval=0.5)
    else:
        where = tmp_path_factory.mktemp(f"install-{name}")
        with (where / "log").open("wb") as log:
            subprocess.run(_script(spec, where), env=clean_env(), stdout=log,
                           stderr=subprocess.STDOUT, timeout=TIMEOUT)
    rc = (where / "rc").read_text().strip()
    assert rc == "0", f"install failed ({rc}):\n{(where / 'log').read_text()[-3000:]}"
    return where / "venv"
