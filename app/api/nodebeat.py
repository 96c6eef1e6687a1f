"""This web node's heartbeat: its sockets and rooms in Redis every HERALD_HEARTBEAT_INTERVAL,
expiring after three intervals (app.outbox.liveness), so that `GET /api/admin/nodes` on
any node lists the web nodes that are alive. Removed at a clean shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI

from app.api import deps
from app.outbox.liveness import TTL_INTERVALS, Heartbeats

log = logging.getLogger("herald.liveness")


async def beat(ctx: deps.AppContext, started: float) -> None:
    """Beat until cancelled; a Redis that does not answer skips a beat, never the node."""
    heartbeats = Heartbeats(ctx.redis.sio, ctx.settings.socketio_channel)
    interval = ctx.settings.heartbeat_interval
    member = ctx.node.snapshot().node
    try:
        while True:
            snap = ctx.node.snapshot()  # on the event loop, where the rooms change
            fields = {"host": socket.gethostname(), "pid": os.getpid(), "sockets": snap.sockets,
                      "rooms": snap.rooms, "memberships": snap.memberships,
                      "startedAt": started}
            try:
                await asyncio.to_thread(heartbeats.beat, "web", member, fields,
                                        ttl=interval * TTL_INTERVALS)
            except Exception as exc:
                log.debug("heartbeat skipped error=%s", type(exc).__name__)
            await asyncio.sleep(interval)
    finally:
        with suppress(Exception):
            await asyncio.to_thread(heartbeats.gone, "web", member)


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    """The app's lifespan: the heartbeat runs while the node serves; then deps.lifespan
    closes what create_app opened."""
    task = asyncio.create_task(beat(deps.get_context_of(api), round(time.time(), 3)))
    async with deps.lifespan(api):
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
