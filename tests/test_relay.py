"""The relay: order per stream, the cursor moves only after a publish succeeded."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from sqlalchemy import text

from app.outbox import ops
from app.outbox import relay as relay_module
from app.outbox.publisher import MemoryPublisher, RedisPublisher, Row, socketio_messages
from app.outbox.relay import RelayPolicy, relay
from app.outbox.tables import FAILED_NOT_BEFORE, EventRecord, PendingStream, RelayCursor
from app.outbox.writer import append
from testkit.databases import Database
from testkit.eventually import eventually
from testkit.processes import free_port
from testkit.redis import subscribed
from testkit.testrun import RUN

POLICY = RelayPolicy(max_attempts=3, backoff=0.01, backoff_cap=0.05)


def write(database: Database, stream: str, count: int) -> None:
    with database.factory() as session, session.begin():
        for i in range(count):
            append(session, stream, "project-updated", {"i": i})


def cursor(database: Database, stream: str) -> RelayCursor:
    with database.factory() as session:
        row = session.get(RelayCursor, stream)
        assert row is not None
        return row


def test_relay_publishes_each_stream_in_offset_order_and_advances_its_cursor(db: Database
                                                                             ) -> None:
    write(db, "project-1", 5)
    write(db, "project-2", 3)
    publisher = MemoryPublisher()
    report = relay(session_factory=db.factory, publisher=publisher, policy=POLICY)
    assert report.published == 8
    by_stream: dict[str, list[int]] = {}
    for event in publisher.published:
        by_stream.setdefault(event.stream, []).append(event.offset)
    assert by_stream == {"project-1": [1, 2, 3, 4, 5], "project-2": [1, 2, 3]}
    assert cursor(db, "project-1").dispatched == 5
    assert cursor(db, "project-2").dispatched == 3


def test_relay_is_idempotent_once_everything_is_dispatched(db: Database) -> None:
    write(db, "user-1", 2)
    publisher = MemoryPublisher()
    relay(session_factory=db.factory, publisher=publisher, policy=POLICY)
    again = relay(session_factory=db.factory, publisher=publisher, policy=POLICY)
    assert again.published == 0 and len(publisher.published) == 2


def test_relay_pages_through_a_stream_longer_than_one_batch(db: Database) -> None:
    write(db, "project-1", 25)
    publisher = MemoryPublisher()
    small = RelayPolicy(max_events=10, max_streams=1)
    relay(session_factory=db.factory, publisher=publisher, policy=small)
    assert [e.offset for e in publisher.published] == list(range(1, 26))


class Batches:
    """A publisher that keeps each batch it was given as {stream: events}: of records
    (the ORM path); RowBatches also takes rows (PostgreSQL's row path)."""

    def __init__(self) -> None:
        self.batches: list[dict[str, list[int]]] = []

    def keep(self, pairs: list[tuple[str, int]]) -> None:
        batch: dict[str, list[int]] = {}
        for stream, offset in pairs:
            batch.setdefault(stream, []).append(offset)
        self.batches.append(batch)

    def publish(self, events: Sequence[EventRecord]) -> None:
        self.keep([(e.stream, e.offset) for e in events])

    def close(self) -> None:
        pass


class RowBatches(Batches):
    def publish_rows(self, rows: Sequence[Row]) -> None:
        self.keep([(r.stream, r.offset) for r in rows])


LIGHT = RelayPolicy(max_streams=2, max_events=500, light_streams=6, light_events=3)


@pytest.mark.parametrize("publisher", [Batches, RowBatches], ids=["records", "rows"])
def test_after_a_batch_of_light_streams_the_next_claims_up_to_the_light_caps(
        db: Database, publisher: type[Batches]) -> None:
    """A batch that claimed all it could, an event each, is followed by batches of up to
    `light_streams` streams (one round of claim, publish and commit for many streams)."""
    for n in range(1, 15):
        write(db, f"user-{n}", 1)
    sent = publisher()
    report = relay(session_factory=db.factory, publisher=sent, policy=LIGHT)
    assert report.published == 14
    assert [len(batch) for batch in sent.batches] == [2, 6, 6]
    assert sorted(stream for batch in sent.batches for stream in batch) == \
        sorted(f"user-{n}" for n in range(1, 15))


def test_a_light_batch_that_cuts_a_stream_short_makes_the_next_one_narrow(
        db: Database) -> None:
    """A light batch sends at most `light_events` of a stream; finding one with more, the
    next batch claims `max_streams` with `max_events` each again. Every event goes out
    once, in offset order. (Streams claimed in name order: the ORM path.)"""
    for n in (1, 2):
        write(db, f"project-{n}", 1)
    write(db, "project-3", 10)
    for n in range(4, 9):
        write(db, f"project-{n}", 1)
    sent = Batches()
    relay(session_factory=db.factory, publisher=sent, policy=LIGHT)
    assert sent.batches == [
        {"project-1": [1], "project-2": [1]},
        {"project-3": [1, 2, 3], **{f"project-{n}": [1] for n in range(4, 9)}},
        {"project-3": [4, 5, 6, 7, 8, 9, 10]}]


def test_cursor_does_not_move_while_redis_is_unreachable_and_events_go_out_later(
    db: Database, redis_url: str,
) -> None:
    write(db, "project-1", 3)
    dead = RedisPublisher(f"redis://127.0.0.1:{free_port()}/0", channel="x", timeout=0.5)
    report = relay(session_factory=db.factory, publisher=dead, policy=POLICY)
    assert report.transport_down and report.published == 0
    assert cursor(db, "project-1").dispatched == 0
    assert cursor(db, "project-1").attempts == 0  # an outage is not the stream's fault

    channel = f"relay-test-{RUN}"
    received = subscribe(redis_url, channel, ["project-1"])
    live = RedisPublisher(redis_url, channel=channel)
    try:
        report = relay(session_factory=db.factory, publisher=live, policy=POLICY)
        assert report.published == 3
        messages = received.wait(3)
        assert [m["data"][1]["offset"] for m in messages] == [1, 2, 3]
        assert cursor(db, "project-1").dispatched == 3
    finally:
        received.stop()
        live.close()


def test_refused_stream_backs_off_then_fails_while_other_streams_flow(db: Database) -> None:
    write(db, "project-1", 2)
    write(db, "project-2", 2)
    publisher = MemoryPublisher()
    publisher.fail_streams["project-1"] = "ResponseError: refused"
    policy = RelayPolicy(max_attempts=3, backoff=0.2, backoff_cap=1)
    report = relay(session_factory=db.factory, publisher=publisher, policy=policy)
    assert [e.stream for e in publisher.published] == ["project-2", "project-2"]
    assert report.rejected == {"project-1": "ResponseError: refused"}
    first = cursor(db, "project-1")
    assert first.dispatched == 0 and first.attempts == 1 and first.state == "active"
    assert first.next_attempt_at is not None
    def failed_after_a_retry() -> bool:
        relay(session_factory=db.factory, publisher=publisher, policy=policy)
        return cursor(db, "project-1").state == "failed"

    eventually(failed_after_a_retry, "project-1 never failed", timeout=5)
    failed = cursor(db, "project-1")
    assert failed.state == "failed" and failed.attempts == 3
    assert failed.last_error == "ResponseError: refused"


def test_relay_message_is_python_socketio_emit_format() -> None:
    record = EventRecord("id-1", "project-1", 1, "ep", "project-updated", {"a": 1},
                         datetime(2026, 1, 1, tzinfo=UTC))
    [raw] = socketio_messages([record])
    message = json.loads(raw)
    assert message["method"] == "emit" and message["event"] == "project-updated"
    assert message["room"] == "project-1" and message["namespace"] == "/"
    assert message["data"] == [{"a": 1}, record.meta]


class Subscription:
    """A raw Redis subscriber on a channel, collecting decoded messages."""

    def __init__(self, url: str, channel: str, streams: list[str]) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = subscribed(self.client, channel, streams)
        self.messages: list[dict[str, Any]] = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            message = self.pubsub.get_message(timeout=0.1)
            if message and message["type"] in ("message", "smessage"):
                self.messages.append(json.loads(message["data"]))

    def wait(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        eventually(lambda: len(self.messages) >= count,
                   lambda: f"{count} messages expected, got {self.messages}", timeout, 0.01)
        return list(self.messages)

    def stop(self) -> None:
        self.running = False
        self.thread.join(2)
        self.pubsub.close()
        self.client.close()


def subscribe(url: str, channel: str, streams: list[str]) -> Subscription:
    return Subscription(url, channel, streams)  # subscribed: Redis confirmed it



def test_the_relays_cursor_advance_is_a_hot_update_on_bulk_loaded_pages(
        pg_db: Database) -> None:
    # Pages filled by one bulk insert, as a restore or a backfill fills them: without room
    # left on the page (migration 0006), each advanced cursor is a new index entry.
    with pg_db.engine.begin() as conn:
        conn.execute(text("INSERT INTO streams (name, epoch, head, pruned_through, created_at) "
                          "SELECT 'user-' || g, 'e', 1, 0, now() "
                          "FROM generate_series(1, 5000) AS g"))
        conn.execute(text("INSERT INTO relay_cursors (stream, dispatched, state, attempts) "
                          "SELECT 'user-' || g, 0, 'active', 0 "
                          "FROM generate_series(1, 5000) AS g"))
    streams = [f"user-{g}" for g in range(1, 5001, 7)]
    with pg_db.engine.connect() as conn:
        tids = conn.execute(text("SELECT ctid::text FROM relay_cursors "
                                 "WHERE stream = ANY(:streams) FOR UPDATE"),
                            {"streams": streams}).scalars().all()
        conn.exec_driver_sql(relay_module._ADVANCE,  # the relay's statement, as it runs it
                             relay_module.advance_params(list(tids), [1] * len(tids)))
        hot, updated = conn.execute(text(
            "SELECT pg_stat_get_xact_tuples_hot_updated('relay_cursors'::regclass), "
            "pg_stat_get_xact_tuples_updated('relay_cursors'::regclass)")).one()
        conn.commit()
    assert (hot, updated) == (len(streams), len(streams))


LEFT = [f"user-{g:05d}" for g in range(19901, 20001)]


def _a_queue_whose_statistics_count_far_more_marks(pg_db: Database) -> None:
    """20,000 streams marked and analysed, then all but the last 100 (LEFT, whose cursors
    are behind their one event) caught up and their marks deleted: no vacuum since."""
    with pg_db.engine.begin() as conn:
        conn.execute(text("INSERT INTO streams (name, epoch, head, pruned_through, created_at) "
                          "SELECT 'user-' || lpad(g::text, 5, '0'), 'e', 1, 0, now() "
                          "FROM generate_series(1, 20000) AS g"))
        conn.execute(text("INSERT INTO relay_cursors (stream, dispatched, state, attempts) "
                          "SELECT 'user-' || lpad(g::text, 5, '0'), "
                          "CASE WHEN g > 19900 THEN 0 ELSE 1 END, 'active', 0 "
                          "FROM generate_series(1, 20000) AS g"))
        conn.execute(text('INSERT INTO events (id, stream, "offset", type, payload, created_at) '
                          "SELECT gen_random_uuid()::text, 'user-' || lpad(g::text, 5, '0'), 1, "
                          "'t', '{}', now() FROM generate_series(19901, 20000) AS g"))
        conn.execute(text("INSERT INTO pending_streams (name, head, epoch, since) "
                          "SELECT name, head, epoch, created_at FROM streams"))
    pg_db.analyse("pending_streams")
    with pg_db.engine.begin() as conn:  # the relay caught up: no vacuum has run since
        conn.execute(text("DELETE FROM pending_streams WHERE name <= 'user-19900'"))


def test_the_claim_looks_up_each_marks_cursor_even_when_statistics_count_far_more_marks(
        pg_db: Database) -> None:
    """`pending_streams` is a queue: between two vacuums its statistics may count thousands
    of marks where a hundred are left. The claim still looks up those hundred cursors;
    it does not walk the cursors' index from its first name to the marks' (a merge join:
    here 19,900 entries; at a million streams, batch after batch, a drain 10x slower)."""
    _a_queue_whose_statistics_count_far_more_marks(pg_db)
    looked_up: list[int] = []
    with pg_db.engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None

        def publish(rows: Any) -> None:  # in the relay's transaction, after its claim
            [fetched] = driver.execute("SELECT pg_stat_get_xact_tuples_fetched("
                                       "'relay_cursors'::regclass)").fetchone()
            looked_up.append(fetched)

        report = relay_module.RelayReport()
        relay_module._relay_rows(conn=driver, publish=publish, policy=RelayPolicy(),
                                 caps=RelayPolicy().caps(False), streams=None,
                                 clock=lambda: datetime.now(UTC), report=report,
                                 on_published=None)
    assert report.published == 100
    assert looked_up and looked_up[0] <= 200, f"{looked_up} cursors read for 100"


def test_the_claim_reads_each_streams_events_by_its_index_even_when_streams_hold_many(
        pg_db: Database) -> None:
    """Streams with a long history (here 300 events each, 60,000 in all, analysed) and a
    few events pending: the claim reads the pending events of each claimed stream from
    `uq_events_stream_offset`. With a plain join the planner hashed the claimed streams
    against a sequential scan of the whole events table, batch after batch (at 430,000
    events, 73 ms a batch instead of 3 ms: a relay 8x slower)."""
    with pg_db.engine.begin() as conn:
        conn.execute(text("INSERT INTO streams (name, epoch, head, pruned_through, created_at) "
                          "SELECT 'project-' || g, 'e', 300, 0, now() "
                          "FROM generate_series(1, 200) AS g"))
        conn.execute(text("INSERT INTO relay_cursors (stream, dispatched, state, attempts) "
                          "SELECT 'project-' || g, 295, 'active', 0 "
                          "FROM generate_series(1, 200) AS g"))
        conn.execute(text('INSERT INTO events (id, stream, "offset", type, payload, created_at) '
                          "SELECT gen_random_uuid()::text, 'project-' || g, k, 't', '{}', now() "
                          "FROM generate_series(1, 200) AS g, generate_series(1, 300) AS k"))
        conn.execute(text("INSERT INTO pending_streams (name, head, epoch, since) "
                          "SELECT name, head, epoch, created_at FROM streams"))
    pg_db.analyse()
    scans: list[int] = []
    with pg_db.engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        count = "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'events'"
        [before] = driver.execute(count).fetchone()

        def publish(rows: Any) -> None:  # in the relay's transaction, after its claim
            [after] = driver.execute(count).fetchone()
            scans.append(after - before)

        report = relay_module.RelayReport()
        relay_module._relay_rows(conn=driver, publish=publish, policy=RelayPolicy(),
                                 caps=RelayPolicy().caps(False), streams=None,
                                 clock=lambda: datetime.now(UTC), report=report,
                                 on_published=None)
    assert report.published == 100 * 5
    assert scans == [0], f"{scans} sequential scans of the events"


def test_the_clear_looks_up_each_mark_even_when_statistics_count_far_more_marks(
        pg_db: Database) -> None:
    """The clear deletes the marks of the streams a batch caught up by looking each one up
    by its name: not by hashing the whole queue (a sequential scan of its dead rows too),
    which the planner chose when its statistics counted far more marks than were left."""
    _a_queue_whose_statistics_count_far_more_marks(pg_db)
    scans = text("SELECT seq_scan FROM pg_stat_xact_user_tables "
                 "WHERE relname = 'pending_streams'")
    with pg_db.engine.connect() as conn:  # the counts not yet reported, before and after
        before = conn.execute(scans).scalar()
        cleared = conn.exec_driver_sql(relay_module.CLEAR_SQL,
                                       relay_module.clear_params(dict.fromkeys(LEFT, 1)))
        after = conn.execute(scans).scalar()
        conn.commit()
    assert cleared.rowcount == len(LEFT)
    assert after == before, f"{after - before} sequential scans of the queue"


def test_a_rotation_goes_on_after_the_last_mark_and_wraps_once_before_it_stops() -> None:
    rotation = relay_module.Rotation()
    rotation.last = "user-2"
    assert rotation.go_on(True) and rotation.after == "user-2"  # a full batch: on from there
    rotation.last = "user-6"
    assert rotation.go_on(False) and rotation.after is None  # the end: from the start again
    rotation.last = "user-1"
    assert not rotation.go_on(False)  # every mark walked, a batch to spare: the run is done


def test_a_run_claims_a_backlog_in_turn_while_new_marks_keep_taking_the_first_places(
        pg_db: Database) -> None:
    """Two streams a batch, six pending; after each batch two new streams are written
    whose marks take the places the relay just freed at the start of `pending_streams`
    (vacuumed). Each batch starts after the last mark the previous one claimed, so the
    backlog goes out in turn; with every claim from the start, the last four of the six
    would wait as long as new streams kept coming."""
    for n in range(11, 17):
        write(pg_db, f"project-{n}", 1)
    policy = RelayPolicy(max_streams=2, light_streams=2)
    publisher = MemoryPublisher()
    batches: list[set[str]] = []
    fresh = iter(range(1, 9))

    def after_batch(rows: Sequence[Any]) -> None:
        batches.append({row.stream for row in rows})
        with pg_db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM pending_streams"))
        if len(batches) < 4:
            for _ in range(2):
                write(pg_db, f"project-{next(fresh)}", 1)

    report = relay(session_factory=pg_db.factory, publisher=publisher, policy=policy,
                   on_published=after_batch)
    assert batches[:3] == [{"project-11", "project-12"}, {"project-13", "project-14"},
                           {"project-15", "project-16"}], batches
    assert report.published == 6 + 6  # and the new streams too, before the run ended


def test_on_sqlite_a_run_claims_a_backlog_in_turn_by_name(sqlite_db: Database) -> None:
    """The ORM path walks the marks by name: after a full batch the next claim starts
    after the last name claimed, whatever streams named before it were written since."""
    for n in range(11, 17):
        write(sqlite_db, f"project-{n}", 1)
    policy = RelayPolicy(max_streams=2, light_streams=2)
    publisher = MemoryPublisher()
    rotation, report, batches = relay_module.Rotation(), relay_module.RelayReport(), []
    before = iter(["project-1", "project-10", "project-100", "project-1000", "project-10000"])
    for _ in range(5):
        published = len(publisher.published)
        full, _light = relay_module._relay_batch(
            session_factory=sqlite_db.factory, publisher=publisher, policy=policy,
            caps=policy.caps(False), streams=None, clock=lambda: datetime.now(UTC),
            report=report, on_published=None, rotation=rotation)
        batches.append({e.stream for e in publisher.published[published:]})
        assert rotation.go_on(full)
        write(sqlite_db, next(before), 1)  # named before every stream of the backlog
    assert batches == [{"project-11", "project-12"}, {"project-13", "project-14"},
                       {"project-15", "project-16"}, set(),  # the end: from the start again
                       {"project-1", "project-10"}], batches


def _refused(database: Database, names: Sequence[str], policy: RelayPolicy) -> None:
    """Each of `names` has an event that Redis refused, under `policy`."""
    for name in names:
        write(database, name, 1)
    publisher = MemoryPublisher()
    publisher.fail_streams.update({name: "ResponseError: refused" for name in names})
    relay(session_factory=database.factory, publisher=publisher, policy=policy, streams=names)


def _not_before(database: Database, stream: str) -> datetime | None:
    with database.factory() as session:
        mark = session.get(PendingStream, stream)
        assert mark is not None
        return mark.not_before


def test_a_claim_passes_the_marks_of_waiting_streams_by_without_reading_their_cursors(
        pg_db: Database) -> None:
    """Streams whose events Redis refused wait, on a backoff or failed; their marks say
    until when (`not_before`), and a claim passes them by. It used to read each one's
    cursor, every claim: 10,000 streams waiting on a backoff made an idle claim about
    45 ms instead of 1.5 (2.9 now)."""
    _refused(pg_db, [f"project-{k}" for k in range(1, 21)], RelayPolicy(max_attempts=1))
    _refused(pg_db, [f"ticket-{k}" for k in range(1, 21)],
             RelayPolicy(backoff=60, backoff_cap=60))
    claimed, plan = _claim_plan(pg_db)
    assert claimed == []
    read = _rows_read(plan, "relay_cursors")
    assert read == 0, f"{read} cursors read for 40 waiting streams"


def _marks(pg_db: Database, first: int, last: int, not_before: str | None) -> None:
    """Streams `user-{first}`..`user-{last}` (zero-padded) with one event each that the relay
    has not sent, marked pending with `not_before` (SQL; NULL: ready), set-based, the marks
    in no order of their names (as writers mark streams); a failed stream's cursor says
    so."""
    failed = not_before == "9999-12-31"
    with pg_db.engine.begin() as conn:
        names = "'user-' || lpad(g::text, 5, '0')"
        series = "generate_series(CAST(:first AS int), CAST(:last AS int)) AS g"
        bounds = {"first": first, "last": last}
        conn.execute(text(f"INSERT INTO streams (name, epoch, head, pruned_through, "
                          f"created_at) SELECT {names}, 'e', 1, 0, now() FROM {series}"), bounds)
        conn.execute(text(f"INSERT INTO relay_cursors (stream, dispatched, state, attempts, "
                          f"failed_at) SELECT {names}, 0, :state, 0, :at FROM {series}"),
                     {**bounds, "state": "failed" if failed else "active",
                      "at": datetime.now(UTC) if failed else None})
        conn.execute(text(f'INSERT INTO events (id, stream, "offset", type, payload, '
                          f"created_at) SELECT gen_random_uuid()::text, {names}, 1, 't', '{{}}', "
                          f"now() FROM {series}"), bounds)
        conn.execute(text(f"INSERT INTO pending_streams (name, head, epoch, since, not_before) "
                          f"SELECT {names}, 1, 'e', now(), CAST(:nb AS timestamptz) "
                          f"FROM {series} ORDER BY random()"), {**bounds, "nb": not_before})


def _claim_plan(pg_db: Database, max_streams: int = 100) -> tuple[list[Any], dict[str, Any]]:
    """The rows of a claim of every pending stream, run as the relay runs it (after
    `_CLAIM_PLAN`), and its plan (EXPLAIN ANALYZE's JSON), in a transaction rolled back."""
    params = {"now": datetime.now(UTC), "max_streams": max_streams, "max_events": 500,
              "after": ""}
    with pg_db.engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute(relay_module._CLAIM_PLAN)
        claimed = driver.execute(relay_module._CLAIM_ALL, params).fetchall()
        driver.rollback()
        driver.execute(relay_module._CLAIM_PLAN)
        [[plan]] = driver.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + relay_module._CLAIM_ALL,
                                  params).fetchall()
        driver.rollback()
    return claimed, plan[0]["Plan"]


def _rows_read(plan: dict[str, Any], relation: str) -> int:
    """The rows the plan's scans of `relation` read: those they returned and those their
    filters removed (EXPLAIN gives both per loop)."""
    return sum((int(node.get("Actual Rows", 0)) + int(node.get("Rows Removed by Filter", 0)))
               * int(node.get("Actual Loops", 1))
               for node in _nodes(plan) if node.get("Relation Name") == relation)


def test_a_claim_reads_no_mark_of_a_stream_that_still_waits(pg_db: Database) -> None:
    """3,000 failed streams and 50 on a backoff wait; two streams are ready and one's
    backoff has ended. The claim takes those three and reads no other mark: it walks the
    ready marks' index and the waiting marks' index up to now. It used to walk every mark
    of the table (100,000 failed streams: 18 ms an idle relay(); 1.5 ms now)."""
    _marks(pg_db, 1, 3000, "9999-12-31")
    _marks(pg_db, 3001, 3050, "2999-01-01")
    _marks(pg_db, 3051, 3052, None)
    _marks(pg_db, 3053, 3053, "2000-01-01")  # its backoff has ended
    pg_db.analyse()
    claimed, plan = _claim_plan(pg_db)
    assert sorted({row[0] for row in claimed}) == ["user-03051", "user-03052", "user-03053"]
    read = _rows_read(plan, "pending_streams")
    assert read == 3, f"{read} marks read for 3 ready"


def test_the_claim_walks_the_ready_marks_in_order_when_statistics_count_few_of_them(
        pg_db: Database) -> None:
    """Analysed while 3,000 streams had failed and 5 were ready, then a notice marks 5,000
    more: the statistics count a few ready marks. The claim of 100 still reads about 100
    ready marks (an ordered walk of their index that the LIMIT stops), not all 5,005 (a
    bitmap scan of the index and a sort, which the planner takes when it counts few,
    batch after batch until the next analyse)."""
    _marks(pg_db, 1, 3000, "9999-12-31")
    _marks(pg_db, 3001, 3005, None)
    pg_db.analyse()
    _marks(pg_db, 3006, 8005, None)
    claimed, plan = _claim_plan(pg_db)
    assert len({row[0] for row in claimed}) == 100
    read = _rows_read(plan, "pending_streams")
    assert read <= 110, f"{read} marks read for a claim of 100"


def test_the_claim_looks_up_each_cursor_by_its_stream_when_statistics_count_none_active(
        pg_db: Database) -> None:
    """Analysed when every stream had failed (an incident), then a notice to 5,000 new
    streams: the statistics count no active cursor. The claim of 100 still looks up each
    mark's cursor by its stream (100 read); it walked every active cursor of the state
    index for each mark (495,100 read), until the next analyse."""
    _marks(pg_db, 1, 3000, "9999-12-31")
    pg_db.analyse()
    _marks(pg_db, 3001, 8000, None)
    claimed, plan = _claim_plan(pg_db)
    read = _rows_read(plan, "relay_cursors")
    assert len({row[0] for row in claimed}) == 100
    assert read <= 110, f"{read} cursors read for a claim of 100"


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    """A plan's node and every node under it (EXPLAIN's JSON)."""
    return [node, *(n for child in node.get("Plans", []) for n in _nodes(child))]


def test_a_failed_streams_mark_waits_for_an_operators_retry_then_its_events_go_out(
        db: Database) -> None:
    _refused(db, ["project-1"], RelayPolicy(max_attempts=1))
    assert cursor(db, "project-1").state == "failed"
    failed_until = _not_before(db, "project-1")
    assert failed_until is not None and failed_until.year == FAILED_NOT_BEFORE.year
    publisher = MemoryPublisher()
    assert relay(session_factory=db.factory, publisher=publisher, policy=POLICY).published == 0
    assert ops.retry(db.factory, streams=["project-1"]).retried == ["project-1"]
    assert _not_before(db, "project-1") is None
    assert relay(session_factory=db.factory, publisher=publisher, policy=POLICY).published == 1


def test_a_streams_mark_says_when_its_backoff_ends_and_it_is_claimed_then(
        db: Database) -> None:
    _refused(db, ["project-1"], RelayPolicy(backoff=0.3, backoff_cap=0.3))
    waiting = cursor(db, "project-1")
    until = _not_before(db, "project-1")
    assert until is not None and waiting.next_attempt_at is not None
    assert until.replace(tzinfo=None) == waiting.next_attempt_at.replace(tzinfo=None)
    publisher = MemoryPublisher()
    assert relay(session_factory=db.factory, publisher=publisher, policy=POLICY).published == 0

    def relayed() -> bool:
        relay(session_factory=db.factory, publisher=publisher, policy=POLICY)
        return len(publisher.published) == 1

    eventually(relayed, "project-1 was not claimed once its backoff ended", timeout=5)
