"""Retention: drop events older than the retention period; heads and epochs stay."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import utcnow
from app.outbox.tables import Event, IdempotencyKey, RelayCursor, Stream

log = logging.getLogger("herald.retention")


def prune_events(
    factory: sessionmaker[Session], *, retention: timedelta, now: datetime | None = None,
    batch_streams: int = 500, chunk: int = 10_000,
) -> int:
    """Delete dispatched events created before now - retention; returns how many.

    Only events the relay already published are pruned: an undelivered event is never
    dropped. Each stream records the last pruned offset (`pruned_through`, raised in the
    same transaction as the delete), so a replay from before it answers
    `recovered: false` (or 410 over HTTP) instead of silently skipping. Streams are
    handled `batch_streams` at a time and each stream's delete in chunks of `chunk`
    offsets, every chunk its own short transaction, so a large backlog never holds one
    long lock.
    """
    cutoff = (now or utcnow()) - retention
    total = 0
    streams = 0
    after = ""
    while True:
        with factory() as session, session.begin():
            rows = session.execute(
                select(Event.stream, func.max(Event.offset))
                .join(RelayCursor, RelayCursor.stream == Event.stream)
                .where(Event.created_at < cutoff, Event.offset <= RelayCursor.dispatched,
                       Event.stream > after)
                .group_by(Event.stream)
                .order_by(Event.stream)
                .limit(batch_streams)
            ).all()
        for stream, through in rows:
            total += _prune_stream(factory, stream, int(through), chunk)
        streams += len(rows)
        if len(rows) < batch_streams:
            break
        after = rows[-1][0]
    keys = _prune_idempotency_keys(factory, cutoff)
    if total or keys:
        log.info("pruned events=%d streams=%d idempotency_keys=%d cutoff=%s", total, streams,
                 keys, cutoff.isoformat())
    return total


def _prune_idempotency_keys(factory: sessionmaker[Session], cutoff: datetime) -> int:
    """Idempotency keys last as long as events: a key older than retention may be reused."""
    with factory() as session, session.begin():
        result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff))
        return int(getattr(result, "rowcount", 0) or 0)


def _prune_stream(factory: sessionmaker[Session], stream: str, through: int, chunk: int) -> int:
    deleted = 0
    while True:
        with factory() as session, session.begin():
            done = session.execute(
                select(Stream.pruned_through).where(Stream.name == stream)
            ).scalar_one_or_none()
            if done is None or done >= through:
                return deleted
            upto = min(through, int(done) + chunk)
            # One transaction: whoever sees the rows gone also sees pruned_through raised.
            session.execute(
                update(Stream).where(Stream.name == stream, Stream.pruned_through < upto)
                .values(pruned_through=upto)
            )
            result = session.execute(
                delete(Event).where(Event.stream == stream, Event.offset <= upto)
            )
            deleted += int(getattr(result, "rowcount", 0) or 0)
