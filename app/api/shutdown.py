"""ASGI lifespan wrapper: run a hook when the server shuts down, before the app hears of it.

uvicorn, on SIGTERM, stops accepting, waits (`--timeout-graceful-shutdown`) for open
connections, then sends `lifespan.shutdown`. Websocket transports are closed by uvicorn
itself (close code 1012: clients reconnect to another node); the hook closes whatever
engine.io transports are left (long-polling ones) so that no client waits for a node
that is going away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("herald.web")


class OnShutdown:
    def __init__(self, app: Any, hook: Callable[[], Awaitable[Any]]) -> None:
        self.app = app
        self.hook = hook

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def receive_then_hook() -> Any:
            message = await receive()
            if message.get("type") == "lifespan.shutdown":
                try:
                    closed = await asyncio.wait_for(self.hook(), timeout=2)
                    log.info("shutting down closed=%s", closed)
                except Exception as exc:
                    log.warning("shutdown hook failed error=%s", type(exc).__name__)
            return message

        await self.app(scope, receive_then_hook, send)


__all__ = ["OnShutdown"]
