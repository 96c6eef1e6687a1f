"""What operators do: retry streams (give them back to the relay), prune, prune's dry run.

Retrying puts a stream back in the relay's hands: state `active`, attempts 0, no wait,
and a nudge after the commit (the workers' sweep picks it up anyway if the nudge is lost).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, text, update
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

    A stream is given back in a transaction that holds its row, as a writer's does
    (`_give_back`); the streams whose rows writers hold are given back in the next
    rounds, once those writers have committed, and after BUSY_PATIENCE one at a time,
    waiting for each: the retry never waits for a writer while it holds another stream.
    """
    if (streams is None) == (not all_failed):
        raise InvalidInput("give stream names or all, not both", code="invalid_argument")
    with factory() as session, session.begin():
        if all_failed:  # only pending streams can be failed or waiting: look only there
            candidates = sorted(session.scalars(
                select(RelayCursor.stream)
                .where(RelayCursor.stream.in_(select(PendingStream.name)), UNHEALTHY)))
        else:
            names = _check_names(streams or [])
            known = {name for part in chunks(names) for name in session.scalars(
                select(RelayCursor.stream).where(RelayCursor.stream.in_(part)))}
            missing = [n for n in names if n not in known]
            if missing:
                raise NotFound(f"no such stream: {', '.join(missing)}")
            candidates = sorted(names)
    chosen: list[str] = []
    left = candidates
    patience = time.monotonic() + BUSY_PATIENCE
    while left:
        waiting = time.monotonic() >= patience
        batch = left[:1] if waiting else left  # waiting for a writer, it holds no other
        with factory() as session, session.begin():
            taken, given = _give_back(session, batch, wait=waiting)
        chosen += given
        left = [name for name in left if name not in taken]
        if left and not waiting:
            time.sleep(BUSY_PAUSE)
    chosen.sort()
    if chosen:
        log.info("outbox retry streams=%d names=%s by=%s", len(chosen), ",".join(chosen[:20]),
                 actor)
        with factory() as session:
            writer.nudge_now(session, chosen)  # the factory's nudger; the sweep relays anyway
    healthy = [] if all_failed else sorted(set(candidates) - set(chosen))
    return Retried(retried=chosen, healthy=healthy)


# A retry takes the rows of streams that writers hold in later rounds, BUSY_PAUSE apart;
# after BUSY_PATIENCE it waits for them, one stream a round.
BUSY_PAUSE = 0.02
BUSY_PATIENCE = 5.0
UNHEALTHY = or_(RelayCursor.state == "failed", RelayCursor.attempts > 0,
                RelayCursor.next_attempt_at.is_not(None))
# The streams' rows as a writer's head bump locks them (FOR NO KEY UPDATE), in the
# database's order of names, in one statement (an array is one parameter, however many
# names): those a writer holds are passed by (`_TAKE`), or waited for (`_WAIT`, one
# stream at a time).
_LOCK_STREAMS = ("SELECT name FROM streams WHERE name = ANY(:names) ORDER BY name "
                 "FOR NO KEY UPDATE")
_TAKE = text(_LOCK_STREAMS + " SKIP LOCKED")
_WAIT = text(_LOCK_STREAMS)


def _give_back(session: Session, names: list[str], *, wait: bool) -> tuple[set[str], list[str]]:
    """Give back to the relay those of `names` that are failed or waiting, in the
    session's transaction: (the streams it took, the ones of them it gave back).

    It takes the streams' rows first, as a writer does, passing by the rows writers hold
    (unless `wait`); then the taken streams' cursors; then it updates their cursors and
    marks. A writer holds a stream's mark only while it holds the stream's row (it raises
    the head and adds or updates the mark in one statement, and holds both to its
    commit), and it takes its marks in no particular order: a retry that updated marks
    while writers held some waited for a mark a writer held while holding a mark that
    writer waited for, and PostgreSQL broke the deadlock by failing one of the two
    (concurrent writes and `retry --all`). The relay never waits for a lock (SKIP
    LOCKED): waiting for the cursors it holds closes no cycle."""
    if session.get_bind().dialect.name != "postgresql":  # SQLite: one writer at a time
        taken = set(names)
    elif wait:  # every row, once its writers are done (a stream gone has nothing to give)
        session.execute(_WAIT, {"names": names})
        taken = set(names)
    else:
        taken = set(session.scalars(_TAKE, {"names": names}))
    given = sorted(name for part in chunks(sorted(taken)) for name in session.scalars(
        select(RelayCursor.stream).where(RelayCursor.stream.in_(part), UNHEALTHY)
        .with_for_update()))
    for part in chunks(given):
        session.execute(
            update(RelayCursor).where(RelayCursor.stream.in_(part))
            .values(state="active", attempts=0, next_attempt_at=None, failed_at=None)
        )
        session.execute(update(PendingStream).where(PendingStream.name.in_(part))
                        .values(not_before=None))  # the claim looks at them again
    return taken, given


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
