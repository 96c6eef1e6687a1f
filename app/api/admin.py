"""Operators over HTTP (admin token): the outbox's state, a stream, failed streams, retry,
the relay rate, and the live workers and web nodes (what /ops shows)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.api.deps import DB, Caller, Context
from app.api.errors import ERROR_RESPONSES
from app.core.errors import Unavailable
from app.core.text import Storable
from app.outbox import liveness, ops
from app.portal import access

router = APIRouter(prefix="/api/admin", tags=["operators"], responses=ERROR_RESPONSES)

StreamField = Annotated[str, Field(min_length=1, max_length=100)]


class RetryIn(BaseModel):
    """`{"streams": [...]}` retries those streams; `{"all": true}` every failed or waiting one."""

    model_config = ConfigDict(extra="forbid")

    streams: Annotated[list[StreamField], Field(min_length=1, max_length=1000)] | None = None
    all: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> RetryIn:
        if (self.streams is None) == (not self.all):
            raise ValueError("give either streams or all: true")
        return self


@router.get("/outbox")
def outbox_status(who: Caller, db: DB, ctx: Context,
                  q: Annotated[Annotated[str, Storable] | None, Query(max_length=200, description=(
                      "Only list the streams whose name or last error holds this text "
                      "(any case); the totals stay over every stream"))] = None,
                  ) -> dict[str, Any]:
    """Events pending, streams behind, the oldest pending event's age, failed streams, lag."""
    access.require_admin(who)
    state = ops.status(db, search=q)
    liveness.record_backlog(ctx.redis.sio, ctx.settings.socketio_channel, state.events_pending)
    return state.to_dict()


@router.get("/outbox/rate")
def outbox_rate(who: Caller, ctx: Context) -> dict[str, Any]:
    """The relay over the last 15 minutes, in 10-second samples: events published and
    refused, and the pending events where someone looked at the backlog."""
    access.require_admin(who)
    try:
        return liveness.rate(ctx.redis.sio, ctx.settings.socketio_channel)
    except redis.RedisError as exc:
        raise Unavailable(f"redis: {type(exc).__name__}") from None


@router.get("/outbox/streams/{stream}")
def outbox_stream(stream: Annotated[str, Path(min_length=1, max_length=100)], who: Caller,
                  db: DB, events: Annotated[int, Query(ge=0, le=ops.MAX_EVENTS)] = 20,
                  ) -> dict[str, Any]:
    """One stream: cursor, head, state, attempts, next attempt, last error, and its last
    `events` events (newest first) with their payloads."""
    access.require_admin(who)
    return ops.detail(db, stream, events=events).to_dict()


@router.get("/nodes")
def nodes(who: Caller, ctx: Context) -> dict[str, Any]:
    """The workers (relay threads, age of their last sweep) and web nodes (sockets, rooms)
    whose heartbeat has not expired."""
    access.require_admin(who)
    try:
        return liveness.nodes(liveness.Heartbeats(ctx.redis.sio, ctx.settings.socketio_channel))
    except redis.RedisError as exc:
        raise Unavailable(f"redis: {type(exc).__name__}") from None


@router.get("/outbox/failed")
def outbox_failed(who: Caller, db: DB) -> dict[str, Any]:
    """Each failed stream: attempts, last error, since when, how many events wait behind it."""
    access.require_admin(who)
    return {"streams": [row.to_dict() for row in ops.failed(db)]}


@router.post("/outbox/retry")
async def outbox_retry(body: RetryIn, who: Caller, ctx: Context) -> dict[str, Any]:
    """Give the streams back to the relay now (state active, attempts 0) and nudge it;
    named streams that were healthy are listed under `healthy` and left unchanged."""
    access.require_admin(who)
    done = await asyncio.to_thread(ops.retry, ctx.factory, streams=body.streams,
                                   all_failed=body.all, actor=f"admin:{who.sub}")
    return done.to_dict()
