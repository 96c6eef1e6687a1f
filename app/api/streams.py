"""Reading a stream's history over HTTP: the same events, meta and permissions as replay."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.api.deps import DB, Caller, Context
from app.api.errors import ERROR_RESPONSES
from app.core.errors import Forbidden, InvalidInput, NotFound
from app.core.ids import MAX_OFFSET
from app.outbox.replay import page
from app.outbox.streams import parse_stream
from app.portal import access

router = APIRouter(prefix="/api", tags=["streams"], responses=ERROR_RESPONSES)


@router.get("/streams/{stream}/events", responses={410: {"description": "Events were pruned"}})
def stream_events(
    stream: str, who: Caller, db: DB,
    after: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Events with offset > `after`, oldest first, and the stream's head."""
    access.require_stream_reader(db, who, stream)
    events, head = page(db, stream, after, limit)
    return {"events": [e.to_dict() for e in events], "head": head.to_dict()}


@router.get("/streams/{stream}/presence", responses={404: {"description": "No such room"}})
async def stream_presence(stream: str, who: Caller, ctx: Context) -> dict[str, Any]:
    """Who is in a project's or ticket's room now, on any web node, once per user.

    A stream the caller may not read is a 404, like one that does not exist."""
    try:
        parsed = parse_stream(stream)
    except InvalidInput:
        parsed = None
    if parsed is None or parsed.id is None or parsed.kind not in ("project", "ticket"):
        raise NotFound(f"no presence for stream {stream[:100]!r}")
    entity_id = parsed.id

    def readable() -> bool:
        with ctx.factory() as session:
            try:
                if parsed.kind == "project":
                    access.require_project_reader(session, who, entity_id)
                else:
                    access.require_ticket_reader(session, who, entity_id)
            except (Forbidden, NotFound):
                return False
            return True
    if not await asyncio.to_thread(readable):
        raise NotFound(f"stream {stream} not found")
    return {"members": await ctx.node.presence_of(stream)}
