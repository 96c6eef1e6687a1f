"""Retention: drop events older than the retention period; heads and epochs stay."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db import utcnow
from app.outbox.tables import Event, RelayCursor, Stream

log = logging.getLogger("herald.retention")


def prune_events(
    factory: sessionmaker[Session], *, retention: timedelta, now: datetime | None = None,
    batch_streams: int = 500,
) -> int:
    """Delete dispatched events created before now - retention; returns how many.

    Only events the relay already published are pruned: an undelivered event is never
    dropped. Each stream records the last pruned offset, so replay from before it
    answers `recovered: false` (or 410 over HTTP) instead of silently skipping.
    """
    cutoff = (now or utcnow()) - retention
    total = 0
    with factory() as session, session.begin():
        rows = session.execute(
            select(Event.stream, func.max(Event.offset))
            .join(RelayCursor, RelayCursor.stream == Event.stream)
            .where(Event.created_at < cutoff, Event.offset <= RelayCursor.dispatched)
            .group_by(Event.stream)
            .limit(batch_streams)
        ).all()
    for stream, through in rows:
        with factory() as session, session.begin():
            result = session.execute(
                delete(Event).where(Event.stream == stream, Event.offset <= through)
            )
            deleted = getattr(result, "rowcount", 0)
            session.execute(
                update(Stream).where(Stream.name == stream, Stream.pruned_through < through)
                .values(pruned_through=through)
            )
            total += int(deleted or 0)
    if total:
        log.info("pruned events=%d streams=%d cutoff=%s", total, len(rows), cutoff.isoformat())
    return total
