"""The outbox's totals without a scan: sums of the delta rows that triggers keep.

Every change to `streams` or `relay_cursors` adds its delta to `outbox_counts` in its own
transaction (migration 0005), so in any snapshot the sums equal a full recount of the
tables: events appended (the sum of heads), dispatched (the sum of cursors), streams
marked pending, failed streams, retrying streams. On PostgreSQL each statement inserts a
row (writers never wait on a counter row); `fold` replaces the rows by their sum, so a
read sums a few rows. Reads fold when they find more than FOLD_AT rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, func, select
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
        try:
            bind = session.get_bind()
            engine = bind if isinstance(bind, Engine) else bind.engine
            with engine.connect() as conn:
                fold(conn)
                conn.commit()
        except Exception as exc:  # a read never fails for want of a fold
            log.warning("outbox counts fold failed error=%s", type(exc).__name__)
    return Totals(*(int(v) for v in sums))


def fold(conn: Connection) -> None:
    """Replace the delta rows by one row of their sums (PostgreSQL; SQLite keeps one row)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(FOLD_SQL)
