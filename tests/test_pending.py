"""The relay's pending set: a write marks its stream, the relay clears the mark only when
its cursor is at the head and no writer holds the row; no stream is ever forgotten."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis as redis_lib
from sqlalchemy import select, update

from app.outbox import ops
from app.outbox.ops import actions
from app.outbox.publish import EventSpec, publish_many
from app.outbox.publisher import MemoryPublisher
from app.outbox.relay import CLEAR_SQL, RelayPolicy, clear_params, relay
from app.outbox.tables import PendingStream, RelayCursor, Stream
from app.outbox.writer import append
from testkit.databases import Database, wait_for_a_lock_wait
from testkit.eventually import eventually
from testkit.marks import mark, marked, unmark
from testkit.processes import ROOT
from testkit.testrun import fresh_name

POLICY = RelayPolicy(max_attempts=3, backoff=0.01, backoff_cap=0.05)


def marks(database: Database) -> dict[str, bool]:
    with database.factory() as session:
        pending = marked(session)
        return {name: name in pending for name in session.scalars(select(Stream.name))}


def lag(database: Database) -> dict[str, tuple[int, int, str]]:
    """stream -> (head, dispatched, state)"""
    with database.factory() as session:
        rows = session.execute(select(Stream.name, Stream.head, RelayCursor.dispatched,
                                      RelayCursor.state)
                               .join(RelayCursor, RelayCursor.stream == Stream.name)).all()
    return {name: (int(head), int(done), state) for name, head, done, state in rows}


def note(database: Database, stream: str, i: int = 0) -> None:
    with database.factory() as session, session.begin():
        append(session, stream, "notification", {"type": "info", "title": str(i),
                                                 "message": ""})


def test_a_write_marks_its_stream_and_a_caught_up_relay_clears_it(db: Database) -> None:
    note(db, "user-1")
    note(db, "user-2")
    assert marks(db) == {"user-1": True, "user-2": True}
    relay(session_factory=db.factory, publisher=MemoryPublisher(), policy=POLICY)
    assert marks(db) == {"user-1": False, "user-2": False}
    note(db, "user-2")
    assert marks(db) == {"user-1": False, "user-2": True}


def test_the_relay_looks_only_at_marked_streams(db: Database) -> None:
    """An unmarked stream is not claimed, whatever its head: the claim reads the pending set
    (the writer always marks; the migration marks what was behind before it)."""
    note(db, "user-1")
    with db.factory() as session, session.begin():
        unmark(session)
    publisher = MemoryPublisher()
    assert relay(session_factory=db.factory, publisher=publisher, policy=POLICY).published == 0
    with db.factory() as session, session.begin():
        mark(session)
    assert relay(session_factory=db.factory, publisher=publisher, policy=POLICY).published == 1


def test_a_mark_left_with_nothing_to_send_is_cleared_by_the_next_claim(db: Database) -> None:
    note(db, "user-1")
    relay(session_factory=db.factory, publisher=MemoryPublisher(), policy=POLICY)
    with db.factory() as session, session.begin():  # as a writer that rolled back leaves it
        mark(session)
    report = relay(session_factory=db.factory, publisher=MemoryPublisher(), policy=POLICY)
    assert report.published == 0 and marks(db) == {"user-1": False}


def test_a_writer_holding_the_row_keeps_the_mark_and_the_relay_does_not_wait(
        pg_db: Database) -> None:
    """The relay catches up to the committed head while a writer holds the stream's row
    with one more event: the mark stays (SKIP LOCKED), the relay returns at once, and the
    writer's event goes out on the next pass."""
    note(pg_db, "user-1", 1)
    publisher = MemoryPublisher()
    with pg_db.factory() as writer, writer.begin():
        append(writer, "user-1", "notification", {"type": "info", "title": "2", "message": ""})
        done = threading.Event()
        thread = threading.Thread(target=lambda: (relay(
            session_factory=pg_db.factory, publisher=publisher, policy=POLICY), done.set()))
        thread.start()
        thread.join(30)
        assert done.is_set(), "the relay waited for the writer"
        assert [r.offset for r in publisher.published] == [1]
    assert marks(pg_db) == {"user-1": True}
    relay(session_factory=pg_db.factory, publisher=publisher, policy=POLICY)
    assert [r.offset for r in publisher.published] == [1, 2]
    assert marks(pg_db) == {"user-1": False}


def test_a_writer_waiting_on_a_mark_the_relay_deletes_marks_the_stream_anew(
        pg_db: Database) -> None:
    """The relay holds the mark while it deletes it (its cursor is at the mark's head); a
    writer appending meanwhile waits for that commit, then marks the stream again with its
    new head: its event is not forgotten."""
    note(pg_db, "user-1", 1)
    with pg_db.factory() as session, session.begin():  # as the relay's advance leaves it
        session.execute(update(RelayCursor).values(dispatched=1))
    with pg_db.engine.connect() as clearing:
        deleted = clearing.exec_driver_sql(CLEAR_SQL, clear_params({"user-1": 1}))
        assert deleted.rowcount == 1
        writer = threading.Thread(target=note, args=(pg_db, "user-1", 2))
        writer.start()
        wait_for_a_lock_wait(pg_db)
        clearing.commit()
        writer.join(30)
        assert not writer.is_alive()
    with pg_db.factory() as session:
        assert [tuple(m) for m in session.execute(
            select(PendingStream.name, PendingStream.head))] == [("user-1", 2)]
    publisher = MemoryPublisher()
    relay(session_factory=pg_db.factory, publisher=publisher, policy=POLICY)
    assert [r.offset for r in publisher.published] == [2]
    assert marks(pg_db) == {"user-1": False}


def test_retrying_and_failed_streams_stay_marked_and_counted_until_retried(
        db: Database) -> None:
    note(db, "user-1")
    note(db, "user-2")
    publisher = MemoryPublisher()
    publisher.fail_streams["user-1"] = "ResponseError: refused"
    relay(session_factory=db.factory, publisher=publisher, policy=POLICY)
    with db.factory() as session:
        state = ops.status(session)
    assert (state.retrying_streams, state.failed_streams, state.streams_behind) == (1, 0, 1)
    assert marks(db) == {"user-1": True, "user-2": False}
    def failed_after_a_retry() -> bool:
        if lag(db)["user-1"][2] == "failed":
            return True
        relay(session_factory=db.factory, publisher=publisher, policy=POLICY)
        return False

    eventually(failed_after_a_retry, lambda: f"user-1 never failed: {lag(db)}", 10,
               interval=0.02)
    with db.factory() as session:
        state = ops.status(session)
    assert (state.failed_streams, state.events_pending) == (1, 1)
    assert [s.stream for s in state.streams] == ["user-1"]
    assert marks(db)["user-1"] is True
    del publisher.fail_streams["user-1"]
    relay(session_factory=db.factory, publisher=publisher, policy=POLICY)  # failed: waits
    assert lag(db)["user-1"] == (1, 0, "failed")
    assert ops.retry(db.factory, all_failed=True).retried == ["user-1"]
    relay(session_factory=db.factory, publisher=publisher, policy=POLICY)
    assert lag(db)["user-1"] == (1, 1, "active") and marks(db)["user-1"] is False


def _failed(database: Database) -> set[str]:
    return {name for name, (_h, _d, state) in lag(database).items() if state == "failed"}


def _retry_while_user_2_is_held(database: Database, left_failed: set[str]) -> None:
    """Three failed streams; `retry --all` while a writer holds user-2's row and mark:
    `left_failed` are still failed (the rest given back, committed) while it waits; all
    three are given back once the writer has committed."""
    streams = ["user-1", "user-2", "user-3"]
    for name in streams:
        note(database, name)
    publisher = MemoryPublisher()
    publisher.fail_streams.update(dict.fromkeys(streams, "ResponseError: refused"))
    relay(session_factory=database.factory, publisher=publisher,
          policy=RelayPolicy(max_attempts=1))
    assert _failed(database) == set(streams)
    answers: list[ops.Retried] = []
    retrying = threading.Thread(
        target=lambda: answers.append(ops.retry(database.factory, all_failed=True)))
    with database.factory() as held, held.begin():
        append(held, "user-2", "notification", {"type": "info", "title": "2", "message": ""})
        retrying.start()
        eventually(lambda: _failed(database) == left_failed, lambda: str(lag(database)), 10)
        assert retrying.is_alive()
    retrying.join(30)
    assert answers == [ops.Retried(retried=streams, healthy=[])]
    assert not _failed(database)
    with database.factory() as session:
        assert set(session.scalars(select(PendingStream.not_before))) == {None}


def test_a_retry_gives_back_at_once_the_streams_no_writer_holds_and_the_rest_after_it(
        pg_db: Database) -> None:
    """The streams no writer holds are given back at once, the held one once its writer
    has committed. Before, the retry updated the marks in one transaction, waiting for the
    held one while holding the others: a writer taking its marks in another order then
    deadlocked with it."""
    _retry_while_user_2_is_held(pg_db, {"user-2"})


def test_a_retry_past_its_patience_waits_for_one_held_stream_at_a_time(
        pg_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past BUSY_PATIENCE the retry waits for the writers, one stream a transaction: it
    has given back user-1 and holds nothing else while it waits for user-2 (user-3
    after it)."""
    monkeypatch.setattr(actions, "BUSY_PATIENCE", 0.0)
    _retry_while_user_2_is_held(pg_db, {"user-2", "user-3"})


# -- writers and relays killed at random points ---------------------------------------------
# A relay process: publishes rows by RPUSH onto a Redis list (so the test sees every
# publish), refuses some streams at random (retries, backoff) and the "bad" ones until the
# heal flag is set (they end up failed), and sleeps a little after publishing, so that
# kills land between a publish and its commit as well.
RELAY_SCRIPT = """
import os, random, sys, time
import redis
from app.core.db import make_engine, make_session_factory
from app.core.errors import PublishRejected
from app.outbox.relay import CLEAR_SQL, RelayPolicy, relay

url, key, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = redis.Redis.from_url(os.environ["REDIS_URL"])
rng = random.Random(seed)
BAD = {"user-3", "user-7"}

class Flaky:
    def publish_rows(self, rows):
        healed = r.exists(key + ":heal")
        streams = sorted({row.stream for row in rows})
        # A random refusal never twice in a row for a stream (max_attempts is 3): only the
        # BAD streams may fail; the others go through retries and backoff.
        just_refused = dict(zip(streams, r.smismember(key + ":refused", streams)))
        refused = {s: "flaky" for s in streams
                   if (s in BAD and not healed)
                   or (not just_refused[s] and rng.random() < 0.05)}
        sent = [f"{row.stream}:{row.offset}" for row in rows if row.stream not in refused]
        if sent:
            r.rpush(key, *sent)
        ok = [s for s in streams if s not in refused]
        if refused:
            r.sadd(key + ":refused", *refused)
        if ok:
            r.srem(key + ":refused", *ok)
        time.sleep(rng.random() * 0.01)
        if refused:
            raise PublishRejected("flaky", failed=refused)

    def publish(self, events):
        raise NotImplementedError

factory = make_session_factory(make_engine(url, pool_size=1, max_overflow=0))
policy = RelayPolicy(max_attempts=3, backoff=0.01, backoff_cap=0.05, max_streams=10,
                     max_events=20)
while True:
    relay(session_factory=factory, publisher=Flaky(), policy=policy)
    time.sleep(rng.random() * 0.01)
"""


def _relay_process(url: str, key: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", RELAY_SCRIPT, url, key,
                             str(random.randrange(10**9))], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _write(database: Database, stop: threading.Event, seed: int, errors: list[str]) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        names = [f"user-{rng.randint(1, 40)}" for _ in range(rng.randint(1, 25))]
        try:
            with database.factory() as session, session.begin():
                publish_many(session, [EventSpec(n, "notification",
                                                 {"type": "info", "title": "x", "message": ""})
                                       for n in names])
        except Exception as exc:  # reported below: a deadlock would show here
            errors.append(f"{type(exc).__name__}: {exc}")


KILLS = 20  # about 6 s of random kills


def test_concurrent_writers_and_relays_killed_at_random_points_dispatch_every_event(
        pg_db: Database, redis_url: str) -> None:
    key = fresh_name("pending")
    client = redis_lib.Redis.from_url(redis_url)
    relays = [_relay_process(pg_db.url, key) for _ in range(2)]
    stop = threading.Event()
    errors: list[str] = []
    writers = [threading.Thread(target=_write, args=(pg_db, stop, n, errors)) for n in range(3)]
    kills = 0
    try:
        for t in writers:
            t.start()
        for _ in range(KILLS):  # kill one relay at a random moment, start another
            time.sleep(random.uniform(0.1, 0.5))
            victim = random.randrange(len(relays))
            relays[victim].send_signal(signal.SIGKILL)
            relays[victim].wait()
            kills += 1
            relays[victim] = _relay_process(pg_db.url, key)
        stop.set()
        for t in writers:
            t.join()
        assert not errors, errors[:3]
        eventually(lambda: {s for s, (_h, _d, state) in lag(pg_db).items()
                            if state == "failed"} == {"user-3", "user-7"},
                   lambda: str(lag(pg_db)), 30)
        assert marks(pg_db)["user-3"] and marks(pg_db)["user-7"]
        client.set(f"{key}:heal", 1)
        ops.retry(pg_db.factory, all_failed=True)
        eventually(lambda: all(head == done for head, done, _state in lag(pg_db).values()),
                   "not every stream caught up", 30)
    finally:
        stop.set()
        for proc in relays:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    published: dict[str, set[int]] = {}
    for item in client.lrange(key, 0, -1):
        stream, offset = item.decode().rsplit(":", 1)
        published.setdefault(stream, set()).add(int(offset))
    client.delete(key, f"{key}:heal", f"{key}:refused")
    client.close()
    state = lag(pg_db)
    assert kills > 5 and sum(head for head, _d, _s in state.values()) > 200
    for stream, (head, done, status) in state.items():
        assert (done, status) == (head, "active"), stream
        assert published.get(stream, set()) >= set(range(1, head + 1)), stream
    assert not any(marks(pg_db).values())  # nothing pending, nothing forgotten
