"""`herald migrate`, `user add`, `token`, `seed`, `emit`: output and exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
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


def test_emit_refuses_a_malformed_notification_as_post_api_events_does(herald) -> None:  # type: ignore[no-untyped-def]
    bad = herald("emit", "--stream", "user-1", "--type", "notification",
                 "--data", '{"type": "shout", "title": "t", "message": "m"}')
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.startswith("herald: invalid_notification: notification type must be")
    good = herald("emit", "--stream", "user-1", "--type", "notification",
                  "--data", '{"type": "info", "title": "t", "message": "m"}')
    assert json.loads(good.stdout)["offset"] == 1  # the refused one stored nothing


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_emit_refuses_what_json_has_not(herald, constant: str) -> None:  # type: ignore[no-untyped-def]
    result = herald("emit", "--stream", "user-1", "--type", "reading",
                    "--data", f'{{"value": {constant}}}')
    assert result.returncode == 2
    assert result.stderr.strip() == f"herald: --data holds {constant}, which JSON has not"


@pytest.mark.parametrize("args", [
    ("emit", "--stream", "users-1", "--type", "x"),
    ("outbox", "retry", "user-01"),
    ("tail", "bogus", "--token", "t"),
])
def test_a_bad_stream_name_is_a_usage_error_everywhere(herald, args: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    result = herald(*args)
    assert result.returncode == 2
    assert "unknown stream" in result.stderr and "Traceback" not in result.stderr


def test_a_token_for_a_user_and_a_service_at_once_is_a_usage_error(herald) -> None:  # type: ignore[no-untyped-def]
    result = herald("token", "--user", "3", "--service", "x")
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr
    assert result.stdout == ""


def test_outbox_retry_without_arguments_says_what_it_needs(herald) -> None:  # type: ignore[no-untyped-def]
    result = herald("outbox", "retry")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "herald: retry needs stream names (e.g. herald outbox retry project-1) or --all")


def test_every_option_of_every_command_has_help() -> None:
    from app.cli.main import build_parser

    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "herald")
    assert missing == []


def test_the_default_database_is_the_projects_whatever_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.core.settings import Settings

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    root = Path(__file__).resolve().parents[1]
    assert Settings().database_url == f"sqlite:///{(root / 'var' / 'herald.db').as_posix()}"


def test_migrate_says_which_database_it_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'where.db'}"
    done = subprocess.run([sys.executable, "-m", "app.cli", "migrate"],
                          env={**os.environ, "DATABASE_URL": url}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    assert done.stderr.strip() == f"database at head: {url}"


@pytest.mark.parametrize("args", [("token", "--user", "1"), ("outbox", "status"),
                                  ("outbox", "failed"), ("user", "add", "--email", "a@b",
                                                         "--role", "client"),
                                  ("emit", "--stream", "user-1", "--type", "x")])
def test_without_a_database_commands_say_run_migrate_and_create_nothing(
    tmp_path: Path, args: tuple[str, ...],
) -> None:
    where = tmp_path / "absent" / "herald.db"
    done = subprocess.run([sys.executable, "-m", "app.cli", *args],
                          env={**os.environ, "DATABASE_URL": f"sqlite:///{where}"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == f"herald: no database at {where}: run `herald migrate`"
    assert not (tmp_path / "absent").exists()


def test_a_database_without_the_schema_says_run_migrate(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    url = f"sqlite:///{empty}"
    done = subprocess.run([sys.executable, "-m", "app.cli", "outbox", "status"],
                          env={**os.environ, "DATABASE_URL": url}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == f"herald: {url} has no Herald tables: run `herald migrate`"
