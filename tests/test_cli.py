"""`herald migrate`, `user add`, `token`, `seed`, `emit`: output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.portal.auth import decode
from testkit.testrun import SECRET


@pytest.fixture
def herald(tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    assert run("migrate").returncode == 0
    return run


def test_user_add_prints_the_new_id_alone_and_token_prints_a_valid_token(herald) -> None:  # type: ignore[no-untyped-def]
    added = herald("user", "add", "--email", "ann@test", "--role", "technician", "--name", "Ann")
    assert added.returncode == 0, added.stderr
    user_id = added.stdout.strip()
    assert user_id.isdigit() and added.stdout == f"{user_id}\n"
    minted = herald("token", "--user", user_id, "--ttl", "2h")
    assert minted.returncode == 0
    who = decode(minted.stdout.strip(), secret=SECRET)
    assert (who.sub, who.email, who.role) == (user_id, "ann@test", "technician")


def test_service_token_names_the_service(herald) -> None:  # type: ignore[no-untyped-def]
    minted = herald("token", "--service", "billing")
    who = decode(minted.stdout.strip(), secret=SECRET)
    assert (who.sub, who.role) == ("billing", "service")


@pytest.mark.parametrize("args", [
    ("user", "add", "--email", "x@test", "--role", "wizard"),
    ("token",),
    ("token", "--user", "1", "--ttl", "soon"),
    ("emit", "--stream", "user-1", "--type", "x", "--data", "{not json"),
    ("frobnicate",),
])
def test_bad_usage_exits_2_with_one_line(herald, args: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    result = herald(*args)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr


def test_failure_exits_1_with_one_line(herald) -> None:  # type: ignore[no-untyped-def]
    result = herald("token", "--user", "999")
    assert result.returncode == 1
    assert result.stderr.strip() == "herald: no user with id 999"
    dup = [herald("user", "add", "--email", "d@test", "--role", "client") for _ in range(2)]
    assert dup[0].returncode == 0 and dup[1].returncode == 1
    assert len(dup[1].stderr.strip().splitlines()) == 1


def test_seed_is_repeatable_and_emit_appends_an_event(herald) -> None:  # type: ignore[no-untyped-def]
    first = json.loads(herald("seed", "--json").stdout)
    assert json.loads(herald("seed", "--json").stdout) == first
    emitted = herald("emit", "--stream", f"user-{first['client']}", "--type", "notification",
                     "--data", '{"type": "info", "title": "t", "message": "m"}')
    assert emitted.returncode == 0, emitted.stderr
    assert json.loads(emitted.stdout)["offset"] == 1
