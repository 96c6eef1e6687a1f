"""Operator-test support: the `herald` CLI as a subprocess, a private redis-server that
tests may stop and restart, a fault-injecting publisher around the real one, and a
Prometheus text parser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from prometheus_client.parser import text_string_to_metric_families

from app.errors import PublishRejected
from app.outbox.publisher import RedisPublisher
from app.outbox.tables import EventRecord
from tests.support.processes import BIN, ROOT, free_port


def herald(*argv: str, database_url: str, timeout: float = 60,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `herald` entry point; output captured, never raising on a bad exit."""
    return subprocess.run([str(BIN / "herald"), *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout,
                          env={**os.environ, "DATABASE_URL": database_url, **(env or {})})


def herald_json(*argv: str, database_url: str) -> Any:
    done = herald(*argv, "--json", database_url=database_url)
    assert done.returncode == 0, (done.returncode, done.stderr)
    return json.loads(done.stdout)


class PrivateRedis:
    """A redis-server of our own on a free port, without persistence, that we may stop."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.skip("redis-server is not installed")
        with (self.log_dir / f"redis-{self.port}.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        with redis_lib.Redis.from_url(self.url, socket_connect_timeout=0.5) as client:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return
                except redis_lib.RedisError:
                    time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class FaultyPublisher:
    """The real RedisPublisher, except that it refuses the streams in `failing`.

    Fault injection in the test process: the other streams of a batch really go out
    through Redis, the refused ones raise PublishRejected as a Redis error reply would.
    """

    def __init__(self, url: str, channel: str) -> None:
        self.real = RedisPublisher(url, channel=channel)
        self.failing: dict[str, str] = {}
        self.calls = 0

    def publish(self, events: Sequence[EventRecord]) -> None:
        self.calls += 1
        refused = {e.stream: self.failing[e.stream] for e in events if e.stream in self.failing}
        self.real.publish([e for e in events if e.stream not in refused])
        if refused:
            raise PublishRejected(f"refused {len(refused)} stream(s)", failed=refused)

    def close(self) -> None:
        self.real.close()


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus exposition text as {(sample name, sorted labels): value}."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out
