"""Retention: drop events older than the retention period; heads and epochs stay."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import utcnow
from app.outbox.tables import Event, IdempotencyKey, RelayCursor, Stream

log = logging.getLogger("herald.retention")

# PostgreSQL: one chunk's streams pruned through their offsets in one statement, the
# stream rows locked in name order (as writers lock them: no deadlock cycle). The old
# events are deleted before the rows are locked: PostgreSQL runs a WITH query that
# changes rows and that the main statement does not read (`up`, which reads `lk`) once
# the main statement is done (seen here; its documentation leaves the order open). So
# a chunk holds no stream while it waits for an old event (an inbox change's foreign
# key check holds its item's event, then appends to the user's stream), and waits for
# streams only while holding old events, which writers never touch.
# Each stream's old events are looked up on their own along `uq_events_stream_offset`
# (a LATERAL subquery behind OFFSET 0, which the planner cannot flatten into a join) and
# deleted by the rows found (their ctid; events are never updated): with a plain join,
# once streams held a long history each, the planner hashed the chunk against a
# sequential scan of the whole events table, chunk after chunk (150-260 ms a chunk of
# 5,000 at 675,000 events instead of about 60, growing with the table).
_PRUNE_PG = """
WITH t AS MATERIALIZED (
  SELECT * FROM unnest(%(names)s::text[], %(throughs)s::bigint[]) AS t(name, through)),
lk AS (SELECT s.name FROM streams AS s WHERE s.name IN (SELECT name FROM t)
       ORDER BY s.name FOR UPDATE),
up AS (UPDATE streams AS s SET pruned_through = t.through FROM t, lk
       WHERE s.name = t.name AND lk.name = t.name AND s.pruned_through < t.through
       RETURNING s.name)
DELETE FROM events AS e
USING (SELECT d.tid FROM t CROSS JOIN LATERAL (
         SELECT x.ctid AS tid FROM events AS x
         WHERE x.stream = t.name AND x."offset" <= t.through OFFSET 0) AS d) AS old
WHERE e.ctid = old.tid
"""


def prune_events(
    factory: sessionmaker[Session], *, retention: timedelta, now: datetime | None = None,
    chunk: int = 5_000,
) -> int:
    """Delete dispatched events created before now - retention; returns how many.

    Only events the relay already published are pruned: an undelivered event is never
    dropped. Each stream records the last pruned offset (`pruned_through`, raised in the
    same transaction as the delete), so a replay from before it answers
    `recovered: false` (or 410 over HTTP) instead of silently skipping.

    The old events are walked oldest first along the created_at index, `chunk` at a
    time, each chunk its own short transaction that deletes about `chunk` events: the
    cost follows the events to prune, never the number of streams, and no transaction
    holds locks for long, whatever the backlog.
    """
    cutoff = (now or utcnow()) - retention
    total = 0
    streams = 0
    after: tuple[datetime, str] | None = None
    while True:
        with factory() as session, session.begin():
            query = select(Event.created_at, Event.id, Event.stream, Event.offset) \
                .where(Event.created_at < cutoff)
            if after is not None:
                query = query.where(Event.created_at >= after[0],
                                    tuple_(Event.created_at, Event.id) > tuple_(*after))
            rows = session.execute(query.order_by(Event.created_at, Event.id)
                                   .limit(chunk)).all()
            if not rows:
                break
            after = (rows[-1][0], rows[-1][1])
            upto: dict[str, int] = {}
            for _ts, _id, stream, offset in rows:
                upto[stream] = max(upto.get(stream, 0), int(offset))
            deleted, touched = _prune_chunk(session, upto)
            total += deleted
            streams += touched
        if len(rows) < chunk:
            break
    keys = _prune_idempotency_keys(factory, cutoff)
    if total or keys:
        log.info("pruned events=%d streams=%d idempotency_keys=%d cutoff=%s", total, streams,
                 keys, cutoff.isoformat())
    return total


def _prune_chunk(session: Session, upto: dict[str, int]) -> tuple[int, int]:
    """Prune each stream of `upto` through its offset, but never past what the relay
    dispatched; (events deleted, streams pruned)."""
    names = sorted(upto)
    state = session.execute(
        select(RelayCursor.stream, RelayCursor.dispatched, Stream.pruned_through)
        .join(Stream, Stream.name == RelayCursor.stream)
        .where(RelayCursor.stream.in_(names))
    ).all()
    through: dict[str, int] = {}
    for name, dispatched, done in state:
        last = min(upto[name], int(dispatched))
        if last > int(done):
            through[name] = last
    if not through:
        return 0, 0
    conn = session.connection()
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        ordered = sorted(through)
        result: Any = conn.exec_driver_sql(_PRUNE_PG, {
            "names": ordered, "throughs": [through[n] for n in ordered]})
        return int(result.rowcount or 0), len(through)
    deleted = 0
    for name in sorted(through):
        # One transaction: whoever sees the rows gone also sees pruned_through raised.
        session.execute(update(Stream).where(Stream.name == name,
                                             Stream.pruned_through < through[name])
                        .values(pruned_through=through[name]))
        result = session.execute(delete(Event).where(Event.stream == name,
                                                     Event.offset <= through[name]))
        deleted += int(getattr(result, "rowcount", 0) or 0)
    return deleted, len(through)


def _prune_idempotency_keys(factory: sessionmaker[Session], cutoff: datetime) -> int:
    """Idempotency keys last as long as events: a key older than retention may be reused."""
    with factory() as session, session.begin():
        result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff))
        return int(getattr(result, "rowcount", 0) or 0)
