"""Herald's gateway in the test's own process (to look at its objects), under a real uvicorn."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import socketio
import uvicorn

from app.gateway.server import Gateway
from testkit.eventually import eventually_async
from testkit.processes import free_port
from testkit.system import System
from testkit.testrun import fresh_name


@dataclass
class LocalNode:
    url: str
    port: int
    gateway: Gateway


@asynccontextmanager
async def local_node(system: System, redis_url: str, **kwargs: Any) -> AsyncIterator[LocalNode]:
    """A Gateway(**kwargs) on `system`'s database, served on a free port of 127.0.0.1."""
    gateway = Gateway(session_factory=system.factory, secret=os.environ["JWT_SECRET"],
                      redis_url=redis_url, channel=fresh_name("local"),
                      **kwargs)
    port = free_port()
    config = uvicorn.Config(socketio.ASGIApp(gateway.sio), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="off",
                            ws_per_message_deflate=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually_async(lambda: server.started, "the local node did not start",
                           interval=0.01)
    try:
        yield LocalNode(f"http://127.0.0.1:{port}", port, gateway)
    finally:
        identities = getattr(gateway, "identities", None)
        if identities is not None:
            identities.stop()
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        await gateway.presence.redis.aclose()
