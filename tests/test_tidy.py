"""The outbox's queue tables are vacuumed by the relay thread once they churned: after a
notice to many streams is relayed, the claim walks a handful of pages again, not every
mark the table ever held (app/outbox/tidy.py).

The tests that read PostgreSQL's dead-row counts run on a database of their own
(`own_pg_db`): on the process's shared `pg_db` an earlier test's counts could arrive after
the TRUNCATE, and `tidy` saw 1,277 dead marks where the test made 200."""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from app.outbox.publisher import MemoryPublisher
from app.outbox.relay import _CLAIM_ALL, RelayPolicy, relay
from app.outbox.tidy import DEAD_ROWS, tidy
from app.outbox.writer import append_rows
from testkit.databases import Database
from testkit.eventually import eventually
from testkit.system import System

POLICY = RelayPolicy()
VACUUMED = re.compile(r"outbox table vacuumed table=pending_streams dead=(\d+) "
                      r"pages=(\d+)->(\d+)")


def notice(factory: sessionmaker[Session], streams: int) -> None:
    """A notice to `streams` `user-{k}` streams, written in batches of 1,000 (no nudge)."""
    for first in range(0, streams, 1000):
        rows = [(f"user-{k}", "notification", {"type": "info", "title": "hi", "message": ""})
                for k in range(first + 1, min(streams, first + 1000) + 1)]
        with factory() as session, session.begin():
            append_rows(session, rows)


def fanout(database: Database, streams: int) -> None:
    """A notice to `streams` streams, relayed."""
    notice(database.factory, streams)
    report = relay(session_factory=database.factory, publisher=MemoryPublisher(),
                   policy=POLICY)
    assert report.published == streams


def table_stats(database: Database, table: str) -> tuple[int, int]:
    """(dead rows by PostgreSQL's statistics, pages) of `table`."""
    with database.engine.connect() as conn:
        dead, pages = conn.execute(text(
            "SELECT n_dead_tup, pg_relation_size(relid) / current_setting('block_size')::int "
            "FROM pg_stat_user_tables WHERE relid = CAST(:t AS regclass)"), {"t": table}).one()
    return int(dead), int(pages)


def counted_dead(database: Database, table: str, at_least: int) -> None:
    """Until PostgreSQL's statistics count `at_least` dead rows in `table`: the relay's
    connections are closed first, which sends their counts at once."""
    database.engine.dispose()
    eventually(lambda: table_stats(database, table)[0] >= at_least,
               f"{table}: fewer than {at_least} dead rows counted", timeout=15)


def idle_claim_buffers(database: Database) -> int:
    """Buffers the relay's claim reads with nothing pending (EXPLAIN ANALYZE, rolled back)."""
    params: dict[str, Any] = {"now": "2000-01-01T00:00:00Z", "max_streams": 100,
                              "max_events": 500, "after": ""}
    with database.engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + _CLAIM_ALL,
                                    params).scalar_one()
        conn.rollback()
    top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    return int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


def test_a_relayed_fanout_leaves_dead_marks_that_tidy_vacuums_and_gives_back(
        own_pg_db: Database) -> None:
    fanout(own_pg_db, 3000)
    counted_dead(own_pg_db, "pending_streams", 3000)
    _dead, pages = table_stats(own_pg_db, "pending_streams")
    done = {v.table: v for v in tidy(own_pg_db.engine, dead_rows=1000)}
    marks = done["pending_streams"]
    assert marks.dead >= 3000 and marks.pages_before == pages > 0
    assert marks.pages_after == 0  # every mark was cleared: the empty pages given back
    assert table_stats(own_pg_db, "pending_streams") == (0, 0)


def test_after_tidy_an_idle_claim_reads_a_handful_of_pages_not_every_dead_mark(
        own_pg_db: Database) -> None:
    fanout(own_pg_db, 3000)
    counted_dead(own_pg_db, "pending_streams", 3000)
    before = idle_claim_buffers(own_pg_db)
    tidy(own_pg_db.engine, dead_rows=1000)
    after = idle_claim_buffers(own_pg_db)
    assert before >= 30, before  # 3,000 dead marks: dozens of pages walked
    assert after <= 3, after


def test_the_outbox_counts_churned_by_the_fold_are_vacuumed_too(own_pg_db: Database) -> None:
    """The fold deletes `outbox_counts`' delta rows every second: 2,000 zero rows, added
    and deleted (the sums unchanged), stand for 2,000 folded ones."""
    with own_pg_db.engine.begin() as conn:
        conn.execute(text("INSERT INTO outbox_counts (appended, dispatched, marked, failed, "
                          "retrying) SELECT 0, 0, 0, 0, 0 FROM generate_series(1, 2000)"))
        conn.execute(text("DELETE FROM outbox_counts WHERE appended = 0 AND dispatched = 0 "
                          "AND marked = 0 AND failed = 0 AND retrying = 0"))
    counted_dead(own_pg_db, "outbox_counts", 2000)
    done = {v.table: v for v in tidy(own_pg_db.engine, dead_rows=1000)}
    assert done["outbox_counts"].dead >= 2000
    assert table_stats(own_pg_db, "outbox_counts")[0] == 0


def test_tables_with_fewer_dead_rows_than_the_bound_are_left_alone(own_pg_db: Database) -> None:
    fanout(own_pg_db, 200)
    counted_dead(own_pg_db, "pending_streams", 200)
    _dead, pages = table_stats(own_pg_db, "pending_streams")
    assert tidy(own_pg_db.engine, dead_rows=1000) == []
    assert table_stats(own_pg_db, "pending_streams")[1] == pages > 0


def test_tidy_does_nothing_on_sqlite(sqlite_db: Database) -> None:
    fanout(sqlite_db, 50)
    assert tidy(sqlite_db.engine, dead_rows=1) == []


def test_a_worker_vacuums_the_marks_of_a_fanout_it_relayed(pg_system: System) -> None:
    """A real worker's relay thread, its default bound (10,000 dead rows): a notice to
    12,000 streams, written with no nudge, is relayed by the worker's sweep, and the
    same thread then vacuums the 12,000 dead marks away."""
    logs = {id(w): len(w.log()) for w in pg_system.workers}  # earlier tests' lines: not these
    notice(pg_system.factory, 12_000)

    def vacuumed() -> list[tuple[int, int, int]]:
        return [(int(dead), int(before), int(after)) for w in pg_system.workers
                for dead, before, after in VACUUMED.findall(w.log()[logs[id(w)]:])]

    eventually(vacuumed, "no worker vacuumed pending_streams", timeout=60)
    dead, before, after = vacuumed()[0]
    assert dead >= DEAD_ROWS and after < before
