"""Publishing events from backend services, inside their own SQLAlchemy transaction.

A service that shares Herald's database calls `publish()` (or `publish_many()`) with its
own session, next to its own domain writes; the events are committed or rolled back
with them, and the relay is nudged after the commit. `POST /api/events` is the same
function behind HTTP.

    from app.outbox.publish import publish

    with Session() as session, session.begin():
        session.add(invoice)
        publish(session, f"user-{client_id}", "invoice-issued", {"invoiceId": 7},
                idempotency_key=f"invoice-{invoice.id}", service="billing")

An `idempotency_key` is unique per `service`: publishing the same key again appends
nothing and returns the first event (`created=False`), also when two transactions race
(the second waits for the first and then sees its key).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.errors import Gone, InvalidInput, TooLarge
from app.core.text import check_text
from app.outbox.ids import event_id, event_ids
from app.outbox.shapes import notification_payload
from app.outbox.streams import check_stream, validate_type
from app.outbox.tables import EventRecord, IdempotencyKey, Stream
from app.outbox.writer import (
    Nudger,
    append_alone,
    append_rows,
    append_whole,
    encode_data,
    ensure_stream,
    insert_or_skip,
    load_event,
)

MAX_BATCH = 1000
MAX_KEY = 200
MAX_SERVICE = 200


@dataclass(frozen=True, slots=True)
class Published:
    """An event as a publisher sees it: the record, and whether this call appended it."""

    event: EventRecord
    created: bool

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.event.id, "stream": self.event.stream,
                "offset": self.event.offset, "duplicate": not self.created}


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One event to publish: where, what, and an optional idempotency key."""

    stream: str
    type: str
    data: dict[str, Any]
    idempotency_key: str | None = None


def validate(spec: EventSpec) -> EventSpec:
    """Raise InvalidInput / TooLarge for anything the outbox would refuse; store nothing."""
    checked_payload(spec)
    return spec


def checked_payload(spec: EventSpec, known: set[object] | None = None) -> str:
    """`validate`, answering the data as the outbox stores it (JSON, encoded once).

    `known`: stream and type names already found valid (a batch checks each name once);
    the names this check finds valid are added to it."""
    if known is None or not isinstance(spec.stream, str) or spec.stream not in known:
        check_stream(spec.stream)
        if known is not None:
            known.add(spec.stream)
    if known is None or not isinstance(spec.type, str) or ("type", spec.type) not in known:
        validate_type(spec.type)
        if known is not None:
            known.add(("type", spec.type))
    payload = encode_data(spec.data)
    if "NaN" in payload or "Infinity" in payload:  # maybe only inside a string: look closer
        try:  # NaN and Infinity are not JSON: PostgreSQL would refuse them
            json.dumps(spec.data, allow_nan=False)
        except ValueError:
            raise InvalidInput("data holds NaN or Infinity, which JSON has not",
                               code="invalid_data") from None
    if spec.type == "notification":  # the protocol's shape, which every client relies on
        data = spec.data
        notification_payload(data.get("type"), data.get("title"),  # type: ignore[arg-type]
                             data.get("message"))  # type: ignore[arg-type]
    key = spec.idempotency_key
    if key is not None:
        check_text(key, "idempotencyKey", min_len=1, max_len=MAX_KEY,
                   code="invalid_idempotency_key")
    return payload


def publish(
    session: Session, stream: str, type: str, data: dict[str, Any], *,
    idempotency_key: str | None = None, service: str | None = None,
    nudge: Nudger | None = None,
) -> Published:
    """Append one event in the session's current transaction (the caller commits).

    `service` names the publisher and is required with an `idempotency_key`.
    Raises InvalidInput (422) or TooLarge (413) before writing anything.
    """
    [published] = publish_many(
        session, [EventSpec(stream, type, data, idempotency_key)], service=service,
        nudge=nudge)
    return published


def publish_many(
    session: Session, specs: Iterable[EventSpec], *, service: str | None = None,
    nudge: Nudger | None = None,
) -> list[Published]:
    """Append events in order in the session's current transaction, after validating all.

    Either every event is valid and appended (a repeated key answers its first event),
    or an error is raised before any is written; the caller's rollback drops the rest.
    Events of one stream get consecutive offsets in list order.
    """
    items: Sequence[EventSpec] = list(specs)
    if len(items) > MAX_BATCH:
        raise TooLarge(f"at most {MAX_BATCH} events per batch", code="too_large")
    known: set[object] = set()
    payloads = [checked_payload(spec, known) for spec in items]
    return publish_checked(session, items, payloads, service=service, nudge=nudge)


def publish_checked(
    session: Session, items: Sequence[EventSpec], payloads: Sequence[str], *,
    service: str | None = None, nudge: Nudger | None = None,
) -> list[Published]:
    """`publish_many` of items that `checked_payload` passed (`payloads`: its answers).

    Without idempotency keys the writer's head bumps, stream by stream in name order, are
    the locks; with keys the streams are locked (in name order) before the keys are
    claimed, and only the events of new keys are appended.
    """
    if any(spec.idempotency_key is not None for spec in items):
        _check_service(service)
    else:
        ids = event_ids(len(items))
        records = append_rows(session, [(s.stream, s.type, s.data) for s in items], ids=ids,
                              payloads=payloads, nudge=nudge)
        return [Published(record, True) for record in records]
    _lock_streams(session, {spec.stream for spec in items})
    results: list[Published | None] = [None] * len(items)
    new: dict[int, str] = {}  # index -> the id its event will get
    owners: dict[str, int | Published] = {}  # key -> index appending it, or the stored event
    for i, spec in enumerate(items):
        key = spec.idempotency_key
        if key is None or service is None:
            new[i] = event_id()
        elif key not in owners:
            new_id = event_id()
            if _claim_key(session, service, key, new_id):
                new[i] = new_id
                owners[key] = i
            else:
                owners[key] = Published(_first_event(session, service, key), False)
    for i, record in _append_rows(session, items, payloads, new, nudge).items():
        results[i] = Published(record, True)
    for i, spec in enumerate(items):
        if results[i] is None:  # a repeated key: answer its first event
            owner = owners[spec.idempotency_key or ""]
            first = owner if isinstance(owner, Published) else results[owner]
            assert first is not None
            results[i] = Published(first.event, False)
    return [r for r in results if r is not None]


def publish_alone(engine: Engine, items: Sequence[EventSpec], payloads: Sequence[str]
                  ) -> list[Published] | None:
    """Checked events without idempotency keys, on PostgreSQL: in one statement that
    commits by itself (autocommit; all or nothing, like a transaction, with one round trip
    instead of three), whatever the streams, new or not. None if this does not apply, or
    another writer made one of the new streams meanwhile (nothing written): then
    `publish_checked` in a transaction. The caller nudges the relay afterwards.
    """
    if (engine.dialect.name != "postgresql"
            or any(spec.idempotency_key is not None for spec in items)):
        return None
    ids = event_ids(len(items))
    rows = [(s.stream, s.type, s.data) for s in items]
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        records = None
        if all(spec.stream == items[0].stream for spec in items):
            records = append_alone(conn, items[0].stream, rows, ids, payloads)
        if records is None:  # many streams, or one that does not exist yet
            try:
                records = append_whole(conn, rows, ids, payloads)
            except IntegrityError:  # a new stream made meanwhile: take the transaction
                return None
    return [Published(record, True) for record in records]


def _append_rows(
    session: Session, items: Sequence[EventSpec], payloads: Sequence[str],
    new: dict[int, str], nudge: Nudger | None,
) -> dict[int, EventRecord]:
    """The new events (index -> id) through the writer's one append path."""
    order = list(new)
    records = append_rows(session, [(items[i].stream, items[i].type, items[i].data)
                                    for i in order],
                          ids=[new[i] for i in order], payloads=[payloads[i] for i in order],
                          nudge=nudge)
    return dict(zip(order, records, strict=True))


def _lock_streams(session: Session, names: set[str]) -> None:
    """Create missing streams, then lock them in name order, so two batches never wait on
    each other in a cycle (A then B against B then A would otherwise deadlock)."""
    ordered = sorted(names)
    for name in ordered:
        ensure_stream(session, name)
    if len(ordered) > 1:
        session.execute(select(Stream.name).where(Stream.name.in_(ordered))
                        .order_by(Stream.name).with_for_update()).all()


def _check_service(service: str | None) -> None:
    if not isinstance(service, str) or not 1 <= len(service) <= MAX_SERVICE:
        raise InvalidInput("an idempotency key needs the publishing service's name",
                           code="invalid_service")


def _claim_key(session: Session, service: str, key: str, event_id: str) -> bool:
    """Insert (service, key) unless present; True if this transaction now owns it.

    On PostgreSQL a concurrent uncommitted claim makes this wait; after it commits the
    insert does nothing and the caller reads the winner's event.
    """
    return insert_or_skip(session, IdempotencyKey, {
        "service": service, "key": key, "event_id": event_id, "created_at": utcnow()})


def _first_event(session: Session, service: str, key: str) -> EventRecord:
    event_id = session.scalar(select(IdempotencyKey.event_id).where(
        IdempotencyKey.service == service, IdempotencyKey.key == key))
    first = load_event(session, event_id) if event_id else None
    if first is None:
        raise Gone(f"the event of idempotency key {key[:50]!r} is past retention",
                   code="idempotency_key_expired")
    return first


__all__ = ["MAX_BATCH", "EventSpec", "Published", "checked_payload", "publish", "publish_alone",
           "publish_checked", "publish_many", "validate"]
