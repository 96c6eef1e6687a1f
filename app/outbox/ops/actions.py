"""What operators do: retry streams (give them back to the relay), prune, prune's dry run.

Retrying puts a stream back in the relay's hands: state `active`, attempts 0, no wait,
and a nudge after the commit (the workers' sweep picks it up anyway if the nudge is lost).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import iso_utc, utcnow
from app.core.errors import InvalidInput, NotFound
from app.outbox import writer
from app.outbox.ops.common import CamelView, chunks
from app.outbox.retention import prune_events
from app.outbox.streams import parse_stream
from app.outbox.tables import Event, PendingStream, RelayCursor

log = logging.getLogger("herald.ops")

def _check_names(names: Sequence[str]) -> list[str]:
    if not names:
        raise InvalidInput("name at least one stream, or ask for all", code="invalid_argument")
    for name in names:
        parse_stream(name)
    return list(dict.fromkeys(names))


@dataclass(frozen=True, slots=True)
class Retried:
    """What a retry did: the streams given back to the relay, and the named ones that were
    healthy (active, no failed attempt, no backoff wait) and were left as they were."""

    retried: list[str]
    healthy: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"retried": self.retried, "healthy": self.healthy}


def retry(
    factory: sessionmaker[Session], *, streams: Sequence[str] | None = None,
    all_failed: bool = False, actor: str = "unknown",
) -> Retried:
    """Give streams back to the relay now (names sorted in the answer).

    `streams`: those of these streams that are failed or waiting on a backoff; the
    healthy ones are reported, unchanged (unknown names raise NotFound and nothing
    changes). `all_failed`: every failed stream and every stream waiting on a backoff
    delay. The relay is nudged after the commit. `actor` (who asked) is logged.
    """
    if (streams is None) == (not all_failed):
        raise InvalidInput("give stream names or all, not both", code="invalid_argument")
    unhealthy = or_(RelayCursor.state == "failed", RelayCursor.attempts > 0,
                    RelayCursor.next_attempt_at.is_not(None))
    healthy: list[str] = []
    with factory() as session, session.begin():
        if all_failed:  # only pending streams can be failed or waiting: look only there
            chosen = sorted(session.scalars(
                select(RelayCursor.stream)
                .where(RelayCursor.stream.in_(select(PendingStream.name)), unhealthy)
                .with_for_update()))
        else:
            names = _check_names(streams or [])
            known = {name for part in chunks(names) for name in session.scalars(
                select(RelayCursor.stream).where(RelayCursor.stream.in_(part)))}
            missing = [n for n in names if n not in known]
            if missing:
                raise NotFound(f"no such stream: {', '.join(missing)}")
            chosen = sorted(name for part in chunks(names) for name in session.scalars(
                select(RelayCursor.stream).where(RelayCursor.stream.in_(part), unhealthy)
                .with_for_update()))
            healthy = sorted(set(names) - set(chosen))
        for part in chunks(chosen):
            session.execute(
                update(RelayCursor).where(RelayCursor.stream.in_(part))
                .values(state="active", attempts=0, next_attempt_at=None, failed_at=None)
            )
            session.execute(update(PendingStream).where(PendingStream.name.in_(part))
                            .values(not_before=None))  # the claim looks at them again
    if chosen:
        log.info("outbox retry streams=%d names=%s by=%s", len(chosen), ",".join(chosen[:20]),
                 actor)
        with factory() as session:
            writer.nudge_now(session, chosen)  # the factory's nudger; the sweep relays anyway
    return Retried(retried=chosen, healthy=healthy)


def _check_retention(retention: timedelta) -> None:
    if retention.total_seconds() < 0:
        raise InvalidInput("retention must not be negative", code="invalid_argument")


def prune(factory: sessionmaker[Session], *, retention: timedelta) -> int:
    """Drop dispatched events older than `retention` (see app.outbox.retention)."""
    _check_retention(retention)
    return prune_events(factory, retention=retention)


@dataclass(frozen=True, slots=True)
class Prunable(CamelView):
    """What `prune` would drop now: published events older than the cutoff."""

    events: int
    streams: int
    cutoff: str



def prunable(session: Session, *, retention: timedelta,
             now: datetime | None = None) -> Prunable:
    """`prune`'s dry run: the events (and streams) it would drop, changing nothing."""
    _check_retention(retention)
    cutoff = (now or utcnow()) - retention
    events, streams = session.execute(
        select(func.count(), func.count(func.distinct(Event.stream)))
        .select_from(Event).join(RelayCursor, RelayCursor.stream == Event.stream)
        .where(Event.created_at < cutoff, Event.offset <= RelayCursor.dispatched)
    ).one()
    return Prunable(events=int(events), streams=int(streams), cutoff=iso_utc(cutoff))
