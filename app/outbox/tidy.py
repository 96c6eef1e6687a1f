"""VACUUM of the outbox's two queue tables, from each worker's relay thread.

`pending_streams` holds a row per pending stream: a write inserts or updates its
stream's mark, the relay deletes it once the stream is caught up. `outbox_counts` gets a
delta row per write statement, folded into one row every second (app.outbox.counts).
Both hold a few live rows, but every row they ever held stays behind as a dead version
until a VACUUM, and the relay's claim walks the marks' pages from the start: after a
notice to a million streams, relayed, an idle claim took 25-34 ms instead of about 1 ms,
and stayed so as long as nothing vacuumed the table (docs/scaling.md, "Dead marks after
a fanout"). Autovacuum comes back to a table about once a minute at best, throttled by
its cost delay, and a server may run without it.

So the relay thread (workers/sweeper.py), every TIDY_EVERY seconds while it relays and
for TIDY_AFTER seconds after, reads how many dead rows the two tables hold (PostgreSQL's
count in `pg_stat_user_tables`, which a busy backend brings up to date about once a
second, an idle one within 10 s) and VACUUMs each table with at least DEAD_ROWS of them.
Such a VACUUM takes milliseconds (31 ms for 100,000 dead marks, 543 ms for a million),
frees the pages for new rows and gives the empty ones at the table's end back (the
claim then walks a handful of pages again); with `SKIP_LOCKED` a table already being
vacuumed (by autovacuum, by another worker) is left to that VACUUM. A role that does not
own the tables gets PostgreSQL's warning and nothing happens. Nothing to do on SQLite.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import Engine

log = logging.getLogger("herald.tidy")

TABLES = ("pending_streams", "outbox_counts")
DEAD_ROWS = 10_000  # about 130 pages of marks: a claim from the start walks 0.4 ms more
TIDY_EVERY = 5.0  # seconds between two looks at the tables' dead rows, per relay thread
TIDY_AFTER = 15.0  # seconds the looks go on after the thread last relayed something

# Each of TABLES' dead rows by PostgreSQL's statistics, and its size in pages now (a
# table of another schema of the same name is not one of these: the OIDs come from the
# search path, as every statement of Herald's names them).
_STATS = f"""
SELECT t.relname, t.n_dead_tup, pg_relation_size(t.relid) / current_setting('block_size')::int
FROM pg_stat_user_tables AS t
WHERE t.relid IN ({", ".join(f"'{table}'::regclass" for table in TABLES)})
ORDER BY t.relname
"""
_PAGES = "SELECT pg_relation_size(%(table)s::regclass) / current_setting('block_size')::int"


@dataclass(frozen=True, slots=True)
class Vacuumed:
    """One table vacuumed: its dead rows then, its pages before and after, how long."""

    table: str
    dead: int
    pages_before: int
    pages_after: int
    ms: float


def tidy(engine: Engine, dead_rows: int = DEAD_ROWS) -> list[Vacuumed]:
    """VACUUM each of TABLES that holds at least `dead_rows` dead rows (on PostgreSQL;
    nothing elsewhere); what was vacuumed, each logged in one line."""
    if engine.dialect.name != "postgresql":
        return []
    done: list[Vacuumed] = []
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")  # VACUUM's rule
        for table, dead, pages in conn.exec_driver_sql(_STATS).all():
            if int(dead) < dead_rows:
                continue
            start = time.perf_counter()
            conn.exec_driver_sql(f"VACUUM (SKIP_LOCKED) {table}")
            ms = 1000 * (time.perf_counter() - start)
            after = int(conn.exec_driver_sql(_PAGES, {"table": table}).scalar_one())
            done.append(Vacuumed(table, int(dead), int(pages), after, ms))
            log.info("outbox table vacuumed table=%s dead=%d pages=%d->%d ms=%.1f",
                     table, int(dead), int(pages), after, ms)
    return done


def tidy_on(engine: Engine, dead_rows: int = DEAD_ROWS) -> list[Vacuumed]:
    """`tidy`; a failure is logged, never raised (the next look tries again)."""
    try:
        return tidy(engine, dead_rows)
    except Exception as exc:
        log.warning("outbox tables not vacuumed error=%s", type(exc).__name__)
        return []
