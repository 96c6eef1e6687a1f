"""No loss across failures: a killed worker, a stopped Redis, a killed web node, racing relays.

Everything here is real: PostgreSQL, Redis (the shared one, or a private redis-server
that the test stops and starts), uvicorn web nodes and Celery workers as subprocesses,
Socket.IO clients over websockets, and a tap on the Socket.IO Redis channel itself.
"""

from __future__ import annotations

import asyncio
import json
import logging.config  # noqa: F401  (alembic imports it; importing it late in a thread can trip importlib)
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from sqlalchemy import select, text

from app.outbox.publisher import RedisPublisher
from app.outbox.relay import RelayPolicy, relay
from app.outbox.tables import RelayCursor, Stream
from app.outbox.writer import append
from testkit.clients import Api, Received, SocketClient
from testkit.eventually import eventually
from testkit.private import private_system
from testkit.processes import WebNode, Worker
from testkit.redis import PrivateRedis, subscribed
from testkit.system import System, relay_nudger
from testkit.testrun import REDIS_URL

pytestmark = pytest.mark.anyio
CHANNEL = os.environ["HERALD_SOCKETIO_CHANNEL"]
SENTINEL = "herald-test-sentinel"  # a pub/sub method no manager handles


# -- helpers -------------------------------------------------------------------------------
@dataclass
class Tap:
    """Everything published on the Socket.IO channel and on the channels of `streams`:
    (stream, offset) in arrival order."""

    url: str
    streams: list[str]
    seen: list[tuple[str, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    # (count, action): run `action` in the tap's thread as soon as `count` messages arrived
    trigger: tuple[int, Any] | None = None
    marks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.redis = redis_lib.Redis.from_url(self.url)
        self.pubsub = subscribed(self.redis, CHANNEL, self.streams)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            message = self.pubsub.get_message(timeout=0.1)
            if message is None or message.get("type") not in ("message", "smessage"):
                continue
            data = json.loads(message["data"])
            if data.get("method") == SENTINEL:
                self.marks.append(data["mark"])
                continue
            args = data.get("data")
            if data.get("method") == "emit" and isinstance(args, list) and len(args) == 2:
                self.seen.append((args[1]["stream"], int(args[1]["offset"])))
                if self.trigger is not None and len(self.seen) >= self.trigger[0]:
                    action, self.trigger = self.trigger[1], None
                    action()

    def unique(self) -> int:
        return len(set(self.seen))

    def wait_unique(self, count: int, timeout: float) -> None:
        eventually(lambda: self.unique() >= count,
                   lambda: f"only {self.unique()} of {count} published", timeout)

    def barrier(self) -> None:
        """Until what Redis received before this call has reached the tap: a sentinel
        published on the channel, twice (a dead publisher's last bytes may sit in Redis's
        buffer and be read in the same round as the first sentinel; never after the second).
        Web nodes ignore the unknown method."""
        for mark in (uuid.uuid4().hex, uuid.uuid4().hex):
            self.redis.publish(CHANNEL, json.dumps({"method": SENTINEL, "mark": mark}))
            eventually(lambda m=mark: m in self.marks, "the sentinel did not arrive", 10)

    def wait_sentinels(self, streams: list[str], offset: int, timeout: float) -> None:
        """Until each stream's `offset` (a sentinel event appended last) arrived: the relay
        publishes a stream in order, so whatever it would send of that stream before has."""
        eventually(lambda: {(s, offset) for s in streams} <= set(self.seen),
                   f"sentinel {offset} did not arrive on every stream", timeout)

    def per_stream(self) -> dict[str, list[tuple[int, int]]]:
        """stream -> [(arrival index, offset)]"""
        out: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for index, (stream, offset) in enumerate(list(self.seen)):
            out[stream].append((index, offset))
        return out

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.pubsub.close()
        self.redis.close()


def write_rounds(factory: Any, streams: list[str], rounds: int, pause: float,
                 progress: list[int], nudge: bool = True) -> None:
    """`rounds` transactions, each appending one event to every stream.

    With `nudge`, each commit nudges the Celery relay; without, the beat sweep finds them.
    """
    for i in range(rounds):
        with factory() as session, session.begin():
            for stream in streams:
                append(session, stream, "notification",
                       {"type": "info", "title": str(i), "message": stream},
                       nudge=relay_nudger() if nudge else None)
        progress[0] = i + 1
        time.sleep(pause)


def offsets(events: list[Received], stream: str) -> list[int]:
    return [e.meta["offset"] for e in events if e.meta and e.meta.get("stream") == stream]


def heads(factory: Any, streams: list[str]) -> dict[str, tuple[int, int]]:
    """stream -> (head, dispatched)"""
    with factory() as session:
        rows = session.execute(
            select(Stream.name, Stream.head, RelayCursor.dispatched)
            .join(RelayCursor, RelayCursor.stream == Stream.name)
            .where(Stream.name.in_(streams))
        ).all()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def relayed(factory: Any, streams: list[str]) -> bool:
    return all(head == done for head, done in heads(factory, streams).values())


def wait_relayed(factory: Any, streams: list[str], timeout: float) -> None:
    eventually(lambda: relayed(factory, streams),
               lambda: f"not relayed: {heads(factory, streams)}", timeout, interval=0.1)


# -- a killed Celery worker -----------------------------------------------------------------
@pytest.mark.slow
def test_worker_killed_mid_relay_loses_nothing_and_only_resends_its_batch_in_flight(
    pg_system: System,
) -> None:
    streams = [f"project-{1000 + i}" for i in range(30)]
    rounds = 100  # 3000 events
    victim = pg_system.workers[0]
    # Killed from the tap's thread the moment the 600th message is on the wire. A slow
    # trigger on the cursor update widens the window between a batch's publish and its
    # commit (10 ms per stream), so the kill lands inside a batch, as a crash would.
    tap = Tap(REDIS_URL, streams, trigger=(600, victim.kill))
    progress = [0]
    writer = threading.Thread(target=write_rounds,
                              args=(pg_system.factory, streams, rounds, 0.002, progress, False))
    slow_cursor_updates(pg_system, True)
    try:
        writer.start()
        tap.wait_unique(600, timeout=60)
        eventually(lambda: not victim.alive(), "the worker was not killed", interval=0.01)
        slow_cursor_updates(pg_system, False)
        tap.barrier()  # what the victim published before it died is in
        restart_index = len(tap.seen)  # nothing published from here until the new worker
        committed = {s: done for s, (_, done) in heads(pg_system.factory, streams).items()}
        pg_system.add_worker()
        writer.join()
        tap.wait_unique(len(streams) * rounds, timeout=90)
        write_rounds(pg_system.factory, streams, 1, 0, progress, nudge=False)  # sentinels
        tap.wait_sentinels(streams, rounds + 1, timeout=60)  # a late re-send would be in
    finally:
        slow_cursor_updates(pg_system, False)
        writer.join()
        tap.close()

    resent = 0
    for stream in streams:
        arrivals = tap.per_stream()[stream]
        highest, duplicates = 0, set()
        for index, offset in arrivals:
            if offset > highest:
                assert offset == highest + 1, f"{stream}: gap before {offset}"
                highest = offset
            else:
                duplicates.add(offset)
                assert index >= restart_index, f"{stream}: {offset} twice before the restart"
        assert highest == rounds + 1  # the sentinel included
        # exactly the batch in flight: published by the killed worker, never committed
        before = [offset for index, offset in arrivals if index < restart_index]
        in_flight = set(range(committed.get(stream, 0) + 1, max(before, default=0) + 1))
        assert duplicates == in_flight, stream
        resent += len(duplicates)
    assert resent > 0, "the kill did not land inside a batch"


def slow_cursor_updates(system: System, on: bool) -> None:
    """A test-only PostgreSQL trigger that makes each relay cursor update take 10 ms."""
    with system.factory() as session, session.begin():
        if on:
            session.execute(text(
                "CREATE OR REPLACE FUNCTION herald_test_slow() RETURNS trigger AS $$ "
                "BEGIN PERFORM pg_sleep(0.01); RETURN NEW; END $$ LANGUAGE plpgsql"))
            session.execute(text(
                "CREATE TRIGGER herald_test_slow BEFORE UPDATE ON relay_cursors "
                "FOR EACH ROW EXECUTE FUNCTION herald_test_slow()"))
        else:
            session.execute(text("DROP TRIGGER IF EXISTS herald_test_slow ON relay_cursors"))


# -- racing relays ----------------------------------------------------------------------------
@pytest.mark.slow
def test_concurrent_relays_never_publish_a_stream_out_of_order(pg_system: System) -> None:
    streams = [f"ticket-{2000 + i}" for i in range(30)]
    rounds = 50  # 1500 events
    pg_system.add_worker(concurrency=2, beat=False)  # two more relaying processes
    tap = Tap(REDIS_URL, streams)
    progress = [0]
    done = threading.Event()
    by_test = [0, 0]

    def relay_loop(me: int) -> None:  # and two in-process relays, small claims to interleave
        publisher = RedisPublisher(REDIS_URL, channel=CHANNEL)
        policy = RelayPolicy(max_streams=4, max_events=7)
        while not done.is_set():
            report = relay(session_factory=pg_system.factory, publisher=publisher,
                           policy=policy)
            by_test[me] += report.published
            time.sleep(0.002)
        publisher.close()

    relays = [threading.Thread(target=relay_loop, args=(i,)) for i in range(2)]
    for thread in relays:
        thread.start()
    try:
        write_rounds(pg_system.factory, streams, rounds, 0.005, progress)
        tap.wait_unique(len(streams) * rounds, timeout=90)
        write_rounds(pg_system.factory, streams, 1, 0, progress)  # sentinels
        tap.wait_sentinels(streams, rounds + 1, timeout=60)  # a late publication would be in
    finally:
        done.set()
        for thread in relays:
            thread.join()
        tap.close()
    per_stream = tap.per_stream()
    for stream in streams:
        assert [offset for _, offset in per_stream[stream]] == list(range(1, rounds + 2))
    # they all took part: both in-process relays and the Celery workers published some
    assert all(by_test) and sum(by_test) < len(streams) * rounds, by_test


# -- web nodes --------------------------------------------------------------------------------
async def test_an_event_reaches_sockets_on_every_web_node(pg_system: System) -> None:
    pg_system.add_web()
    pg_system.add_web()
    api = pg_system.api()
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    sockets = [SocketClient(node.url, client_token) for node in pg_system.webs]
    try:
        for socket in sockets:
            await socket.connect()
            assert (await socket.call("join-project", project))["ok"] is True
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": 5})
        for socket in sockets:
            [event] = await socket.wait_count("project-updated", 1)
            assert event.meta is not None and event.meta["offset"] == 1
    finally:
        for socket in sockets:
            await socket.close()


@pytest.mark.slow
async def test_clients_of_a_killed_web_node_reconnect_elsewhere_and_recover(
    pg_system: System,
) -> None:
    doomed = pg_system.add_web()
    api = pg_system.api()
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    stream = f"project-{project}"
    socket = SocketClient(doomed.url, client_token)
    await socket.connect()
    assert (await socket.call("join-project", project))["ok"] is True
    api.ok("PATCH", f"/api/projects/{project}", json={"progress": 1})
    [last] = await socket.wait_count("project-updated", 1)
    assert last.meta is not None

    doomed.kill()
    await socket.wait_for(lambda: not socket.sio.connected)
    for progress in range(2, 12):
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": progress})

    back = SocketClient(pg_system.url, client_token, positions={
        stream: {"offset": last.meta["offset"], "epoch": last.meta["epoch"]}})
    await back.connect()
    try:
        [connected] = await back.wait_count("connected", 1)
        assert connected.payload["recovered"] == {stream: True}
        await back.wait_for(lambda: len(offsets(back.events, stream)) >= 10)
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": 50})
        await back.wait_for(lambda: len(offsets(back.events, stream)) >= 11)
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": 51})  # sentinel: 13
        await back.wait_for(lambda: 13 in offsets(back.events, stream))
        assert offsets(back.events, stream) == list(range(2, 14))
    finally:
        await back.close()
        await socket.close()


# -- Redis stopped ----------------------------------------------------------------------------
@dataclass
class Isolated:
    """Herald on its own PostgreSQL database and its own Redis."""

    redis: PrivateRedis
    factory: Any
    web: WebNode
    worker: Worker
    api: Api
    env: dict[str, str]
    log_dir: Path
    worker_restarts: int = 0

    def supervise_until_relayed(self, streams: list[str], timeout: float) -> None:
        """Wait for the relay, restarting the worker if it died, as a process supervisor does.

        kombu's Redis transport can take the whole worker down when the broker vanishes
        while a task is being acked ("Unrecoverable error: AttributeError ... 'hostname'",
        celery/kombu#582): the outbox loses nothing, but the worker needs a restart.
        """
        def relayed_or_revived() -> bool:
            if relayed(self.factory, streams):
                return True
            if not self.worker.alive():
                self.worker = Worker(self.env, self.log_dir)
                self.worker.start()
                self.worker_restarts += 1
            return False

        eventually(relayed_or_revived, lambda: f"not relayed: {heads(self.factory, streams)}",
                   timeout, interval=0.1)


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[Isolated]:
    with private_system(tmp_path, "_redisdown", broker=True) as system:
        isolated = Isolated(system.redis, system.factory, system.web, system.worker,
                            system.api, system.env, tmp_path)
        try:
            yield isolated
        finally:
            isolated.worker.stop()  # a worker the test restarted in place of the first


@pytest.mark.slow
async def test_redis_down_writes_succeed_and_the_backlog_is_recovered(
    isolated: Isolated,
) -> None:
    api = isolated.api
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    stream = f"project-{project}"
    socket = SocketClient(isolated.web.url, client_token)
    await socket.connect()
    assert (await socket.call("join-project", project))["ok"] is True
    api.ok("PATCH", f"/api/projects/{project}", json={"progress": 1})
    [first] = await socket.wait_count("project-updated", 1)
    assert first.meta is not None

    isolated.redis.stop()
    started = time.monotonic()
    for progress in range(2, 22):  # the API keeps taking writes
        response = api.request("PATCH", f"/api/projects/{project}", json={"progress": progress})
        assert response.status_code == 200, response.text
    writing = time.monotonic() - started
    assert writing < 20, f"writes took {writing:.1f}s with Redis down"
    assert heads(isolated.factory, [stream])[stream] == (21, 1)  # stored, not yet relayed
    assert offsets(socket.events, stream) == [1]

    isolated.redis.start()  # empty: the queued nudges are gone, the sweep finds the backlog
    await asyncio.to_thread(isolated.supervise_until_relayed, [stream], 60)
    # The web node missed whatever went out before it re-subscribed: it catches its rooms
    # up from the event table, so the socket gets the whole backlog without reconnecting.
    await socket.wait_for(lambda: set(offsets(socket.events, stream)) >= set(range(1, 22)),
                          timeout=30)
    api.ok("PATCH", f"/api/projects/{project}", json={"progress": 99})
    await socket.wait_for(lambda: 22 in offsets(socket.events, stream), timeout=20)
    try:
        assert socket.sio.connected
        assert list(dict.fromkeys(offsets(socket.events, stream))) == list(range(1, 23))
    finally:
        await socket.close()


# -- an acknowledged write --------------------------------------------------------------------
def test_a_write_is_committed_before_the_api_acknowledges_it(pg_system: System) -> None:
    """A 2xx means stored: the transaction commits before the response is sent, never after
    (a commit failing after a 200 would be a write the caller believes was made)."""
    api = pg_system.api()
    client_id, _ = api.user("client")
    project = api.project(client_id)
    stream = f"project-{project}"
    for progress in range(1, 41):
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": progress})
        head, _ = heads(pg_system.factory, [stream])[stream]
        assert head == progress, f"answered 200 for write {progress}, committed {head}"
