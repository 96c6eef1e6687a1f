"""A real python-socketio AsyncClient (websocket transport) that timestamps what it receives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import socketio

from testkit.clients import token


class Listener:
    """Connects with a token (and positions); calls `on_event(name, args, received_at)`.

    `received_at` is time.time() when python-socketio handed the event to the handler.
    """

    def __init__(self, url: str, tok: str, *, positions: dict[str, Any] | None = None,
                 on_event: Callable[[str, tuple[Any, ...], float], None] | None = None) -> None:
        self.url = url
        self.token = tok
        self.positions = positions
        self.on_event = on_event
        self.count = 0
        self.connected_payload: Any = None
        self.sio = socketio.AsyncClient(reconnection=False)
        self._connected = asyncio.Event()

        @self.sio.on("*")  # type: ignore[untyped-decorator]
        async def any_event(name: str, *args: Any) -> None:
            now = time.time()
            if name == "connected":
                self.connected_payload = args[0] if args else None
                self._connected.set()
                return
            self.count += 1
            if self.on_event is not None:
                self.on_event(name, args, now)

    async def connect(self) -> None:
        auth: dict[str, Any] = {"token": self.token}
        if self.positions is not None:
            auth["positions"] = self.positions
        await self.sio.connect(self.url, auth=auth, transports=["websocket"], wait_timeout=10)

    async def wait_connected(self, timeout: float = 10) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def call(self, event: str, data: Any, timeout: float = 10) -> Any:
        return await self.sio.call(event, data, timeout=timeout)

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


__all__ = ["Listener", "token"]  # token: testkit's, signed with the run's secret
