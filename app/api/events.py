"""`POST /api/events`: backend services append events (one, or a batch in one transaction)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from app.api.bodylimit import ThreadedJSONRoute
from app.api.deps import AppContext, Caller, Context, write_then_nudge
from app.api.errors import ERROR_RESPONSES
from app.core import jsoncodec
from app.core.errors import Conflict, Forbidden, InvalidInput, TooLarge
from app.outbox import publish
from app.portal.auth import Principal

log = logging.getLogger("herald.publish")
router = APIRouter(prefix="/api", tags=["events"], responses=ERROR_RESPONSES,
                   route_class=ThreadedJSONRoute)  # a batch of megabytes: parsed off the loop


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stream: str = Field(description="user-ID, project-ID, ticket-ID, clients, technicians "
                                    "or admins", examples=["project-1"])
    type: str = Field(description="lower-case words joined by '-'",
                      examples=["invoice-issued"])
    data: dict[str, Any] = Field(description="the payload, a JSON object of at most 64 KiB")
    idempotencyKey: str | None = Field(
        default=None, description="1 to 200 characters; the same key from the same service "
                                  "appends once and answers with the first event")


class EventOut(BaseModel):
    id: str
    stream: str
    offset: int
    duplicate: bool = Field(description="True when idempotencyKey named an earlier event")


ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "Not a service token"},
    410: {"description": "The idempotency key's event is past retention"},
    413: {"description": "data over 64 KiB, or more than 1000 events"},
    422: {"description": "Invalid stream name, event type, data or key: nothing is stored"},
}


def _service(who: Principal) -> str:
    if who.role != "service":
        raise Forbidden("only service tokens publish events")
    return who.sub


def _store(ctx: AppContext, service: str, specs: list[publish.EventSpec]
           ) -> tuple[list[publish.Published], set[str]]:
    """The published events, and the streams to nudge the relay for (after the response:
    the events are committed, the nudge is the relay's business, not the caller's)."""
    payloads = []
    known: set[object] = set()  # stream and type names found valid
    for i, spec in enumerate(specs):  # everything is checked before the transaction opens
        try:
            payloads.append(publish.checked_payload(spec, known))
        except (InvalidInput, TooLarge) as exc:
            if len(specs) == 1:
                raise
            raise type(exc)(f"item {i}: {exc.message}", code=exc.code) from None
    alone = publish.publish_alone(ctx.engine, specs, payloads)
    if alone is not None:
        return alone, {spec.stream for spec in specs}
    for _attempt in range(3):
        touched: set[str] = set()
        try:
            with ctx.factory() as session, session.begin():
                published = publish.publish_checked(session, specs, payloads, service=service,
                                                    nudge=touched.update)
            return published, touched
        except IntegrityError:  # SQLite without ON CONFLICT support, or a lost race: again
            continue
    raise Conflict("could not store the events", code="conflict")


def _post(ctx: AppContext, service: str, specs: list[publish.EventSpec], many: bool
          ) -> tuple[tuple[bytes, int], set[str]]:
    """((the answer's JSON, its status), the streams to nudge), in one worker thread."""
    published, touched = _store(ctx, service, specs)
    out = [p.to_dict() for p in published]
    duplicates = sum(1 for o in out if o["duplicate"])
    log.info("events published service=%s events=%d duplicates=%d streams=%d", service[:50],
             len(out) - duplicates, duplicates, len({o["stream"] for o in out}))
    status = 200 if duplicates == len(out) else 201
    return (jsoncodec.dumps(out if many else out[0]), status), touched


@router.post("/events", status_code=201, responses=ERRORS,
             response_model=EventOut | list[EventOut])
async def post_events(
    body: Annotated[EventIn | list[EventIn], Body()], who: Caller, ctx: Context,
) -> Any:
    """Append one event, or a list of up to 1000 in order in one transaction (service tokens).

    Answers `{id, stream, offset}` per event; all of a batch is stored or none of it.
    """
    # async: validation here on the loop, the transaction in one worker thread, the
    # answer encoded there once (no response-model round trip); the relay is nudged by
    # that thread once the answer is on its way (a broker that hangs hangs no loop).
    service = _service(who)
    items = body if isinstance(body, list) else [body]
    if len(items) > publish.MAX_BATCH:
        raise TooLarge(f"at most {publish.MAX_BATCH} events per request", code="too_large")
    if not items:
        raise InvalidInput("an empty list publishes nothing", code="empty_batch")
    specs = [publish.EventSpec(e.stream, e.type, e.data, e.idempotencyKey) for e in items]
    many = isinstance(body, list)
    answer, status = await write_then_nudge(ctx, lambda: _post(ctx, service, specs, many))
    return Response(answer, status_code=status, media_type="application/json")


__all__ = ["router"]
