"""Nudges: one Redis command per commit, coalesced; a worker's relay thread wakes on them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis as redis_lib

from app.core.redisclients import quick_redis
from app.core.settings import Settings
from app.outbox import nudge
from app.outbox.meter import counters_key
from app.outbox.writer import append
from testkit.eventually import eventually
from testkit.processes import Worker, free_port
from testkit.system import System
from testkit.testrun import REDIS_URL, fresh_name
from tests.test_durability import Tap, heads, wait_relayed, write_rounds


@pytest.fixture
def queue(redis_url: str) -> Iterator[str]:
    name = fresh_name("nudge")
    yield name
    with redis_lib.Redis.from_url(redis_url) as client:
        client.delete(nudge.wake_key(name))


def test_nudges_coalesce_into_one_waiting_wake_up_until_a_relay_takes_it(
    redis_url: str, queue: str,
) -> None:
    nudger = nudge.RelayNudger(quick_redis(redis_url), queue)
    waker = nudge.RelayWaker(redis_url, queue)
    try:
        with redis_lib.Redis.from_url(redis_url) as client:
            for _ in range(50):  # a burst of commits
                nudger(["project-1"])
            assert client.llen(nudge.wake_key(queue)) == 1  # one pass is due, not 50
            assert waker.wait(1.0) is True  # a relay thread takes it before it claims
            assert client.llen(nudge.wake_key(queue)) == 0
            assert waker.wait(0.05) is False  # nothing more is due
            nudger(["project-1"])  # a commit after the claim: due again
            assert waker.wait(1.0) is True
    finally:
        nudger.close()
        waker.close()


def test_nudging_a_dead_redis_raises_then_pauses() -> None:
    """The writer logs the failure; the next nudges skip Redis for a few seconds."""
    dead = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0",
                    celery_queue="nudge-dead-redis")
    nudger = nudge.relay_nudger(dead)
    try:
        with pytest.raises(redis_lib.ConnectionError):
            nudger(["project-1"])
        with pytest.raises(nudge.NudgePaused):
            nudger(["project-1"])
    finally:
        nudger.close()


def test_a_web_app_nudges_on_the_queue_of_the_settings_it_was_given(redis_url: str) -> None:
    """No process-wide nudger: create_app's own Settings decide the relay's list."""
    from app.main import create_app

    queue = fresh_name("nudge-app")
    settings = Settings(database_url="sqlite://", redis_url=redis_url, celery_queue=queue)
    asgi = create_app(settings)
    ctx = asgi.herald
    try:
        nudger = ctx.factory.kw["info"]["herald.nudger"]
        assert isinstance(nudger, nudge.RelayNudger)
        assert nudger.key == nudge.wake_key(queue)
    finally:
        ctx.close()


@pytest.mark.slow
def test_a_nudge_wakes_a_workers_relay_thread_without_waiting_for_the_sweep(
    pg_system: System,
) -> None:
    """A worker whose sweep is an hour away relays a nudged commit at once, and a commit
    that nudged nobody only when a nudge comes: the wake-up is what moved it."""
    for worker in list(pg_system.workers):
        worker.stop()
        pg_system.workers.remove(worker)
    settings = Settings()
    metrics = redis_lib.Redis.from_url(settings.sio_redis_url)
    key = counters_key(settings.socketio_channel)
    before = metrics.hget(key, "last_sweep")
    worker = Worker({**pg_system.env, "HERALD_SWEEP_INTERVAL": "3600"}, pg_system.log_dir)
    worker.start()
    pg_system.workers.append(worker)
    nudger = nudge.relay_nudger(settings)
    try:
        # its first sweep (at start) is done
        eventually(lambda: metrics.hget(key, "last_sweep") != before, "the worker never swept",
                   timeout=10)
        with pg_system.factory() as session, session.begin():
            append(session, "project-71", "project-updated", {"progress": 1})
        time.sleep(1.5)
        assert heads(pg_system.factory, ["project-71"]) == {"project-71": (1, 0)}
        with pg_system.factory() as session, session.begin():
            append(session, "project-72", "project-updated", {"progress": 2}, nudge=nudger)
        wait_relayed(pg_system.factory, ["project-71", "project-72"], timeout=10)
    finally:
        nudger.close()
        metrics.close()
        # The session's system goes on with a worker that sweeps as usual.
        worker.stop()
        pg_system.workers.remove(worker)
        pg_system.add_worker()


@pytest.mark.slow
def test_two_workers_relay_threads_share_nudged_writes_each_stream_in_order(
    pg_system: System,
) -> None:
    """Commits nudging as the API does, two workers' relay threads woken by turns: every
    event goes out once (no worker dies here), each stream in offset order, and both
    workers relayed some."""
    streams = [f"ticket-{4000 + i}" for i in range(12)]
    rounds = 60  # 720 events
    added = pg_system.add_worker()
    # ready (" ready.") comes before the worker's relay thread waits for wake-ups
    eventually(lambda: "relay thread started" in added.log(), "no relay thread", timeout=20)
    before = [worker.log().count("relay batch") for worker in pg_system.workers]
    tap = Tap(REDIS_URL, streams)
    try:
        threads = [threading.Thread(target=write_rounds,
                                    args=(pg_system.factory, streams[i::3], rounds, 0.002,
                                          [0]))
                   for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        tap.wait_unique(len(streams) * rounds, timeout=60)
        write_rounds(pg_system.factory, streams, 1, 0, [0])  # sentinels
        tap.wait_sentinels(streams, rounds + 1, timeout=60)  # a late publication would be in
    finally:
        tap.close()
    per_stream = tap.per_stream()
    for stream in streams:
        assert [offset for _, offset in per_stream[stream]] == list(range(1, rounds + 2))
    relayed = [worker.log().count("relay batch") - done
               for worker, done in zip(pg_system.workers, before, strict=True)]
    assert len(relayed) == 2 and all(n > 0 for n in relayed), relayed
