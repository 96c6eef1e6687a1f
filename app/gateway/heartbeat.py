"""engine.io's heartbeat without a task or a timer per socket.

engine.io sends each socket a PING `ping_interval` seconds after the client answered the
previous one, from a task per socket sleeping that long (a task, its coroutine, its sleep
future and timer: ~1 KB of each idle socket). Here the sockets due in the same tick (a
25th of the interval: 1 s of 25) share one loop timer and a list: `PingWheel.add(socket)`
after each PONG, and when its tick comes each socket still open gets its PING as engine.io
would send it (`last_ping` set, the packet queued). A PING is at most one tick later
than engine.io's; the client allows `pingInterval + pingTimeout` (45 s) for it.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

TICKS_PER_INTERVAL = 25


class PingWheel:
    """The sockets waiting for their next PING, per tick of `interval / 25` seconds."""

    def __init__(self, interval: float) -> None:
        self.tick = interval / TICKS_PER_INTERVAL
        self.interval = interval
        self._slots: dict[int, list[Any]] = {}

    def add(self, socket: Any) -> None:
        """`socket._ping_due()` runs `interval` seconds from now (rounded up to a tick)."""
        loop = asyncio.get_running_loop()
        slot = math.ceil((loop.time() + self.interval) / self.tick)
        sockets = self._slots.get(slot)
        if sockets is None:
            sockets = self._slots[slot] = []
            loop.call_at(slot * self.tick, self._due, slot)
        sockets.append(socket)

    def _due(self, slot: int) -> None:
        for socket in self._slots.pop(slot, ()):
            socket._ping_due()

    def __len__(self) -> int:
        return sum(len(sockets) for sockets in self._slots.values())


def wheel_of(server: Any) -> PingWheel:
    """The wheel of an engine.io server for its current `ping_interval`."""
    interval = float(server.ping_interval)
    wheels: dict[float, PingWheel] | None = getattr(server, "_herald_ping_wheels", None)
    if wheels is None:
        wheels = server._herald_ping_wheels = {}
    wheel = wheels.get(interval)
    if wheel is None:
        wheel = wheels[interval] = PingWheel(interval)
    return wheel


__all__ = ["PingWheel", "wheel_of"]
