"""Settings: read once from the environment; a bad value stops the process with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from app.core.settings import Settings, parse_duration

HERALD = [sys.executable, "-m", "app.cli"]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HERALD, *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("name", "value"), [
    ("HERALD_RELAY_MAX_ATTEMPTS", "many"),
    ("HERALD_RELAY_BACKOFF", "-1"),
    ("HERALD_RETENTION", "forever"),
    ("PORT", "99999"),
    ("DATABASE_URL", "not a url"),
    ("JWT_SECRET", "short"),
])
def test_invalid_setting_stops_the_process_with_one_line(name: str, value: str) -> None:
    result = run({name: value}, "migrate")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("herald: invalid configuration:")
    assert "Traceback" not in result.stderr


def test_jwt_secret_is_required_in_production() -> None:
    env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET"}
    env["HERALD_ENV"] = "production"
    result = subprocess.run([*HERALD, "migrate"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "JWT_SECRET is required" in result.stderr


def test_defaults_match_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "SOCKETIO_REDIS_URL", "PORT",
                 "HERALD_RELAY_MAX_ATTEMPTS", "HERALD_RELAY_BACKOFF", "HERALD_RETENTION"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.database_url.startswith("sqlite:///") and "var/" in settings.database_url
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.sio_redis_url == settings.redis_url
    assert settings.port == 8000
    assert settings.relay_max_attempts == 8 and settings.relay_backoff == 1
    assert settings.retention == timedelta(days=7)


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("30s", 30), ("15m", 900),
                                               ("1h", 3600), ("7d", 604800), ("2w", 1209600)])
def test_durations_accept_plain_seconds_and_units(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
