"""Reading a stream's history over HTTP: the same events, meta and permissions as replay."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.api.deps import DB, Caller
from app.api.errors import ERROR_RESPONSES
from app.core.ids import MAX_OFFSET
from app.outbox.replay import page
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
