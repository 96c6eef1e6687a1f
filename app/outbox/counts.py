"""The outbox's totals without a scan: sums of the delta rows that triggers keep.

Every change to `streams` or `relay_cursors` adds its delta to `outbox_counts` in its own
transaction (migration 0005), so in any snapshot the sums equal a full recount of the
tables: events appended (the sum of heads), dispatched (the sum of cursors), streams
marked pending, failed streams, retrying streams. On PostgreSQL each statement inserts a
row (writers never wait on a counter row), on SQLite one per changed row; `fold`
replaces the rows by their sum, so a read sums a few rows. Each worker's relay thread
folds once a second (workers/sweeper.py); a read that finds more than FOLD_AT rows too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Connection, Engine, Table, delete, func, insert, select
from sqlalchemy.orm import Session

from app.outbox.tables import OutboxCount

log = logging.getLogger("herald.counts")

FOLD_AT = 1000

# One statement: the rows this snapshot sees are deleted and their sum inserted. A
# concurrent fold waits on the rows' locks, then finds them gone and skips them; rows
# inserted meanwhile are not seen, so not deleted: nothing is counted twice or lost.
FOLD_SQL = """
WITH gone AS (DELETE FROM outbox_counts
              RETURNING appended, dispatched, marked, failed, retrying)
INSERT INTO outbox_counts (appended, dispatched, marked, failed, retrying)
SELECT sum(appended), sum(dispatched), sum(marked), sum(failed), sum(retrying)
FROM gone HAVING count(*) > 0
"""


@dataclass(frozen=True, slots=True)
class Totals:
    """The outbox's totals in one snapshot."""

    appended: int
    dispatched: int
    marked: int
    failed: int
    retrying: int

    @property
    def pending(self) -> int:
        """Events appended and not yet dispatched (every cursor is at most its head)."""
        return self.appended - self.dispatched


def read(session: Session) -> Totals:
    """The totals as the session's snapshot sees them; folds the rows if they are many."""
    c = OutboxCount
    rows, *sums = session.execute(
        select(func.count(), *[func.coalesce(func.sum(col), 0) for col in
                               (c.appended, c.dispatched, c.marked, c.failed, c.retrying)])
    ).one()
    if rows > FOLD_AT:
        bind = session.get_bind()
        fold_on(bind if isinstance(bind, Engine) else bind.engine)
    return Totals(*(int(v) for v in sums))


def fold_on(engine: Engine) -> None:
    """`fold` in a transaction of its own; a failure is logged, never raised (the rows
    stay, and still sum to the totals)."""
    try:
        with engine.connect() as conn:
            fold(conn)
            conn.commit()
    except Exception as exc:
        log.warning("outbox counts fold failed error=%s", type(exc).__name__)


def fold(conn: Connection) -> None:
    """Replace the delta rows by one row of their sums, in the connection's transaction."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(FOLD_SQL)
        return
    # SQLite: its writers are serialised, so sum, delete and insert see the same rows.
    c = cast(Table, OutboxCount.__table__)
    columns = ("appended", "dispatched", "marked", "failed", "retrying")
    last, *sums = conn.execute(
        select(func.max(c.c.id), *[func.coalesce(func.sum(c.c[k]), 0) for k in columns])
    ).one()
    if last is None:
        return
    conn.execute(delete(c).where(c.c.id <= last))
    conn.execute(insert(c).values(dict(zip(columns, sums, strict=True))))
