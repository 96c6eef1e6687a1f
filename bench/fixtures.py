"""Writing a bench's events: through writer.append, or in bulk (the same rows, faster)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.outbox import writer
from app.outbox.tables import RelayCursor, Stream

Item = tuple[str, str, dict[str, Any]]  # (stream, type, data)
CHUNK = 5000


def append_all(factory: sessionmaker[Session], items: Sequence[Item]) -> None:
    """writer.append each item, in one transaction, nudging nobody."""
    with factory() as session, session.begin():
        for stream, type_, data in items:
            writer.append(session, stream, type_, data, nudge=_no_nudge)


def bulk_write(factory: sessionmaker[Session], items: Sequence[Item]) -> None:
    """The same rows in bulk: writer.append_rows (one head bump per stream, one multi-row
    insert) per chunk of CHUNK events. Nothing here is measured."""
    for at in range(0, len(items), CHUNK):
        chunk = items[at:at + CHUNK]
        for _stream, _type, data in chunk:
            writer.check_data(data)
        with factory() as session, session.begin():
            writer.append_rows(session, chunk)


def mark_dispatched(factory: sessionmaker[Session], streams: Sequence[str]) -> None:
    """Tell the relay these streams' events already went out (a client missed them)."""
    with factory() as session, session.begin():
        for stream in streams:
            head = session.scalar(select(Stream.head).where(Stream.name == stream))
            session.execute(update(RelayCursor).where(RelayCursor.stream == stream)
                            .values(dispatched=head))


def epoch_of(factory: sessionmaker[Session], stream: str) -> str:
    with factory() as session:
        return str(session.scalar(select(Stream.epoch).where(Stream.name == stream)))


def _no_nudge(streams: list[str]) -> None:
    return None
