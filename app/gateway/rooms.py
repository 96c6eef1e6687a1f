"""Per-room subscriptions: a web node receives only the events of the rooms it holds.

The relay publishes each stream's events on the stream's own channel (`SPUBLISH`,
app/core/channels.py). A node subscribes to that channel (`SSUBSCRIBE`) when the room
gains its first local socket — or a replay gate, which a connect opens before it reads
the stream's head — and unsubscribes (`SUNSUBSCRIBE`) when the room has neither left.
The events of rooms nobody here is in never reach the node.

- **Batched.** Room changes only mark what is wanted (and which rooms changed); one task
  per loop turn sends the difference, one `SUNSUBSCRIBE` and one `SSUBSCRIBE` with many
  channels (in chunks). A room that empties and fills again before that costs nothing,
  and a flush looks at the rooms that changed since the last one, not at every room
  wanted (10,000 sockets' user rooms made each flush of a connect storm a scan of them all).
- **Confirmed.** Redis answers each channel of an `SSUBSCRIBE` in order on the listening
  connection; from that answer on, whatever is published on the channel reaches the
  node. `ready(rooms)` waits for it: a replay reads the event table only after that, so
  the events committed between a join and its subscription come from the table, and
  the later ones through the gate (app/gateway/manager.py). A room counts as live when
  every command sent for it has been answered and the last one subscribed it.
- **Lost.** When the listening connection fails, nothing is subscribed any more; the
  waiters are let go (the catch-up after the resubscription covers their rooms:
  app/gateway/catchup.py), and on the new connection every wanted room is subscribed
  again, in one batch.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.core.errors import InvalidInput
from app.outbox.streams import parse_stream

log = logging.getLogger("herald.gateway")
CHUNK = 1000  # channels per SSUBSCRIBE/SUNSUBSCRIBE command
READY_WAIT = 5.0  # seconds a join waits for its subscription at most (then: the catch-up)


def is_stream(room: Any) -> bool:
    """Whether `room` names a stream (not a socket's own room, not the whole namespace)."""
    if not isinstance(room, str):
        return False
    try:
        parse_stream(room)
    except InvalidInput:
        return False
    return True


class RoomChannels:
    """Which stream channels this node is subscribed to, kept in step with its rooms."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix  # a stream's channel: prefix + stream (app/core/channels.py)
        self.wanted: set[str] = set()
        self._sent: set[str] = set()  # rooms whose last command sent was SSUBSCRIBE
        self._changed: set[str] = set()  # rooms wanted or dropped since the last flush
        self._pending: dict[str, int] = {}  # answers still awaited, per room
        self._live: set[str] = set()  # subscribed, confirmed by Redis
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._sub: Any = None  # the listening redis-py PubSub while it is up
        self._flushing: asyncio.Task[None] | None = None
        self._listened = False  # the listener was up or failed once (then: catch-ups)
        self.losses = 0  # listening connections lost (a page tail spanning one is stale)
        self.commands = 0  # SSUBSCRIBE/SUNSUBSCRIBE commands sent (tests, diagnostics)

    # -- what the rooms want ---------------------------------------------------------------
    def want(self, room: str) -> None:
        if room not in self.wanted:
            self.wanted.add(room)
            self._changed.add(room)
            self._schedule()

    def drop(self, room: str) -> None:
        if room in self.wanted:
            self.wanted.discard(room)
            self._changed.add(room)
            self._release(room)
            self._schedule()

    def is_live(self, room: str) -> bool:
        return room in self._live

    @property
    def live_count(self) -> int:
        return len(self._live)

    async def ready(self, rooms: list[str], timeout: float = READY_WAIT) -> None:
        """Return once each wanted room of `rooms` is subscribed (confirmed), or the
        subscription is down (the catch-up after it comes back covers them), or after
        `timeout` seconds (logged). Before the listener's first connection (a node that
        just started: python-socketio starts it at the first connect), nothing would catch
        up: wait for that connection's subscriptions."""
        if self._sub is None and self._listened:
            return
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for room in rooms:
            if room in self.wanted and room not in self._live:
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.setdefault(room, []).append(future)
                futures.append(future)
        if not futures:
            return
        _, late = await asyncio.wait(futures, timeout=timeout)
        if late:
            log.warning("room subscription not confirmed rooms=%d waited=%.1fs", len(late),
                        timeout)
            for future in late:
                future.cancel()

    # -- the listening connection ------------------------------------------------------------
    def up(self, sub: Any) -> None:
        """`sub` (a redis-py PubSub) listens now: subscribe every wanted room on it."""
        self._sub = sub
        self._changed.update(self.wanted)  # nothing is subscribed on a new connection
        self._listened = True
        self._schedule()

    def lost(self) -> None:
        """The listening connection failed: nothing is subscribed any more."""
        self._sub = None
        self._listened = True
        self.losses += 1
        self._sent.clear()
        self._pending.clear()
        self._live.clear()
        for room in list(self._waiters):
            self._release(room)

    def answered(self, channel: bytes | str) -> None:
        """Redis answered an SSUBSCRIBE or SUNSUBSCRIBE for `channel`."""
        name = channel.decode() if isinstance(channel, bytes) else channel
        if not name.startswith(self.prefix):
            return
        room = name[len(self.prefix):]
        left = self._pending.get(room, 0) - 1
        if left > 0:
            self._pending[room] = left
            return
        self._pending.pop(room, None)
        if room in self._sent:
            self._live.add(room)
            self._release(room)

    # -- sending -------------------------------------------------------------------------------
    def _release(self, room: str) -> None:
        for future in self._waiters.pop(room, []):
            if not future.done():
                future.set_result(None)

    def _schedule(self) -> None:
        if self._sub is None or self._flushing is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (unit tests of the manager): nothing to send
            return
        self._flushing = loop.create_task(self._flush())

    async def _flush(self) -> None:
        """Send what changed since the last flush; runs after the current loop turn, so
        every join and leave of that turn goes in the same commands."""
        sub = None
        try:
            while self._sub is not None:
                sub = self._sub
                changed, self._changed = self._changed, set()
                wanted, sent = self.wanted, self._sent
                add = [room for room in changed if room in wanted and room not in sent]
                remove = [room for room in changed if room in sent and room not in wanted]
                if not add and not remove:
                    return
                for room in remove:
                    self._sent.discard(room)
                    self._live.discard(room)
                    self._pending[room] = self._pending.get(room, 0) + 1
                for room in add:
                    self._sent.add(room)
                    self._pending[room] = self._pending.get(room, 0) + 1
                for command, rooms in (("SUNSUBSCRIBE", remove), ("SSUBSCRIBE", add)):
                    for start in range(0, len(rooms), CHUNK):
                        channels = [self.prefix + room for room in rooms[start:start + CHUNK]]
                        self.commands += 1
                        if command == "SSUBSCRIBE":
                            await sub.ssubscribe(*channels)
                        else:
                            await sub.sunsubscribe(*channels)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The listener sees the connection fail too, and starts over (lost, then up).
            log.warning("room subscriptions not sent error=%s", type(exc).__name__)
        finally:
            self._flushing = None
            if self._sub is not None and self._sub is not sub:
                self._schedule()  # a new connection came up meanwhile: subscribe on it


__all__ = ["RoomChannels", "is_stream"]
