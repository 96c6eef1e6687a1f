"""Workers make progress on their own, with no beat running anywhere.

A worker relays what is pending when it starts and sweeps every HERALD_SWEEP_INTERVAL:
events whose nudge died with a killed worker are delivered by the next one, and a
stream whose publish was refused is retried when its backoff is due — recovering, or
reaching the failed state after HERALD_RELAY_MAX_ATTEMPTS. Real processes throughout:
PostgreSQL, Celery workers (without -B), a web node; the refusals come from a private
redis-server whose ACL denies PUBLISH and SPUBLISH.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as redis_lib
from sqlalchemy.orm import Session, sessionmaker

from app.outbox.tables import RelayCursor
from testkit.clients import Api, SocketClient
from testkit.eventually import eventually
from testkit.ops import scrape
from testkit.private import private_system
from testkit.processes import WebNode, Worker
from testkit.redis import PrivateRedis
from testkit.system import System
from testkit.testrun import REDIS_URL
from tests.test_durability import Tap, slow_cursor_updates, write_rounds

pytestmark = pytest.mark.anyio


@pytest.mark.slow
def test_a_new_worker_delivers_every_event_written_around_a_killed_one(
    pg_system: System,
) -> None:
    """The issue's case: the killed worker held the relay task that the nudges coalesced
    into (reserved, acked late: back in the queue only after the visibility timeout), so
    the commits after the kill nudge nothing; only a sweep finds their events."""
    assert all("-B" not in w.argv for w in pg_system.workers)
    streams = [f"project-{3000 + i}" for i in range(10)]
    rounds = 150  # 1500 events, each commit nudging the relay as the API does
    victim = pg_system.workers[0]
    tap = Tap(REDIS_URL, streams, trigger=(200, victim.kill))
    progress = [0]
    writer = threading.Thread(target=write_rounds,
                              args=(pg_system.factory, streams, rounds, 0.01, progress))
    # Slow relay batches (10 ms per cursor update): the worker is busy relaying when it
    # dies, with the next coalesced relay task already reserved.
    slow_cursor_updates(pg_system, True)
    try:
        writer.start()
        tap.wait_unique(200, timeout=60)
        eventually(lambda: not victim.alive(), "the worker was not killed", interval=0.01)
        slow_cursor_updates(pg_system, False)
        pg_system.workers.remove(victim)
        at_kill = progress[0]
        writer.join()  # the rest of the burst is written with no worker running
        assert progress[0] > at_kill, "the burst ended before the kill"
        pg_system.add_worker()
        tap.wait_unique(len(streams) * rounds, timeout=60)
    finally:
        slow_cursor_updates(pg_system, False)
        writer.join()
        tap.close()
    per_stream = tap.per_stream()
    for stream in streams:
        assert sorted(set(o for _, o in per_stream[stream])) == list(range(1, rounds + 1))


@dataclass
class Refusing:
    """Herald whose Socket.IO Redis may refuse (S)PUBLISH (ACL), with one worker and no beat."""

    redis: PrivateRedis
    factory: sessionmaker[Session]
    web: WebNode
    worker: Worker
    api: Api

    def refuse_publish(self, refuse: bool) -> None:
        """Deny (or allow again) PUBLISH and SPUBLISH: the relay sends each stream's events
        with SPUBLISH on the stream's channel (PUBLISH with HERALD_ROOM_CHANNELS=false)."""
        rules = ["-publish", "-spublish"] if refuse else ["+publish", "+spublish"]
        with redis_lib.Redis.from_url(self.redis.url) as client:
            client.execute_command("ACL", "SETUSER", "default", *rules)

    def cursor(self, stream: str) -> RelayCursor:
        with self.factory() as session:
            cursor = session.get(RelayCursor, stream)
            assert cursor is not None
            session.expunge(cursor)
            return cursor

    def wait_cursor(self, stream: str, check: object, timeout: float = 30) -> RelayCursor:
        last: list[RelayCursor] = []

        def checked() -> RelayCursor | None:
            last[:] = [self.cursor(stream)]
            return last[0] if check(last[0]) else None  # type: ignore[operator]

        return eventually(checked, lambda: str((last[0].state, last[0].attempts,
                                                last[0].dispatched, self.worker.log()[-2000:])),
                          timeout)


def _refusing(tmp_path: Path, attempts: int, backoff: float) -> Iterator[Refusing]:
    # The broker stays on the shared Redis: only the Socket.IO publishes are refused.
    env = {"HERALD_RELAY_MAX_ATTEMPTS": str(attempts), "HERALD_RELAY_BACKOFF": str(backoff)}
    with private_system(tmp_path, f"_refusing{attempts}", env=env) as system:
        yield Refusing(system.redis, system.factory, system.web, system.worker, system.api)


@pytest.fixture
def refusing(tmp_path: Path) -> Iterator[Refusing]:
    yield from _refusing(tmp_path, attempts=20, backoff=0.5)


@pytest.fixture
def refusing_few(tmp_path: Path) -> Iterator[Refusing]:
    yield from _refusing(tmp_path, attempts=3, backoff=0.2)


@pytest.mark.slow
async def test_a_refused_publish_is_retried_by_the_workers_sweep_and_recovers(
    refusing: Refusing,
) -> None:
    api = refusing.api
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    stream = f"project-{project}"
    socket = SocketClient(refusing.web.url, client_token)
    await socket.connect()
    try:
        assert (await socket.call("join-project", project))["ok"] is True
        refusing.refuse_publish(True)
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": 10})
        refused = refusing.wait_cursor(stream, lambda c: c.attempts >= 1)
        assert refused.dispatched == 0 and "NoPermissionError" in (refused.last_error or "")
        refusing.refuse_publish(False)  # no new write, no nudge: only a sweep retries it
        [event] = await socket.wait_count("project-updated", 1, timeout=30)
        assert event.meta is not None and event.meta["offset"] == 1
        cursor = refusing.wait_cursor(stream, lambda c: c.dispatched == 1)
        assert (cursor.state, cursor.attempts, cursor.last_error) == ("active", 0, None)
    finally:
        await socket.close()


@pytest.mark.slow
def test_a_stream_refused_every_time_reaches_the_failed_state_without_beat(
    refusing_few: Refusing,
) -> None:
    api = refusing_few.api
    client_id, _ = api.user("client")
    project = api.project(client_id)
    stream = f"project-{project}"
    refusing_few.refuse_publish(True)
    api.ok("PATCH", f"/api/projects/{project}", json={"progress": 10})
    cursor = refusing_few.wait_cursor(stream, lambda c: c.state == "failed")
    assert cursor.attempts == 3 and cursor.dispatched == 0


def test_metrics_show_the_time_since_the_last_sweep(pg_system: System) -> None:
    def since() -> float:
        text = pg_system.api().request("GET", "/metrics").text
        return scrape(text)[("herald_relay_seconds_since_sweep", ())]

    # the worker sweeps every HERALD_SWEEP_INTERVAL (0.5 s in tests)
    eventually(lambda: since() <= 5, "no sweep recorded", 20, interval=0.2)
    pg_system.workers[0].kill()
    pg_system.workers.clear()
    # nobody sweeps: the gauge grows past several sweep intervals
    eventually(lambda: since() >= 2.5, lambda: f"the gauge stays at {since()}", 20,
               interval=0.2)
