"""Operator-test support: the `herald` CLI as a subprocess, a private redis-server that
tests may stop and restart, a fault-injecting publisher around the real one, a
Prometheus text parser and a wait for the workers' sweeps."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from typing import Any

import redis as redis_lib
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event as sa_event

from app.core.errors import PublishRejected
from app.core.settings import Settings
from app.outbox.meter import counters_key
from app.outbox.publisher import RedisPublisher
from app.outbox.tables import EventRecord
from testkit.eventually import eventually
from testkit.processes import BIN, ROOT


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


def sweeps(count: int = 2, timeout: float = 30) -> None:
    """Until the workers recorded `count` more sweeps (each one a relay run over every
    stream; two mean at least one that began after this call)."""
    settings = Settings()
    key = counters_key(settings.socketio_channel)
    with redis_lib.Redis.from_url(settings.sio_redis_url) as metrics:
        last, seen = metrics.hget(key, "last_sweep"), [0]

        def recorded() -> bool:
            nonlocal last
            now = metrics.hget(key, "last_sweep")
            if now != last:
                last, seen[0] = now, seen[0] + 1
            return seen[0] >= count

        eventually(recorded, f"fewer than {count} sweeps recorded", timeout)


class LookedUp:
    """Rows the outbox status looks up (its statements that join `relay_cursors`) on
    `engine` while in a `with` block: `.rows` so far; set it to 0 to count afresh."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.rows = 0

    def _count(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "JOIN relay_cursors" in statement:
            self.rows += max(cursor.rowcount, 0)

    def __enter__(self) -> LookedUp:
        sa_event.listen(self.engine, "after_cursor_execute", self._count)
        return self

    def __exit__(self, *_: object) -> None:
        sa_event.remove(self.engine, "after_cursor_execute", self._count)
