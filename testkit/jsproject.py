"""Node projects outside the clone that install the JS client as its README says.

`clean_copy` gives clients/js as a fresh clone has it: its files without node_modules, so
that nothing a test's project resolves can come from an `npm ci` run inside clients/js.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from testkit.processes import ROOT
from testkit.testrun import CI

JS = ROOT / "clients" / "js"
NPM_QUIET = ["--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"]


def npm() -> str:
    """npm's path; the test skips without node and npm (fails under CI)."""
    found = shutil.which("npm")
    if found is None or shutil.which("node") is None:
        if CI:
            pytest.fail("node and npm are needed")
        pytest.skip("node and npm are needed")
    return found


def clean_copy(where: Path) -> Path:
    """clients/js copied to `where` without node_modules (as a fresh clone has it)."""
    shutil.copytree(JS, where, ignore=shutil.ignore_patterns("node_modules"))
    assert not (where / "node_modules").exists()
    return where


def empty_node_project(where: Path, name: str = "uses-herald") -> Path:
    """An empty ES-module Node project in `where`."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "package.json").write_text(json.dumps(
        {"name": name, "version": "1.0.0", "private": True, "type": "module"}))
    return where


def npm_install(project: Path, *args: str) -> None:
    """`npm install ARGS` in `project` (packages from the warm npm cache)."""
    done = subprocess.run([npm(), "install", *NPM_QUIET, *args], cwd=project,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
