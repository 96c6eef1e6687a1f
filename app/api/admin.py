"""Operators over HTTP (admin token): the outbox's state, failed streams, retry."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.api.deps import DB, Caller, Context
from app.api.errors import ERROR_RESPONSES
from app.outbox import ops
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
def outbox_status(who: Caller, db: DB) -> dict[str, Any]:
    """Events pending, streams behind, the oldest pending event's age, failed streams, lag."""
    access.require_admin(who)
    return ops.status(db).to_dict()


@router.get("/outbox/failed")
def outbox_failed(who: Caller, db: DB) -> dict[str, Any]:
    """Each failed stream: attempts, last error, since when, how many events wait behind it."""
    access.require_admin(who)
    return {"streams": [row.to_dict() for row in ops.failed(db)]}


@router.post("/outbox/retry")
async def outbox_retry(body: RetryIn, who: Caller, ctx: Context) -> dict[str, Any]:
    """Give the streams back to the relay now (state active, attempts 0) and nudge it."""
    access.require_admin(who)
    retried = await asyncio.to_thread(ops.retry, ctx.factory, streams=body.streams,
                                      all_failed=body.all, actor=f"admin:{who.sub}")
    return {"retried": retried}
