"""Per-stream offsets: gapless, in commit order, never used up by a rollback."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from app.outbox.tables import Event, Stream
from app.outbox.writer import append
from testkit.databases import Database


def offsets(database: Database, stream: str) -> list[int]:
    with database.factory() as session:
        return list(session.scalars(
            select(Event.offset).where(Event.stream == stream).order_by(Event.offset)))


def test_offsets_stay_gapless_and_unique_under_concurrent_appends(pg_db: Database) -> None:
    """Many threads append to one stream at once: offsets 1..N, each handed out once.

    (That commits follow offset order is the next test's: it needs a deterministic wait.)"""
    threads, per_thread = 8, 25
    handed_out: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(per_thread):
                with pg_db.factory() as session, session.begin():
                    record = append(session, "project-1", "project-updated",
                                    {"writer": n, "i": i})
                    time.sleep(0.001)  # hold the stream lock a little: force contention
                with lock:
                    handed_out.append(record.offset)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors
    total = threads * per_thread
    assert offsets(pg_db, "project-1") == list(range(1, total + 1))
    assert sorted(handed_out) == list(range(1, total + 1))


def test_a_later_writer_waits_for_the_earlier_commit_so_offsets_follow_handed_out(
    pg_db: Database,
) -> None:
    """Offset 2 cannot commit (or even be handed out) before offset 1's transaction ends."""
    got: list[int] = []
    with pg_db.factory() as first, first.begin():
        assert append(first, "project-9", "project-updated", {}).offset == 1

        def second() -> None:
            with pg_db.factory() as session, session.begin():
                got.append(append(session, "project-9", "project-updated", {}).offset)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive() and got == [], "the second writer did not wait"
    thread.join(5)
    assert got == [2]
    assert offsets(pg_db, "project-9") == [1, 2]


def test_writers_to_different_streams_do_not_wait_for_each_other(pg_db: Database) -> None:
    """A transaction holding project-1's head does not block an append to project-2."""
    with pg_db.factory() as first, first.begin():
        append(first, "project-1", "project-updated", {})
        done = threading.Event()

        def other() -> None:
            with pg_db.factory() as second, second.begin():
                append(second, "project-2", "project-updated", {})
            done.set()

        thread = threading.Thread(target=other)
        thread.start()
        assert done.wait(5), "append to another stream was blocked"
        thread.join()


def test_rolled_back_transaction_leaves_no_event_and_no_gap(db: Database) -> None:
    with db.factory() as session, session.begin():
        append(session, "ticket-7", "ticket-updated", {"n": 1})
    with pytest.raises(RuntimeError), db.factory() as session, session.begin():
        append(session, "ticket-7", "ticket-updated", {"n": 2})
        raise RuntimeError("the domain change failed")
    with db.factory() as session, session.begin():
        append(session, "ticket-7", "ticket-updated", {"n": 3})
    assert offsets(db, "ticket-7") == [1, 2]
    with db.factory() as session:
        payloads = session.scalars(select(Event.payload).where(Event.stream == "ticket-7")
                                   .order_by(Event.offset)).all()
        assert [p["n"] for p in payloads] == [1, 3]
        head = session.get(Stream, "ticket-7")
        assert head is not None and head.head == 2


def test_relay_is_nudged_after_commit_with_the_touched_streams(db: Database) -> None:
    nudged: list[list[str]] = []
    with db.factory() as session, session.begin():
        append(session, "project-3", "project-updated", {}, nudge=nudged.append)
        append(session, "user-4", "notification", {}, nudge=nudged.append)
        assert nudged == []  # nothing before the commit
    assert nudged == [["project-3", "user-4"]]


def test_rolled_back_transaction_nudges_nothing(db: Database) -> None:
    nudged: list[list[str]] = []
    with pytest.raises(RuntimeError), db.factory() as session, session.begin():
        append(session, "project-3", "project-updated", {}, nudge=nudged.append)
        raise RuntimeError("rollback")
    assert nudged == []


def test_failed_nudge_is_logged_and_never_fails_the_commit(db: Database,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    def broken(_streams: list[str]) -> None:
        raise ConnectionError("broker down")

    with db.factory() as session, session.begin():
        append(session, "project-5", "project-updated", {"ok": True}, nudge=broken)
    assert offsets(db, "project-5") == [1]
    assert any("relay nudge failed" in r.getMessage() for r in caplog.records)


def test_epoch_is_stable_across_appends(db: Database) -> None:
    with db.factory() as session, session.begin():
        first = append(session, "admins", "notification", {})
    with db.factory() as session, session.begin():
        second = append(session, "admins", "notification", {})
    assert first.epoch == second.epoch and len(first.epoch) >= 8
    assert first.id != second.id


def test_batches_over_overlapping_streams_stay_gapless_under_concurrency(
        pg_db: Database) -> None:
    """Many batch writers, each batch over many streams (new and existing, in any order,
    a stream several times): no deadlock, no lost or doubled offset, each stream 1..N."""
    import random
    from collections import Counter

    from app.outbox.publish import EventSpec, publish_many

    written: Counter[str] = Counter()
    handed: list[tuple[str, int]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def batches(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(15):
                names = [f"user-{rng.randint(1, 60)}" for _ in range(rng.randint(2, 40))]
                with pg_db.factory() as session, session.begin():
                    out = publish_many(session, [EventSpec(n, "project-updated", {"i": i})
                                                 for i, n in enumerate(names)])
                with lock:
                    written.update(names)
                    handed.extend((p.event.stream, p.event.offset) for p in out)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=batches, args=(n,)) for n in range(6)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors, errors[:1]
    assert len(handed) == len(set(handed)) == sum(written.values())
    for stream, count in written.items():
        assert offsets(pg_db, stream) == list(range(1, count + 1)), stream
    with pg_db.factory() as session:
        heads = {name: head for name, head in session.execute(select(Stream.name, Stream.head))}
    assert heads == dict(written)
